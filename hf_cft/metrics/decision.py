"""Decision and probability metrics on known pairs: F-beta at per-category thresholds, expected calibration
error (ECE) and Brier score, per category and macro, micro F-beta over every known pair.

Every function takes one probability per known pair in the order of :class:`~hf_cft.sparse.KnownLabels`
(dense labels are turned into that form by :func:`hf_cft.sparse.known_labels`), so a 5,000-category sparse
split is scored without an images × categories array. A category without known labels is NaN; F-beta also needs
a known positive (it is undefined otherwise, as scikit-learn warns) and is NaN without one.
"""

from __future__ import annotations

import numpy as np

from ..sparse import KnownLabels

__all__ = ["DECISION_KINDS", "ECE_BINS", "brier_per_category", "compute_decision_metric", "ece_per_category",
           "f_beta_counts", "f_beta_per_category", "micro_f_beta", "nan_mean"]

ECE_BINS = 15
"""Equal-width probability bins of the expected calibration error (the common choice since Guo et al. 2017)."""


def _check(probs, known: KnownLabels) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (known.nnz,):
        raise ValueError(f"expected one probability per known pair ({known.nnz}), got shape {p.shape}")
    if p.size and (np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1] (apply a sigmoid to logits first)")
    return p


def _per_category_sum(values: np.ndarray, known: KnownLabels) -> np.ndarray:
    return np.bincount(known.columns(), weights=values, minlength=known.c)


def nan_mean(values: np.ndarray) -> float | None:
    """Mean over the non-NaN entries; None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def brier_per_category(probs, known: KnownLabels) -> np.ndarray:
    """Mean squared difference between probability and known label, per category (NaN: no known label)."""
    p = _check(probs, known)
    n = known.known_counts().astype(np.float64)
    sq = _per_category_sum((p - known.values) ** 2, known)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sq / n, np.nan)


def ece_per_category(probs, known: KnownLabels, bins: int = ECE_BINS) -> np.ndarray:
    """Expected calibration error per category: ``Σ_b (n_b / n) · |mean label_b − mean probability_b|`` over
    ``bins`` equal-width bins of [0, 1] (a probability of exactly 1 falls in the last bin)."""
    p = _check(probs, known)
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    key = known.columns() * bins + b
    size = known.c * bins
    count = np.bincount(key, minlength=size).reshape(known.c, bins)
    gap = (np.bincount(key, weights=p, minlength=size) - np.bincount(key, weights=known.values, minlength=size))
    n = count.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(gap.reshape(known.c, bins)).sum(1) / n, np.nan)


def f_beta_counts(probs, known: KnownLabels, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted positives and known positives per category, a pair predicted positive when its
    probability is at least its category's threshold."""
    p = _check(probs, known)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (known.c,):
        raise ValueError(f"expected one threshold per category ({known.c}), got shape {t.shape}")
    if np.isnan(t).any():
        raise ValueError(f"thresholds hold NaN (categories {np.flatnonzero(np.isnan(t))[:10].tolist()})")
    cols = known.columns()
    pred = p >= t[cols]
    tp = np.bincount(cols, weights=pred & (known.values == 1), minlength=known.c)
    return tp, np.bincount(cols, weights=pred, minlength=known.c), known.positive_counts().astype(np.float64)


def _f_beta(tp, predicted, positives, beta: float):
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * (positives - tp) + (predicted - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (1 + b2) * tp / np.where(denominator > 0, denominator, 1), 0.0)


def f_beta_per_category(probs, known: KnownLabels, thresholds, beta: float = 1.0) -> np.ndarray:
    """F-beta of each category at its threshold on its known labels (NaN: no known positive)."""
    tp, predicted, positives = f_beta_counts(probs, known, thresholds)
    return np.where(positives > 0, _f_beta(tp, predicted, positives, beta), np.nan)


def micro_f_beta(probs, known: KnownLabels, thresholds, beta: float = 1.0) -> float | None:
    """F-beta pooled over every known pair (None without a known positive)."""
    tp, predicted, positives = (float(x.sum()) for x in f_beta_counts(probs, known, thresholds))
    return float(_f_beta(np.array(tp), np.array(predicted), np.array(positives), beta)) if positives else None


def _known_from_codes(predictions, references, pair_categories, num_categories) -> tuple[np.ndarray, KnownLabels]:
    """Pair probabilities and :class:`KnownLabels` from the ``evaluate`` modules' two input forms."""
    if pair_categories is not None:
        if num_categories is None:
            raise ValueError("`num_categories` is needed with `pair_categories`")
        p, y, k = (np.asarray(v) for v in (predictions, references, pair_categories))
        order = np.argsort(k, kind="stable")
        counts = np.bincount(k.astype(np.int64), minlength=int(num_categories))
        known = KnownLabels(len(p), int(num_categories), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                            order.astype(np.int64), y[order].astype(np.int8))
        return p[order].astype(np.float64), known
    p = np.asarray(predictions, dtype=np.float64)
    codes = np.asarray(references)
    if p.shape != codes.shape or p.ndim != 2:
        raise ValueError(f"predictions and references must both be N×C, got {p.shape} and {codes.shape}")
    mask = codes >= 0
    cols, rows = np.nonzero(mask.T)
    counts = mask.sum(0)
    known = KnownLabels(p.shape[0], p.shape[1], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                        rows.astype(np.int64), codes[rows, cols].astype(np.int8))
    return p[rows, cols], known


DECISION_KINDS = ("f1", "ece", "brier")


def compute_decision_metric(kind: str, predictions, references, pair_categories=None,
                            num_categories: int | None = None, thresholds=None, beta: float = 1.0,
                            bins: int = ECE_BINS) -> dict:
    """What the ``partial_f1`` / ``partial_ece`` / ``partial_brier`` ``evaluate`` modules return: the macro mean
    over categories with the labels the metric needs (``n_excluded`` counts the others), the per-category values
    (None where excluded) and, for F1, the micro F1 over every known pair.

    ``predictions`` are probabilities (N×C, or one per known pair with ``pair_categories`` / ``num_categories``);
    ``references`` label codes (1, 0, -1 unknown) or, in the pair form, 1 / 0; ``thresholds``: one per category
    (default 0.5 everywhere), for F1.
    """
    if kind not in DECISION_KINDS:
        raise ValueError(f"`kind` must be one of {list(DECISION_KINDS)}, got {kind!r}")
    p, known = _known_from_codes(predictions, references, pair_categories, num_categories)
    if kind == "f1":
        t = np.full(known.c, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        per = f_beta_per_category(p, known, t, beta)
        extra = {"micro_f1": micro_f_beta(p, known, t, beta)}
    else:
        per = ece_per_category(p, known, bins) if kind == "ece" else brier_per_category(p, known)
        extra = {}
    return {kind: nan_mean(per), **extra, "n_categories": known.c, "n_excluded": int(np.isnan(per).sum()),
            "per_category": [None if np.isnan(v) else float(v) for v in per]}
