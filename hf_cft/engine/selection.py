"""Per-row selection: which version of each row is kept, judged so that noise is not mistaken for a gain.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BestTracker", "BlockOutcome", "GridTracker", "Judge", "SelectionPlan", "choose_crossfit", "crossfit_table",
           "grid_steps", "posterior_gains"]


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
class SelectionPlan:
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
    def build(cls, view, categories: list[int], k: int, seed: int) -> SelectionPlan:
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
        """``scores`` (B × P × L) at the view's positions → (B × P × Lk) in the plan's order."""
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


def record_block(tracker: GridTracker, judge: Judge, plan: SelectionPlan) -> BlockOutcome:
    """A crossfit block's outcome: the recorded trajectory and the listed selection scores of every version."""
    tracker.finish()
    view = judge.view
    s0 = view.scores(tracker.trained_w.unsqueeze(1), tracker.trained_b.unsqueeze(1))
    listed = plan.listed(torch.cat([s0, view.scores(tracker.grid_w, tracker.grid_b)], dim=1)).cpu()
    return BlockOutcome(tracker.trained_w, tracker.trained_b, tracker.original, torch.zeros_like(tracker.step),
                        tracker.steps_run, tracker.original, grid_weight=tracker.grid_w, grid_bias=tracker.grid_b,
                        grid_step=torch.tensor(tracker.grid), listed=listed, n_pos=plan.n_pos,
                        n_known=plan.n_known, folds=plan.folds)


@dataclass
class CrossfitChoice:
    """A variant's crossfit outcome over its categories (rows in the order of ``index``)."""

    index: list[int]
    weight: torch.Tensor  # n × d candidate rows
    bias: torch.Tensor
    alpha: list[float]  # per category (all equal when the choice is shared)
    step: list[int]  # per category, the grid step chosen (0: the trained row)
    score: torch.Tensor  # n, candidate's selection score (all labels)
    oof_gain: torch.Tensor  # n
    gain_se: torch.Tensor  # n
    fold_choices: list[list[tuple[int, float]]]  # per category, per fold (one: without the category)
    overall: tuple[int, float] = (0, 0.0)  # the (step, α) chosen on every category's labels
    by_category: bool = False  # each category's choice made without its labels (else: image folds)
    guard_gain: torch.Tensor | None = None  # n, the same candidates' gains in the guard metric
    guard_se: torch.Tensor | None = None


LEAVE_CATEGORY_OUT_MIN = 3  # a shared choice is judged by leaving categories out from this many categories on
TABLE_ELEMENTS = 2_000_000  # mixed candidate scores held at once by crossfit_table (float64)


