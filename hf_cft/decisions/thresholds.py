"""Per-category decision thresholds chosen on held-out known labels, shrunk toward a pooled threshold where a
category has few positives.

Objectives (``objective``): ``"f1"``, ``"fbeta:<β>"`` (F-beta), ``"precision:<p>"`` (the lowest threshold whose
held-out precision is at least p: the most recall at that precision) and ``"recall:<r>"`` (the highest threshold
whose held-out recall is at least r). Each category's best cut is found by one sort of its known pairs (ties
stay together); the threshold is the midpoint, in logit space, between the last probability kept and the next.
The pooled threshold is the same choice over every known pair at once. A category's threshold is then, in logit
space, ``(n⁺·t_c + k·t_pool) / (n⁺ + k)`` with n⁺ its held-out positives and k the ``shrinkage``; a category
without a held-out positive (or whose precision / recall target is out of reach) takes the pooled one, and the
report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Objective", "choose_thresholds", "parse_objective"]

_EPS = 1e-12
_LAST_MARGIN = 1.0  # logits below the lowest probability kept, when every known pair is predicted positive


@dataclass(frozen=True)
class Objective:
    """What a threshold maximizes: ``kind`` "fbeta" (with ``value`` = β), "precision" or "recall" (with
    ``value`` the target)."""

    kind: str
    value: float

    def __str__(self) -> str:
        return "f1" if (self.kind, self.value) == ("fbeta", 1.0) else f"{self.kind}:{self.value:g}"


def parse_objective(text: str) -> Objective:
    """``"f1"``, ``"fbeta:0.5"``, ``"precision:0.9"`` or ``"recall:0.8"`` as an :class:`Objective`."""
    name, _, arg = str(text).strip().lower().partition(":")
    if name == "f1" and not arg:
        return Objective("fbeta", 1.0)
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if name == "fbeta" and value > 0 and np.isfinite(value):
        return Objective("fbeta", value)
    if name in ("precision", "recall") and 0.0 < value <= 1.0:
        return Objective(name, value)
    raise ValueError(f"threshold objective {text!r} is not one of: f1, fbeta:<beta > 0>, precision:<target in "
                     "(0, 1]>, recall:<target in (0, 1]> (e.g. --threshold_objective precision:0.9)")


def _logit(p):
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _best_cuts(probs: np.ndarray, labels: np.ndarray, cols: np.ndarray, n_cat: int, objective: Objective):
    """Per category, the threshold of its best cut (NaN where none qualifies)."""
    order = np.lexsort((-probs, cols))
    p, y, k = probs[order], labels[order].astype(np.float64), cols[order]
    counts = np.bincount(k, minlength=n_cat)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    position = np.arange(p.size) - starts[k]
    tp = np.cumsum(y) - np.concatenate([[0.0], np.cumsum(y)])[starts[k]]
    predicted = position + 1.0
    positives = np.bincount(k, weights=y, minlength=n_cat)[k]
    last = np.r_[k[1:] != k[:-1], True] if p.size else np.zeros(0, bool)
    cut = last | np.r_[p[:-1] > p[1:], False] if p.size else last  # never split tied probabilities
    precision, recall = tp / predicted, tp / np.maximum(positives, 1)
    if objective.kind == "fbeta":
        b2 = objective.value ** 2
        value = (1 + b2) * tp / np.maximum((1 + b2) * tp + b2 * (positives - tp) + (predicted - tp), _EPS)
    elif objective.kind == "precision":
        value = np.where(precision >= objective.value - 1e-12, recall + 1e-9 * precision, -np.inf)
    else:
        value = np.where(recall >= objective.value - 1e-12, precision, -np.inf)
    value = np.where(cut & (positives > 0), value, -np.inf)
    best = np.full(n_cat, -np.inf)
    np.maximum.at(best, k, value)
    out = np.full(n_cat, np.nan)
    hit = np.flatnonzero((value == best[k]) & np.isfinite(value))
    cats, first = np.unique(k[hit], return_index=True)  # the first (highest) threshold among equal values
    j = hit[first]
    below = _logit(p[np.minimum(j + 1, p.size - 1)])
    out[cats] = np.where(last[j], _logit(p[j]) - _LAST_MARGIN, 0.5 * (_logit(p[j]) + below))
    return out


def choose_thresholds(probs, labels, cols, n_categories: int, objective: Objective | str = "f1",
                      shrinkage: float = 5.0) -> tuple[np.ndarray, dict]:
    """Per-category probability thresholds from held-out known pairs (``probs``, 0/1 ``labels``, category
    ``cols``), and a report: the pooled threshold, each category's unshrunk threshold and note."""
    objective = parse_objective(objective) if isinstance(objective, str) else objective
    if shrinkage < 0 or not np.isfinite(shrinkage):
        raise ValueError(f"the threshold shrinkage must be a number >= 0, got {shrinkage}")
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    k = np.asarray(cols, dtype=np.int64)
    own = _best_cuts(p, y, k, n_categories, objective)
    pooled = _best_cuts(p, y, np.zeros_like(k), 1, objective)[0]
    if np.isnan(pooled):  # the target is out of reach even pooled: F1's pooled threshold
        pooled = _best_cuts(p, y, np.zeros_like(k), 1, Objective("fbeta", 1.0))[0]
    if np.isnan(pooled):
        raise ValueError("no held-out known positive in any category: thresholds cannot be chosen. Give a "
                         "selection split with known labels (or turn thresholds off).")
    positives = np.bincount(k, weights=(y == 1), minlength=n_categories)
    shrunk = np.where(np.isnan(own), pooled, (positives * np.nan_to_num(own) + shrinkage * pooled)
                      / np.maximum(positives + shrinkage, _EPS))
    notes = [None if not np.isnan(t) else ("no held-out positive: pooled threshold" if n == 0 else
                                           f"{objective} out of reach on held-out labels: pooled threshold")
             for t, n in zip(own, positives)]
    thresholds = 1.0 / (1.0 + np.exp(-shrunk))
    report = {"objective": str(objective), "shrinkage": shrinkage, "pooled": float(1 / (1 + np.exp(-pooled))),
              "unshrunk": [None if np.isnan(t) else float(1 / (1 + np.exp(-t))) for t in own], "notes": notes}
    return thresholds, report
