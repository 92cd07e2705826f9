"""Batched L2-regularized logistic regression: the solver that refit and em share.

Each (category, L2 strength) pair is one independent convex problem

    min_{w, b}  sum_i  s_i · BCE(x_i·w + b, y_i)  +  (λ / 2) · ||w − w_ref||²

with per-example weights ``s_i`` (em passes soft labels in [0, 1] for the unknown ones) and the bias not
penalized. All pairs of a block are solved together by an L-BFGS whose history, step sizes, line searches and
stopping are kept per pair, so the batch is exactly a set of independent solvers; each step reads the features
twice (the logits of the search direction, so the line search costs no feature pass, and the closed-form
gradient). A gathered view whose categories have few rows (at most ``REDUCE_AT · d``) is solved in the span of
its rows (:class:`RowSpanView`): the same problem in L ≤ d coordinates, the usual case of sparse labels such as
Open Images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .views import GatheredView, Split, ViewFactory

__all__ = ["REDUCE_AT", "RowSpanView", "Solver", "example_weights", "fit_logistic_rows", "solve_from_logits",
           "solve_in_row_span", "solve_logistic"]


def _data_term(z: torch.Tensor, labels: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """Weighted BCE summed over each pair's entries: logits (B, P, L) → (B, P)."""
    bce = F.binary_cross_entropy_with_logits(z, labels.to(z.dtype).expand_as(z), reduction="none")
    return (bce * sw).sum(-1)


def _gradient(view, z, labels, sw, lam, delta) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradient at logits ``z`` and ``delta = w − w_ref``: (B, P, d) and (B, P)."""
    r = sw * (torch.sigmoid(z) - labels.to(z.dtype))  # B × P × L, zero where unknown or padded
    return view.backprop(r) + lam.unsqueeze(-1) * delta, r.sum(-1)


def example_weights(view, balanced: bool) -> torch.Tensor:
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


@dataclass(frozen=True)
class Solver:
    """Settings of :func:`solve_logistic`: iterations at most, L-BFGS history pairs, gradient tolerance."""

    max_iter: int = 200
    history: int = 10
    tol: float = 1e-6


@dataclass
class _State:
    """The iterate of :func:`solve_logistic` per pair: rows, logits, objective, gradient, L-BFGS history, which
    pairs still run and their iteration counts."""

    w: torch.Tensor
    b: torch.Tensor
    z: torch.Tensor
    delta: torch.Tensor
    f: torch.Tensor
    gw: torch.Tensor
    gb: torch.Tensor
    active: torch.Tensor
    iters: torch.Tensor
    s_hist: list = field(default_factory=list)
    y_hist: list = field(default_factory=list)
    rho_hist: list = field(default_factory=list)


def _cat(aw: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    return torch.cat([aw, ab.unsqueeze(-1)], dim=-1)


@torch.no_grad()
def solve_logistic(view, w0, b0, lam, w_ref, sample_weight, solver: Solver = Solver()):
    """Batched L-BFGS with a per-pair Armijo backtracking line search.

    Each iteration reads the features twice: the logits of the search direction (so every trial step of the
    line search is the current logits plus a multiple of them, and the penalty a quadratic in the step) and
    the closed-form gradient at the accepted point.

    Args:
        view: a block view (dense or gathered) of the fit split.
        w0, b0: (B, P, d), (B, P) starting points.
        lam: (1, P) L2 strengths (broadcastable to B × P); ``w_ref``: (B, 1, d).
        solver: iterations, history and tolerance (:class:`Solver`).
    Returns:
        ``(w, b, iterations)`` with ``iterations`` (B, P) per pair.
    """
    st = _solve(view, (w0, b0, None), lam, w_ref, sample_weight, solver)
    return st.w, st.b, st.iters


@torch.no_grad()
def solve_from_logits(view, start: tuple, lam, w_ref, sample_weight, solver: Solver = Solver()):
    """:func:`solve_logistic` from ``start = (w0, b0, logits)``, the logits of the start on the view's rows (the
    caller has them: no feature pass), returning the solution's logits too: ``(w, b, iterations, logits)``. The
    logits are the solver's own (updated along each accepted step), not a fresh pass over the features."""
    st = _solve(view, start, lam, w_ref, sample_weight, solver)
    return st.w, st.b, st.iters, st.z


def _solve(view, start: tuple, lam, w_ref, sample_weight, solver: Solver) -> _State:
    """The solver's loop from ``start = (w0, b0, logits or None)``; the final state (rows, logits, iterations)."""
    w0, b0, z = start
    dtype = w0.dtype
    w, b = w0.clone(), b0.clone()
    sw = sample_weight.to(dtype)
    labels = view.labels
    lam = lam.to(dtype)
    z = view.scores(w, b) if z is None else z.to(dtype)
    delta = w - w_ref
    f = _data_term(z, labels, sw) + 0.5 * lam * (delta * delta).sum(-1)
    gw, gb = _gradient(view, z, labels, sw, lam, delta)
    shape = f.shape
    st = _State(w, b, z, delta, f, gw, gb, torch.ones(shape, dtype=torch.bool, device=w.device),
                torch.zeros(shape, dtype=torch.long, device=w.device))
    for _ in range(solver.max_iter):
        g = _cat(st.gw, st.gb)
        gnorm = g.abs().amax(-1)
        st.active &= gnorm > solver.tol
        if not bool(st.active.any()):
            break
        _iterate(view, st, g, gnorm, (labels, sw, lam, w_ref), solver.history)
    return st


