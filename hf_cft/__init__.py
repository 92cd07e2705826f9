"""hf_cft: Category-wise Fine-Tuning of multi-label image classifiers trained on partially labeled data.

``import hf_cft`` is light: every public name is imported on first use (torch, transformers and datasets load
only when a name that needs them is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "CFTConfig": ".engine",
    "CFTEngine": ".engine",
    "CFTResult": ".engine",
    "CategoryReport": ".engine",
    "choose_per_category": ".engine",
    "fit_cft": ".engine",
    "CFTHead": ".head",
    "DecisionConfig": ".decisions",
    "make_decisions": ".decisions",
    "predict_labels": ".predict",
    "load_partial_dataset": ".data",
    "partial_auroc": ".metrics",
    "partial_average_precision": ".metrics",
}
_SUBMODULES = ("card", "constants", "data", "decisions", "engine", "evaluation", "features", "head", "hub", "io",
               "labels", "losses", "metrics", "modeling", "predict", "recipe", "training")

__all__ = [
    "CFTConfig",
    "CFTEngine",
    "CFTHead",
    "CFTResult",
    "CategoryReport",
    "DecisionConfig",
    "__version__",
    "choose_per_category",
    "fit_cft",
    "labels",
    "load_partial_dataset",
    "make_decisions",
    "metrics",
    "partial_auroc",
    "partial_average_precision",
    "predict_labels",
]

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from . import labels, metrics
    from .data import load_partial_dataset
    from .decisions import DecisionConfig, make_decisions
    from .engine import CategoryReport, CFTConfig, CFTEngine, CFTResult, choose_per_category, fit_cft
    from .head import CFTHead
    from .metrics import partial_auroc, partial_average_precision
    from .predict import predict_labels


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'hf_cft' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
