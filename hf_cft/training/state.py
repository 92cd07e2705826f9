"""What a run works with: its data (:class:`TrainData`), what it carries from epoch to epoch and checkpoints
(:class:`TrainState`), and the fixed context every step of an epoch reads (:class:`Run`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .arguments import TrainArguments

logger = logging.getLogger(__name__)

__all__ = ["Run", "TrainData", "TrainState", "initial_state"]


@dataclass
class TrainData:
    """The training split's labels as the trainer uses them (the uncertain policy applied), and its splits."""

    ds: Any  # the DatasetDict
    names: list[str]
    labels: np.ndarray  # N × C float32
    mask: np.ndarray  # N × C bool
    uncertain: np.ndarray  # N × C bool
    dataset_config: dict
    fit_rows: np.ndarray | None = None
    val_rows: np.ndarray | None = None
    eval_columns: list[int] | None = None  # the categories the metrics average over (None: all)

    @property
    def train(self):
        return self.ds["train"]


@dataclass
class TrainState:
    """What a checkpoint holds besides accelerate's state: progress, history, CL pseudo-labels, Selective prior."""

    epoch: int
    best_score: float | None
    best_epoch: int | None
    history: list[dict]
    pseudo: dict[str, torch.Tensor]
    prior: torch.Tensor

    def progress(self) -> dict:
        """The JSON part (``trainer_state.json``)."""
        return {"epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "history": self.history}


@dataclass
class Run:
    """The fixed context of a run that the steps of an epoch read: its arguments, accelerator, data, the
    evaluation preprocessing ``(size, mean, std)`` of its model and its trackers (``--report_to``; None: none)."""

    args: TrainArguments
    accelerator: Any
    data: TrainData
    preprocessing: tuple
    trackers: Any = None  # hf_cft.tracking.Trackers


def initial_state(data: TrainData) -> TrainState:
    """Epoch 0: the given labels as CL pseudo-labels and, as the Selective prior, their known positive share over
    the rows trained on (``fit_rows``; all rows when unset), never the held-out validation rows."""
    rows = data.fit_rows if data.fit_rows is not None else slice(None)
    labels, mask = data.labels[rows], data.mask[rows]
    prior = torch.from_numpy(np.where(mask, labels, 0).sum(0) / np.maximum(mask.sum(0), 1)).float()
    return TrainState(0, None, None, [], {"labels": torch.from_numpy(data.labels.copy()),
                                          "mask": torch.from_numpy(data.mask.copy())}, prior)
