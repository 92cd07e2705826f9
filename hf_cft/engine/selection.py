"""Per-row selection: the candidates of each row recorded and judged, so that noise is not mistaken for a gain.

Every variant produces, per category, a trajectory of candidate rows (epochs, generations, L2 strengths).
Two rules turn it into a decision (``CFTConfig.selection_rule``):

* ``"strict"`` (the paper's): keep the candidate with the best selection score if it is strictly higher
  than the trained row's. The best of thousands of candidates on a small split is biased upward (the
  winner's curse), so this rule also keeps noise.
* ``"crossfit"`` (default), in three steps:

  1. *Record*: each row's trajectory is kept at a log-spaced grid of steps (every λ for ``refit``).
  2. *Choose, shared across categories*: a candidate is a grid step g and a shrinkage α toward the trained
     row (``w = w₀ + α·(w_g − w₀)``; logits interpolate linearly; α = 0 is the trained row). One (g, α) is
     chosen per variant, maximizing the mean over categories of the selection metric (``judged_by``: AUROC
     by default): a few dozen options judged on every category's labels at once, instead of thousands judged
     per category on a handful of positives.
  3. *Judge out of sample, pool, decide*: each category's (g, α) is chosen again on the *other* categories'
     labels and its gain over the trained row scored on all of its own (below 3 categories: on K stratified
     folds of its images, each scored with the choice made without it), with a stratified paired-bootstrap
     standard error. The gains of all categories are then pooled (normal–normal empirical Bayes: their
     spread beyond the noise says how much categories differ, their mean whether the variant helps at all)
     and a row is replaced only where the posterior probability of a positive gain reaches
     ``selection_confidence``.

This module records and judges the candidates (trackers, judge, the listing of the selection labels);
:mod:`hf_cft.engine.crossfit` holds steps 2 and 3 of the crossfit rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BestTracker", "BlockOutcome", "GridTracker", "Judge", "SelectionFolds", "grid_steps", "listed_labels",
           "record_block"]


def grid_steps(max_steps: int) -> list[int]:
    """Log-spaced steps at which a crossfit trajectory is recorded: 1, 3, 10, 30, …, and the last step."""
    steps, k = [], 0
    while True:
        for m in (1, 3):
            s = m * 10**k
            if s >= max_steps:
                return sorted(set(steps + [max(1, max_steps)]))
            steps.append(s)
        k += 1


@dataclass
class BlockOutcome:
    """What a block of B categories contributes.

    ``strict``: the kept candidate per row (``weight``, ``bias``, its score and step). ``crossfit``: the
    recorded trajectory per row (``grid_weight`` B×G×d, ``grid_bias`` B×G) and the selection scores of the
    trained row and of every recorded candidate, listed positives first (``listed`` B×(G+1)×Lk), with each
    row's positives, known count and folds; the candidate is chosen later, across all categories.
    """

    weight: torch.Tensor  # B × d (strict: the kept row; crossfit: the trained row)
    bias: torch.Tensor  # B
    best_score: torch.Tensor  # B
    best_step: torch.Tensor  # B
    steps_run: torch.Tensor  # B
    original: torch.Tensor | None = None  # B, selection score of the trained row
    grid_weight: torch.Tensor | None = None  # B × G × d
    grid_bias: torch.Tensor | None = None  # B × G
    grid_step: torch.Tensor | None = None  # G
    listed: torch.Tensor | None = None  # B × (G+1) × Lk
    n_pos: torch.Tensor | None = None  # B
    n_known: torch.Tensor | None = None  # B
    folds: torch.Tensor | None = None  # B × Lk
    detail: list[str | None] | None = None
    notes: list[str | None] | None = None  # the runner's words per category (BlockTask.notes)

    TENSORS = ("weight", "bias", "best_score", "best_step", "steps_run", "original")
    GRID = ("grid_weight", "grid_bias", "grid_step", "listed", "n_pos", "n_known", "folds")


class BestTracker:
    """Best-so-far snapshot, best step and patience for every row of a block (the strict rule).

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
        self.original = self.score.clone()

    def _better(self, step: int, weight, bias, score) -> torch.Tensor:
        better = self.active & (score > self.score)  # NaN never wins
        if bool(better.any()):
            self.weight[better] = weight.detach()[better]
            self.bias[better] = bias.detach()[better]
            self.score = torch.where(better, score, self.score)
            self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        return better

    def update(self, step: int, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor) -> bool:
        """Record step ``step``'s rows (B×d, B) and their selection scores (B); True while any row runs."""
        better = self._better(step, weight, bias, score)
        self.steps_run = torch.where(self.active, torch.full_like(self.steps_run, step), self.steps_run)
        self.stale = torch.where(better, torch.zeros_like(self.stale), self.stale + self.active.long())
        if self.patience is not None:
            self.active &= self.stale < self.patience
        return bool(self.active.any())

    def update_row(self, i: int, step: int, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor) -> bool:
        """:meth:`update` for row ``i`` alone (``weight`` d, ``bias`` and ``score`` scalars); True while it runs."""
        if not bool(self.active[i]):
            return False
        if bool(score > self.score[i]):
            self.weight[i], self.bias[i], self.score[i], self.step[i] = weight, bias, score, step
            self.stale[i] = 0
        else:
            self.stale[i] += 1
        self.steps_run[i] = step
        if self.patience is not None and int(self.stale[i]) >= self.patience:
            self.active[i] = False
        return bool(self.active[i])

    def outcome(self) -> BlockOutcome:
        return BlockOutcome(self.weight, self.bias, self.score, self.step, self.steps_run, self.original)


