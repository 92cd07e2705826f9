"""The CFT engine: batched per-category re-fitting of a linear classifier on known labels only."""

from . import variants  # noqa: F401 - registers the built-in variants
from .config import CFT_CONFIG_NAME, CFTConfig
from .engine import CFTEngine, choose_per_category, fit_cft
from .registry import VARIANTS, BlockTask, Variant, register_variant
from .result import CFT_REPORT_NAME, CategoryReport, CFTResult

__all__ = [
    "CFT_CONFIG_NAME",
    "CFT_REPORT_NAME",
    "BlockTask",
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
