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
so shards and reruns draw the same) and gathers them after its known rows, group by group within the block's
memory budget — memory grows with the rows of a group, never with images × categories. The known-label rows are
solved where refit solves them; the EM iterations in the span of the known and drawn rows when they are few
(``EM_SPAN_AT · d``), else in the feature space (see ``docs/engine.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..logistic import REDUCE_AT, RowSpanView, Solver, example_weights, solve_from_logits, solve_logistic
from ..registry import BlockTask, Variant, check_minimum, register_variant
from ..views import GatheredView, ViewFactory

__all__ = ["EMBlock", "EMOptions", "EMSource", "draw_unknowns", "em_view", "prior_shift", "run_em"]

PRIORS = ("model", "known")
BISECTIONS = 60  # halvings of the prior shift's bracket (float64 rounding below that)


@dataclass
class EMOptions:
    """CFT-em's options (``CFTConfig`` keywords)."""

    em_l2: list[float] = field(
        default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0],
        metadata={"help": "em: grid of L2 strengths λ (toward zero, as refit's default; without refit's weakest, "
                  "never chosen in the measurements); every EM iteration's row at every λ is a candidate of the "
                  "selection rule."},
    )
    em_iterations: int = field(default=2, metadata={"help": "em: EM iterations (E-step, then M-step) after the "
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
        default=4.0,
        metadata={"help": "em: unknown images drawn per known label of a category in a gathered block (each stands "
                  "for its share of all the category's unknowns); dense blocks use every unknown."},
    )
    em_unknown_weight: float = field(default=1.0, metadata={"help": "em: weight ρ of an unknown image against a "
                                                                    "known one in the M-step."})
    em_max_iter: int = field(default=200, metadata={"help": "em: L-BFGS iterations at most of the known-label row."})
    em_m_iter: int = field(default=5, metadata={"help": "em: L-BFGS iterations at most of each M-step."})
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


STATE_FLOATS = 24  # per candidate and feature: the solver's state (L-BFGS history of 10 pairs), as blocks count it


@dataclass
class EMSource:
    """What :func:`em_view` hands the runner: the block's categories and its fit split's view factory. The runner
    draws the unknown rows (it knows the options and the seed) and gathers them group by group (:meth:`groups`)."""

    factory: ViewFactory
    block: list[int]

    def groups(self, per_known: float, n_lam: int, budget: float) -> list[list[int]]:
        """The block's categories (positions) in consecutive groups whose gathered known and drawn rows, scores
        and solver state fit ``budget`` bytes (the block's memory budget counts the known rows only); a dense
        block, whose features are shared, is one group."""
        if self.factory.is_dense(self.block[0]):
            return [list(range(len(self.block)))]
        d, n = self.factory.split.features.shape[1], self.factory.split.n
        out: list[list[int]] = []
        longest = 0
        for i, c in enumerate(self.block):
            k = int(self.factory.known[c])
            rows = k + min(n - k, math.ceil(per_known * k))
            widest = max(longest, rows)
            per_cat = 4 * (widest * d + 10 * n_lam * widest + STATE_FLOATS * n_lam * (d + 1))
            if out and per_cat * (len(out[-1]) + 1) <= budget:
                out[-1].append(i)
                longest = widest
            else:
                out.append([i])
                longest = rows
        return out

    def gather(self, positions: list[int], per_known: float, seed: int) -> EMBlock:
        """The categories at ``positions`` of the block: their known rows and drawn unknowns."""
        cats = [self.block[i] for i in positions]
        if self.factory.is_dense(cats[0]):
            view = self.factory.view(cats)
            unknown = ~view.mask
            n_unk = unknown.sum(-1).flatten().tolist()
            return EMBlock(view, view, unknown, torch.ones(len(cats), dtype=torch.float64), n_unk, n_unk)
        return _gathered(self.factory, cats, per_known, seed)


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
    # empty, not zeros: every entry is written once (the rows gathered, the padding zeroed), not twice
    x = torch.empty(len(block), lk + uk, split.features.shape[1], dtype=factory.dtype)
    y = torch.zeros(len(block), lk + uk, dtype=torch.int8)
    known = torch.zeros(len(block), lk + uk, dtype=torch.bool)
    unknown = torch.zeros_like(known)
    for i, ((rows, values), extra) in enumerate(zip(columns, drawn)):
        k = rows.numel()
        split.take_into(x[i, :k], rows)
        split.take_into(x[i, lk:lk + extra.size], torch.from_numpy(extra))
        x[i, k:lk].zero_()
        x[i, lk + extra.size:].zero_()
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


EM_SPAN_AT = 0.125  # a gathered group with at most this share of d known and drawn rows runs its EM in their span


class _Space:
    """The coordinates a view's rows are solved in: the span of its rows (``w = Q u``, refit's
    :class:`RowSpanView`) for a gathered view of at most ``at · d`` rows, else the feature space. The known-label
    rows are solved as refit does (``at = REDUCE_AT``); the EM iterations, over the known and drawn rows, in their
    span only below ``EM_SPAN_AT · d``: a few capped solves in the feature space cost less than the
    eigendecomposition of a larger span. Either way the EM problem is the same (every iterate lies in the span)."""

    def __init__(self, view, d: int, dtype: torch.dtype, at: float):
        n_cat, device = view.labels.shape[0], view.labels.device
        self.span = isinstance(view, GatheredView) and view.length <= at * d
        if self.span:
            self.x = view.x
            self.view = RowSpanView(view, torch.zeros(n_cat, 1, d, dtype=dtype, device=device))
            self.ref = torch.zeros(n_cat, 1, self.view.length, dtype=dtype, device=device)
        else:
            self.view = view
            self.ref = torch.zeros(1, 1, d, dtype=dtype, device=device)

    def start(self, n_cat: int, n_lam: int) -> torch.Tensor:
        """The known-label solve's starting rows (the penalty's centre, zero) in these coordinates."""
        return self.ref.expand(n_cat, n_lam, self.ref.shape[-1]).contiguous()

    def coordinates(self, w: torch.Tensor) -> torch.Tensor:
        """Rows (B, P, d) of the span in its coordinates, ``u = Λ^{-1/2} Vᵀ X w`` (``_to_rows`` is ``V Λ^{-1/2}``)."""
        return torch.bmm(torch.bmm(w, self.x.transpose(1, 2)), self.view._to_rows) if self.span else w

    def rows(self, u: torch.Tensor) -> torch.Tensor:
        """Rows (B, P, d) of coordinates ``u``."""
        return self.view.weights(u) if self.span else u


def _known_rate(view) -> torch.Tensor:
    """Each category's known positive rate ``n_pos / n_known`` (B)."""
    mask = view.mask.to(torch.float64)
    return (((view.labels > 0).to(torch.float64) * mask).sum(-1) / mask.sum(-1).clamp(min=1)).flatten()


def _mean_posterior(logits: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """The mean posterior ``σ(z)`` over each category's unknowns, per λ (B × P): the prior under the known-label
    row."""
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


def _fit_group(em: EMBlock, rows: tuple[torch.Tensor, torch.Tensor], lam: torch.Tensor, o: EMOptions):
    """One group's known-label rows at every λ, then its EM iterations. Returns each iteration's rows (K × b × P ×
    d, K × b × P), the solver iterations per (category, λ), the prior (b × P) and the known positive rates (b)."""
    weight, bias = rows
    n_cat, d = weight.shape
    n_lam, dtype = lam.shape[1], weight.dtype
    known = _Space(em.known, d, dtype, REDUCE_AT)
    rate = _known_rate(em.known)
    # the known-label rows: refit's problem, solver and starting point (zero), in refit's coordinates
    u, b, iters = solve_logistic(known.view, known.start(n_cat, n_lam),
                                 bias.unsqueeze(1).expand(n_cat, n_lam).contiguous(), lam, known.ref,
                                 example_weights(em.known, False), Solver(max_iter=o.em_max_iter, tol=o.em_tol))
    both = _Space(em.both, d, dtype, EM_SPAN_AT)
    u = both.coordinates(known.rows(u))
    logits = both.view.scores(u, b)
    prior = rate.to(dtype).unsqueeze(1).expand(n_cat, n_lam) if o.em_prior == "known" else _mean_posterior(
        logits, em.unknown)
    sw = _m_weights(em, o.em_unknown_weight, dtype)
    observed = (em.both.labels > 0).to(dtype) * (em.both.mask & ~em.unknown).to(dtype)
    solver = Solver(max_iter=o.em_m_iter, tol=o.em_tol)
    ws, bs = [], []
    for _ in range(o.em_iterations):
        shift = prior_shift(logits, em.unknown, prior, o.em_temperature)
        q = torch.sigmoid((logits + shift.unsqueeze(-1)) / o.em_temperature) * em.unknown.to(dtype)
        both.view.labels = observed + q  # soft targets: the known labels, the unknowns' probabilities
        u, b, it, logits = solve_from_logits(both.view, (u, b, logits), lam, both.ref, sw, solver)
        iters += it
        ws.append(both.rows(u))
        bs.append(b)
    return torch.stack(ws), torch.stack(bs), iters, prior, rate


def run_em(task: BlockTask) -> None:
    """Each group of the block's categories fitted (:func:`_fit_group`), then every EM iteration's rows handed to
    the tracker (step ``(k−1)·P + p``: iteration k, λ_p) and each category's note written."""
    weight, o = task.weight, task.options
    n_cat, d = weight.shape
    lam = torch.tensor(o.em_l2, dtype=weight.dtype, device=weight.device).view(1, -1)
    n_lam = lam.shape[1]
    ws = torch.empty(o.em_iterations, n_cat, n_lam, d, dtype=weight.dtype, device=weight.device)
    bs = torch.empty(o.em_iterations, n_cat, n_lam, dtype=weight.dtype, device=weight.device)
    steps = torch.zeros(n_cat, dtype=torch.long, device=weight.device)
    for group in task.fit.groups(o.em_unknowns, n_lam, task.config.block_memory_mb * 2**20):
        em = task.fit.gather(group, o.em_unknowns, task.config.seed)
        idx = torch.as_tensor(group, device=weight.device)
        w, b, iters, prior, rate = _fit_group(em, (weight[idx], task.bias[idx]), lam, o)
        ws[:, idx], bs[:, idx] = w, b
        steps[idx] = iters.max(1).values
        for j, i in enumerate(group):
            task.notes[int(task.categories[i])] = _note(em, o, prior.cpu(), j, float(rate[j]))
        task.report(group[-1] + 1)
    for k in range(o.em_iterations):
        scores = task.judge(ws[k], bs[k])
        for p in range(n_lam):
            task.tracker.update(k * n_lam + p + 1, ws[k, :, p], bs[k, :, p], scores[:, p])
    task.tracker.steps_run = steps


def _detail(o: EMOptions, step: int) -> str:
    k, p = divmod(step - 1, len(o.em_l2))
    return f"l2={o.em_l2[p]:g}, EM iteration {k + 1}"


register_variant(Variant(
    name="em", runner=run_em, options=EMOptions,
    # candidates held per category (every iteration's rows, the solver's) and, roughly, the drawn rows' scores; the
    # drawn rows themselves are gathered group by group within the budget (EMSource.groups)
    population=lambda o: len(o.em_l2) * (o.em_iterations + 1 + math.ceil(o.em_unknowns)),
    max_steps=lambda o: len(o.em_l2) * o.em_iterations,
    grid=True, detail=_detail, fit_view=em_view,
    summary="refit's logistic rows re-fitted by EM on the unknown labels too (each weighted by its estimated "
            "probability of being positive, the prior from the known labels)",
))
