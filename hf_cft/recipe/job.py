"""The small objects the recipe's steps pass: the loaded job, and what calibrating it gave."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .arguments import RecipeArguments

logger = logging.getLogger(__name__)

__all__ = ["Job", "Outcome"]


@dataclass(frozen=True)
class Job:
    """What every step after loading shares: the arguments, the accelerator, the model and the data."""

    recipe: RecipeArguments
    accelerator: Any  # accelerate.Accelerator
    model_path: str  # the model calibrated (given, or the baseline trained)
    ds: Any  # the datasets.DatasetDict
    names: list[str]  # category names, in the model's order
    head: Any  # the CFTHead
    features_of: Callable  # split -> N×d features (cached)


@dataclass(frozen=True)
class Outcome:
    """The variants' results, the one the model keeps, and their scores on the evaluation split."""

    results: dict  # variant -> CFTResult
    kept: str  # the variant written to the model
    selection_on_eval: bool  # rows were selected on the evaluation split (stated in the card)
    table: list[dict]  # the before / after rows
    scores: dict  # method -> its hf_cft.evaluation.SplitScores on the evaluation split
    decisions: dict | None = None  # the decisions' figures for the card (recipe.scoring.decision_figures)
