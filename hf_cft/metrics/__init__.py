"""Masked (known-labels-only) AP / AUROC in torch, and `evaluate` modules built on them.

Layout (each module imports only those above it):

- :mod:`~hf_cft.metrics.ranking`: AP / AUROC along the last dimension of any tensor (the fast CPU path),
  multisets for the bootstrap, :class:`MacroScore` / :func:`macro_score`.
- :mod:`~hf_cft.metrics.pairs`: the same metrics from known (image, category) pairs, never N×C.
- :mod:`~hf_cft.metrics.partial`: the macro metrics of N×C scores, dense or sparse labels, and what the
  ``evaluate`` modules compute (:func:`~hf_cft.metrics.partial.compute_partial_metric`).
- :mod:`~hf_cft.metrics.decision`: F1 at per-category thresholds, ECE and Brier score of probabilities on
  known pairs.
- :mod:`~hf_cft.metrics.evaluate_modules` with ``partial_map/``, ``partial_mauc/``, ``partial_f1/``,
  ``partial_ece/``, ``partial_brier/``: the ``evaluate`` modules (``evaluate.load(PARTIAL_MAP_PATH)``); not
  imported here.

Scoring rows or a model on a split is :mod:`hf_cft.evaluation`.
"""

import os

from .partial import partial_auroc, partial_average_precision
from .ranking import METRICS, MacroScore, auroc, average_precision, counted_metric, macro_score

METRIC_DIR = os.path.dirname(os.path.abspath(__file__))
PARTIAL_MAP_PATH = os.path.join(METRIC_DIR, "partial_map")
PARTIAL_MAUC_PATH = os.path.join(METRIC_DIR, "partial_mauc")
PARTIAL_F1_PATH = os.path.join(METRIC_DIR, "partial_f1")
PARTIAL_ECE_PATH = os.path.join(METRIC_DIR, "partial_ece")
PARTIAL_BRIER_PATH = os.path.join(METRIC_DIR, "partial_brier")

__all__ = [
    "METRICS",
    "PARTIAL_BRIER_PATH",
    "PARTIAL_ECE_PATH",
    "PARTIAL_F1_PATH",
    "PARTIAL_MAP_PATH",
    "PARTIAL_MAUC_PATH",
    "MacroScore",
    "auroc",
    "average_precision",
    "counted_metric",
    "macro_score",
    "partial_auroc",
    "partial_average_precision",
]
