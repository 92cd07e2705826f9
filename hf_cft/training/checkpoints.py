"""Checkpoints of a run: ``output_dir/checkpoints/epoch_<n>`` (accelerate's state, ``trainer_state.json`` and the
pseudo-labels), written atomically each epoch and read back by ``--resume_from_checkpoint``."""

from __future__ import annotations

import json
import logging
import os
import re

from safetensors.torch import load_file, save_file

from ..constants import PSEUDO_LABELS_NAME, TRAINER_STATE_NAME
from ..io import read_json, recover_model_dir, swap_in
from .arguments import TrainArguments
from .state import TrainState

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINTS", "checkpoint", "complete_checkpoints", "resume"]

CHECKPOINTS = "checkpoints"  # the folder of output_dir that holds the per-epoch states


def checkpoint(accelerator, state: TrainState, root: str) -> str:
    """Save accelerate's state and ours as ``<root>/epoch_<n>``, atomically; every process waits for it.

    Everything is written to ``epoch_<n>.tmp``; once every process has written its part, the main process moves
    it in place (:func:`hf_cft.io.swap_in`). A kill at any point leaves no incomplete ``epoch_<n>``, so
    ``--resume_from_checkpoint latest`` resumes from the last complete epoch. Returns the path.
    """
    path = os.path.join(root, f"epoch_{state.epoch}")
    tmp = path + ".tmp"
    if accelerator.is_main_process:
        recover_model_dir(path)  # what a killed save left: a stale .tmp removed, an .old moved back
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        # plain writes: the folder is moved in place only once complete
        with open(os.path.join(tmp, TRAINER_STATE_NAME), "w", encoding="utf-8") as f:
            json.dump(state.progress(), f)
        save_file({"labels": state.pseudo["labels"].contiguous(), "mask": state.pseudo["mask"].contiguous(),
                   "prior": state.prior.contiguous()}, os.path.join(tmp, PSEUDO_LABELS_NAME))
    accelerator.wait_for_everyone()  # every process's part (its random states) is in the folder
    if accelerator.is_main_process:
        swap_in(tmp, path)
    accelerator.wait_for_everyone()
    return path


def resume(args: TrainArguments, accelerator, state: TrainState) -> TrainState:
    """The state of ``--resume_from_checkpoint`` (a folder or ``latest``), accelerate's part loaded in place."""
    if not args.resume_from_checkpoint:
        return state
    path = args.resume_from_checkpoint
    if path == "latest":
        root = os.path.join(args.output_dir, CHECKPOINTS)
        done = complete_checkpoints(root)
        if not done:
            raise FileNotFoundError(f"no checkpoint in {root} to resume from (incomplete ones are skipped)")
        path = done[-1]
    accelerator.load_state(path)
    progress = read_json(os.path.join(path, TRAINER_STATE_NAME))
    extra = load_file(os.path.join(path, PSEUDO_LABELS_NAME))
    accelerator.print(f"resumed from {path} (epoch {progress['epoch']})")
    return TrainState(progress["epoch"], progress["best_score"], progress["best_epoch"], progress["history"],
                      {"labels": extra["labels"], "mask": extra["mask"]}, extra["prior"])


def complete_checkpoints(root: str) -> list[str]:
    """The complete ``<root>/epoch_<n>`` folders, oldest first: a ``.tmp`` (a save killed half-way) is skipped,
    and so is a folder without its trainer state files."""
    if not os.path.isdir(root):
        return []
    epochs = sorted(int(m.group(1)) for d in os.listdir(root) if (m := re.fullmatch(r"epoch_(\d+)", d)))
    paths = [os.path.join(root, f"epoch_{n}") for n in epochs]
    return [p for p in paths if all(os.path.isfile(os.path.join(p, f)) for f in (TRAINER_STATE_NAME,
                                                                                   PSEUDO_LABELS_NAME))]
