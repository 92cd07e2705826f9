"""`CFTConfig`: every setting of a CFT run, documented; its result settings saved as ``cft_config.json``.

The config holds the settings every variant shares (:class:`SharedSettings`) and, per registered variant, that
variant's options (its own dataclass, in ``config.options[name]``, checked by itself). Every option is also a
flat keyword and attribute of the config (``CFTConfig(variant="bp", epochs=10).epochs``), so the recipe's flags
and the shipped YAML files name them as before. Only the settings a result depends on are saved and compared
(:meth:`CFTConfig.to_dict`: the shared settings and the options of the chosen variants); the runtime settings
(:data:`RUNTIME_FIELDS`: the device and progress bars) say how a run ran and are not. The memory budget is a
result setting: it decides how categories are grouped into blocks, and a block's seed (the GA's draws) and
rounding follow its grouping.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..constants import CFT_CONFIG_NAME
from ..io import read_json, write_atomic
from .registry import AUTO, SHARED_NAMES, VARIANTS, LiveChoices, check_fraction, option_owner, variant_choices

logger = logging.getLogger(__name__)

__all__ = ["CFT_CONFIG_NAME", "COMMON_FIELDS", "RUNTIME_FIELDS", "CFTConfig", "Metric", "SelectionRule",
           "SharedSettings", "keyword_fields"]

Metric = Literal["ap", "auroc"]
SelectionRule = Literal["crossfit", "strict"]
POLICIES = ("u_ignore", "u_ones", "u_zeros")
METRICS = typing.get_args(Metric)
SELECTION_RULES = typing.get_args(SelectionRule)
RUNTIME_FIELDS = ("device", "show_progress")
"""Settings that say how a run ran: not saved, not compared. A block checkpoint's key holds the kind of device its
rows were computed on (a GPU rounds differently), not the setting."""


@dataclass(eq=False)
class SharedSettings:
    """The settings every variant shares: what is fitted, how rows are selected, how the run executes.

    Defaults are the paper's MS-COCO settings, with the reference code's early-stop patience of 300.
    """

    variant: str = field(
        default="bp",
        metadata={"choices": LiveChoices(variant_choices),
                  "help": "How each row is re-fitted: 'bp' (Adam on the asymmetric loss or an AUC surrogate), 'ga' "
                  "(batched genetic algorithm maximizing `metric`), 'pygad' (the same GA problem through PyGAD), "
                  "'refit' (L2 logistic regression solved to convergence, strength chosen on the selection split) "
                  "or 'auto' (run every variant of `auto_variants`; keep per category the best on selection)."},
    )
    metric: Metric = field(
        default="ap",
        metadata={"help": "Per-category score used for selection and as GA fitness: 'ap' (mAP datasets such as "
                  "COCO, OpenImages) or 'auroc' (mAUC datasets such as CheXpert)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the selection hold-out and of the GA."})
    selection_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of the training images held out (with `seed`) to choose each row's best version "
                  "when no selection split is given. Must be in (0, 1)."},
    )
    selection_rule: SelectionRule = field(
        default="crossfit",
        metadata={"help": "How a row is chosen: 'crossfit' (default: one step and shrinkage per variant, each "
                  "category's chosen on the other categories' selection labels and its gain scored on its own, "
                  "gains pooled across categories, replaced only where the posterior chance of a gain reaches "
                  "`selection_confidence`) or 'strict' (the paper's: the best selection score if strictly higher "
                  "than the trained row's)."},
    )
    selection_metric: Metric | None = field(
        default=None,
        metadata={"help": "Per-category score rows are selected by (early stopping, the crossfit rule's choice and "
                  "gains): 'ap' or 'auroc'; None: 'auroc' under the crossfit rule (a pairwise statistic over "
                  "every known positive-negative pair, far less noisy than AP with a handful of known positives "
                  "per category; see docs/selection.md), `metric` under the strict rule (the paper's)."},
    )
    selection_folds: int = field(default=5, metadata={"help": "crossfit, below 3 categories: folds of each "
                                                               "category's selection labels (stratified by label)."})
    selection_alphas: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        metadata={"help": "crossfit: shrinkage toward the new row, w = w0 + α·(w_new − w0); α = 0 (the trained row) "
                  "is always a candidate."},
    )
    selection_bootstrap: int = field(default=200, metadata={"help": "crossfit: paired bootstrap resamples for the "
                                                                     "standard error of each gain."})
    selection_confidence: float = field(
        default=0.9,
        metadata={"help": "crossfit: replace a row only where the posterior probability that its cross-fitted gain "
                  "is positive reaches this."},
    )
    patience: int | None = field(
        default=300,
        metadata={"help": "Stop a row after this many epochs/generations without a strictly better selection "
                  "score (None or 0: never stop early)."},
    )
    auto_variants: list[str] = field(
        default_factory=lambda: ["refit", "bp"],
        metadata={"choices": LiveChoices(lambda: tuple(VARIANTS)),
                  "help": "auto: the variants to run; each category keeps the original row or the candidate the "
                  "selection rule prefers (crossfit: one joint choice over every variant's candidates; strict: "
                  "the best selection score)."},
    )
    uncertain_policies: list[str] | None = field(
        default=None,
        metadata={"choices": POLICIES,
                  "help": "CheXpert greedy: uncertain-label policies to try per category ('u_ignore', 'u_ones', "
                  "'u_zeros'), chosen on the selection split together with the variant. Needs `uncertain_mask`."},
    )
    dense_threshold: float = field(
        default=0.5,
        metadata={"help": "A category whose known-label share of a split is at least this is scored as a masked "
                  "column of the shared feature matrix; below it its known rows are gathered into padded blocks "
                  "(memory grows with known pairs, never with N×C)."},
    )
    # --- Runtime (not saved) ---------------------------------------------------------------------------------
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'."})
    block_memory_mb: float = field(
        default=512.0,
        metadata={"help": "Memory budget of one block of categories (gathered features and candidate scores)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars."})
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Each registered variant's options (its own dataclass), by variant name."},
    )

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_selection(self)
        _check_execution(self)


def _check_choices(s: SharedSettings) -> None:
    """The variant, metrics, auto variants and uncertain-label policies name known things."""
    if s.variant not in variant_choices():
        raise ValueError(f"`variant` must be one of {variant_choices()}, got {s.variant!r}")
    if s.metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {s.metric!r}")
    if s.selection_metric is not None and s.selection_metric not in METRICS:
        raise ValueError(f"`selection_metric` must be one of {METRICS} or None, got {s.selection_metric!r}")
    s.auto_variants = list(s.auto_variants)
    bad = [v for v in s.auto_variants if v not in VARIANTS]
    if not s.auto_variants or bad:
        raise ValueError(f"`auto_variants` must name variants among {tuple(VARIANTS)}, got {s.auto_variants}")
    if s.uncertain_policies is not None:
        s.uncertain_policies = list(s.uncertain_policies)
        bad = [p for p in s.uncertain_policies if p not in POLICIES]
        if not s.uncertain_policies or bad:
            raise ValueError(f"`uncertain_policies` must name policies among {POLICIES}, got {s.uncertain_policies}")


def _check_selection(s: SharedSettings) -> None:
    """The selection rule and its settings are in range (``selection_alphas`` sorted, without repeats)."""
    if s.selection_rule not in SELECTION_RULES:
        raise ValueError(f"`selection_rule` must be one of {SELECTION_RULES}, got {s.selection_rule!r}")
    if s.selection_folds < 2:
        raise ValueError(f"`selection_folds` must be >= 2, got {s.selection_folds}")
    s.selection_alphas = sorted({float(a) for a in s.selection_alphas})
    if not s.selection_alphas or s.selection_alphas[0] <= 0 or s.selection_alphas[-1] > 1:
        raise ValueError(f"`selection_alphas` must be values in (0, 1], got {s.selection_alphas}")
    if s.selection_bootstrap < 2:
        raise ValueError(f"`selection_bootstrap` must be >= 2, got {s.selection_bootstrap}")
    if not 0.5 <= s.selection_confidence < 1:
        raise ValueError(f"`selection_confidence` must be in [0.5, 1), got {s.selection_confidence}")
    if not 0.0 < s.selection_fraction < 1.0:
        raise ValueError(f"`selection_fraction` must be in (0, 1), got {s.selection_fraction}")
    if s.patience is not None and s.patience < 0:
        raise ValueError(f"`patience` must be >= 0 or None, got {s.patience}")


def _check_execution(s: SharedSettings) -> None:
    """The device exists, the memory budget is positive, the dense threshold a share."""
    check_fraction(s, "dense_threshold")
    if s.device != "auto":
        try:
            torch.device(s.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"`device` must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', "
                             f"got {s.device!r}") from None
    if s.block_memory_mb <= 0:
        raise ValueError(f"`block_memory_mb` must be > 0, got {s.block_memory_mb}")


COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(SharedSettings) if f.name != "options")
"""The settings every run reads (not owned by a variant); the card shows the first group."""
RESULT_FIELDS = tuple(f for f in COMMON_FIELDS if f not in RUNTIME_FIELDS)
SHARED_NAMES.update(COMMON_FIELDS, {"options"})


class CFTConfig(SharedSettings):
    """How the classifier rows are re-fitted and selected: the shared settings and every variant's options.

    Every option of a registered variant is a keyword and an attribute (``CFTConfig(variant="refit",
    refit_l2=[0.1, 1.0]).refit_l2``); ``config.options[name]`` holds variant ``name``'s options dataclass.
    Defaults are the paper's MS-COCO settings (CFT-BP: ASL γ−=4, γ+=0, clip 0.05, Adam lr 1e-4, up to 5000 epochs;
    CFT-GA: population 50, up to 5000 generations) with the reference code's early-stop patience of 300, and the
    paper's CheXpert PyGAD settings for ``variant="pygad"``.

    Two configs are equal when their result settings are (:meth:`to_dict`): the runtime settings and the options
    of variants that do not run are not compared.
    """

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k not in SHARED_NAMES and option_owner(k) is not None}
        unknown = sorted(set(kwargs) - set(SHARED_NAMES))
        if unknown:
            raise TypeError(f"CFTConfig got unknown setting(s) {unknown}: neither a shared setting nor an option of a "
                            f"registered variant ({sorted(VARIANTS)}); see `hf_cft.engine.config.keyword_fields()`")
        super().__init__(*args, **kwargs)
        self.options = _build_options(options or {}, flat)

    def __getattr__(self, name: str) -> Any:  # only called when the normal lookup fails: an option's name
        for options in self.__dict__.get("options", {}).values():
            if name in getattr(options, "__dataclass_fields__", {}):
                return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        owner = option_owner(name) if name not in SHARED_NAMES else None
        if owner is not None and owner.name in self.__dict__.get("options", {}):
            setattr(self.options[owner.name], name, value)
        else:
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CFTConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, like a dataclass

    def __copy__(self) -> CFTConfig:
        """A copy with options of its own (a plain shallow copy would share ``options``: setting an option on the
        copy would change the original)."""
        return dataclasses.replace(self)

    @property
    def judged_by(self) -> Metric:
        """The metric rows are selected by: ``selection_metric``, or its rule's default."""
        if self.selection_metric is not None:
            return self.selection_metric
        return "auroc" if self.selection_rule == "crossfit" else self.metric

    def chosen_variants(self) -> list[str]:
        """The variants a run with this config fits: ``variant``, or ``auto``'s ``auto_variants``."""
        return list(self.auto_variants) if self.variant == AUTO else [self.variant]

    def to_dict(self) -> dict[str, Any]:
        """The settings the result depends on, flat: the shared ones (without :data:`RUNTIME_FIELDS`) and the
        options of the chosen variants. What ``cft_config.json`` and the report hold, and what a finished block's
        checkpoint is keyed by (:func:`~hf_cft.engine.checkpoint.block_key`)."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in RESULT_FIELDS}
        for name in self.chosen_variants():
            out.update(dataclasses.asdict(self.options[name]))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CFTConfig:
        """Build from a dict; runtime settings (saved by older versions) are ignored, keys this version does not
        know are dropped with a warning."""
        data = {k: v for k, v in data.items() if k not in RUNTIME_FIELDS}
        unknown = sorted(k for k in data if k not in RESULT_FIELDS and option_owner(k) is None)
        if unknown:
            logger.warning("Ignoring unknown CFTConfig keys (saved by another version?): %s", ", ".join(unknown))
        if "metric" in data and "selection_metric" not in data:  # saved before it existed: selected by `metric`
            logger.warning("this CFTConfig has no `selection_metric`: read as saved before it existed, rows selected "
                           "by `metric` (%s); set `selection_metric` (None: AUROC under the crossfit rule) to choose",
                           data["metric"])
            data["selection_metric"] = data["metric"]
        return cls(**{k: v for k, v in data.items() if k not in unknown})

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``cft_config.json`` into ``directory`` (atomically) and return its path."""
        os.makedirs(directory, exist_ok=True)
        return write_atomic(os.path.join(directory, CFT_CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CFTConfig:
        """Read a ``cft_config.json`` file, or the one inside a folder."""
        if os.path.isdir(path):
            path = os.path.join(path, CFT_CONFIG_NAME)
        return cls.from_dict(read_json(path))


def _build_options(given: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Every registered variant's options: copied from ``given`` (by variant name), the ``flat`` keywords applied;
    each dataclass checks its own fields."""
    out = {}
    for name, variant in VARIANTS.items():
        base = given.get(name)
        values = {} if base is None else {f: copy.deepcopy(getattr(base, f)) for f in variant.fields}
        values.update({k: v for k, v in flat.items() if k in variant.fields})
        out[name] = variant.options(**values)
    return out


def keyword_fields() -> list[tuple[dataclasses.Field, Any]]:
    """Every keyword of :class:`CFTConfig` with its resolved type, in ``--help`` order: the shared result settings,
    the options of each registered variant, then the runtime settings (the recipe's flags)."""
    hints = typing.get_type_hints(SharedSettings)
    shared = [f for f in dataclasses.fields(SharedSettings) if f.name != "options"]
    out = [(f, hints[f.name]) for f in shared if f.name not in RUNTIME_FIELDS]
    for variant in VARIANTS.values():
        own = typing.get_type_hints(variant.options)
        out += [(f, own[f.name]) for f in dataclasses.fields(variant.options)]
    return out + [(f, hints[f.name]) for f in shared if f.name in RUNTIME_FIELDS]
