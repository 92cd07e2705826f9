"""CFT-refit: per-category L2-regularized logistic regression solved to convergence, batched.

Each (category, L2 strength) pair is one independent convex problem

    min_{w, b}  mean_i  s_i · BCE(x_i·w + b, y_i)  +  (λ / 2) · ||w − w_ref||²

over the category's known fit labels (``s_i`` = 1, or class-balancing weights), with ``w_ref`` = 0 or the
trained row and the bias not penalized. All pairs of a block are solved together by an L-BFGS whose
history, step sizes, line searches and stopping are kept per pair, so the batch is exactly a set of
independent solvers. Every solution is warm-started from the trained row; each category then keeps the
λ whose solution scores best on the selection split (if strictly better than the trained row).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import CFTConfig
from .selection import BestTracker, Judge

__all__ = ["logistic_objective", "run_refit"]


def logistic_objective(view, weight, bias, lam, w_ref, sample_weight):
    """Per-pair objective (B, P) of the candidates ``weight`` (B, P, d), ``bias`` (B, P)."""
    logits = view.scores(weight, bias)  # B × P × L
    bce = F.binary_cross_entropy_with_logits(logits, view.labels.to(logits.dtype).expand_as(logits),
                                             reduction="none")
    data = (bce * sample_weight).sum(-1)
    reg = 0.5 * lam * ((weight - w_ref) ** 2).sum(-1)
    return data + reg


def _value_and_grad(view, w, b, lam, w_ref, sw):
    w = w.detach().requires_grad_(True)
    b = b.detach().requires_grad_(True)
    with torch.enable_grad():
        f = logistic_objective(view, w, b, lam, w_ref, sw)
        gw, gb = torch.autograd.grad(f.sum(), [w, b])
    return f.detach(), gw, gb


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


# long: one batched L-BFGS iteration (two-loop recursion, line search, history) reads best as one loop
@torch.no_grad()
def solve_logistic(view, w0, b0, lam, w_ref, sample_weight, max_iter: int = 200, history: int = 10,
                   tol: float = 1e-6):
    """Batched L-BFGS with a per-pair Armijo backtracking line search.

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
    f, gw, gb = _value_and_grad(view, w, b, lam, w_ref, sw)
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
        # two-loop recursion, per pair
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
        direction = -q * active.unsqueeze(-1)
        slope = (g * direction).sum(-1)
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad.unsqueeze(-1), -g / gnorm.clamp(min=1.0).unsqueeze(-1), direction)
            direction *= active.unsqueeze(-1)
            slope = (g * direction).sum(-1)
        step = torch.ones(shape, dtype=dtype, device=w.device)
        pending = active.clone()
        new_w, new_b, new_f = w.clone(), b.clone(), f.clone()
        for _ls in range(30):
            tw = w + step.unsqueeze(-1) * direction[..., :-1]
            tb = b + step * direction[..., -1]
            tf = logistic_objective(view, tw, tb, lam, w_ref, sw)
            ok = pending & (tf <= f + 1e-4 * step * slope)
            new_w = torch.where(ok.unsqueeze(-1), tw, new_w)
            new_b = torch.where(ok, tb, new_b)
            new_f = torch.where(ok, tf, new_f)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        moved = active & ~pending
        active &= ~pending  # a pair whose line search failed has converged to machine precision
        f_prev = f
        new_fv, ngw, ngb = _value_and_grad(view, new_w, new_b, lam, w_ref, sw)
        s_vec = cat(new_w - w, new_b - b)
        y_vec = cat(ngw - gw, ngb - gb) * moved.unsqueeze(-1)
        sy = (s_vec * y_vec).sum(-1)
        rho = torch.where(sy > 1e-12, 1.0 / sy.clamp(min=1e-12), torch.zeros_like(sy))
        s_hist.append(s_vec * (sy > 1e-12).unsqueeze(-1))
        y_hist.append(y_vec)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        w, b, f, gw, gb = new_w, new_b, new_fv, ngw, ngb
        iters += moved.long()
        tiny = (f_prev - f).abs() <= 1e-12 * f_prev.abs().clamp(min=1.0)
        active &= ~(moved & tiny)
    return w, b, iters


def run_refit(weight: torch.Tensor, bias: torch.Tensor, fit, judge: Judge, tracker: BestTracker, config: CFTConfig,
              seed: int = 0, progress=None, categories: list[int] | None = None) -> None:
    """Solve every (category, λ) pair of the block; the λ grid is the trajectory the ``judge`` tracks (step p: λ_p)."""
    n_cat, d = weight.shape
    dtype = weight.dtype
    lam = torch.tensor(config.refit_l2, dtype=dtype, device=weight.device).view(1, -1)
    n_lam = lam.shape[1]
    w0 = weight.unsqueeze(1).expand(n_cat, n_lam, d).contiguous()
    b0 = bias.unsqueeze(1).expand(n_cat, n_lam).contiguous()
    w_ref = weight.unsqueeze(1) if config.refit_toward == "trained" else torch.zeros_like(weight.unsqueeze(1))
    sw = _sample_weight(fit, config.refit_balanced)
    w, b, iters = solve_logistic(fit, w0, b0, lam, w_ref, sw,
                                 max_iter=config.refit_max_iter, tol=config.refit_tol)
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
