"""Find, read and write the final linear layer of any transformers or timm image classifier.

``CFTHead`` wraps a classifier: ``features(pixel_values)`` returns the exact input of its logits layer, so
that ``features(x) @ weight.T + bias`` equals the model's logits; ``apply(result)`` writes new rows back in
place (dtype and device kept); ``save_pretrained(dir)`` writes the model in its native format with
``problem_type="multi_label_classification"`` and the label names, atomically (the saving, pushing and card
merging live in :mod:`hf_cft.hub`, the loading checks in :mod:`hf_cft.loading`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .constants import GAINS_PLOT_NAME
from .hub import recover_model_dir, save_timm_model, swap_in  # moved to hf_cft.hub; importable from here as before
from .model_card import CardData

logger = logging.getLogger(__name__)

__all__ = ["GAINS_PLOT_NAME", "CFTHead", "HeadSpec", "find_head", "recover_model_dir", "save_timm_model", "swap_in"]



@dataclass
class HeadSpec:
    """Where the logits come from: one linear layer, or two heads whose outputs are averaged.

    ``kind``: ``"linear"`` (one layer); ``"average"`` (DeiT's distilled heads: logits are the mean of two
    linear layers that read different inputs; the features are both inputs side by side); ``"shared"`` (the
    mean of two linear layers that read the same input; the features are that input and both layers get the
    same rows).
    """

    paths: tuple[str, ...]
    kind: str = "linear"  # "linear" | "average" | "shared"


# timm classes whose eval-mode logits are (head(x1) + head_dist(x2)) / 2, and whether x1 is x2
_TIMM_TWO_HEADS = {
    "VisionTransformerDistilled": "average",  # class and distillation tokens
    "PoolingVisionTransformer": "average",  # PiT distilled: the same two tokens
    "LevitDistilled": "average",  # a BatchNorm before each linear: different inputs
    "RepVit": "average",  # likewise
    "EfficientFormer": "shared",
    "EfficientFormerV2": "shared",
    "SwiftFormer": "shared",
}


def _get(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_head") and hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg")


def find_head(model: nn.Module) -> HeadSpec:
    """The module path(s) of the layer that produces the logits; a clear error for any other head shape."""
    if _is_timm(model):
        return _timm_head(model)
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


def _present(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


def _timm_head(model: nn.Module) -> HeadSpec:
    """The head of a timm model from ``pretrained_cfg["classifier"]``: one path, or two (distilled models)."""
    name = model.pretrained_cfg.get("classifier") or "fc"
    paths = (name,) if isinstance(name, str) else tuple(name)
    present = tuple(p for p in paths if _present(model, p))  # a model built without distillation lacks head_dist
    if not present:
        raise ValueError(f"timm model {type(model).__name__} has none of its classifier modules {list(paths)}")
    for p in present:
        mod = _get(model, p)
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"timm model head `{p}` is a {type(mod).__name__}, not nn.Linear; CFT needs a linear "
                             "head")
    if len(present) == 1:
        return HeadSpec(present)
    kind = _TIMM_TWO_HEADS.get(type(model).__name__)
    if kind is None or len(present) != 2:
        raise ValueError(
            f"timm model {type(model).__name__} has {len(present)} classifier heads {list(present)}; CFT supports "
            f"two averaged heads only for {sorted(_TIMM_TWO_HEADS)}, whose logits are known to be their mean: fitting "
            "the rows of one head would leave the others unchanged and the saved model's logits would differ from "
            "the fitted ones"
        )
    if kind == "shared":
        a, b = (_get(model, p) for p in present)
        if a.in_features != b.in_features or (a.bias is None) != (b.bias is None):
            raise ValueError(f"the two heads {list(present)} of {type(model).__name__} differ in shape")
    return HeadSpec(present, kind)


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
        self.cft_config = None  # the CFTConfig saved with a calibrated model (from_pretrained), else None
        self.cft_report = None  # the CFTResult saved with it (its rows: the model's), else None
        self.card_data = CardData(library=self.library)  # what the model card says; filled by apply / evaluate
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
        if self.spec.kind == "shared":
            return sum(m.weight.detach().float().cpu() for m in mods) / len(mods)
        return mods[0].weight.detach().float().cpu().clone()

    @property
    def bias(self) -> torch.Tensor:
        """C bias of the logits map (a copy, float32, CPU; zeros when the layer has none)."""
        mods = self._linears()
        biases = [m.bias.detach().float().cpu() if m.bias is not None else torch.zeros(m.out_features)
                  for m in mods]
        return sum(biases) / len(biases) if self.spec.kind in ("average", "shared") else biases[0].clone()

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
                    raise ValueError("averaged heads without bias cannot take a new bias")
                m.bias.copy_(bias.to(m.bias))
            return
        if any(m.bias is None for m in mods) and bool((bias != 0).any()):
            raise ValueError("the head has no bias parameter; a non-zero bias cannot be written")
        for m in mods if self.spec.kind == "shared" else mods[:1]:  # shared: both heads take the rows (their mean)
            m.weight.copy_(weight.to(m.weight))
            if m.bias is not None:
                m.bias.copy_(bias.to(m.bias))

    def apply(self, result) -> CFTHead:
        """Write a :class:`~hf_cft.engine.CFTResult`'s rows into the model; returns self."""
        self.set_rows(result.weight, result.bias)
        self.card_data.result = result
        return self

    @property
    def cft_result(self):
        """The :class:`~hf_cft.engine.CFTResult` last applied (None before :meth:`apply`); the card renders it."""
        return self.card_data.result

    # -- features ------------------------------------------------------------------------------------------
    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of a batch; ``features @ weight.T + bias == logits``."""
        captured: list[torch.Tensor] = []
        mods = self._linears()[:1] if self.spec.kind == "shared" else self._linears()  # "shared": one input
        hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach())) for m in mods]
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
                 categories=None, split: str | None = None, **extract_kwargs) -> dict:
        """Masked mAP and mAUC (the ``evaluate`` modules) of the current rows and, if given, of ``result``'s.

        Returns ``{"before": {...}, "after": {...}}`` (``after`` only with ``result``). With ``result``, the
        figures also go to :attr:`card_data` under ``split`` (default: the dataset's own split name), so that
        the model card saved next shows them.
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
        if result is not None:
            name = split or getattr(dataset, "split", None) or "evaluation"  # a datasets.Dataset knows its split
            self.card_data.evaluation[str(name)] = out
        return out


    # -- save, load, push (hf_cft.hub, hf_cft.loading) -----------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                        extra_files: dict[str, str | bytes] | None = None, card_data=None, **card_fields) -> str:
        """Save the model in its native format, as a multi-label classifier, atomically (see :mod:`hf_cft.hub`).

        With an applied result, ``cft_config.json``, ``cft_report.json``, ``cft_gains.png`` and a model card
        (``README.md``) are written beside it. The card says what :attr:`card_data` holds, updated by
        ``card_fields`` (``repo_id``, ``base_model``, ``dataset_name``, ``tags``, ``evaluation`` as
        ``{split: self.evaluate(...)}``, ``selection_on_eval``) or replaced by ``card_data``. Everything is
        written to ``<directory>.tmp`` first, then each file is moved into ``directory``: its other files and
        subfolders are kept, and a crash never leaves a half-written file. ``category_names`` must name every
        label once; the in-memory model is not changed. ``extra_files`` maps file names to contents.
        """
        from .hub import save_pretrained

        data = (self.card_data if card_data is None else card_data).updated(**card_fields)
        return save_pretrained(self, directory, category_names, extra_files, data)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Calibrated with hf_cft (category-wise fine-tuning)",
                    category_names: Sequence[str] | None = None, extra_files: dict[str, str | bytes] | None = None,
                    card_data=None, **card_fields) -> str:
        """Upload the calibrated model in one commit, merging an existing card (:func:`hf_cft.hub.push_to_hub`).

        ``card_data`` / ``card_fields`` as in :meth:`save_pretrained`. Returns the commit URL.
        """
        from .hub import push_to_hub

        data = (self.card_data if card_data is None else card_data).updated(**card_fields)
        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message,
                           category_names=category_names, extra_files=extra_files, card_data=data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, category_names: Sequence[str] | None = None,
                        image_processor=None, **kwargs) -> CFTHead:
        """Load a transformers or timm classifier from the Hub or a local folder and wrap it.

        Refuses a model whose head was (re)initialized at load time (``ignore_mismatched_sizes``, a changed
        ``num_labels`` / ``num_classes``, head weights missing from the checkpoint): its rows are random, not
        trained, and CFT would calibrate noise. A truncated or corrupt ``.safetensors`` file raises an
        ``OSError`` that names it. ``image_processor`` sets the preprocessing of :meth:`extract`; by default the
        one saved with a transformers model is loaded (timm models use their data config). A calibrated model
        gives back how it was made: :attr:`cft_config` and :attr:`cft_report`.
        """
        from .engine import CFTConfig, CFTResult
        from .loading import load_classifier, read_calibration

        name_or_path = os.fspath(name_or_path)
        model = load_classifier(name_or_path, kwargs.pop("library", None), **kwargs)
        head = cls(model.eval(), category_names=category_names)
        head.name_or_path = name_or_path
        head.card_data.base_model = name_or_path
        config, report = read_calibration(name_or_path)
        head.cft_config = None if config is None else CFTConfig.from_dict(config)
        head.cft_report = None if report is None else CFTResult.from_dict(report, head.weight, head.bias)
        if image_processor is not None:
            head.image_processor = image_processor
        elif head.library != "timm":
            try:
                from transformers import AutoImageProcessor

                head.image_processor = AutoImageProcessor.from_pretrained(name_or_path)
            except (OSError, ValueError) as err:
                if not head._has_timm_data_config():
                    logger.warning("%s (%s)", head._missing_preprocessing_message(), err)
        return head

