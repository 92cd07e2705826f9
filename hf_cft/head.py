"""``CFTHead``: a classifier with its final linear layer exposed as C category rows (a thin facade).

``features(pixel_values)`` returns the exact input of its logits layer, so that ``features(x) @ weight.T + bias``
equals the model's logits; ``apply(result)`` writes new rows back in place (dtype and device kept);
``save_pretrained(dir)`` writes the model in its native format as a multi-label classifier with its label names,
atomically. The work is done by :mod:`hf_cft.modeling` (the head, loading, saving), :mod:`hf_cft.features`
(extraction), :mod:`hf_cft.engine` (fitting), :mod:`hf_cft.card` (the card) and :mod:`hf_cft.hub` (pushing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

from .card import CFTModelCardData, calibration_files
from .constants import ORIGINAL_HEAD_NAME
from .data import label_arrays
from .decisions import THRESHOLDS_ATTRIBUTE, DecisionConfig, heldout_split, make_decisions, result_thresholds
from .engine import CFTConfig, CFTResult, fit_cft
from .evaluation import evaluate_rows
from .features import extract_features
from .hub import DEFAULT_COMMIT_MESSAGE, push_folder
from .modeling import heads
from .modeling.load import load_classifier, read_calibration
from .modeling.original import original_head_file, read_original_head
from .modeling.preprocessing import has_timm_data_config, missing_preprocessing_message, processor_from_values
from .modeling.save import SaveOptions, save_model

logger = logging.getLogger(__name__)

__all__ = ["CFTHead"]


class CFTHead:
    """A classifier with its final linear layer exposed as C category rows.

    Args:
        model: a transformers image classifier (``*ForImageClassification``, ``TimmWrapper…``) or a timm model.
        category_names: the dataset's category names in order; checked against the model's labels.
    """

    def __init__(self, model: nn.Module, category_names: Sequence[str] | None = None):
        self.model = model
        self.spec = heads.find_head(model)
        self.library = "timm" if heads.is_timm(model) else "transformers"
        self.image_processor = None  # a transformers image processor; None: the timm data config, or none known
        self.name_or_path: str | None = None  # where from_pretrained loaded the model from
        self.cft_config = None  # the CFTConfig saved with a calibrated model (from_pretrained), else None
        self.cft_report = None  # the CFTResult saved with it (its rows: the model's), else None
        self.original_rows = None  # (weight, bias) the first apply replaced, or a calibrated folder's; else None
        self.card_data = CFTModelCardData(library=self.library)  # what the card says; filled by apply / evaluate
        self.num_labels, self.hidden_size = self.weight.shape
        if category_names is not None:
            self.check_categories(category_names)

    # -- rows (hf_cft.modeling.heads) ----------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """C×d weight of the logits map (a copy, float32, CPU)."""
        return heads.read_rows(self.model, self.spec)[0]

    @property
    def bias(self) -> torch.Tensor:
        """C bias of the logits map (a copy, float32, CPU; zeros when the layer has none)."""
        return heads.read_rows(self.model, self.spec)[1]

    def set_rows(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Write a C×d weight and C bias into the head, keeping its dtype and device."""
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        if tuple(weight.shape) != (self.num_labels, self.hidden_size) or tuple(bias.shape) != (self.num_labels,):
            raise ValueError(f"expected weight {self.num_labels}×{self.hidden_size} and bias {self.num_labels}, got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        heads.write_rows(self.model, self.spec, weight, bias)

    def apply(self, result) -> CFTHead:
        """Write a :class:`~hf_cft.engine.CFTResult`'s rows into the model; returns self.

        The rows the first apply replaces are kept as :attr:`original_rows` (saved beside a calibrated model).
        """
        if self.original_rows is None:  # kept beside a calibrated save (cft_original_head.safetensors)
            self.original_rows = (self.weight, self.bias)
        self.set_rows(result.weight, result.bias)
        self.card_data.result = result
        return self

    @property
    def cft_result(self):
        """The :class:`~hf_cft.engine.CFTResult` last applied (None before :meth:`apply`); the card renders it."""
        return self.card_data.result

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of a batch; ``features @ weight.T + bias == logits``."""
        return heads.forward_with_features(self.model, self.spec, pixel_values)

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The classifier inputs of a batch (eval mode is the caller's choice; see :meth:`extract`)."""
        return self.forward_with_features(pixel_values)[0]

    # -- labels and preprocessing --------------------------------------------------------------------------------
    def label_names(self) -> list[str] | None:
        """The model's label names in order, or None when it has none (transformers' ``LABEL_i``)."""
        return heads.label_names(self.model)

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

    def set_preprocessing(self, image_size: int | Sequence[int], image_mean: float | Sequence[float],
                          image_std: float | Sequence[float]) -> CFTHead:
        """Use a ``transformers.ViTImageProcessor`` built from these values for feature extraction; returns self.

        It resizes to ``image_size`` (an int for a square, or ``(height, width)``), scales to [0, 1] and
        normalizes with ``image_mean`` / ``image_std`` (3 values, or one for every channel): the evaluation
        transform of hf_cft's trainer. Use it when the model was saved without an image processor.
        """
        self.image_processor = processor_from_values(image_size, image_mean, image_std)
        return self

    def _missing_preprocessing_message(self) -> str:
        return missing_preprocessing_message(self.name_or_path or f"this {type(self.model).__name__}")

    # -- data ----------------------------------------------------------------------------------------------------
    def extract(self, dataset, cache_dir: str | None = None, **kwargs):
        """Features of a ``datasets.Dataset`` split, from the on-disk cache (built or resumed as needed).

        Preprocessing: ``transform=`` or ``image_processor=`` when given, else this head's image processor,
        else a timm model's data config; with none of them it raises (see :meth:`set_preprocessing`).
        """
        if kwargs.get("image_processor") is None:
            kwargs["image_processor"] = self.image_processor
        if (kwargs["image_processor"] is None and kwargs.get("transform") is None
                and not has_timm_data_config(self.model)):
            raise ValueError(self._missing_preprocessing_message())
        cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_cft", "features")
        return extract_features(self, dataset, cache_dir, **kwargs)

    def fit(self, train, config=None, selection=None, cache_dir: str | None = None, category_names=None,
            decisions: DecisionConfig | bool = True, **extract_kwargs):
        """Extract features and run the CFT engine on a partially labeled split.

        Args:
            train: the training split (``image``, ``labels``, ``label_mask``; ``uncertain_mask`` is used when
                ``config.uncertain_policies`` is set).
            selection: a validation split to choose rows on, or None for the config's seeded hold-out.
            decisions: calibrate the rows and choose thresholds on the held-out known labels (True: the defaults,
                a :class:`~hf_cft.decisions.DecisionConfig`, or False: the engine's rows as they are).
        Returns:
            the :class:`~hf_cft.engine.CFTResult` (not yet applied: call :meth:`apply`).
        """
        cache = self.extract(train, cache_dir, **extract_kwargs)  # images skipped (skip_bad_images): labels unknown
        z = cache.features
        sparse = False if config is not None and config.uncertain_policies else None  # None: as the split stores them
        labels, mask = label_arrays(train, sparse=sparse)
        mask = cache.known(mask)
        sel = None
        if selection is not None:
            sel_cache = self.extract(selection, cache_dir, **extract_kwargs)
            sel_labels, sel_mask = label_arrays(selection, sparse=sparse)
            sel = (sel_cache.features, sel_labels, sel_cache.known(sel_mask))
        kwargs = {}
        if config is not None and config.uncertain_policies:
            kwargs["uncertain_mask"] = cache.known(label_arrays(train, ("uncertain_mask",))[0])
        result = fit_cft(z, labels, mask, self.weight, self.bias, config, selection=sel,
                         category_names=category_names or self.label_names(), **kwargs)
        if decisions is False or decisions is None:
            return result
        heldout = heldout_split(config or CFTConfig(), z, labels, mask, sel)
        return make_decisions(result, heldout, None if decisions is True else decisions)

    def evaluate(self, dataset, result=None, cache_dir: str | None = None, groups: int | None = None,
                 categories=None, split: str | None = None, **extract_kwargs) -> dict:
        """Masked mAP and mAUC of the current rows and, if given, of ``result``'s
        (:func:`hf_cft.evaluation.evaluate_rows`: the ``evaluate`` modules' figures, dense or by known pairs).

        Returns ``{"before": {...}, "after": {...}}`` (``after`` only with ``result``). With ``result``, the
        figures also go to :attr:`card_data` under ``split`` (default: the dataset's own split name), so that
        the model card saved next shows them.
        """
        cache = self.extract(dataset, cache_dir, **extract_kwargs)
        features = cache.features
        labels, mask = label_arrays(dataset, sparse=None)  # sparse for pair-stored splits (Open Images)
        mask = cache.known(mask)  # images skipped (skip_bad_images) are not scored
        rows = {"before": (self.weight, self.bias)}
        if result is not None:
            rows["after"] = (result.weight, result.bias)
        out = evaluate_rows(features, rows, labels, mask, groups=groups, categories=categories,
                            category_names=self.label_names())
        if result is not None:
            name = split or getattr(dataset, "split", None) or "evaluation"  # a datasets.Dataset knows its split
            self.card_data.evaluation[str(name)] = out
        return out

    # -- save, load, push (hf_cft.modeling, hf_cft.hub) ----------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                        extra_files: dict[str, str | bytes] | None = None, card_data=None, **card_fields) -> str:
        """Save the model in its native format, as a multi-label classifier, atomically (:func:`save_model`).

        With an applied result, ``cft_config.json``, ``cft_report.json``, ``cft_gains.png``, a model card
        (``README.md``) and the replaced rows (:attr:`original_rows`, as ``cft_original_head.safetensors``) are
        written beside it. The card says what :attr:`card_data` holds, updated by ``card_fields`` (``repo_id``,
        ``base_model``, ``dataset_name``, ``tags``, ``evaluation`` as ``{split: self.evaluate(...)}``,
        ``selection_on_eval``) or replaced by ``card_data``. Everything is
        written to ``<directory>.tmp`` first, then each file is moved into ``directory``: its other files and
        subfolders are kept, and a crash never leaves a half-written file. ``category_names`` must name every
        label once; the in-memory model is not changed. ``extra_files`` maps file names to contents.
        """
        data = (self.card_data if card_data is None else card_data).updated(**card_fields)
        directory = os.path.abspath(os.fspath(directory))  # a file there is refused by hf_cft.io.write_folder
        names = (self.label_names() if category_names is None
                 else heads.check_label_names(category_names, self.num_labels))
        files = dict(extra_files or {})
        if data.result is not None:
            files.update(calibration_files(data, os.path.basename(directory)))
            if self.original_rows is not None:
                files[ORIGINAL_HEAD_NAME] = original_head_file(*self.original_rows)
        thresholds = result_thresholds(data.result)
        options = SaveOptions(label_names=names, image_processor=self.image_processor, extra_files=files,
                              config_attributes={} if thresholds is None else {THRESHOLDS_ATTRIBUTE: thresholds})
        return save_model(self.model, directory, options)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = DEFAULT_COMMIT_MESSAGE, category_names: Sequence[str] | None = None,
                    extra_files: dict[str, str | bytes] | None = None, card_data=None, revision: str | None = None,
                    create_pr: bool = False, **card_fields) -> str:
        """Upload the calibrated model in one commit, merging an existing card (:func:`hf_cft.hub.push_folder`).

        ``revision``: the branch to commit to (default: main); ``create_pr=True`` opens a pull request with the
        commit instead, leaving the branch as it was. ``card_data`` / ``card_fields`` as in
        :meth:`save_pretrained`. Returns the commit URL (with ``create_pr``, the pull request's URL).
        """
        data = (self.card_data if card_data is None else card_data).updated(**card_fields).updated(repo_id=repo_id)
        return push_folder(repo_id, lambda folder: self.save_pretrained(folder, category_names, extra_files, data),
                           private=private, token=token, commit_message=commit_message, revision=revision,
                           create_pr=create_pr)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, category_names: Sequence[str] | None = None,
                        image_processor=None, revision: str | None = None, token: str | None = None,
                        **kwargs) -> CFTHead:
        """Load a transformers or timm classifier from the Hub or a local folder and wrap it.

        Refuses a model whose head was (re)initialized at load time (``ignore_mismatched_sizes``, a changed
        ``num_labels`` / ``num_classes``, head weights missing from the checkpoint): its rows are random, not
        trained, and CFT would calibrate noise. A truncated or corrupt ``.safetensors`` file raises an
        ``OSError`` that names it. ``image_processor`` sets the preprocessing of :meth:`extract`; by default the
        one saved with a transformers model is loaded (timm models use their data config). A calibrated model
        gives back how it was made: :attr:`cft_config`, :attr:`cft_report` and the rows it replaced
        (:attr:`original_rows`, when saved). From the Hub, every file read (the
        weights, configs, image processor, ``cft_config.json``, ``cft_report.json``) is read at ``revision`` (a
        branch, tag, commit or ``refs/pr/<n>``; default: main) with ``token`` (default: the saved login).
        """
        name_or_path = os.fspath(name_or_path)
        hub = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
        model = load_classifier(name_or_path, kwargs.pop("library", None), revision, token, **kwargs)
        head = cls(model.eval(), category_names=category_names)
        head.name_or_path = name_or_path
        head.card_data.base_model = name_or_path
        config, report = read_calibration(name_or_path, revision, token)
        head.cft_config = None if config is None else CFTConfig.from_dict(config)
        head.cft_report = None if report is None else CFTResult.from_dict(report, head.weight, head.bias)
        if report is not None:
            shape = (head.num_labels, head.hidden_size)
            head.original_rows = read_original_head(name_or_path, shape, revision, token)
        if image_processor is not None:
            head.image_processor = image_processor
        elif head.library != "timm":
            try:
                from transformers import AutoImageProcessor

                head.image_processor = AutoImageProcessor.from_pretrained(name_or_path, **hub)
            except (OSError, ValueError) as err:
                if not has_timm_data_config(head.model):
                    logger.warning("%s (%s)", head._missing_preprocessing_message(), err)
        return head
