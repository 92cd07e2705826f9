"""Find, read and write the final linear layer of any transformers or timm image classifier.

``CFTHead`` wraps a classifier: ``features(pixel_values)`` returns the exact input of its logits layer, so
that ``features(x) @ weight.T + bias`` equals the model's logits; ``apply(result)`` writes new rows back in
place (dtype and device kept); ``save_pretrained(dir)`` writes the model in its native format with
``problem_type="multi_label_classification"`` and the label names, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["GAINS_PLOT_NAME", "CFTHead", "HeadSpec", "find_head", "recover_model_dir", "save_timm_model", "swap_in"]

GAINS_PLOT_NAME = "cft_gains.png"
_OLD, _TMP = ".old", ".tmp"  # beside a model folder while it is replaced (see swap_in)


@dataclass
class HeadSpec:
    """Where the logits come from: one linear layer, or DeiT's two averaged heads."""

    paths: tuple[str, ...]
    kind: str = "linear"  # "linear" | "average"


def _get(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_head") and hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg")


def find_head(model: nn.Module) -> HeadSpec:
    """The module path(s) of the layer that produces the logits; a clear error for any other head shape."""
    if _is_timm(model):
        name = model.pretrained_cfg.get("classifier") or "fc"
        path = name if isinstance(name, str) else name[0]
        mod = _get(model, path)
        if isinstance(mod, nn.Linear):
            return HeadSpec((path,))
        raise ValueError(f"timm model head `{path}` is a {type(mod).__name__}, not nn.Linear; CFT needs a linear head")
    if hasattr(model, "timm_model"):  # transformers' TimmWrapperForImageClassification
        inner = find_head(model.timm_model)
        return HeadSpec(tuple(f"timm_model.{p}" for p in inner.paths), inner.kind)
    if hasattr(model, "cls_classifier") and hasattr(model, "distillation_classifier"):
        for p in ("cls_classifier", "distillation_classifier"):
            if not isinstance(_get(model, p), nn.Linear):
                raise ValueError(f"`{p}` of {type(model).__name__} is not nn.Linear; CFT cannot treat it as rows")
        return HeadSpec(("cls_classifier", "distillation_classifier"), "average")
    for path in ("classifier", "head", "fc"):
        try:
            mod = _get(model, path)
        except AttributeError:
            continue
        if isinstance(mod, nn.Sequential):  # ResNet / RegNet: Sequential(Flatten, Linear)
            inner = [i for i, m in enumerate(mod) if isinstance(m, nn.Linear)]
            if len(inner) == 1 and inner[0] == len(mod) - 1:
                return HeadSpec((f"{path}.{inner[0]}",))
            raise ValueError(f"{type(model).__name__}.{path} is a Sequential that does not end in its only "
                             "nn.Linear; CFT needs one linear layer producing the logits")
        if isinstance(mod, nn.Linear):
            return HeadSpec((path,))
        raise ValueError(
            f"{type(model).__name__}.{path} is a {type(mod).__name__}, not nn.Linear (num_labels=0 gives Identity); "
            "CFT needs one linear layer producing the logits"
        )
    raise ValueError(f"no linear logits layer found in {type(model).__name__} (looked for classifier, classifier[-1], "
                     "head, fc, timm's pretrained_cfg['classifier']); CFT needs a linear head")


