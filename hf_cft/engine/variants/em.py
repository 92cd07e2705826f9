"""CFT-em: each row fitted on its known labels *and* on the unknown ones, each unknown weighted by its estimated
probability of being positive (an EM over the unknown labels), batched like refit.

Per category, the model is refit's: ``y_i | x_i ~ Bernoulli(σ(w·x_i + b))``; the known labels are observed, the
unknown ones latent. For each L2 strength λ of the grid:

1. **Known-label row**: refit's problem and solver on the known fit labels alone (from zero), the starting row.
2. **Prior** ``π̂``, the share of positives among the category's unknown labels, from the known labels:
   ``"model"`` (default) the mean posterior of the known-label row over the unknowns (consistent when whether a
   label is known depends on the image alone — the uniform and salient protocols, Open Images' verification
   as far as the features show it); ``"known"`` the known positive rate ``n_pos / n_known`` (consistent only
   when labels are missing completely at random: where positives are more often labelled it is too high).
3. **E-step**: each unknown's probability of being positive ``q_i = σ((z_i + δ) / T)``, ``z_i`` its logit under
   the current row, ``δ`` (per category and λ) such that the ``q_i`` average ``π̂`` over the unknowns, ``T`` the
   temperature (1: the posterior itself; below 1 sharper, the cluster assumption).
4. **M-step**: ``min (1/Z)[Σ_known BCE(z_i, y_i) + ρ·ω·Σ_unknown BCE(z_i, q_i)] + λ/2·||w||²`` (``ω``: how many
   unknowns each drawn one stands for, ``ρ`` their weight, ``Z`` the weights' sum), warm-started, a few L-BFGS
   iterations of refit's solver (a generalized EM). Steps 3–4 repeat ``em_iterations`` times; each iteration's
   rows at every λ are candidates (step ``(k−1)·P + p``: iteration k, λ_p) for the selection rule.

Unknown rows: a dense block (categories mostly known) uses every unknown of its columns; a gathered block draws
``em_unknowns × n_known`` of each category's unknown images (seeded by the config's seed and the category alone,
so shards and reruns draw the same) and gathers them after its known rows — memory grows with the block's rows,
never with images × categories. A gathered block whose rows fit ``REDUCE_AT · d`` is solved in their span, as
refit's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..registry import BlockTask, Variant, check_minimum, register_variant
from ..views import GatheredView, ViewFactory
from .refit import REDUCE_AT, RowSpanView, Solver, _sample_weight, solve_in_row_span, solve_logistic

__all__ = ["EMBlock", "EMOptions", "em_view", "prior_shift", "run_em"]

PRIORS = ("model", "known")
BISECTIONS = 60  # halvings of the prior shift's bracket (float64 rounding below that)


@dataclass
class EMOptions:
    """CFT-em's options (``CFTConfig`` keywords)."""

    em_l2: list[float] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
        metadata={"help": "em: grid of L2 strengths λ (toward zero, as refit's default); every EM iteration's row "
                  "at every λ is a candidate of the selection rule."},
    )
    em_iterations: int = field(default=3, metadata={"help": "em: EM iterations (E-step, then M-step) after the "
                                                            "known-label row."})
    em_temperature: float = field(
        default=0.5,
        metadata={"help": "em: temperature T of the E-step, q = σ((z + δ)/T): 1 takes each unknown's posterior "
                  "under the current row; below 1 sharper (the unknowns' clusters pull the row)."},
    )
    em_prior: str = field(
        default="model",
        metadata={"help": "em: the prior of the unknown labels: 'model' (the mean posterior of the known-label row "
                  "over them: right when whether a label is known depends on the image only) or 'known' (the known "
                  "positive rate: right when labels are missing at random)."},
    )
    em_unknowns: float = field(
        default=2.0,
        metadata={"help": "em: unknown images drawn per known label of a category in a gathered block (each stands "
                  "for its share of all the category's unknowns); dense blocks use every unknown."},
    )
    em_unknown_weight: float = field(default=1.0, metadata={"help": "em: weight ρ of an unknown image against a "
                                                                    "known one in the M-step."})
    em_max_iter: int = field(default=200, metadata={"help": "em: L-BFGS iterations at most of the known-label row."})
    em_m_iter: int = field(default=30, metadata={"help": "em: L-BFGS iterations at most of each M-step."})
    em_tol: float = field(default=1e-6, metadata={"help": "em: stop a solve when the largest gradient entry is "
                                                          "below."})

    def __post_init__(self) -> None:
        self.em_l2 = [float(v) for v in self.em_l2]
        if not self.em_l2 or not all(math.isfinite(v) and v >= 0 for v in self.em_l2):
            raise ValueError(f"`em_l2` must be a non-empty list of finite strengths >= 0, got {self.em_l2}")
        if self.em_prior not in PRIORS:
            raise ValueError(f"`em_prior` must be one of {PRIORS}, got {self.em_prior!r}")
        if not 0.0 < self.em_temperature <= 10.0:
            raise ValueError(f"`em_temperature` must be in (0, 10], got {self.em_temperature}")
        if not (self.em_unknowns > 0 and math.isfinite(self.em_unknowns)):
            raise ValueError(f"`em_unknowns` must be a finite number > 0, got {self.em_unknowns}")
        for name in ("em_iterations", "em_max_iter", "em_m_iter"):
            check_minimum(self, name, 1)
        check_minimum(self, "em_unknown_weight", 0.0)
        check_minimum(self, "em_tol", 0.0)


