"""Per-category Platt recalibration ``p = σ(a·z + c)`` fitted on held-out known labels, batched over categories.

Each category's two numbers are a maximum a posteriori fit: the logistic log-likelihood of its known pairs plus a
Gaussian prior ``(λ/2)·((a − 1)² + c²)`` centred on the identity (``a = 1, c = 0``: the row as it is), so that a
category with few held-out labels stays close to its row and one with many follows its labels. Newton's method on
the 2×2 problem of every category at once (convex; each step halved until the category's objective decreases).
``a`` is kept positive (at least :data:`MIN_SCALE`), so the map is increasing and every ranking metric (AP, AUROC)
is unchanged; because ``a·(w·x + b) + c = (a·w)·x + (a·b + c)`` it folds into the row (:func:`fold`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MIN_SCALE", "PlattFit", "fit_platt", "fold"]

POOLED_PRIOR = 1.0
"""The pull of the pooled calibration (fitted on every category's labels) toward the identity, in labels."""
MIN_SCALE = 1e-3
"""The smallest slope a calibration may take (a row that anti-ranks its held-out labels is flattened, not
reversed: reversing would change its ranking)."""


class PlattFit:
    """Slopes ``scale`` (``a``), offsets ``shift`` (``c``) and, per category, None or why it was left at identity."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray, skipped: list[str | None]):
        self.scale, self.shift, self.skipped = scale, shift, skipped

    def probabilities(self, logits: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of pairs with these logits in these categories."""
        return 1.0 / (1.0 + np.exp(-(self.scale[cols] * logits + self.shift[cols])))


def _objective(z, y, cols, a, c, prior: float, n_cat: int, center=(1.0, 0.0)) -> torch.Tensor:
    u = a[cols] * z + c[cols]
    nll = torch.nn.functional.softplus(u) - y * u
    return (torch.zeros(n_cat, dtype=z.dtype).index_add_(0, cols, nll)
            + 0.5 * prior * ((a - center[0]) ** 2 + (c - center[1]) ** 2))


def _newton_step(z, y, cols, a, c, prior: float, n_cat: int, center=(1.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.sigmoid(a[cols] * z + c[cols])
    r, w = p - y, p * (1 - p)

    def total(v):
        return torch.zeros(n_cat, dtype=z.dtype).index_add_(0, cols, v)

    ga, gc = total(r * z) + prior * (a - center[0]), total(r) + prior * (c - center[1])
    haa, hac, hcc = total(w * z * z) + prior, total(w * z), total(w) + prior
    det = (haa * hcc - hac * hac).clamp_min(1e-12)
    return (hcc * ga - hac * gc) / det, (haa * gc - hac * ga) / det


def _newton(z, y, k, fitted, prior: float, center, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAP ``(a, c)`` of every category (``fitted`` ones move; the others stay at ``center``)."""
    n_cat = fitted.shape[0]
    a = torch.as_tensor(center[0], dtype=torch.float64).expand(n_cat).clone()
    c = torch.as_tensor(center[1], dtype=torch.float64).expand(n_cat).clone()
    loss = _objective(z, y, k, a, c, prior, n_cat, center)
    for _ in range(max_iter):
        da, dc = _newton_step(z, y, k, a, c, prior, n_cat, center)
        step = torch.where(fitted, 1.0, 0.0).double()
        for _ in range(30):  # halve each category's step until its objective does not increase
            na, nc = (a - step * da).clamp_min(MIN_SCALE), c - step * dc
            new = _objective(z, y, k, na, nc, prior, n_cat, center)
            worse = (new > loss + 1e-12) & (step > 0)
            if not worse.any():
                break
            step = torch.where(worse, step / 2, step)
        a, c = torch.where(step > 0, na, a), torch.where(step > 0, nc, c)
        loss = torch.minimum(new, loss)
        if float((step * (da.abs() + dc.abs())).max()) < 1e-10:
            break
    return a, c


def fit_platt(logits, labels, cols, n_categories: int, prior: float = 5.0, center: str = "pooled",
              max_iter: int = 50) -> PlattFit:
    """Fit ``a, c`` per category on known pairs (``logits``, 0/1 ``labels``, category index ``cols``).

    ``prior`` (λ ≥ 0) is the weight, in labels, of the pull toward ``center``: "identity" (``a = 1, c = 0``: the
    row as it is) or "pooled" (one ``a, c`` fitted on every category's pairs together, itself pulled toward the
    identity by :data:`POOLED_PRIOR`): a category with few held-out labels then borrows the scale shared by all.
    A category without a held-out positive and a held-out negative takes the center, and says so in
    :attr:`PlattFit.skipped`.
    """
    if prior < 0 or not np.isfinite(prior):
        raise ValueError(f"the calibration prior must be a number >= 0, got {prior}")
    if center not in ("pooled", "identity"):
        raise ValueError(f"the calibration center must be 'pooled' or 'identity', got {center!r}")
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    k = torch.as_tensor(np.asarray(cols, dtype=np.int64))
    if not torch.isfinite(z).all():
        raise ValueError("held-out logits hold NaN or infinity: check the features and the rows")
    pos = torch.zeros(n_categories, dtype=torch.float64).index_add_(0, k, y)
    known = torch.bincount(k, minlength=n_categories).double()
    fitted = (pos > 0) & (pos < known)
    where = "the pooled calibration" if center == "pooled" else "identity"
    skipped = [None if bool(f) else (f"no held-out known labels: {where}" if n == 0 else
                                     f"held-out labels all {'positive' if p == n else 'negative'} ({int(n)}): {where}")
               for f, p, n in zip(fitted.tolist(), pos.tolist(), known.tolist())]
    mid = (1.0, 0.0)
    if center == "pooled" and bool(fitted.any()):
        both = fitted[k]
        a0, c0 = _newton(z[both], y[both], torch.zeros(int(both.sum()), dtype=torch.long),
                         torch.ones(1, dtype=torch.bool), POOLED_PRIOR, mid, max_iter)
        mid = (float(a0[0]), float(c0[0]))
    keep = fitted[k]  # pairs of the fitted categories
    a, c = _newton(z[keep], y[keep], k[keep], fitted, prior, mid, max_iter)
    return PlattFit(a.numpy(), c.numpy(), skipped)


def fold(weight: torch.Tensor, bias: torch.Tensor, fit: PlattFit) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows whose logits are the calibrated ones: ``(a·w, a·b + c)`` per category (dtype kept)."""
    a = torch.as_tensor(fit.scale, dtype=torch.float64)
    c = torch.as_tensor(fit.shift, dtype=torch.float64)
    w = (weight.double() * a[:, None]).to(weight.dtype)
    b = (bias.double() * a + c).to(bias.dtype)
    return w, b


PRIOR_GRID = (1.0, 5.0, 20.0, 100.0)
"""The calibration priors :func:`choose_calibration` compares (with the pooled calibration alone and none)."""
NONE, POOLED = "none", "pooled only"


def _nll(logits: np.ndarray, labels: np.ndarray, cols: np.ndarray, fit: PlattFit) -> float:
    u = fit.scale[cols] * logits + fit.shift[cols]
    return float(np.sum(np.logaddexp(0.0, u) - labels * u))


def _candidate(name, logits, labels, cols, n_cat: int) -> PlattFit:
    if name == NONE:
        return PlattFit(np.ones(n_cat), np.zeros(n_cat), ["calibration off"] * n_cat)
    if name == POOLED:
        one = fit_platt(logits, labels, np.zeros_like(cols), 1, prior=POOLED_PRIOR, center="identity")
        return PlattFit(np.full(n_cat, one.scale[0]), np.full(n_cat, one.shift[0]), [None] * n_cat)
    return fit_platt(logits, labels, cols, n_cat, prior=float(name))


def choose_calibration(logits, labels, cols, n_categories: int, folds: int = 5, seed: int = 0
                       ) -> tuple[PlattFit, str, dict[str, float]]:
    """The calibration whose held-out log-loss is lowest under ``folds``-fold cross-validation over the known
    pairs: none (the rows as they are), one pooled calibration for every category, or per-category ones pulled
    toward the pooled one with each prior of :data:`PRIOR_GRID`. Returns the winner fitted on every pair, its
    name, and each candidate's cross-validated log-loss per label."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.int64)
    fold = np.random.default_rng(seed).integers(0, folds, size=logits.shape[0])
    names = [NONE, POOLED, *(f"{p:g}" for p in PRIOR_GRID)]
    losses = dict.fromkeys(names, 0.0)
    for k in range(folds):
        train, test = fold != k, fold == k
        for name in names:
            fit = _candidate(name, logits[train], labels[train], cols[train], n_categories)
            losses[name] += _nll(logits[test], labels[test], cols[test], fit)
    n = max(1, logits.shape[0])
    losses = {k: v / n for k, v in losses.items()}
    best = min(names, key=lambda k: (losses[k], names.index(k)))  # ties: the simpler candidate
    return _candidate(best, logits, labels, cols, n_categories), best, losses