def _direction(st: _State, g: torch.Tensor, gnorm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-BFGS search direction of the running pairs (steepest descent where it is not a descent) and its
    slope."""
    direction = _two_loop(g, gnorm, st.s_hist, st.y_hist, st.rho_hist) * st.active.unsqueeze(-1)
    slope = (g * direction).sum(-1)
    bad = slope >= 0  # not a descent direction: restart from steepest descent
    if bool(bad.any()):
        direction = torch.where(bad.unsqueeze(-1), -g / gnorm.clamp(min=1.0).unsqueeze(-1), direction)
        direction *= st.active.unsqueeze(-1)
        slope = (g * direction).sum(-1)
    return direction, slope


def _line_search(st: _State, dz, dir_w, slope, problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking per pair along logits ``z + t·dz``: the step taken (0 where none was accepted), the new
    objective, and the pairs still pending (their search failed)."""
    labels, sw, lam, _ = problem
    shape, dtype, delta = st.f.shape, st.w.dtype, st.delta
    dd, dD, DD = (dir_w * dir_w).sum(-1), (delta * dir_w).sum(-1), (delta * delta).sum(-1)
    step = torch.ones(shape, dtype=dtype, device=st.w.device)
    taken = torch.zeros(shape, dtype=dtype, device=st.w.device)
    pending = st.active.clone()
    new_f = st.f.clone()
    for _ls in range(30):
        tf = _data_term(st.z + step.unsqueeze(-1) * dz, labels, sw) + 0.5 * lam * (DD + step * (2 * dD + step * dd))
        ok = pending & (tf <= st.f + 1e-4 * step * slope)
        taken = torch.where(ok, step, taken)
        new_f = torch.where(ok, tf, new_f)
        pending &= ~ok
        if not bool(pending.any()):
            break
        step = torch.where(pending, step * 0.5, step)
    return taken, new_f, pending


def _iterate(view, st: _State, g: torch.Tensor, gnorm: torch.Tensor, problem: tuple, history: int) -> None:
    """One batched L-BFGS iteration of the running pairs: direction, line search along precomputed logits, step,
    gradient and history."""
    labels, sw, lam, w_ref = problem
    direction, slope = _direction(st, g, gnorm)
    dir_w, dir_b = direction[..., :-1], direction[..., -1]
    dz = view.linear(dir_w, dir_b)  # logits move by t·dz along the direction
    taken, new_f, pending = _line_search(st, dz, dir_w, slope, problem)
    moved = st.active & ~pending
    st.active &= ~pending  # a pair whose line search failed has converged to machine precision
    f_prev = st.f
    s_vec = direction * taken.unsqueeze(-1)
    st.w, st.b = st.w + s_vec[..., :-1], st.b + s_vec[..., -1]
    st.delta = st.w - w_ref
    st.z = st.z + taken.unsqueeze(-1) * dz
    ngw, ngb = _gradient(view, st.z, labels, sw, lam, st.delta)
    y_vec = _cat(ngw - st.gw, ngb - st.gb) * moved.unsqueeze(-1)
    sy = (s_vec * y_vec).sum(-1)
    rho = torch.where(sy > 1e-12, 1.0 / sy.clamp(min=1e-12), torch.zeros_like(sy))
    st.s_hist.append(s_vec * (sy > 1e-12).unsqueeze(-1))
    st.y_hist.append(y_vec)
    st.rho_hist.append(rho)
    if len(st.s_hist) > history:
        st.s_hist.pop(0), st.y_hist.pop(0), st.rho_hist.pop(0)
    st.f, st.gw, st.gb = new_f, ngw, ngb
    st.iters += moved.long()
    tiny = (f_prev - st.f).abs() <= 1e-12 * f_prev.abs().clamp(min=1.0)
    st.active &= ~(moved & tiny)


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


def solve_in_row_span(view, w_ref, b0, lam, sample_weight, solver: Solver = Solver()) -> tuple[torch.Tensor, ...]:
    """:func:`solve_logistic` started from ``w_ref``, solved through :class:`RowSpanView` when that is cheaper."""
    n_cat, n_lam = b0.shape
    d = w_ref.shape[-1]
    if not isinstance(view, GatheredView) or view.length > REDUCE_AT * d:
        w0 = w_ref.expand(n_cat, n_lam, d).contiguous()
        return solve_logistic(view, w0, b0, lam, w_ref, sample_weight, solver)
    span = RowSpanView(view, w_ref)
    u0 = torch.zeros(n_cat, n_lam, span.length, dtype=w_ref.dtype, device=w_ref.device)
    zero = torch.zeros(n_cat, 1, span.length, dtype=w_ref.dtype, device=w_ref.device)
    u, b, iters = solve_logistic(span, u0, b0, lam, zero, sample_weight, solver)
    return span.weights(u), b, iters

def fit_logistic_rows(features, labels, mask, l2: list[float], max_iter: int = 300):
    """Per category and L2 strength, the logistic regression on the masked labels, fitted from zero.

    For reporting (headroom rows of benchmarks and the recipe), never for choosing rows. Returns the weights
    (C × P × d) and biases (C × P) for the P strengths of ``l2``.
    """
    split = Split.from_arrays(np.asarray(features, dtype=np.float64), labels, mask, "training")
    n_cat, d = split.labels.shape[1], split.features.shape[1]
    view = ViewFactory(split, torch.device("cpu"), torch.float64, 0.0).view(list(range(n_cat)))
    lam = torch.tensor([l2], dtype=torch.float64)
    start_w = torch.zeros(n_cat, len(l2), d, dtype=torch.float64)
    start_b = torch.zeros(n_cat, len(l2), dtype=torch.float64)
    w, b, _ = solve_logistic(view, start_w, start_b, lam, torch.zeros(n_cat, 1, d, dtype=torch.float64),
                             example_weights(view, False), Solver(max_iter=max_iter))
    return w, b
