"""The CFT engine: batched per-category re-fitting of a linear classifier on known labels only."""

from .config import CFT_CONFIG_NAME, CFTConfig
from .core import CFTEngine, choose_per_category, fit_cft
from .result import CFT_REPORT_NAME, CategoryReport, CFTResult
from .variants import VARIANTS, Variant, register_variant

__all__ = [
    "CFT_CONFIG_NAME",
    "CFT_REPORT_NAME",
    "CFTConfig",
    "CFTEngine",
    "CFTResult",
    "CategoryReport",
    "VARIANTS",
    "Variant",
    "choose_per_category",
    "fit_cft",
    "register_variant",
]
