"""hf_cft: Category-wise Fine-Tuning of multi-label image classifiers trained on partially labeled data."""

from . import labels, metrics
from .engine import CategoryReport, CFTConfig, CFTEngine, CFTResult, choose_per_category, fit_cft
from .metrics import partial_auroc, partial_average_precision

__version__ = "0.1.0"

__all__ = [
    "CFTConfig",
    "CFTEngine",
    "CFTResult",
    "CategoryReport",
    "__version__",
    "choose_per_category",
    "fit_cft",
    "labels",
    "metrics",
    "partial_auroc",
    "partial_average_precision",
]