class CFTHead:
    """A classifier with its final linear layer exposed as C category rows.

    Args:
        model: a transformers image classifier (``*ForImageClassification``, ``TimmWrapper…``) or a timm model.
        category_names: the dataset's category names in order; checked against the model's labels.
    """

    def __init__(self, model: nn.Module, category_names: Sequence[str] | None = None):
        self.model = model
        self.spec = find_head(model)
        self.library = "timm" if _is_timm(model) else "transformers"
        self.image_processor = None  # a transformers image processor; None: the timm data config, or none known
        self.name_or_path: str | None = None  # where from_pretrained loaded the model from
        self.cft_result = None  # the CFTResult last applied
        w = self.weight
        self.num_labels, self.hidden_size = w.shape
        if category_names is not None:
            self.check_categories(category_names)

    # -- rows ----------------------------------------------------------------------------------------------
    def _linears(self) -> list[nn.Linear]:
        return [_get(self.model, p) for p in self.spec.paths]

    @property
    def weight(self) -> torch.Tensor:
        """C×d weight of the logits map (a copy, float32, CPU)."""
        mods = self._linears()
        if self.spec.kind == "average":
            return torch.cat([m.weight.detach().float().cpu() / len(mods) for m in mods], dim=1)
        return mods[0].weight.detach().float().cpu().clone()

    @property
    def bias(self) -> torch.Tensor:
        """C bias of the logits map (a copy, float32, CPU; zeros when the layer has none)."""
        mods = self._linears()
        biases = [m.bias.detach().float().cpu() if m.bias is not None else torch.zeros(m.out_features)
                  for m in mods]
        return sum(biases) / len(biases) if self.spec.kind == "average" else biases[0].clone()

    @torch.no_grad()
    def set_rows(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Write a C×d weight and C bias into the head, keeping its dtype and device."""
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        if tuple(weight.shape) != (self.num_labels, self.hidden_size) or tuple(bias.shape) != (self.num_labels,):
            raise ValueError(f"expected weight {self.num_labels}×{self.hidden_size} and bias {self.num_labels}, got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        mods = self._linears()
        if self.spec.kind == "average":
            k = len(mods)
            start = 0
            for m in mods:
                d = m.in_features
                m.weight.copy_((weight[:, start:start + d] * k).to(m.weight))
                start += d
                if m.bias is None:
                    raise ValueError("DeiT heads without bias cannot take a new bias")
                m.bias.copy_(bias.to(m.bias))
            return
        m = mods[0]
        m.weight.copy_(weight.to(m.weight))
        if m.bias is not None:
            m.bias.copy_(bias.to(m.bias))
        elif bool((bias != 0).any()):
            raise ValueError("the head has no bias parameter; a non-zero bias cannot be written")

    def apply(self, result) -> CFTHead:
        """Write a :class:`~hf_cft.engine.CFTResult`'s rows into the model; returns self."""
        self.set_rows(result.weight, result.bias)
        self.cft_result = result
        return self

    # -- features ------------------------------------------------------------------------------------------
    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of a batch; ``features @ weight.T + bias == logits``."""
        captured: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
                 for m in self._linears()]
        try:
            out = self.model(pixel_values)
        finally:
            for h in hooks:
                h.remove()
        logits = out.logits if hasattr(out, "logits") else out
        feats = torch.cat([c.flatten(1) for c in captured], dim=1) if len(captured) > 1 else captured[0].flatten(1)
        return feats, logits

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The classifier inputs of a batch (eval mode is the caller's choice; see :meth:`extract`)."""
        return self.forward_with_features(pixel_values)[0]

    # -- labels --------------------------------------------------------------------------------------------
    def label_names(self) -> list[str] | None:
        """The model's label names in order, or None when it has none (transformers' ``LABEL_i``)."""
        if self.library == "timm":
            names = self.model.pretrained_cfg.get("label_names")
            return list(names) if names else None
        cfg = getattr(self.model, "config", None)
        if cfg is None or not getattr(cfg, "id2label", None):
            return None
        names = [cfg.id2label[i] for i in range(len(cfg.id2label))]
        if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            return None  # transformers' placeholders: no names were given
        return names

    def check_categories(self, category_names: Sequence[str]) -> None:
        """Raise when the model's number of labels or label names differ from the dataset's categories."""
        names = [str(n) for n in category_names]
        if len(names) != self.num_labels:
            raise ValueError(f"the model has {self.num_labels} labels but the dataset has {len(names)} categories")
        own = self.label_names()
        if own is not None and own != names:
            diff = [f"{i}: model {a!r} vs dataset {b!r}" for i, (a, b) in enumerate(zip(own, names)) if a != b]
            more = f"; … {len(diff) - 10} more" if len(diff) > 10 else ""
            raise ValueError("the model's labels differ from the dataset's categories (in order): "
                             + "; ".join(diff[:10]) + more)

    # -- preprocessing -----------------------------------------------------------------------------------
    def set_preprocessing(self, image_size: int | Sequence[int], image_mean: float | Sequence[float],
                          image_std: float | Sequence[float]) -> CFTHead:
        """Use a ``transformers.ViTImageProcessor`` built from these values for feature extraction; returns self.

        It resizes to ``image_size`` (an int for a square, or ``(height, width)``), scales to [0, 1] and
        normalizes with ``image_mean`` / ``image_std`` (3 values, or one for every channel): the evaluation
        transform of hf_cft's trainer. Use it when the model was saved without an image processor.
        """
        from transformers import ViTImageProcessor

        sizes = [image_size] * 2 if isinstance(image_size, int) else [int(v) for v in image_size]
        if len(sizes) != 2 or any(v <= 0 for v in sizes):
            raise ValueError(f"`image_size` must be a positive int or (height, width), got {image_size!r}")

        def three(name: str, value) -> list[float]:
            values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
            if len(values) != 3:
                raise ValueError(f"`{name}` needs 3 values (R, G, B) or one for all, got {value!r}")
            return values

        mean, std = three("image_mean", image_mean), three("image_std", image_std)
        if any(v <= 0 for v in std):
            raise ValueError(f"`image_std` values must be > 0, got {image_std!r}")
        self.image_processor = ViTImageProcessor(size={"height": sizes[0], "width": sizes[1]}, image_mean=mean,
                                                 image_std=std)
        return self

    def _has_timm_data_config(self) -> bool:
        model = self.model.timm_model if hasattr(self.model, "timm_model") else self.model
        return bool(getattr(model, "pretrained_cfg", None))

    def _missing_preprocessing_message(self) -> str:
        where = self.name_or_path or f"this {type(self.model).__name__}"
        return (
            f"no image preprocessing is known for {where}: no image processor was saved with it "
            "(preprocessor_config.json) or given, so the input size and normalization it was trained with are "
            "unknown and any guess gives wrong features. Fix: save an image processor with the model: "
            "processor.save_pretrained(<folder>); or pass one: CFTHead.from_pretrained(..., image_processor=...) "
            "or extract(..., image_processor=...); or give image_size, image_mean and image_std: "
            "head.set_preprocessing(image_size, image_mean, image_std) (on the command line: "
            "--image_size/--image_mean/--image_std)"
        )

    # -- data --------------------------------------------------------------------------------------------
    def extract(self, dataset, cache_dir: str | None = None, **kwargs):
        """Features of a ``datasets.Dataset`` split, from the on-disk cache (built or resumed as needed).

        Preprocessing: ``transform=`` or ``image_processor=`` when given, else this head's image processor,
        else a timm model's data config; with none of them it raises (see :meth:`set_preprocessing`).
        """
        from .features import extract_features

        if kwargs.get("image_processor") is None:
            kwargs["image_processor"] = self.image_processor
        if kwargs["image_processor"] is None and kwargs.get("transform") is None and not self._has_timm_data_config():
            raise ValueError(self._missing_preprocessing_message())
        cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_cft", "features")
        return extract_features(self, dataset, cache_dir, **kwargs)

    def fit(self, train, config=None, selection=None, cache_dir: str | None = None, category_names=None,
            **extract_kwargs):
        """Extract features and run the CFT engine on a partially labeled split.

        Args:
            train: the training split (``image``, ``labels``, ``label_mask``; ``uncertain_mask`` is used when
                ``config.uncertain_policies`` is set).
            selection: a validation split to choose rows on, or None for the config's seeded hold-out.
        Returns:
            the :class:`~hf_cft.engine.CFTResult` (not yet applied: call :meth:`apply`).
        """
        from .data import label_arrays
        from .engine import fit_cft

        z = self.extract(train, cache_dir, **extract_kwargs).features
        sparse = False if config is not None and config.uncertain_policies else None  # None: as the split stores them
        labels, mask = label_arrays(train, sparse=sparse)
        sel = None
        if selection is not None:
            sel = (self.extract(selection, cache_dir, **extract_kwargs).features,
                   *label_arrays(selection, sparse=sparse))
        kwargs = {}
        if config is not None and config.uncertain_policies:
            kwargs["uncertain_mask"] = label_arrays(train, ("uncertain_mask",))[0]
        return fit_cft(z, labels, mask, self.weight, self.bias, config, selection=sel,
                       category_names=category_names or self.label_names(), **kwargs)

    def evaluate(self, dataset, result=None, cache_dir: str | None = None, groups: int | None = None,
                 categories=None, **extract_kwargs) -> dict:
        """Masked mAP and mAUC (the ``evaluate`` modules) of the current rows and, if given, of ``result``'s.

        Returns ``{"before": {...}, "after": {...}}`` (``after`` only with ``result``).
        """
        import evaluate

        from .data import label_arrays
        from .labels import to_code
        from .metrics import PARTIAL_MAP_PATH, PARTIAL_MAUC_PATH
        from .metrics.pairs import evaluate_rows
        from .sparse import is_sparse

        features = self.extract(dataset, cache_dir, **extract_kwargs).features
        labels, mask = label_arrays(dataset, sparse=None)  # sparse for pair-stored splits (Open Images)
        names = self.label_names()
        rows = {"before": (self.weight, self.bias)}
        if result is not None:
            rows["after"] = (result.weight, result.bias)
        if is_sparse(mask):
            return evaluate_rows(features, rows, labels, mask, groups=groups, categories=categories,
                                 category_names=names)
        z = np.asarray(features, dtype=np.float32)
        codes = to_code(labels, mask)
        modules = [(evaluate.load(PARTIAL_MAP_PATH), "map", "ap"), (evaluate.load(PARTIAL_MAUC_PATH), "mauc", "auroc")]
        out = {}
        for tag, (w, b) in rows.items():
            scores = z @ w.float().numpy().T + b.float().numpy()
            out[tag] = {}
            for module, key, per in modules:
                res = module.compute(predictions=scores, references=codes, groups=groups,
                                                  categories=categories, category_names=names)
                out[tag][key] = res[key]
                out[tag][f"per_category_{per}"] = res["per_category"]
                out[tag]["n_excluded"] = res["n_excluded"]
                out[tag].update({f"{key}_{g}": v for g, v in res.items() if g.startswith("G")})
        return out

    # -- save ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                        extra_files: dict[str, str | bytes] | None = None, repo_id: str | None = None,
                        base_model: str | None = None, dataset_name: str | None = None,
                        evaluation: dict | None = None, selection_on_eval: bool = False) -> str:
        """Save the model in its native format, as a multi-label classifier, atomically.

        With an applied result, ``cft_config.json``, ``cft_report.json``, ``cft_gains.png`` and a model card
        (``README.md``) are written beside it; ``evaluation`` (``{split: self.evaluate(...)}``) puts before /
        after figures in the card. Everything is written to a temporary folder beside ``directory`` and renamed
        into place, so a crash never leaves a half-written model. ``extra_files`` maps file names to contents.
        """
        directory = os.path.abspath(os.fspath(directory))
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
        try:
            names = [str(n) for n in category_names] if category_names is not None else self.label_names()
            if self.library == "timm":
                save_timm_model(self.model, tmp, names)
            else:
                cfg = self.model.config
                cfg.problem_type = "multi_label_classification"
                if names is not None:
                    cfg.id2label = dict(enumerate(names))
                    cfg.label2id = {n: i for i, n in enumerate(names)}
                self.model.save_pretrained(tmp, safe_serialization=True)
                if self.image_processor is not None:
                    self.image_processor.save_pretrained(tmp)  # the pipeline needs it beside the weights
            for name, content in (extra_files or {}).items():
                mode = "wb" if isinstance(content, bytes) else "w"
                with open(os.path.join(tmp, name), mode) as f:
                    f.write(content)
            if self.cft_result is not None:
                from .engine import CFT_REPORT_NAME
                from .model_card import gains_plot_png, render_model_card

                result = self.cft_result
                result.config.save_pretrained(tmp)  # writes cft_config.json
                result.to_json(os.path.join(tmp, CFT_REPORT_NAME))
                first = next(iter((evaluation or {}).values()), None)
                per = "per_category_ap" if result.config.metric == "ap" else "per_category_auroc"
                png = gains_plot_png(result, first["after"][per] if first else None,
                                     first["before"][per] if first else None)
                with open(os.path.join(tmp, GAINS_PLOT_NAME), "wb") as f:
                    f.write(png)
                card = render_model_card(
                    result, repo_id or os.path.basename(directory),
                    base_model=base_model or self.name_or_path, dataset_name=dataset_name,
                    evaluation=evaluation, selection_on_eval=selection_on_eval, library=self.library,
                )
                card.save(os.path.join(tmp, "README.md"))
            swap_in(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, category_names: Sequence[str] | None = None,
                        image_processor=None, **kwargs) -> CFTHead:
        """Load a transformers or timm classifier from the Hub or a local folder and wrap it.

        Refuses a model whose head was (re)initialized at load time (``ignore_mismatched_sizes``, a changed
        ``num_labels`` / ``num_classes``, head weights missing from the checkpoint): its rows are random, not
        trained, and CFT would calibrate noise. A truncated or corrupt ``.safetensors`` file raises an
        ``OSError`` that names it. ``image_processor`` sets the preprocessing of :meth:`extract`; by default the
        one saved with a transformers model is loaded (timm models use their data config).
        """
        name_or_path = os.fspath(name_or_path)
        if not os.path.isdir(name_or_path) and os.path.isdir(name_or_path + _OLD):
            recover_model_dir(name_or_path)  # a save was interrupted between its two renames
        library = kwargs.pop("library", None) or _library_of(name_or_path)
        try:
            if library == "timm":
                model = _load_timm(name_or_path, **kwargs)
            else:
                model = _load_transformers(name_or_path, **kwargs)
        except SafetensorError as err:
            raise _corrupt_weights_error(name_or_path, err) from err
        head = cls(model.eval(), category_names=category_names)
        head.name_or_path = name_or_path
        if image_processor is not None:
            head.image_processor = image_processor
        elif library != "timm":
            try:
                from transformers import AutoImageProcessor

                head.image_processor = AutoImageProcessor.from_pretrained(name_or_path)
            except (OSError, ValueError) as err:
                if not head._has_timm_data_config():
                    logger.warning("%s (%s)", head._missing_preprocessing_message(), err)
        return head

    # -- hub -----------------------------------------------------------------------------------------------
    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Calibrated with hf_cft (category-wise fine-tuning)", **save_kwargs) -> str:
        """Create the repo if needed and upload the calibrated model in one commit; returns the commit URL.

        An existing model card is merged, not destroyed: its text is kept, the hf_cft section (between
        ``<!-- hf_cft:start -->`` and ``<!-- hf_cft:end -->``) is added or replaced, and the metadata are
        merged (tags united, the rest updated).
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(os.path.join(tmp, "model"), repo_id=repo_id, **save_kwargs)
            readme = os.path.join(folder, "README.md")
            if os.path.exists(readme):
                existing = _existing_card(api, repo_id)
                if existing is not None:
                    with open(readme, encoding="utf-8") as f:
                        ours = f.read()
                    with open(readme, "w", encoding="utf-8") as f:
                        f.write(merge_cards(existing, ours))
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                     repo_type="model")
        return str(getattr(info, "commit_url", info))


# -- saving and loading helpers ------------------------------------------------------------------------------
def swap_in(new: str, directory: str) -> None:
    """Replace ``directory`` by the complete folder ``new`` so that a model is on disk at every instant.

    The old folder is moved aside to ``<directory>.old``, ``new`` is moved in, then the old one is deleted.
    A crash between the two renames leaves ``<directory>.old``: :func:`recover_model_dir` moves it back.
    """
    old = directory + _OLD
    if os.path.isdir(old):  # left by an interrupted swap
        if os.path.exists(directory):
            shutil.rmtree(old)
        else:
            os.replace(old, directory)  # the last complete model goes back in place first
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover_model_dir(directory: str | os.PathLike) -> bool:
    """Repair what an interrupted save (:func:`swap_in`) left beside ``directory``; True when a model was restored.

    ``<directory>.old`` without ``<directory>`` (killed between the two renames): the old model is moved back,
    the last one that was completely in place. ``<directory>.old`` beside ``<directory>`` (killed while deleting
    it) and a ``<directory>.tmp`` (killed while writing it, or before it was moved in) are removed.
    """
    directory = os.fspath(directory)
    old, tmp = directory + _OLD, directory + _TMP
    restored = False
    if os.path.isdir(old):
        if os.path.exists(directory):
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(old, directory)
                restored = True
                logger.warning("a save of %s was interrupted: restored the previous model from %s", directory, old)
            except OSError:
                if not os.path.isdir(directory):  # else another process restored it first
                    raise
    if os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    return restored


def save_timm_model(model: nn.Module, directory: str, label_names: Sequence[str] | None = None,
                    preprocessing: tuple[int, Sequence[float], Sequence[float]] | None = None) -> None:
    """Save a timm model (``timm.models.save_for_hf``) so that timm and transformers both load it.

    ``timm.create_model("local-dir:<dir>", pretrained=True)`` and
    ``transformers.AutoModelForImageClassification.from_pretrained(<dir>)`` (``TimmWrapper…``) both work:
    ``num_classes`` is dropped from ``model_args`` (transformers passes it itself and failed with "got multiple
    values for keyword argument 'num_classes'"); it stays at the top level. ``problem_type`` is
    ``multi_label_classification`` and the label names become transformers' ``id2label``. ``preprocessing``
    ``(size, mean, std)`` records a squash resize to ``size``×``size`` with that normalization (the trainer's
    evaluation transform) in the data config, so that timm's ``resolve_data_config`` gives it back.
    """
    from timm.models import save_for_hf

    names = [str(n) for n in label_names] if label_names is not None else None
    if names is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": names}
    save_for_hf(model, directory, model_config={"label_names": names} if names else None, safe_serialization=True)
    path = os.path.join(directory, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if isinstance(cfg.get("model_args"), dict):
        cfg["model_args"].pop("num_classes", None)
    cfg["problem_type"] = "multi_label_classification"
    if preprocessing is not None:
        size, mean, std = preprocessing
        data = cfg.setdefault("pretrained_cfg", {})
        if list(data.get("input_size", [3])[1:]) != [size, size]:
            data["pool_size"] = None
        data.update(input_size=[data.get("input_size", [3])[0], size, size], mean=[float(v) for v in mean],
                    std=[float(v) for v in std], crop_pct=1.0, crop_mode="squash", interpolation="bilinear")
        for key in ("test_input_size", "test_crop_pct"):
            data.pop(key, None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)


def _head_refused(name_or_path: str, details: str) -> ValueError:
    return ValueError(
        f"the classifier head of {name_or_path} was initialized at random when loading ({details}); CFT re-fits "
        "trained rows: load the model as its classifier was trained (no new num_labels / num_classes, no "
        "ignore_mismatched_sizes, a checkpoint that holds the head)"
    )


def _load_transformers(name_or_path: str, **kwargs) -> nn.Module:
    from transformers import AutoModelForImageClassification

    model, info = AutoModelForImageClassification.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    spec = find_head(model)
    touched = [k for k in (*info.get("missing_keys", []), *(m[0] if isinstance(m, tuple) else m
                                                              for m in info.get("mismatched_keys", [])))
               if any(k.startswith(p + ".") or k == p for p in spec.paths)]
    if touched:
        raise _head_refused(name_or_path, f"{', '.join(sorted(touched))} missing or resized, e.g. by "
                                          "ignore_mismatched_sizes or a new num_labels")
    return model


def _load_timm(name_or_path: str, **kwargs) -> nn.Module:
    import timm

    local = os.path.isdir(name_or_path)
    src = f"local-dir:{name_or_path}" if local else f"hf-hub:{name_or_path}"
    try:
        model = timm.create_model(src, pretrained=True, **kwargs)
    except RuntimeError as err:  # strict loading of a checkpoint that lacks weights of the model
        line = next((ln for ln in str(err).splitlines() if "Missing key(s)" in ln), None)
        if line is None:
            raise
        missing = ", ".join(re.findall(r'"([^"]+)"', line))
        raise ValueError(
            f"the checkpoint of {name_or_path} lacks weights of the model (missing: {missing}); a classifier head "
            "missing from the checkpoint would be random and CFT re-fits trained rows: load the model with the "
            "architecture and arguments it was saved with, from a checkpoint that holds its head"
        ) from err
    spec = find_head(model)
    problems = []
    saved = model.pretrained_cfg.get("num_classes")
    if saved is not None and model.num_classes != saved:
        problems.append(f"num_classes={model.num_classes} differs from the checkpoint's {saved}")
    weights = _timm_weights_file(name_or_path)
    if weights is None:
        logger.warning("could not find the weights file of %s to check that its head was loaded", name_or_path)
    else:
        params = {f"{p}.{n}": t for p in spec.paths for n, t in _get(model, p).named_parameters(recurse=False)}
        saved_tensors = _checkpoint_tensors(weights, list(params))
        offset = int(model.pretrained_cfg.get("label_offset") or 0)
        for key, param in params.items():
            t = saved_tensors.get(key)
            if t is None:
                problems.append(f"{key} missing from {os.path.basename(weights)}")
                continue
            if offset and t.ndim and t.shape[0] == param.shape[0] + offset:
                t = t[offset:]
            if t.numel() != param.numel():
                problems.append(f"{key} resized from {tuple(t.shape)} to {tuple(param.shape)}")
    if problems:
        raise _head_refused(name_or_path, "; ".join(problems))
    return model


def _timm_weights_file(name_or_path: str) -> str | None:
    """The checkpoint file timm loads a local folder or Hub repo from (its order of preference), or None."""
    names = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")
    if os.path.isdir(name_or_path):
        for name in names:
            if os.path.isfile(os.path.join(name_or_path, name)):
                return os.path.join(name_or_path, name)
        for ext in (".safetensors", ".pth", ".pth.tar", ".bin"):
            found = sorted(f for f in os.listdir(name_or_path) if f.endswith(ext))
            if found:
                return os.path.join(name_or_path, found[0])
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError

    for name in names[:2]:
        try:
            return hf_hub_download(name_or_path, name)  # timm has just fetched it: from the cache
        except (OSError, ValueError, HfHubHTTPError):
            continue
    return None


def _checkpoint_tensors(path: str, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of a checkpoint file that has them (safetensors: only those are read)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            have = set(f.keys())
            return {k: f.get_tensor(k) for k in keys if k in have}
    from timm.models import load_state_dict

    state = load_state_dict(path)
    return {k: state[k] for k in keys if k in state}


def _safetensors_files(name_or_path: str) -> list[str]:
    if os.path.isdir(name_or_path):
        return sorted(os.path.join(name_or_path, f) for f in os.listdir(name_or_path) if f.endswith(".safetensors"))
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name_or_path, "model.safetensors")
    return [found] if isinstance(found, str) else []


def _readable_safetensors(path: str) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError):
        return False
    return True


def _corrupt_weights_error(name_or_path: str, err: Exception) -> OSError:
    files = _safetensors_files(name_or_path)
    bad = [f for f in files if not _readable_safetensors(f)] or files
    which = ", ".join(bad) if bad else f"the .safetensors weights of {name_or_path}"
    if os.path.isdir(name_or_path):
        fix = ("Re-save it from the original model (model.save_pretrained(<folder>) or "
               "CFTHead.save_pretrained(<folder>)) or download it again (`hf download <repo id> --force-download "
               f"--local-dir {name_or_path}`)")
    else:
        fix = (f"Re-download it (`hf download {name_or_path} --force-download`, or delete it from the Hugging Face "
               "cache and load again) or re-save it from the original model (model.save_pretrained(<folder>))")
    return OSError(f"{which} is truncated or corrupt and cannot be read ({err}). {fix}")


CARD_START, CARD_END = "<!-- hf_cft:start -->", "<!-- hf_cft:end -->"


def _existing_card(api, repo_id: str) -> str | None:
    from huggingface_hub.utils import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "README.md", repo_type="model")
    except EntryNotFoundError:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def merge_cards(existing: str, ours: str) -> str:
    """Merge our card into an existing one: their text kept, our section added or replaced, metadata merged."""
    from huggingface_hub import ModelCard

    old, new = ModelCard(existing), ModelCard(ours)
    data = old.data.to_dict()
    mine = new.data.to_dict()
    tags = list(dict.fromkeys([*(data.get("tags") or []), *(mine.get("tags") or [])]))
    data.update({k: v for k, v in mine.items() if v is not None})
    data["tags"] = tags
    section = f"{CARD_START}\n{new.text.strip()}\n{CARD_END}"
    text = old.text
    if CARD_START in text and CARD_END in text:
        head_, _, rest = text.partition(CARD_START)
        _, _, tail = rest.partition(CARD_END)
        text = f"{head_}{section}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}\n"
    import yaml

    return f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n{text}"


def _library_of(name_or_path: str) -> str:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            if "architecture" in cfg and "model_type" not in cfg:
                return "timm"
    return "transformers"
