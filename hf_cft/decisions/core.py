"""Decisions for a fitted result: the calibration folded into its rows and the per-category thresholds, both
from held-out known labels (the selection split the rows were chosen on, never the evaluation split)."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..engine.config import CFTConfig
from ..engine.inputs import split_inputs
from ..engine.views import Split
from ..metrics.pairs import scores_at_known
from ..sparse import KnownLabels, known_labels
from .platt import PlattFit, choose_calibration, fit_platt, fold
from .thresholds import choose_thresholds, parse_objective

logger = logging.getLogger(__name__)

__all__ = ["DECISIONS_KEY", "THRESHOLDS_ATTRIBUTE", "DecisionConfig", "heldout_split", "make_decisions",
           "result_thresholds"]

DECISIONS_KEY = "decisions"
"""The key of ``cft_report.json`` (and of :attr:`CFTResult.extra`) that holds the calibration and thresholds."""


THRESHOLDS_ATTRIBUTE = "cft_thresholds"
"""The ``config.json`` entry with the per-category thresholds (``model.config.cft_thresholds`` in transformers)."""


@dataclass
class DecisionConfig:
    """How a result's rows are calibrated and its thresholds chosen (see :mod:`hf_cft.decisions`)."""

    calibrate: bool = field(default=True, metadata={
        "help": "Fold a per-category Platt recalibration, fitted on the held-out known labels, into the rows "
                "(ranking metrics unchanged)."})
    calibration_prior: float | None = field(default=None, metadata={
        "help": "Pull of each category's calibration toward --calibration_center, in labels (0: none); default: "
                "chosen by 5-fold cross-validation of the held-out log-loss among no calibration, one pooled "
                "calibration, and per-category ones with priors 1, 5, 20, 100."})
    calibration_center: str = field(default="pooled", metadata={
        "help": "What a category with few held-out labels is calibrated like: 'pooled' (one scale and offset "
                "fitted on every category's held-out labels) or 'identity' (its row as it is)."})
    threshold_objective: str = field(default="f1", metadata={
        "help": "What each category's threshold maximizes on held-out known labels: f1, fbeta:<beta>, "
                "precision:<target> or recall:<target>."})
    threshold_shrinkage: float = field(default=5.0, metadata={
        "help": "Pull of each threshold toward the pooled one, in held-out positives (0: none)."})

    def __post_init__(self):
        parse_objective(self.threshold_objective)
        if self.calibration_center not in ("pooled", "identity"):
            raise ValueError(f"`calibration_center` must be 'pooled' or 'identity', got {self.calibration_center!r}")
        for name in ("calibration_prior", "threshold_shrinkage"):
            value = getattr(self, name)
            if value is None and name == "calibration_prior":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")


def heldout_split(config: CFTConfig, features, labels, label_mask, selection=None) -> Split:
    """The held-out split a fit chose its rows on: ``selection`` when given, else the config's seeded hold-out of
    the training images (the same rows :class:`~hf_cft.engine.CFTEngine` held out)."""
    return split_inputs(config, features, labels, label_mask, selection)[1]


def _pairs(split: Split) -> KnownLabels:
    """The split's known pairs, their rows indexing the split's whole feature array."""
    known = split.known if split.sparse else known_labels(split.labels.numpy(), split.mask.numpy())
    rows = known.rows if split.rows is None else split.rows.numpy()[known.rows]
    return KnownLabels(int(split.features.shape[0]), known.c, known.indptr, rows.astype(np.int64), known.values)


def make_decisions(result, heldout: Split, config: DecisionConfig | None = None):
    """``result`` with calibrated rows (when ``config.calibrate``) and thresholds, under
    ``result.extra["decisions"]``: the settings, per category the scale / shift folded in, the threshold, the
    held-out counts and why a category kept the identity or the pooled threshold. ``result`` is not modified."""
    config = config or DecisionConfig()
    known = _pairs(heldout)
    if known.c != result.weight.shape[0]:
        raise ValueError(f"the held-out labels have {known.c} categories but the result has "
                         f"{result.weight.shape[0]} rows")
    cols = known.columns()
    logits = scores_at_known(heldout.features, result.weight, result.bias, known).astype(np.float64)
    chosen_by, losses = "given", None
    if not config.calibrate:
        platt = PlattFit(np.ones(known.c), np.zeros(known.c), ["calibration off"] * known.c)
    elif config.calibration_prior is None:
        platt, chosen_by, losses = choose_calibration(logits, known.values, cols, known.c)
    else:
        platt = fit_platt(logits, known.values, cols, known.c, config.calibration_prior, config.calibration_center)
    weight, bias = fold(result.weight, result.bias, platt)
    thresholds, chosen = choose_thresholds(platt.probabilities(logits, cols), known.values, cols, known.c,
                                           config.threshold_objective, config.threshold_shrinkage)
    skipped = sum(s is not None for s in platt.skipped)
    if config.calibrate and skipped:
        logger.warning("calibration: %d of %d categories kept their rows' probabilities (no held-out positive or "
                       "negative to fit on); cft_report.json lists them", skipped, known.c)
    record = {"settings": dataclasses.asdict(config), "calibration": chosen_by, "calibration_cv_logloss": losses,
              "heldout_images": heldout.n,
              "heldout_known": known.known_counts().tolist(), "heldout_positives": known.positive_counts().tolist(),
              "scale": platt.scale.tolist(), "shift": platt.shift.tolist(), "calibration_notes": platt.skipped,
              "thresholds": thresholds.tolist(), **{f"threshold_{k}": v for k, v in chosen.items()}}
    return dataclasses.replace(result, weight=weight, bias=bias, extra={**result.extra, DECISIONS_KEY: record})


def result_thresholds(result) -> list[float] | None:
    """The per-category thresholds a result carries (None before :func:`make_decisions`)."""
    record = (result.extra or {}).get(DECISIONS_KEY) if result is not None else None
    return None if record is None else list(record["thresholds"])
