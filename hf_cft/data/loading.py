"""How images are read in parallel: the ``DataLoader`` settings shared by feature extraction and the trainer."""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["MAX_DEFAULT_WORKERS", "available_cores", "default_num_workers", "loader_options"]

MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """The cores this process may run on (:func:`available_cores`), at most 8."""
    return min(MAX_DEFAULT_WORKERS, available_cores())


def loader_options(num_workers: int | None, device=None, reused: bool = False) -> dict[str, Any]:
    """``DataLoader`` keywords: ``num_workers`` (None: :func:`default_num_workers`), ``pin_memory`` when the
    batches go to a CUDA ``device``, ``persistent_workers`` for a loader iterated again (``reused``) when there are
    workers.

    A loader read once keeps no workers: they end with its pass. Persistent workers live until the loader is
    garbage collected, and when that happens inside a reference cycle, ``DataLoader`` may wait 5 s per worker
    for them to stop (measured: 10 s with 2 workers).
    """
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"`num_workers` must be >= 0 (0: read images in the main process), got {num_workers}")
    cuda = device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda"
    return {"num_workers": workers, "pin_memory": cuda, "persistent_workers": reused and workers > 0}