@dataclass
class EMBlock:
    """A block's fit split for em: refit's view of the known labels (``known``) and a view over the known and the
    unknown rows (``both``: gathered, the known rows first, then the drawn unknowns; dense, the same view), with
    per category the unknown entries of ``both`` (B × 1 × L'), how many unknowns each drawn one stands for
    (``scale``), and the category's unknowns (``n_unknown``) and those drawn (``n_drawn``)."""

    known: Any
    both: Any
    unknown: torch.Tensor
    scale: torch.Tensor
    n_unknown: list[int]
    n_drawn: list[int]


@dataclass
class EMSource:
    """What :func:`em_view` hands the runner: the block's categories and its fit split's view factory; the unknown
    rows are drawn in :func:`run_em`, which knows the options and the seed. Answers for the known-label view."""

    factory: ViewFactory
    block: list[int]

    def gather(self, per_known: float, seed: int) -> EMBlock:
        if self.factory.is_dense(self.block[0]):
            view = self.factory.view(self.block)
            unknown = ~view.mask
            n_unk = unknown.sum(-1).flatten().tolist()
            scale = torch.ones(len(self.block), dtype=torch.float64)
            return EMBlock(view, view, unknown, scale, n_unk, n_unk)
        return _gathered(self.factory, self.block, per_known, seed)


def em_view(factory: ViewFactory, block: list[int]) -> EMSource:
    """The variant's ``fit_view``: the unknowns are drawn by the runner (it has the options and the seed)."""
    return EMSource(factory, block)


