"""CFT-refit: per-category L2-regularized logistic regression solved to convergence, batched.

Each (category, L2 strength) pair is one independent convex problem

    min_{w, b}  mean_i  s_i · BCE(x_i·w + b, y_i)  +  (λ / 2) · ||w − w_ref||²

over the category's known fit labels (``s_i`` = 1, or class-balancing weights), with ``w_ref`` = 0 or the
trained row and the bias not penalized. All pairs of a block are solved together by an L-BFGS whose
history, step sizes, line searches and stopping are kept per pair, so the batch is exactly a set of
independent solvers; each step reads the features twice (the logits of the search direction, so the line
search costs no feature pass, and the closed-form gradient). Every solution is warm-started from the trained
row. A gathered block whose categories have few known rows (at most ``REDUCE_AT · d``) is solved in the span
of its rows (:class:`RowSpanView`): the same problem in L ≤ d coordinates, the usual case of sparse labels
such as Open Images. The λ grid is the trajectory that the selection rule judges.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import CFTConfig
from .data import GatheredView
from .selection import BestTracker, Judge

__all__ = ["run_refit", "solve_in_row_span", "solve_logistic"]


def _data_term(z: torch.Tensor, labels: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """Weighted BCE summed over each pair's entries: logits (B, P, L) → (B, P)."""
    bce = F.binary_cross_entropy_with_logits(z, labels.to(z.dtype).expand_as(z), reduction="none")
    return (bce * sw).sum(-1)


def _gradient(view, z, labels, sw, lam, delta) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradient at logits ``z`` and ``delta = w − w_ref``: (B, P, d) and (B, P)."""
    r = sw * (torch.sigmoid(z) - labels.to(z.dtype))  # B × P × L, zero where unknown or padded
    return view.backprop(r) + lam.unsqueeze(-1) * delta, r.sum(-1)


def _sample_weight(view, balanced: bool) -> torch.Tensor:
    """(B, 1, L) weights summing to 1 over each category's known entries."""
    known = view.mask.to(torch.float64)
    pos = (view.labels > 0).to(torch.float64) * known
    n = known.sum(-1, keepdim=True).clamp(min=1)
    if not balanced:
        return known / n
    n_pos = pos.sum(-1, keepdim=True).clamp(min=1)
    n_neg = (known - pos).sum(-1, keepdim=True).clamp(min=1)
    return 0.5 * (pos / n_pos + (known - pos) / n_neg)


