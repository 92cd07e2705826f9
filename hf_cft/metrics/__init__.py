"""Masked (known-labels-only) AP / AUROC in torch, and `evaluate` modules built on them."""

import os

from .core import (
    MacroScore,
    auroc,
    average_precision,
    macro_score,
    partial_auroc,
    partial_average_precision,
)

METRIC_DIR = os.path.dirname(os.path.abspath(__file__))
PARTIAL_MAP_PATH = os.path.join(METRIC_DIR, "partial_map")
PARTIAL_MAUC_PATH = os.path.join(METRIC_DIR, "partial_mauc")

__all__ = [
    "PARTIAL_MAP_PATH",
    "PARTIAL_MAUC_PATH",
    "MacroScore",
    "auroc",
    "average_precision",
    "macro_score",
    "partial_auroc",
    "partial_average_precision",
]
