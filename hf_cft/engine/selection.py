"""Per-row selection: which version of each row is kept, judged so that noise is not mistaken for a gain.

Every variant produces, per category, a trajectory of candidate rows (epochs, generations, L2 strengths).
Two rules turn it into a decision (``CFTConfig.selection_rule``):

* ``"strict"`` (the paper's): keep the candidate with the best selection score if it is strictly higher
  than the trained row's. The best of thousands of candidates on a small split is biased upward (the
  winner's curse), so this rule also keeps noise.
* ``"crossfit"`` (default): the known selection labels of each category are split into K stratified folds.
  For every fold k a tracker keeps the best candidate judged on the *other* folds, and a shrinkage
  ``α ∈ {0} ∪ selection_alphas`` toward the trained row (``w = w₀ + α·(w_new − w₀)``, logits interpolate
  linearly) is chosen on those folds too; its scores on fold k are therefore out of fold. Pooled over the
  folds they give an honest estimate of what the whole procedure (choose a step, choose α) gains over the
  trained row, with a stratified paired-bootstrap standard error. The gains of all categories of a variant
  are then pooled (normal–normal empirical Bayes: their spread beyond the noise tells how much categories
  differ, their mean whether the variant helps at all), and a row is replaced only where the posterior
  probability of a positive gain reaches ``selection_confidence``. The row written is the candidate and α
  chosen on all the selection labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BestTracker", "BlockOutcome", "Judge", "SelectionPlan", "crossfit_block", "posterior_gains"]


@dataclass
class BlockOutcome:
    """What a block of B categories contributes: a candidate row per category and the evidence for it."""

    weight: torch.Tensor  # B × d, the candidate (the trained row where nothing better was found)
    bias: torch.Tensor  # B
    best_score: torch.Tensor  # B, selection score of the candidate on all selection labels
    best_step: torch.Tensor  # B, step of the candidate (0: the trained row)
    steps_run: torch.Tensor  # B
    original: torch.Tensor | None = None  # B, selection score of the trained row
    alpha: torch.Tensor | None = None  # B, shrinkage toward the candidate (crossfit), 1 (strict)
    oof_gain: torch.Tensor | None = None  # B, cross-fitted gain over the trained row (NaN: strict)
    gain_se: torch.Tensor | None = None  # B, its bootstrap standard error (NaN: strict)
    detail: list[str | None] | None = None  # per row, e.g. the chosen L2 strength

    TENSORS = ("weight", "bias", "best_score", "best_step", "steps_run", "original", "alpha", "oof_gain",
               "gain_se")


class BestTracker:
    """Best-so-far snapshot per row and per *judge*, with per-row patience.

    A judge is one set of selection labels (all of them, or all but one fold): ``update`` takes scores of
    shape ``(B, M)`` for M judges and keeps, per row and judge, the first candidate that scores *strictly*
    higher than everything before it (the trained row is candidate 0). A row stops after ``patience`` steps
    without a new best on judge 0 (all selection labels), exactly as if it had been run alone.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor, patience: int | None):
        score = score if score.ndim == 2 else score.unsqueeze(1)
        m = score.shape[1]
        self.weight = weight.detach().unsqueeze(1).repeat(1, m, 1)
        self.bias = bias.detach().unsqueeze(1).repeat(1, m)
        self.score = score.detach().clone()
        b = score.shape[0]
        self.step = torch.zeros(b, m, dtype=torch.long, device=score.device)
        self.steps_run = torch.zeros(b, dtype=torch.long, device=score.device)
        self.stale = torch.zeros(b, dtype=torch.long, device=score.device)
        self.active = torch.ones(b, dtype=torch.bool, device=score.device)
        self.patience = patience or None

    def update(self, step: int, weight: torch.Tensor, bias: torch.Tensor, score: torch.Tensor) -> bool:
        """Record step ``step``'s rows (B×d, B) with their judges' scores (B×M); True while any row runs."""
        score = score if score.ndim == 2 else score.unsqueeze(1)
        better = self.active.unsqueeze(1) & (score > self.score)  # NaN never wins
        if bool(better.any()):
            self.weight = torch.where(better.unsqueeze(-1), weight.detach().unsqueeze(1), self.weight)
            self.bias = torch.where(better, bias.detach().unsqueeze(1), self.bias)
            self.score = torch.where(better, score, self.score)
            self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        self.steps_run = torch.where(self.active, torch.full_like(self.steps_run, step), self.steps_run)
        self.stale = torch.where(better[:, 0], torch.zeros_like(self.stale), self.stale + self.active.long())
        if self.patience is not None:
            self.active &= self.stale < self.patience
        return bool(self.active.any())