def size_groups(sizes: list[int], per_item: int, budget: int) -> list[list[int]]:
    """Indices grouped by similar size (each group's largest ≤ 1.5 × its smallest + 16) within ``budget``
    elements (``per_item × size`` each, padded to the group's largest): ragged sizes — a few categories with
    thousands of known labels among many with a few dozen, as in Open Images — pad nothing much."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g and (len(g) + 1) * per_item * max(1, sizes[i]) <= budget and sizes[i] <= 1.5 * sizes[g[0]] + 16:
            g.append(i)
        else:
            groups.append([i])
    return groups


def crossfit_table(records: list[dict], metric, alphas: list[float], k: int) -> torch.Tensor:
    """Per category, judge (0: all labels, 1..k: all but fold j-1), grid step (0: the trained row) and α: the
    metric of the mixed scores on that judge's labels — C × (k+1) × (G+1) × A. Computed once per variant; both
    the shared and the per-category choices read it. Categories are taken in groups of similar size."""
    a_grid = torch.tensor([0.0, *alphas], dtype=torch.float64)
    n_g = records[0]["listed"].shape[0]
    sizes = [int(r["listed"].shape[1]) for r in records]
    table = torch.empty(len(records), k + 1, n_g, len(a_grid), dtype=torch.float64)
    for group in size_groups(sizes, n_g * len(a_grid), TABLE_ELEMENTS):
        part = [records[i] for i in group]
        width = max(1, max(sizes[i] for i in group))
        lst = torch.zeros(len(part), n_g, width, dtype=torch.float64)
        fold = torch.full((len(part), width), -1, dtype=torch.long)
        for i, r in enumerate(part):
            n = r["listed"].shape[1]
            lst[i, :, :n] = r["listed"].double()
            fold[i, :n] = r["folds"]
        n_pos = torch.tensor([int(r["n_pos"]) for r in part])
        n_known = torch.tensor([sizes[i] for i in group])
        labels, known = listed_labels(n_pos, n_known, width)
        s0 = lst[:, :1]
        mixed = s0.unsqueeze(2) + a_grid.view(1, 1, -1, 1) * (lst - s0).unsqueeze(2)  # B × G+1 × A × Lk
        masks = [known] + [known & (fold.unsqueeze(1) != j) for j in range(k)]
        table[group] = torch.stack([metric(mixed, labels.unsqueeze(1), m.unsqueeze(1)) for m in masks],
                                   dim=1).double()  # B × (k+1) × (G+1) × A
    return table


# long: the fold loop and the final choice share chunked tensors that separate functions would pass around
def choose_crossfit(records: list[dict], metric, alphas: list[float], k: int, n_boot: int, seed: int,
                    guard=None) -> CrossfitChoice:
    """Steps 2 and 3 of the crossfit rule for one variant: the (g, α) shared by the categories, out-of-fold
    gains and their SEs. From :data:`LEAVE_CATEGORY_OUT_MIN` categories on, each category's (g, α) is chosen on
    the other categories' labels and its gain scored on all of its own; below, on ``k`` folds of the images.

    ``records``: per fitted category, ``{"index", "weight" (d), "bias", "grid_weight" (G×d), "grid_bias" (G),
    "grid_step" (G), "listed" ((G+1)×n), "n_pos", "folds" (n)}`` (``listed[0]``: the trained row); ``guard``: a
    second metric whose gains of the same candidates are estimated too, on the same resamples (the reported
    metric, when rows are selected by another; ignored when it is ``metric``).
    """
    a_grid = torch.tensor([0.0, *alphas], dtype=torch.float64)
    n_g = records[0]["listed"].shape[0]
    steps = records[0]["grid_step"]
    by_category = len(records) >= LEAVE_CATEGORY_OUT_MIN
    table = crossfit_table(records, metric, alphas, 0 if by_category else k)  # no folds when categories are left out
    mean = table.nanmean(dim=0)  # (k+1) × (G+1) × A

    def pick(m: torch.Tensor) -> tuple[int, int]:
        m = m.clone()
        m[0, 1:] = float("-inf")  # step 0 (the trained row) only with α = 0
        m[:, 0] = torch.where(torch.arange(n_g) == 0, m[:, 0], torch.full_like(m[:, 0], float("-inf")))
        flat = m.nan_to_num(float("-inf")).reshape(-1)
        best = int(flat.argmax())  # the first maximum: the trained row wins ties
        return best // m.shape[1], best % m.shape[1]

    g_all, a_all = pick(mean[0])  # the choice on every category's labels, all of them
    if by_category:  # each category's choice made on the other categories' labels
        full = table[:, 0]  # C × (G+1) × A, all labels
        seen = ~full.isnan()
        total, count = full.nan_to_num(0.0).sum(0), seen.sum(0)
    else:  # the choice without each fold of the images
        fold_picks = [pick(mean[j]) for j in range(1, k + 1)]

    weight, bias, score, steps_out, alphas_out, folds_out = [], [], [], [], [], []
    # each fold scored alone with the candidate chosen without it: one candidate per fold, so no scores of
    # differently scaled candidates are ranked against each other
    new_rows, old_rows, n_pos_rows, owner, keys = [], [], [], [], []
    for i, r in enumerate(records):
        if by_category:  # the row written is the one judged: chosen without this category's labels
            rest = count - seen[i].long()
            others = (total - full[i].nan_to_num(0.0)) / rest.clamp(min=1)
            g0, a0 = pick(torch.where(rest > 0, others, float("nan")))
            fold_choices = [(g0, a0)]
        else:
            (g0, a0), fold_choices = (g_all, a_all), fold_picks
        alpha = float(a_grid[a0]) if g0 else 0.0
        steps_out.append(int(steps[g0 - 1]) if g0 else 0)
        alphas_out.append(alpha)
        folds_out.append([(int(steps[g - 1]) if g else 0, float(a_grid[a])) for g, a in fold_choices])
        if g0 == 0:
            w, b = r["weight"], r["bias"]
        else:
            w = r["weight"] + alpha * (r["grid_weight"][g0 - 1] - r["weight"])
            b = r["bias"] + alpha * (r["grid_bias"][g0 - 1] - r["bias"])
        weight.append(w)
        bias.append(b)
        score.append(table[i, 0, g0, a0])
        lst, fold = r["listed"].double(), r["folds"]
        s0 = lst[0]
        for j, (g, a) in enumerate(fold_choices):
            # positives first, as listed; a category held out whole is scored on all its labels
            idx = torch.arange(len(fold)) if by_category else (fold == j).nonzero().squeeze(1)
            new_rows.append(s0[idx] + a_grid[a] * (lst[g][idx] - s0[idx]))
            old_rows.append(s0[idx])
            n_pos_rows.append(int((idx < int(r["n_pos"])).sum()))
            owner.append(i)
            keys.append(int(r["index"]) * 1009 + j)
    owner_t = torch.tensor(owner)
    metrics = [metric] if guard is None or guard is metric else [metric, guard]
    per_category = []  # per metric: the mean over each category's folds, and its SE
    rows = [owner_t == i for i in range(len(records))]
    for fold_gain, diffs in fold_gains(new_rows, old_rows, n_pos_rows, keys, metrics, n_boot, seed):
        per_category.append((torch.stack([fold_gain[x].nanmean().nan_to_num(0.0) for x in rows]),
                             torch.stack([diffs[x].nanmean(dim=0).std().nan_to_num(0.0) for x in rows])))
    overall = (int(steps[g_all - 1]) if g_all else 0, float(a_grid[a_all]) if g_all else 0.0)
    out = CrossfitChoice([int(r["index"]) for r in records], torch.stack(weight), torch.stack(bias), alphas_out,
                         steps_out, torch.stack(score), *per_category[0], folds_out, overall, by_category)
    if len(per_category) > 1:
        out.guard_gain, out.guard_se = per_category[1]
    return out


BOOT_ELEMENTS = 4_000_000  # resample counts held at once (rows × resamples × width)


def fold_gains(new_rows: list[torch.Tensor], old_rows: list[torch.Tensor], n_pos: list[int], keys: list[int],
               metrics: list, n_boot: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per metric and row (one category's fold: its listed scores with the new and the trained candidate,
    positives first), ``metric(new) − metric(old)`` and the same on ``n_boot`` stratified paired resamples
    (rows and rows × n_boot; NaN where the metric is undefined) — every metric on the same resamples. Rows are
    taken in groups of similar size."""
    from ..metrics.core import METRICS

    kinds = [next((k for k, f in METRICS.items() if f is m), None) for m in metrics]
    if None in kinds:
        raise ValueError(f"the bootstrap scores {sorted(METRICS)} (hf_cft.metrics.core.METRICS), got {metrics!r}")
    sizes = [len(r) for r in new_rows]
    out = [(torch.full((len(sizes),), float("nan"), dtype=torch.float64),
            torch.full((len(sizes), n_boot), float("nan"), dtype=torch.float64)) for _ in metrics]
    for group in size_groups(sizes, n_boot, BOOT_ELEMENTS):
        width = max(1, max(sizes[i] for i in group))
        new = torch.zeros(len(group), width, dtype=torch.float64)
        old = torch.zeros(len(group), width, dtype=torch.float64)
        for t, i in enumerate(group):
            new[t, :sizes[i]], old[t, :sizes[i]] = new_rows[i], old_rows[i]
        n_pos_g = torch.tensor([n_pos[i] for i in group])
        n_known_g = torch.tensor([sizes[i] for i in group])
        labels, known = listed_labels(n_pos_g, n_known_g, width)
        resampled = bootstrap_diffs(new, old, n_pos_g, n_known_g, [keys[i] for i in group], kinds, n_boot, seed)
        for (gain, diffs), metric, boot in zip(out, metrics, resampled):
            scored = [metric(x.unsqueeze(1), labels, known).squeeze(1).double() for x in (new, old)]
            gain[group] = scored[0] - scored[1]
            diffs[group] = boot
    return out


