"""Per-row selection: each row keeps its best version on the selection split and stops on its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BestTracker", "BlockOutcome"]


@dataclass
class BlockOutcome:
    """What a variant returns for one block of B categories."""

    weight: torch.Tensor  # B × d
    bias: torch.Tensor  # B
    best_score: torch.Tensor  # B
    best_step: torch.Tensor  # B (0: original row kept)
    steps_run: torch.Tensor  # B
    original: torch.Tensor | None = None  # B, selection score of the trained rows
    detail: list[str | None] | None = None  # per row, e.g. the chosen L2 strength


class BestTracker:
    """Best-so-far snapshot, best step and patience for every row of a block.

    The trained row is candidate 0 with its selection score; a later version replaces the snapshot only
    when it scores *strictly* higher. A row stops (its snapshot is frozen) after ``patience`` steps without
    improvement, exactly as if it had been run alone.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor, patience: int | None):
        self.weight = weight.detach().clone()
        self.bias = bias.detach().clone()
        self.score = score.detach().clone()
        b = score.shape[0]
        self.step = torch.zeros(b, dtype=torch.long, device=score.device)
        self.steps_run = torch.zeros(b, dtype=torch.long, device=score.device)
        self.stale = torch.zeros(b, dtype=torch.long, device=score.device)
        self.active = torch.ones(b, dtype=torch.bool, device=score.device)
        self.patience = patience or None

    def update(self, step: int, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor) -> bool:
        """Record step ``step``'s rows; returns True while any row is still running."""
        better = self.active & (score > self.score)
        if bool(better.any()):
            self.weight[better] = weight.detach()[better]
            self.bias[better] = bias.detach()[better]
            self.score = torch.where(better, score, self.score)
            self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        self.steps_run = torch.where(self.active, torch.full_like(self.steps_run, step), self.steps_run)
        self.stale = torch.where(better, torch.zeros_like(self.stale), self.stale + self.active.long())
        if self.patience is not None:
            self.active &= self.stale < self.patience
        return bool(self.active.any())

    def outcome(self) -> BlockOutcome:
        return BlockOutcome(self.weight, self.bias, self.score, self.step, self.steps_run)