@dataclass
class SelectionPlan:
    """How one block's selection labels are laid out, folded and judged.

    ``order`` (B × Lk) lists each category's known selection entries (positions in the view), positives
    first, each group in a seeded order that depends on the category alone (so blocks and shards agree);
    ``folds`` gives the fold of each listed entry (stratified: positives and negatives dealt round-robin);
    ``judge_mask`` (B × M × L) is the view's mask for judge 0 (all) and judges 1..K (all but fold k).
    """

    order: torch.Tensor  # B × Lk, long
    n_pos: torch.Tensor  # B
    n_known: torch.Tensor  # B
    folds: torch.Tensor  # B × Lk, long (-1 past n_known)
    judge_mask: torch.Tensor  # B × M × L
    k: int
    categories: list[int]

    @classmethod
    def build(cls, view, categories: list[int], k: int, seed: int) -> SelectionPlan:
        labels, mask = view.labels.squeeze(1).cpu(), view.mask.squeeze(1).cpu()  # B × L
        n_cat, length = mask.shape
        rows = []
        for i, c in enumerate(categories):
            known = mask[i].nonzero().squeeze(1).numpy()
            pos = known[labels[i, known].numpy() > 0]
            neg = known[labels[i, known].numpy() <= 0]
            rng = np.random.default_rng([int(seed), int(c), 7129])
            rows.append((rng.permutation(pos), rng.permutation(neg)))
        width = max(1, max(len(p) + len(n) for p, n in rows))
        order = torch.zeros(n_cat, width, dtype=torch.long)
        folds = torch.full((n_cat, width), -1, dtype=torch.long)
        n_pos = torch.zeros(n_cat, dtype=torch.long)
        n_known = torch.zeros(n_cat, dtype=torch.long)
        for i, (pos, neg) in enumerate(rows):
            listed = np.concatenate([pos, neg]).astype(np.int64)
            order[i, :len(listed)] = torch.from_numpy(listed)
            folds[i, :len(pos)] = torch.arange(len(pos)) % max(k, 1)
            folds[i, len(pos):len(listed)] = torch.arange(len(neg)) % max(k, 1)
            n_pos[i], n_known[i] = len(pos), len(listed)
        masks = [mask]
        if k > 1:
            listed = torch.arange(width).unsqueeze(0) < n_known.unsqueeze(1)
            target = torch.where(listed, order, torch.full_like(order, length))  # padding → a spare column
            fold_at = torch.full((n_cat, length + 1), -1, dtype=torch.long).scatter_(1, target, folds)[:, :length]
            masks += [mask & (fold_at != j) for j in range(k)]
        device = view.mask.device
        return cls(order.to(device), n_pos.to(device), n_known.to(device), folds.to(device),
                   torch.stack(masks, dim=1).to(device), k, [int(c) for c in categories])

    def listed(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (B × P × L) of the view's positions → (B × P × Lk) in the plan's order."""
        idx = self.order.unsqueeze(1).expand(-1, scores.shape[1], -1)
        return torch.gather(scores, -1, idx)

    def listed_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B × 1 × Lk) labels and mask of the listed entries (positives first)."""
        j = torch.arange(self.order.shape[1], device=self.order.device)
        return (j < self.n_pos.unsqueeze(1)).unsqueeze(1), (j < self.n_known.unsqueeze(1)).unsqueeze(1)


class Judge:
    """Scores candidate rows of a block on the selection split, once per judge (all labels, all but fold k)."""

    def __init__(self, view, plan: SelectionPlan, metric):
        self.view, self.plan, self.metric = view, plan, metric

    @property
    def n_judges(self) -> int:
        return self.plan.judge_mask.shape[1]

    def __call__(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Rows ``weight`` (B × d), ``bias`` (B) → (B × M); or candidates (B × P × d), (B × P) → (B × P × M)."""
        single = weight.ndim == 2
        w, b = (weight.unsqueeze(1), bias.unsqueeze(1)) if single else (weight, bias)
        scores = self.view.scores(w, b).unsqueeze(2)  # B × P × 1 × L
        out = self.metric(scores, self.view.labels.unsqueeze(2), self.plan.judge_mask.unsqueeze(1))
        return out.squeeze(1) if single else out

    def row(self, i: int, scores: torch.Tensor) -> torch.Tensor:
        """Judges' scores (M) of one category's row, from its (L,) view scores."""
        return self.metric(scores.view(1, -1), self.view.labels[i], self.plan.judge_mask[i])


def _argmax_first(values: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum along the last dim (NaN counts as -inf): ties go to the smaller α."""
    return values.nan_to_num(float("-inf")).argmax(dim=-1)


def crossfit_block(weight0: torch.Tensor, bias0: torch.Tensor, tracker: BestTracker, judge: Judge,
                   config) -> BlockOutcome:
    """Turn a tracker's per-judge snapshots into one candidate per row with its cross-fitted evidence."""
    metric, plan = judge.metric, judge.plan
    w_snap, b_snap = tracker.weight, tracker.bias  # B × M × d, B × M
    n_cat = w_snap.shape[0]
    original = judge(weight0, bias0)[:, 0]
    if config.selection_rule == "strict" or plan.k < 2:
        changed = tracker.step[:, 0] > 0
        nan = torch.full_like(original, float("nan"))
        return BlockOutcome(w_snap[:, 0], b_snap[:, 0], tracker.score[:, 0], tracker.step[:, 0], tracker.steps_run,
                            original, changed.to(original.dtype), nan, nan.clone())
    dtype = w_snap.dtype
    alphas = torch.tensor([0.0, *config.selection_alphas], dtype=dtype, device=w_snap.device)
    s0 = plan.listed(judge.view.scores(weight0.unsqueeze(1), bias0.unsqueeze(1)))  # B × 1 × Lk
    snaps = plan.listed(judge.view.scores(w_snap, b_snap))  # B × M × Lk
    mixed = s0.unsqueeze(2) + alphas.view(1, 1, -1, 1) * (snaps - s0).unsqueeze(2)  # B × M × A × Lk
    labels, known = plan.listed_labels()
    folds = plan.folds.unsqueeze(1)  # B × 1 × Lk
    # α of each fold's candidate, chosen on the other folds; then its scores on the fold itself
    oof = s0.squeeze(1).clone()
    for j in range(plan.k):
        a = _argmax_first(metric(mixed[:, j + 1], labels, known & (folds != j)))  # B
        pick = mixed[torch.arange(n_cat), j + 1, a]  # B × Lk
        oof = torch.where(folds.squeeze(1) == j, pick, oof)
    a_all = _argmax_first(metric(mixed[:, 0], labels, known))  # B
    alpha = alphas[a_all]
    cand_w = weight0 + alpha.unsqueeze(1) * (w_snap[:, 0] - weight0)
    cand_b = bias0 + alpha * (b_snap[:, 0] - bias0)
    best = metric(mixed[torch.arange(n_cat), 0, a_all].unsqueeze(1), labels, known).squeeze(1)
    gain = metric(oof.unsqueeze(1), labels, known).squeeze(1) - metric(s0, labels, known).squeeze(1)
    se = _bootstrap_se(oof, s0.squeeze(1), plan, metric, config.selection_bootstrap, config.seed)
    step = torch.where(alpha > 0, tracker.step[:, 0], torch.zeros_like(tracker.step[:, 0]))
    return BlockOutcome(cand_w, cand_b, torch.where(alpha > 0, best, original), step, tracker.steps_run, original,
                        alpha, gain, se)


def _bootstrap_se(new: torch.Tensor, old: torch.Tensor, plan: SelectionPlan, metric, n_boot: int,
                  seed: int) -> torch.Tensor:
    """Standard error of ``metric(new) − metric(old)`` (B × Lk listed scores) by a stratified paired bootstrap.

    Each resample draws a category's known positives and known negatives with replacement, as many as it
    has of each, so every resample keeps the category's class balance and stays defined.
    """
    n_cat, width = new.shape
    device = new.device
    gens = [torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + c * 7919 + 17) % (2**63))
            for c in plan.categories]  # per category: the draws do not depend on the block
    j = torch.arange(width, device=device).view(1, 1, -1)
    n_pos, n_known = plan.n_pos.view(-1, 1, 1), plan.n_known.view(-1, 1, 1)
    is_pos = j < n_pos
    offset = torch.where(is_pos, torch.zeros_like(n_pos), n_pos)
    size = torch.where(is_pos, n_pos, n_known - n_pos).clamp(min=1)
    labels, known = plan.listed_labels()
    diffs = []
    chunk = max(1, min(n_boot, int(2e7 // max(1, n_cat * width))))
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        u = torch.stack([torch.rand(r, width, generator=g, dtype=torch.float64) for g in gens]).to(device)
        idx = (offset + (u * size).floor().long()).clamp(max=width - 1)
        pair = torch.stack([torch.gather(new.unsqueeze(1).expand(-1, r, -1), -1, idx),
                            torch.gather(old.unsqueeze(1).expand(-1, r, -1), -1, idx)], dim=1)  # B × 2 × r × Lk
        s = metric(pair, labels.unsqueeze(1), known.unsqueeze(1))  # B × 2 × r
        diffs.append(s[:, 0] - s[:, 1])
    d = torch.cat(diffs, dim=1).double()
    return d.std(dim=1, unbiased=True).nan_to_num(0.0).to(new.dtype)


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
