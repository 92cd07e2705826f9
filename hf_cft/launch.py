"""What every ``accelerate launch`` recipe's ``main`` shares: one failing process ends them all, loudly."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

__all__ = ["entrypoint"]

F = TypeVar("F", bound=Callable)


def entrypoint(main: F) -> F:
    """Wrap a recipe's ``main`` for multi-process runs.

    An exception on any process is printed there with its rank, written to the launcher's error file
    (torch elastic's ``record``, so the launcher's summary names the root cause, not the peers' lost
    connections) and ends that process with a non-zero exit; the launcher then stops every other process,
    including ranks waiting at a collective, instead of leaving them until the collective's timeout.
    After a run that succeeded, every process meets at a barrier and the process group is destroyed, so no
    rank exits while a peer still talks to it (an exit with a live group can abort the process).
    """
    from torch.distributed.elastic.multiprocessing.errors import record

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            out = main(*args, **kwargs)
        except BaseException as err:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world > 1 and not isinstance(err, SystemExit):
                rank = os.environ.get("RANK", "?")
                sys.stderr.write(f"\nhf_cft: process {rank} of {world} failed: {type(err).__name__}: {err}\n")
                sys.stderr.flush()
            raise
        end_process_group()
        return out

    return record(wrapped)


def end_process_group() -> None:
    """Meet every peer at a barrier and destroy the default process group (no-op when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
