"""The ``evaluate`` metric class behind ``partial_map`` and ``partial_mauc`` (imports ``evaluate``, ``datasets``).

Each module folder (``metrics/partial_map/partial_map.py``, ``metrics/partial_mauc/partial_mauc.py``) holds a
thin subclass that sets :attr:`PartialMetric.KIND`. ``evaluate.load`` copies such a script into its cache, so
the script imports this module by its absolute name, as a module (``import hf_cft.metrics.evaluate_modules as
shared``): a class imported by name into the script would be the first metric class ``evaluate`` finds there.
This module is not imported by :mod:`hf_cft.metrics`, which stays free of ``evaluate``.
"""

from __future__ import annotations

import datasets
import evaluate

from .decision import compute_decision_metric
from .partial import METRIC_KEYS, compute_partial_metric

__all__ = ["DecisionMetric", "PartialMetric"]

_DESCRIPTION = """
Macro mean of per-category {what} computed on known labels only. References are label codes
(1 positive, 0 negative, -1 unknown); categories without a known positive and a known negative are excluded
and counted. Ties are handled as scikit-learn's {sklearn} does. Options: `categories` (a subset,
by index or name with `category_names`), `groups` ({groups}
count, ordered by `known_counts` when given).
"""
_WHAT = {
    "ap": ("average precision", "average_precision_score", "e.g. 5 for the OpenImages G1-G5 groups by known-label"),
    "auroc": ("AUROC", "roc_auc_score", "groups by known-label"),
}

_KWARGS_DESCRIPTION = """
Args:
    predictions: N x C scores.
    references: N x C label codes (1, 0, -1 unknown).
    categories: optional subset of categories (indices or names).
    category_names: optional C names in order.
    groups: optional number of groups by known-label count (OpenImages: 5).
    known_counts: optional per-category known-label counts ordering the groups (default: counted here).
    pair_categories, num_categories: the sparse form: predictions and references are then one score and one
        label (1 / 0) per known pair, pair_categories its category index, num_categories C (no N x C array).
Returns:
    {key}, n_categories, n_excluded, per_category, and G1..Gk when groups is set.
"""

_CITATION = """
@article{cft2024,
  title={Category-wise Fine-Tuning: Resisting Incorrect Pseudo-Labels in Multi-Label Image Classification
         with Partial Labels},
  year={2024},
  eprint={2401.16991},
  archivePrefix={arXiv}
}
"""


class PartialMetric(evaluate.Metric):
    """Macro AP (``KIND = "ap"``) or AUROC (``"auroc"``) on known labels; see :func:`compute_partial_metric`."""

    KIND = "ap"

    def _info(self):
        what, sklearn, groups = _WHAT[self.KIND]
        return evaluate.MetricInfo(
            description=_DESCRIPTION.format(what=what, sklearn=sklearn, groups=groups),
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION.format(key=METRIC_KEYS[self.KIND]),
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("int8")),
                    }
                ),
                datasets.Features(  # sparse form: one known pair per entry (with pair_categories)
                    {
                        "predictions": datasets.Value("float64"),
                        "references": datasets.Value("int8"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, pair_categories=None, num_categories=None, **options):
        return compute_partial_metric(self.KIND, predictions, references, pair_categories, num_categories,
                                      **options)


_DECISION_DESCRIPTION = {
    "f1": "Macro F1 over categories with a known positive, on known labels only, a label predicted positive when "
          "its probability is at least its category's threshold (`thresholds`, default 0.5; `beta` for F-beta); "
          "also the micro F1 over every known pair.",
    "ece": "Macro expected calibration error over categories with known labels: per category, 15 equal-width "
           "probability bins, the count-weighted mean of |mean label - mean probability| (`bins` to change).",
    "brier": "Macro Brier score over categories with known labels: per category, the mean squared difference "
             "between probability and known label.",
}


class DecisionMetric(evaluate.Metric):
    """Macro F1 at thresholds (``KIND = "f1"``), ECE (``"ece"``) or Brier score (``"brier"``) of probabilities
    on known labels; see :func:`~hf_cft.metrics.decision.compute_decision_metric`."""

    KIND = "f1"

    def _info(self):
        return evaluate.MetricInfo(
            description=_DECISION_DESCRIPTION[self.KIND], citation=_CITATION,
            inputs_description="predictions: N x C probabilities; references: N x C label codes (1, 0, -1 "
                               "unknown); or the pair form with pair_categories and num_categories.",
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                   "references": datasets.Sequence(datasets.Value("int8"))}),
                datasets.Features({"predictions": datasets.Value("float64"),
                                   "references": datasets.Value("int8")}),
            ],
        )

    def _compute(self, predictions, references, pair_categories=None, num_categories=None, **options):
        return compute_decision_metric(self.KIND, predictions, references, pair_categories, num_categories,
                                       **options)
