"""Per-split build statistics: images kept and skipped (and why), known labels per category.

Counted while a builder generates its examples (:class:`SplitStats`, a mixin of
:class:`~hf_cft.data.builder.PartialBuilder`), written beside the build as ``hf_cft_partial_stats.json`` and
read back into each split's info (:func:`~hf_cft.data.columns.partial_info`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..io import read_json, write_json

logger = logging.getLogger(__name__)

__all__ = ["STATS_NAME", "SplitStats", "read_stats", "write_stats"]

STATS_NAME = "hf_cft_partial_stats.json"


class SplitStats:
    """The counting methods of a builder (which gives ``categories()``); the counts live in ``self._stats``."""

    def _stats_for(self, split: str) -> dict[str, Any]:
        if not hasattr(self, "_stats"):
            self._stats: dict[str, dict[str, Any]] = {}
        return self._stats.setdefault(split, {"images": 0, "known": 0, "positives": 0, "skipped": {}})

    def _count(self, split: str, labels: np.ndarray, mask: np.ndarray, **extra: int) -> None:
        s = self._stats_for(split)
        s["images"] += 1
        s["known"] += int(mask.sum())
        s["positives"] += int((labels.astype(bool) & mask).sum())
        if "known_per_category" not in s:
            s["known_per_category"] = np.zeros(mask.shape[0], dtype=np.int64)
        s["known_per_category"] += mask
        for k, v in extra.items():
            s[k] = s.get(k, 0) + v

    def _count_pairs(self, split: str, positives: np.ndarray, negatives: np.ndarray) -> None:
        """:meth:`_count` for an image given by its known pairs: memory and time follow its pairs only."""
        s = self._stats_for(split)
        s["images"] += 1
        s["known"] += int(positives.size + negatives.size)
        s["positives"] += int(positives.size)
        if "known_per_category" not in s:
            s["known_per_category"] = np.zeros(len(self.categories()), dtype=np.int64)
        s["known_per_category"][positives] += 1
        s["known_per_category"][negatives] += 1

    def _skip(self, split: str, reason: str, example: str | None = None) -> None:
        """Count an image left out for ``reason``; ``example``: its file (the first one is kept and shown)."""
        s = self._stats_for(split)
        s["skipped"][reason] = s["skipped"].get(reason, 0) + 1
        if example is not None:
            s.setdefault("skipped_example", {}).setdefault(reason, example)

    def _empty_split_lines(self, split: str) -> list[str]:
        """Why a split has no example: the skip counts and the first skipped file of each reason."""
        s = self._stats_for(split)
        why = ", ".join(f"{n} × {r}" for r, n in s["skipped"].items()) or "its source lists no image"
        lines = [f"{getattr(self, 'dataset_name', None) or self.name}: the {split} split has no examples "
                 f"({why})."]
        for reason, path in s.get("skipped_example", {}).items():
            lines.append(f"First {reason}: {path}")
        if "missing image file" in s["skipped"]:
            lines.append("Are the images downloaded, and where the builder looks for them (`data_dir`, or "
                         "`image_dir` / `image_extension` where the builder has them)?")
        return lines


def write_stats(folder: str, stats: dict[str, dict[str, Any]], c: int) -> None:
    """The counts of every split (with the achieved known-label ratio) as ``folder/STATS_NAME``."""
    out = {}
    for split, s in stats.items():
        n = max(s["images"], 1)
        out[split] = {
            **{k: v for k, v in s.items() if k != "known_per_category"},
            "achieved_known_ratio": s["known"] / (n * c),
            "known_per_category": [int(v) for v in s.get("known_per_category", np.zeros(c))],
        }
    write_json(os.path.join(folder, STATS_NAME), out)


def read_stats(folder: str) -> dict[str, dict[str, Any]]:
    """What :func:`write_stats` wrote in ``folder`` (empty when nothing was)."""
    path = os.path.join(folder, STATS_NAME)
    if not os.path.exists(path):
        return {}
    return read_json(path)
