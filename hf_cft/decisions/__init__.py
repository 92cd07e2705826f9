"""Decisions a user can act on: probabilities that mean what they say and a yes / no threshold per category.

After the rows are chosen, :func:`make_decisions` fits per category a Platt recalibration ``σ(a·z + c)`` on
held-out known labels (:mod:`~hf_cft.decisions.platt`; ``a > 0``, shrunk toward the identity) and folds it into
the row, so the saved model is still a plain linear head and its ranking (AP, AUROC) is unchanged; then it
chooses per category the threshold that maximizes F1 (or F-beta, or reaches a precision / recall target) on the
same held-out labels, shrunk toward a pooled threshold where a category has few positives
(:mod:`~hf_cft.decisions.thresholds`). The thresholds are saved in the model's ``config.json`` as
``cft_thresholds`` (one per category, in ``id2label`` order) and in ``cft_report.json``.
"""

from .core import DECISIONS_KEY, THRESHOLDS_ATTRIBUTE, DecisionConfig, heldout_split, make_decisions, result_thresholds
from .platt import MIN_SCALE, PlattFit, fit_platt, fold
from .thresholds import Objective, choose_thresholds, parse_objective

__all__ = ["DECISIONS_KEY", "MIN_SCALE", "THRESHOLDS_ATTRIBUTE", "DecisionConfig", "Objective", "PlattFit",
           "choose_thresholds", "fit_platt", "fold", "heldout_split", "make_decisions", "parse_objective",
           "result_thresholds"]