def draw_unknowns(known_rows: np.ndarray, n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows of ``range(n)`` outside the ascending ``known_rows``, uniformly without replacement, ascending
    (the j-th free row is ``j`` plus the known rows at or below it)."""
    free = n - known_rows.size
    j = np.sort(rng.choice(free, size=min(count, free), replace=False))
    return j + np.searchsorted(known_rows - np.arange(known_rows.size), j, side="right")


def _gathered(factory: ViewFactory, block: list[int], per_known: float, seed: int) -> EMBlock:
    """Each category's known rows, then its drawn unknowns, in one padded (B, Lk + Uk, d) tensor."""
    split, n = factory.split, factory.split.n
    columns = [split.column(c) for c in block]
    drawn = [draw_unknowns(rows.numpy(), n, math.ceil(per_known * rows.numel()),
                           np.random.default_rng([int(seed), int(c), 0xE3])) for c, (rows, _) in zip(block, columns)]
    lk, uk = max(r.numel() for r, _ in columns), max(max(d.size for d in drawn), 1)
    x = torch.zeros(len(block), lk + uk, split.features.shape[1], dtype=factory.dtype)
    y = torch.zeros(len(block), lk + uk, dtype=torch.int8)
    known = torch.zeros(len(block), lk + uk, dtype=torch.bool)
    unknown = torch.zeros_like(known)
    for i, ((rows, values), extra) in enumerate(zip(columns, drawn)):
        k = rows.numel()
        split.take_into(x[i, :k], rows)
        split.take_into(x[i, lk:lk + extra.size], torch.from_numpy(extra))
        y[i, :k], known[i, :k], unknown[i, lk:lk + extra.size] = values, True, True
    dev = factory.device
    x, y, known, unknown = x.to(dev), y.to(dev), known.to(dev), unknown.to(dev)
    n_unknown = [n - r.numel() for r, _ in columns]
    scale = torch.tensor([u / max(d.size, 1) for u, d in zip(n_unknown, drawn)], dtype=torch.float64)
    return EMBlock(GatheredView(x[:, :lk], y[:, :lk], known[:, :lk]), GatheredView(x, y, known | unknown),
                   unknown.unsqueeze(1), scale, n_unknown, [d.size for d in drawn])


def prior_shift(logits: torch.Tensor, unknown: torch.Tensor, prior: torch.Tensor, temperature: float) -> torch.Tensor:
    """``δ`` (B × P) such that ``σ((logits + δ) / T)`` averages ``prior`` (B × P) over the ``unknown`` entries
    (B × 1 × L' bool), by bisection (the average grows with δ)."""
    un = unknown.to(logits.dtype)
    count = un.sum(-1).clamp(min=1)
    bound = (logits.abs() * un).amax(-1) + 40.0 * temperature
    lo, hi = -bound, bound.clone()
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        mean = (torch.sigmoid((logits + mid.unsqueeze(-1)) / temperature) * un).sum(-1) / count
        above = mean > prior
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


class _Space:
    """Where the EM solves run: the span of the block's known and drawn rows (a gathered block with few rows, as
    refit) or the full feature space; converts rows to its coordinates and back."""

    def __init__(self, both, d: int, dtype: torch.dtype):
        self.span = isinstance(both, GatheredView) and both.length <= REDUCE_AT * d
        self.both = both
        if self.span:
            zero = torch.zeros(both.x.shape[0], 1, d, dtype=dtype, device=both.x.device)
            self.view = RowSpanView(both, zero)
        else:
            self.view = both
        length = self.view.length if self.span else d
        self.ref = torch.zeros(both.x.shape[0] if self.span else 1, 1, length, dtype=dtype, device=both.x.device)

    def coordinates(self, w: torch.Tensor) -> torch.Tensor:
        """Rows (B, P, d) in the span's coordinates ``u = Λ^{-1/2} Vᵀ X w`` (rows in the span: exact)."""
        if not self.span:
            return w
        return torch.bmm(torch.bmm(w, self.both.x.transpose(1, 2)), self.view._to_rows)

    def rows(self, u: torch.Tensor) -> torch.Tensor:
        return self.view.weights(u) if self.span else u


def _prior(o: EMOptions, known_view, logits: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """``π̂`` per category and λ (B × P): the known-label row's mean posterior over the unknowns, or the known
    positive rate."""
    if o.em_prior == "known":
        mask = known_view.mask.to(torch.float64)
        rate = ((known_view.labels > 0).to(torch.float64) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return rate.to(logits.dtype).expand(logits.shape[:2])
    un = unknown.to(logits.dtype)
    return (torch.sigmoid(logits) * un).sum(-1) / un.sum(-1).clamp(min=1)


def _m_weights(em: EMBlock, rho: float, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L') M-step weights: 1 per known label, ``ρ·ω`` per drawn unknown, summing to 1 per category."""
    both = em.both
    known = (both.mask & ~em.unknown).to(torch.float64)
    raw = known + rho * em.scale.to(known.device).view(-1, 1, 1) * em.unknown.to(torch.float64)
    return (raw / raw.sum(-1, keepdim=True).clamp(min=1e-300)).to(dtype)


def _note(em: EMBlock, o: EMOptions, prior: torch.Tensor, i: int, rate: float) -> str:
    """The report's words for category ``i`` of the block: the unknowns used and the prior."""
    lo, hi = float(prior[i].min()), float(prior[i].max())
    est = f"{lo:.3f}" if hi - lo < 5e-4 else f"{lo:.3f}–{hi:.3f} over λ"
    how = "mean posterior of the known-label row" if o.em_prior == "model" else "known positive rate"
    return (f"em: {em.n_drawn[i]} of {em.n_unknown[i]} unknown labels used (each weighted "
            f"{o.em_unknown_weight * float(em.scale[i]):.3g}), estimated prior {est} ({how}; known positive rate "
            f"{rate:.3f})")


def run_em(task: BlockTask) -> None:
    """The known-label rows at every λ, then ``em_iterations`` EM iterations over the unknowns; each iteration's
    rows are handed to the tracker (step ``(k−1)·P + p``)."""
    weight, o = task.weight, task.options
    n_cat, d = weight.shape
    dtype = weight.dtype
    em = task.fit.gather(o.em_unknowns, task.config.seed)
    lam = torch.tensor(o.em_l2, dtype=dtype, device=weight.device).view(1, -1)
    n_lam = lam.shape[1]
    b0 = task.bias.unsqueeze(1).expand(n_cat, n_lam).contiguous()
    centre = torch.zeros_like(weight.unsqueeze(1))
    w, b, iters = solve_in_row_span(em.known, centre, b0, lam, _sample_weight(em.known, False),
                                    Solver(max_iter=o.em_max_iter, tol=o.em_tol))
    space = _Space(em.both, d, dtype)
    u = space.coordinates(w)
    logits = space.view.scores(u, b)
    prior = _prior(o, em.known, logits, em.unknown)
    sw = _m_weights(em, o.em_unknown_weight, dtype)
    observed = (em.both.labels > 0).to(dtype) * (em.both.mask & ~em.unknown).to(dtype)
    solver = Solver(max_iter=o.em_m_iter, tol=o.em_tol)
    total = iters.clone()
    for k in range(o.em_iterations):
        shift = prior_shift(logits, em.unknown, prior, o.em_temperature)
        q = torch.sigmoid((logits + shift.unsqueeze(-1)) / o.em_temperature) * em.unknown.to(dtype)
        space.view.labels = observed + q  # soft targets: the known labels, the unknowns' probabilities
        u, b, it = solve_logistic(space.view, u, b, lam, space.ref, sw, solver)
        total += it
        logits = space.view.scores(u, b)
        rows = space.rows(u)
        scores = task.judge(rows, b)
        for p in range(n_lam):
            task.tracker.update(k * n_lam + p + 1, rows[:, p], b[:, p], scores[:, p])
        task.report(k + 1)
    task.tracker.steps_run = total.max(1).values
    mask = em.known.mask.to(torch.float64)
    rate = (((em.known.labels > 0).to(torch.float64) * mask).sum(-1) / mask.sum(-1).clamp(min=1)).flatten()
    for i, c in enumerate(task.categories):
        task.notes[int(c)] = _note(em, o, prior.cpu(), i, float(rate[i]))


def _detail(o: EMOptions, step: int) -> str:
    k, p = divmod(step - 1, len(o.em_l2))
    return f"l2={o.em_l2[p]:g}, EM iteration {k + 1}"


register_variant(Variant(
    name="em", runner=run_em, options=EMOptions,
    population=lambda o: len(o.em_l2) * (o.em_iterations + 1 + math.ceil(o.em_unknowns)),
    max_steps=lambda o: len(o.em_l2) * o.em_iterations,
    grid=True, detail=_detail, fit_view=em_view,
    summary="refit's logistic rows re-fitted by EM on the unknown labels too (each weighted by its estimated "
            "probability of being positive, the prior from the known labels)",
))