class GridTracker(BestTracker):
    """The crossfit rule's tracker: each row's version at every step of ``grid`` (a row that has stopped keeps
    the version it stopped with there), with the strict rule's patience on the whole selection split."""

    def __init__(self, weight, bias, score, patience, grid: list[int]):
        super().__init__(weight, bias, score, patience)
        self.grid = list(grid)
        self._slot = {s: g for g, s in enumerate(self.grid)}
        self.trained_w, self.trained_b = weight.detach().clone(), bias.detach().clone()
        self.last_w, self.last_b = weight.detach().clone(), bias.detach().clone()
        self.grid_w = weight.detach().unsqueeze(1).repeat(1, len(grid), 1)
        self.grid_b = bias.detach().unsqueeze(1).repeat(1, len(grid))
        self.recorded = torch.zeros(weight.shape[0], dtype=torch.long)  # grid slots filled, per row

    def update(self, step, weight, bias, score) -> bool:
        act = self.active
        self.last_w = torch.where(act.unsqueeze(1), weight.detach(), self.last_w)
        self.last_b = torch.where(act, bias.detach(), self.last_b)
        running = super().update(step, weight, bias, score)
        if step in self._slot:
            g = self._slot[step]
            self.grid_w[:, g], self.grid_b[:, g] = self.last_w, self.last_b
            self.recorded[:] = g + 1
        return running

    def update_row(self, i, step, weight, bias, score) -> bool:
        if bool(self.active[i]):
            self.last_w[i], self.last_b[i] = weight, bias
        running = super().update_row(i, step, weight, bias, score)
        if step in self._slot:
            g = self._slot[step]
            self.grid_w[i, g], self.grid_b[i, g] = self.last_w[i], self.last_b[i]
            self.recorded[i] = g + 1
        return running

    def finish(self) -> None:
        """Rows stopped before the last grid steps keep their last version there."""
        for i in range(self.grid_w.shape[0]):
            g = int(self.recorded[i])
            self.grid_w[i, g:] = self.last_w[i]
            self.grid_b[i, g:] = self.last_b[i]
        self.recorded[:] = len(self.grid)