def bootstrap_diffs(new: torch.Tensor, old: torch.Tensor, n_pos: torch.Tensor, n_known: torch.Tensor,
                    keys: list[int], kinds: list[str], n_boot: int, seed: int) -> list[torch.Tensor]:
    """Per ``kind`` ("ap" or "auroc"), ``metric(new) − metric(old)`` on the same ``n_boot`` stratified paired
    resamples of each row's listed entries.

    A row (B × Lk, positives first) is one category's fold; each resample draws its known positives and known
    negatives with replacement, as many as it has of each, so the class balance is kept; the draws of a row
    depend on the seed, its key and its own size alone. A resample is a count per entry, and each row is sorted
    once for all its resamples (:func:`~hf_cft.metrics.core.counted_metric`). Returns one B × n_boot per kind
    (NaN where the metric is undefined).
    """
    from ..metrics.core import counted_metric

    width = new.shape[1]
    counts = torch.zeros(new.shape[0], n_boot, width, dtype=torch.float64)
    for r in range(new.shape[0]):
        k, p = int(n_known[r]), int(n_pos[r])
        if k == 0:
            continue
        g = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + keys[r] * 7919 + 17) % (2**63))
        u = torch.rand(n_boot, k, generator=g, dtype=torch.float64)
        j = torch.arange(k)
        offset = torch.where(j < p, 0, p)
        size = torch.where(j < p, p, k - p).clamp(min=1)
        drawn = offset + (u * size).floor().long().clamp(max=k - 1)
        counts[r].scatter_add_(-1, drawn, torch.ones(n_boot, k, dtype=torch.float64))
    pos = listed_labels(n_pos, n_known, width)[0].squeeze(1)
    new, old = new.double(), old.double()
    return [counted_metric(kind, new, pos, counts) - counted_metric(kind, old, pos, counts) for kind in kinds]