def _two_loop(g, gnorm, s_hist, y_hist, rho_hist):
    """L-BFGS direction ``−H·g`` per pair from the history (steepest descent, scaled, without one)."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(list(zip(s_hist, y_hist, rho_hist))):
        a = rho * (s * q).sum(-1)
        alphas.append(a)
        q -= a.unsqueeze(-1) * y
    if s_hist:
        s, y = s_hist[-1], y_hist[-1]
        gamma = (s * y).sum(-1) / (y * y).sum(-1).clamp(min=1e-30)
        q *= gamma.clamp(min=1e-12).unsqueeze(-1)
    else:
        q /= gnorm.clamp(min=1.0).unsqueeze(-1)
    for (s, y, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
        bcoef = rho * (y * q).sum(-1)
        q += (a - bcoef).unsqueeze(-1) * s
    return -q


# long: one batched L-BFGS iteration (direction, line search along precomputed logits, history) reads best as one loop
@torch.no_grad()
def solve_logistic(view, w0, b0, lam, w_ref, sample_weight, max_iter: int = 200, history: int = 10,
                   tol: float = 1e-6):
    """Batched L-BFGS with a per-pair Armijo backtracking line search.

    Each iteration reads the features twice: the logits of the search direction (so every trial step of the
    line search is the current logits plus a multiple of them, and the penalty a quadratic in the step) and
    the closed-form gradient at the accepted point.

    Args:
        view: a block view (dense or gathered) of the fit split.
        w0, b0: (B, P, d), (B, P) starting points.
        lam: (1, P) L2 strengths (broadcastable to B × P); ``w_ref``: (B, 1, d).
    Returns:
        ``(w, b, iterations)`` with ``iterations`` (B, P) per pair.
    """
    dtype = w0.dtype
    w, b = w0.clone(), b0.clone()
    sw = sample_weight.to(dtype)
    labels = view.labels
    lam = lam.to(dtype)
    z = view.scores(w, b)
    delta = w - w_ref
    f = _data_term(z, labels, sw) + 0.5 * lam * (delta * delta).sum(-1)
    gw, gb = _gradient(view, z, labels, sw, lam, delta)
    shape = f.shape
    s_hist, y_hist, rho_hist = [], [], []
    active = torch.ones(shape, dtype=torch.bool, device=w.device)
    iters = torch.zeros(shape, dtype=torch.long, device=w.device)

    def cat(aw, ab):
        return torch.cat([aw, ab.unsqueeze(-1)], dim=-1)

    for _ in range(max_iter):
        g = cat(gw, gb)
        gnorm = g.abs().amax(-1)
        active &= gnorm > tol
        if not bool(active.any()):
            break
        direction = _two_loop(g, gnorm, s_hist, y_hist, rho_hist) * active.unsqueeze(-1)
        slope = (g * direction).sum(-1)
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad.unsqueeze(-1), -g / gnorm.clamp(min=1.0).unsqueeze(-1), direction)
            direction *= active.unsqueeze(-1)
            slope = (g * direction).sum(-1)
        dir_w, dir_b = direction[..., :-1], direction[..., -1]
        dz = view.linear(dir_w, dir_b)  # logits move by t·dz along the direction
        dd, dD, DD = (dir_w * dir_w).sum(-1), (delta * dir_w).sum(-1), (delta * delta).sum(-1)
        step = torch.ones(shape, dtype=dtype, device=w.device)
        taken = torch.zeros(shape, dtype=dtype, device=w.device)
        pending = active.clone()
        new_f = f.clone()
        for _ls in range(30):
            tf = _data_term(z + step.unsqueeze(-1) * dz, labels, sw) + 0.5 * lam * (DD + step * (2 * dD + step * dd))
            ok = pending & (tf <= f + 1e-4 * step * slope)
            taken = torch.where(ok, step, taken)
            new_f = torch.where(ok, tf, new_f)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        moved = active & ~pending
        active &= ~pending  # a pair whose line search failed has converged to machine precision
        f_prev = f
        s_vec = direction * taken.unsqueeze(-1)
        w, b = w + s_vec[..., :-1], b + s_vec[..., -1]
        delta = w - w_ref
        z = z + taken.unsqueeze(-1) * dz
        ngw, ngb = _gradient(view, z, labels, sw, lam, delta)
        y_vec = cat(ngw - gw, ngb - gb) * moved.unsqueeze(-1)
        sy = (s_vec * y_vec).sum(-1)
        rho = torch.where(sy > 1e-12, 1.0 / sy.clamp(min=1e-12), torch.zeros_like(sy))
        s_hist.append(s_vec * (sy > 1e-12).unsqueeze(-1))
        y_hist.append(y_vec)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        f, gw, gb = new_f, ngw, ngb
        iters += moved.long()
        tiny = (f_prev - f).abs() <= 1e-12 * f_prev.abs().clamp(min=1.0)
        active &= ~(moved & tiny)
    return w, b, iters


REDUCE_AT = 0.5  # a gathered block with at most this share of d rows is solved in the span of its rows
SPAN_CHUNK_BYTES = 64 * 2**20  # Gram matrices decomposed at once (float64)


class RowSpanView:
    """A gathered block in the coordinates of its categories' row spans.

    Started from ``w_ref``, every iterate of the solver stays in ``w_ref + span(x_1, …, x_L)`` (the data
    gradient is ``Σ r_i x_i``, the penalty's is ``λ (w − w_ref)``). With ``K = X Xᵀ = V Λ Vᵀ`` and the
    orthonormal basis ``Q = Xᵀ V Λ^{-1/2}`` of that span, ``w = w_ref + Q u`` turns each problem into a
    logistic regression in L ≤ d coordinates with features ``X Q = V Λ^{1/2}`` and penalty ``λ/2 ||u||²``:
    the same problem, so the same solution, at O(L²) per solver step instead of O(L d). Directions whose
    eigenvalue is at rounding level are dropped (their coordinate stays 0).
    """

    kind = "rowspan"

    def __init__(self, view: GatheredView, w_ref: torch.Tensor):
        x = view.x
        n_cat, length = x.shape[0], x.shape[1]
        self.x = torch.empty(n_cat, length, length, dtype=x.dtype, device=x.device)  # V Λ^{1/2}
        self._to_rows = torch.empty_like(self.x)  # V Λ^{-1/2}
        eps = torch.finfo(x.dtype).eps
        step = max(1, int(SPAN_CHUNK_BYTES // (8 * max(1, length) ** 2)))  # float64 Gram matrices at once
        for a in range(0, n_cat, step):
            part = x[a:a + step]
            evals, evecs = torch.linalg.eigh(torch.bmm(part, part.transpose(1, 2)).double())
            keep = evals > evals[:, -1:].clamp(min=0) * (eps * 10 * length)
            root = evals.clamp(min=0).sqrt()
            self.x[a:a + step] = evecs * (root * keep).unsqueeze(1)
            self._to_rows[a:a + step] = evecs * (keep / root.clamp(min=1e-300)).unsqueeze(1)
        self._rows = x
        self._w_ref = w_ref
        self.offset = torch.bmm(w_ref, x.transpose(1, 2))  # B × 1 × L: the logits of w_ref
        self.labels, self.mask = view.labels, view.mask

    @property
    def length(self) -> int:
        return self.x.shape[1]

    def linear(self, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The logits' change for a move ``(u, bias)``, without the offset of ``w_ref``."""
        return torch.bmm(u, self.x.transpose(1, 2)) + bias.unsqueeze(-1)

    def scores(self, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.linear(u, bias) + self.offset

    def backprop(self, r: torch.Tensor) -> torch.Tensor:
        return torch.bmm(r, self.x)

    def weights(self, u: torch.Tensor) -> torch.Tensor:
        """``w_ref + Q u`` (B, P, d) of coordinates ``u`` (B, P, L)."""
        return self._w_ref + torch.bmm(torch.bmm(u, self._to_rows.transpose(1, 2)), self._rows)


def solve_in_row_span(view, w_ref, b0, lam, sample_weight, **solver) -> tuple[torch.Tensor, ...]:
    """:func:`solve_logistic` started from ``w_ref``, solved through :class:`RowSpanView` when that is cheaper."""
    n_cat, n_lam = b0.shape
    d = w_ref.shape[-1]
    if not isinstance(view, GatheredView) or view.length > REDUCE_AT * d:
        w0 = w_ref.expand(n_cat, n_lam, d).contiguous()
        return solve_logistic(view, w0, b0, lam, w_ref, sample_weight, **solver)
    span = RowSpanView(view, w_ref)
    u0 = torch.zeros(n_cat, n_lam, span.length, dtype=w_ref.dtype, device=w_ref.device)
    zero = torch.zeros(n_cat, 1, span.length, dtype=w_ref.dtype, device=w_ref.device)
    u, b, iters = solve_logistic(span, u0, b0, lam, zero, sample_weight, **solver)
    return span.weights(u), b, iters


def run_refit(weight: torch.Tensor, bias: torch.Tensor, fit, judge: Judge, tracker: BestTracker, config: CFTConfig,
              seed: int = 0, progress=None, categories: list[int] | None = None) -> None:
    """Solve every (category, λ) pair of the block; the λ grid is the trajectory the ``judge`` tracks (step p: λ_p)."""
    n_cat = weight.shape[0]
    dtype = weight.dtype
    lam = torch.tensor(config.refit_l2, dtype=dtype, device=weight.device).view(1, -1)
    n_lam = lam.shape[1]
    b0 = bias.unsqueeze(1).expand(n_cat, n_lam).contiguous()
    sw = _sample_weight(fit, config.refit_balanced)
    solver = dict(max_iter=config.refit_max_iter, tol=config.refit_tol)
    # started at the penalty's centre (the trained row, or zero), so the row-span form applies
    centre = weight.unsqueeze(1) if config.refit_toward == "trained" else torch.zeros_like(weight.unsqueeze(1))
    w, b, iters = solve_in_row_span(fit, centre, b0, lam, sw, **solver)
    scores = judge(w, b)  # B × n_lam
    for p in range(n_lam):
        tracker.update(p + 1, w[:, p], b[:, p], scores[:, p])
    tracker.steps_run = iters.max(1).values
    if progress is not None:
        progress(int(iters.max()))


def fit_logistic_rows(features, labels, mask, l2: list[float], max_iter: int = 300):
    """Per category and L2 strength, the logistic regression on the masked labels, fitted from zero.

    For reporting (headroom rows of benchmarks and the recipe), never for choosing rows. Returns the weights
    (C × P × d) and biases (C × P) for the P strengths of ``l2``.
    """
    from .data import Split, ViewFactory

    split = Split.from_arrays(np.asarray(features, dtype=np.float64), labels, mask, "training")
    n_cat, d = split.labels.shape[1], split.features.shape[1]
    view = ViewFactory(split, torch.device("cpu"), torch.float64, 0.0).view(list(range(n_cat)))
    lam = torch.tensor([l2], dtype=torch.float64)
    start_w = torch.zeros(n_cat, len(l2), d, dtype=torch.float64)
    start_b = torch.zeros(n_cat, len(l2), dtype=torch.float64)
    w, b, _ = solve_logistic(view, start_w, start_b, lam, torch.zeros(n_cat, 1, d, dtype=torch.float64),
                             _sample_weight(view, False), max_iter=max_iter)
    return w, b