@dataclass
class SelectionFolds:
    """How one block's selection labels are listed and folded, per category and independent of the block.

    ``order`` (B × Lk) lists each category's known selection entries (positions in the view), positives
    first, each group in a seeded order that depends on the category alone; ``folds`` gives each listed
    entry's fold (stratified: positives and negatives dealt round-robin; -1 past ``n_known``).
    """

    order: torch.Tensor
    n_pos: torch.Tensor
    n_known: torch.Tensor
    folds: torch.Tensor
    categories: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, view, categories: list[int], k: int, seed: int) -> SelectionFolds:
        labels, mask = view.labels.squeeze(1).cpu(), view.mask.squeeze(1).cpu()  # B × L
        rows = []
        for i, c in enumerate(categories):
            known = mask[i].nonzero().squeeze(1).numpy()
            pos = known[labels[i, known].numpy() > 0]
            neg = known[labels[i, known].numpy() <= 0]
            rng = np.random.default_rng([int(seed), int(c), 7129])
            rows.append((rng.permutation(pos), rng.permutation(neg)))
        width = max(1, max(len(p) + len(n) for p, n in rows))
        n_cat = len(categories)
        order = torch.zeros(n_cat, width, dtype=torch.long)
        folds = torch.full((n_cat, width), -1, dtype=torch.long)
        n_pos = torch.zeros(n_cat, dtype=torch.long)
        n_known = torch.zeros(n_cat, dtype=torch.long)
        for i, (pos, neg) in enumerate(rows):
            listed = np.concatenate([pos, neg]).astype(np.int64)
            order[i, :len(listed)] = torch.from_numpy(listed)
            folds[i, :len(pos)] = torch.arange(len(pos)) % k
            folds[i, len(pos):len(listed)] = torch.arange(len(neg)) % k
            n_pos[i], n_known[i] = len(pos), len(listed)
        return cls(order, n_pos, n_known, folds, [int(c) for c in categories])

    def listed(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (B × P × L) at the view's positions → (B × P × Lk) in the listing's order."""
        idx = self.order.to(scores.device).unsqueeze(1).expand(-1, scores.shape[1], -1)
        return torch.gather(scores, -1, idx)


def listed_labels(n_pos: torch.Tensor, n_known: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B × 1 × Lk) labels and mask of listed entries (positives first)."""
    j = torch.arange(width, device=n_pos.device)
    return (j < n_pos.unsqueeze(1)).unsqueeze(1), (j < n_known.unsqueeze(1)).unsqueeze(1)


class Judge:
    """Scores candidate rows of a block on all its selection labels."""

    def __init__(self, view, metric):
        self.view, self.metric = view, metric

    def __call__(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Rows ``weight`` (B × d), ``bias`` (B) → (B); or candidates (B × P × d), (B × P) → (B × P)."""
        if weight.ndim == 2:
            return self.metric(self.view.scores(weight.unsqueeze(1), bias.unsqueeze(1)), self.view.labels,
                               self.view.mask).squeeze(1)
        return self.metric(self.view.scores(weight, bias), self.view.labels, self.view.mask)

    def row(self, i: int, scores: torch.Tensor) -> torch.Tensor:
        """Score of one category's row from its (L,) view scores."""
        return self.metric(scores.view(1, -1), self.view.labels[i], self.view.mask[i]).squeeze(0)


def record_block(tracker: GridTracker, judge: Judge, folds: SelectionFolds) -> BlockOutcome:
    """A crossfit block's outcome: the recorded trajectory and the listed selection scores of every version."""
    tracker.finish()
    view = judge.view
    s0 = view.scores(tracker.trained_w.unsqueeze(1), tracker.trained_b.unsqueeze(1))
    listed = folds.listed(torch.cat([s0, view.scores(tracker.grid_w, tracker.grid_b)], dim=1)).cpu()
    return BlockOutcome(tracker.trained_w, tracker.trained_b, tracker.original, torch.zeros_like(tracker.step),
                        tracker.steps_run, tracker.original, grid_weight=tracker.grid_w, grid_bias=tracker.grid_b,
                        grid_step=torch.tensor(tracker.grid), listed=listed, n_pos=folds.n_pos,
                        n_known=folds.n_known, folds=folds.folds)
