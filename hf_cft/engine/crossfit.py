"""Steps 2 and 3 of the crossfit rule (see :mod:`hf_cft.engine.selection`): one (step, α) shared by the categories,
each category's chosen without its own labels, out-of-fold gains with stratified paired-bootstrap standard errors,
pooled across categories (normal–normal empirical Bayes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..metrics.ranking import METRICS, counted_metric
from .selection import listed_labels

__all__ = ["CrossfitChoice", "Posterior", "bootstrap_diffs", "choose_crossfit", "crossfit_table", "fold_gains",
           "posterior_gains", "size_groups"]


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


def _pick(m: torch.Tensor, n_g: int) -> tuple[int, int]:
    """The (grid step, α) index of the best mean score (step 0, the trained row, only with α = 0)."""
    m = m.clone()
    m[0, 1:] = float("-inf")  # step 0 (the trained row) only with α = 0
    m[:, 0] = torch.where(torch.arange(n_g) == 0, m[:, 0], torch.full_like(m[:, 0], float("-inf")))
    flat = m.nan_to_num(float("-inf")).reshape(-1)
    best = int(flat.argmax())  # the first maximum: the trained row wins ties
    return best // m.shape[1], best % m.shape[1]


class _Chooser:
    """Each category's (g, α) choices: from :data:`LEAVE_CATEGORY_OUT_MIN` categories on, one made on the other
    categories' labels; below, the choice made without each fold of the images."""

    def __init__(self, table: torch.Tensor, mean: torch.Tensor, k: int, by_category: bool, n_g: int):
        self.n_g, self.by_category = n_g, by_category
        self.overall = _pick(mean[0], n_g)  # the choice on every category's labels, all of them
        if by_category:  # each category's choice made on the other categories' labels
            self.full = table[:, 0]  # C × (G+1) × A, all labels
            self.seen = ~self.full.isnan()
            self.total, self.count = self.full.nan_to_num(0.0).sum(0), self.seen.sum(0)
        else:  # the choice without each fold of the images
            self.fold_picks = [_pick(mean[j], n_g) for j in range(1, k + 1)]

    def __call__(self, i: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Category ``i``'s (g, α) and its choice per fold (one: without the category)."""
        if self.by_category:  # the row written is the one judged: chosen without this category's labels
            rest = self.count - self.seen[i].long()
            others = (self.total - self.full[i].nan_to_num(0.0)) / rest.clamp(min=1)
            g0, a0 = _pick(torch.where(rest > 0, others, float("nan")), self.n_g)
            return (g0, a0), [(g0, a0)]
        return self.overall, self.fold_picks


@dataclass
class _Candidates:
    """Per category its chosen candidate; per (category, fold) the listed scores of the candidate and of the
    trained row, its positives, owner and resampling key."""

    weight: list = field(default_factory=list)
    bias: list = field(default_factory=list)
    score: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    alphas: list = field(default_factory=list)
    folds: list = field(default_factory=list)
    new_rows: list = field(default_factory=list)
    old_rows: list = field(default_factory=list)
    n_pos: list = field(default_factory=list)
    owner: list = field(default_factory=list)
    keys: list = field(default_factory=list)


def _candidates(records: list[dict], table: torch.Tensor, a_grid: torch.Tensor, chooser: _Chooser) -> _Candidates:
    """Each category's candidate row and, per fold, its scores and the trained row's: each fold scored alone with
    the candidate chosen without it (one candidate per fold, so no scores of differently scaled candidates are
    ranked against each other)."""
    steps = records[0]["grid_step"]
    out = _Candidates()
    for i, r in enumerate(records):
        (g0, a0), fold_choices = chooser(i)
        alpha = float(a_grid[a0]) if g0 else 0.0
        out.steps.append(int(steps[g0 - 1]) if g0 else 0)
        out.alphas.append(alpha)
        out.folds.append([(int(steps[g - 1]) if g else 0, float(a_grid[a])) for g, a in fold_choices])
        if g0 == 0:
            w, b = r["weight"], r["bias"]
        else:
            w = r["weight"] + alpha * (r["grid_weight"][g0 - 1] - r["weight"])
            b = r["bias"] + alpha * (r["grid_bias"][g0 - 1] - r["bias"])
        out.weight.append(w)
        out.bias.append(b)
        out.score.append(table[i, 0, g0, a0])
        lst, fold = r["listed"].double(), r["folds"]
        s0 = lst[0]
        for j, (g, a) in enumerate(fold_choices):
            # positives first, as listed; a category held out whole is scored on all its labels
            idx = torch.arange(len(fold)) if chooser.by_category else (fold == j).nonzero().squeeze(1)
            out.new_rows.append(s0[idx] + a_grid[a] * (lst[g][idx] - s0[idx]))
            out.old_rows.append(s0[idx])
            out.n_pos.append(int((idx < int(r["n_pos"])).sum()))
            out.owner.append(i)
            out.keys.append(int(r["index"]) * 1009 + j)
    return out


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
    chooser = _Chooser(table, table.nanmean(dim=0), k, by_category, n_g)  # mean: (k+1) × (G+1) × A
    cand = _candidates(records, table, a_grid, chooser)
    owner_t = torch.tensor(cand.owner)
    metrics = [metric] if guard is None or guard is metric else [metric, guard]
    per_category = []  # per metric: the mean over each category's folds, and its SE
    rows = [owner_t == i for i in range(len(records))]
    for fold_gain, diffs in fold_gains(cand.new_rows, cand.old_rows, cand.n_pos, cand.keys, metrics, n_boot, seed):
        per_category.append((torch.stack([fold_gain[x].nanmean().nan_to_num(0.0) for x in rows]),
                             torch.stack([diffs[x].nanmean(dim=0).std().nan_to_num(0.0) for x in rows])))
    g_all, a_all = chooser.overall
    overall = (int(steps[g_all - 1]) if g_all else 0, float(a_grid[a_all]) if g_all else 0.0)
    out = CrossfitChoice([int(r["index"]) for r in records], torch.stack(cand.weight), torch.stack(cand.bias),
                         cand.alphas, cand.steps, torch.stack(cand.score), *per_category[0], cand.folds, overall,
                         by_category)
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
    kinds = [next((k for k, f in METRICS.items() if f is m), None) for m in metrics]
    if None in kinds:
        raise ValueError(f"the bootstrap scores {sorted(METRICS)} (hf_cft.metrics.ranking.METRICS), got {metrics!r}")
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
    once for all its resamples (:func:`~hf_cft.metrics.ranking.counted_metric`). Returns one B × n_boot per kind
    (NaN where the metric is undefined).
    """
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