@dataclass
class Posterior:
    """Empirical-Bayes posterior of each category's true gain."""

    mean: np.ndarray
    sd: np.ndarray
    prob_positive: np.ndarray
    prior_mean: float
    prior_sd: float


def posterior_gains(gain: np.ndarray, se: np.ndarray) -> Posterior:
    """Pool the cross-fitted gains of one variant's categories (normal–normal, method of moments).

    ``gain_c ~ N(θ_c, se_c²)`` with ``θ_c ~ N(μ, τ²)``: μ is the mean gain, τ² the spread of the gains beyond
    their noise (0 when the observed spread is all noise). Each θ_c's posterior shrinks its own gain toward μ
    by ``se_c² / (se_c² + τ²)``; the uncertainty of μ itself is included. With fewer than 3 categories there
    is nothing to pool from and each gain stands alone.
    """
    g = np.asarray(gain, dtype=np.float64)
    s2 = np.maximum(np.asarray(se, dtype=np.float64), 1e-6) ** 2
    n = len(g)
    if n < 3:
        mean, var, mu, tau2 = g, s2, float("nan"), float("nan")
    else:
        mu = float(g.mean())
        tau2 = max(0.0, float(g.var(ddof=1) - s2.mean()))
        var_mu = (s2.mean() + tau2) / n
        shrink = s2 / (s2 + tau2)
        mean = mu + (1.0 - shrink) * (g - mu)
        var = (1.0 - shrink) * s2 + shrink**2 * var_mu
    sd = np.sqrt(np.maximum(var, 1e-18))
    prob = np.array([0.5 * (1.0 + math.erf(m / (s * math.sqrt(2.0)))) for m, s in zip(mean, sd)])
    return Posterior(mean, sd, prob, mu, math.sqrt(tau2) if n >= 3 else float("nan"))
