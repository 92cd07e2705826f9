"""Partial metrics on known pairs: mAP / mAUC (and the OpenImages G1–G5 groups) without an N×C array.

AP and AUROC of a category depend only on the scores and labels of its known images, so they are computed
from the known pairs: each category's pairs are padded into ragged batches of similar length and scored with
the same exact functions as the dense path (:func:`~hf_cft.metrics.ranking.average_precision`, ties as
scikit-learn). Memory grows with the known pairs. Scoring rows on a split (dense or by pairs) is
:mod:`hf_cft.evaluation`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..sparse import KnownLabels, is_sparse, known_labels
from .ranking import METRICS, MacroScore, check_scores, macro_score

logger = logging.getLogger(__name__)

__all__ = ["known_pairs_metric", "pair_scores", "per_category_from_pairs", "scores_at_known", "sparse_partial_metric"]

_BATCH_ENTRIES = 1 << 22  # padded entries scored per call


def per_category_from_pairs(kind: str, scores, labels, categories, n_categories: int) -> np.ndarray:
    """Per-category AP (``kind="ap"``) or AUROC (``"auroc"``) of known pairs; NaN where undefined.

    Args:
        scores: the score of every known pair (1-D).
        labels: its label, 1 positive / 0 negative (1-D).
        categories: its category index in ``[0, n_categories)`` (1-D).
    """
    if kind not in METRICS:
        raise ValueError(f"`kind` must be one of {sorted(METRICS)}, got {kind!r}")
    s = np.asarray(scores)
    y = np.asarray(labels)
    k = np.asarray(categories, dtype=np.int64)
    if not (s.ndim == y.ndim == k.ndim == 1) or not (s.shape == y.shape == k.shape):
        raise ValueError(f"scores, labels and categories of the pairs must be 1-D of one length, got {s.shape}, "
                         f"{y.shape}, {k.shape}")
    if k.size and (k.min() < 0 or k.max() >= n_categories):
        raise ValueError(f"pair categories must be in [0, {n_categories})")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("pair labels must be 1 (positive) or 0 (negative)")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    order = np.argsort(k, kind="stable")
    s, y, k = s[order], y[order].astype(np.int8), k[order]
    counts = np.bincount(k, minlength=n_categories)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.full(n_categories, np.nan)
    fn = METRICS[kind]
    cats = [c for c in np.argsort(counts, kind="stable") if counts[c] > 0]
    i = 0
    while i < len(cats):  # ascending lengths: a batch of similar-length categories padded to its longest
        length = int(counts[cats[i]])
        j = i
        while j < len(cats) and (j - i + 1) * int(counts[cats[j]]) <= max(_BATCH_ENTRIES, int(counts[cats[j]])):
            j += 1
        batch = cats[i:j]
        length = int(counts[batch[-1]])
        bs = np.zeros((len(batch), length), dtype=s.dtype)
        by = np.zeros((len(batch), length), dtype=np.int8)
        bm = np.zeros((len(batch), length), dtype=bool)
        for r, c in enumerate(batch):
            a, b = starts[c], starts[c + 1]
            bs[r, : b - a], by[r, : b - a], bm[r, : b - a] = s[a:b], y[a:b], True
        out[batch] = fn(torch.from_numpy(bs), torch.from_numpy(by), torch.from_numpy(bm)).double().numpy()
        i = j
    return out


def scores_at_known(features, weight, bias, known: KnownLabels, chunk: int = 32768) -> np.ndarray:
    """``features @ weight.T + bias`` at the known pairs only (CSC order of ``known``), float32.

    ``features`` may be a memory map (float16 allowed): rows are read ``chunk`` pairs at a time.
    """
    w = np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight, dtype=np.float32)
    b = np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias, dtype=np.float32)
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    if w.shape[0] != known.c or b.shape != (known.c,):
        raise ValueError(f"weight / bias must have {known.c} rows, got {w.shape} and {b.shape}")
    if features.shape[0] != known.n or features.shape[1] != w.shape[1]:
        raise ValueError(f"features must be {known.n}×{w.shape[1]}, got {tuple(features.shape)}")
    cols = known.columns()
    out = np.empty(known.nnz, dtype=np.float32)
    for a in range(0, known.nnz, chunk):
        rows = known.rows[a:a + chunk]
        x = np.asarray(features[rows], dtype=np.float32)
        out[a:a + chunk] = np.einsum("pd,pd->p", x, w[cols[a:a + chunk]]) + b[cols[a:a + chunk]]
    return out


def pair_scores(scores, known: KnownLabels) -> np.ndarray:
    """``scores`` at ``known``'s pairs as float64, checked: N×C dense, or already 1-D with one score per pair.

    1-D ``scores`` are in the pair order of :func:`hf_cft.sparse.known_labels` (per category, rows ascending),
    e.g. from :func:`scores_at_known`.
    """
    if is_sparse(scores):
        raise ValueError("`scores` must be dense N×C or 1-D per known pair, not a sparse matrix")
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if s.ndim == 2:
        if s.shape != known.shape:
            raise ValueError(f"`scores` must be N×C like the labels {known.shape}, got {s.shape}")
        s = s[known.rows, known.columns()]
    elif s.ndim != 1 or s.shape[0] != known.nnz:
        raise ValueError(f"`scores` must be N×C {known.shape} or 1-D with one score per known pair ({known.nnz})")
    s = s.astype(np.float64)
    check_scores(s)
    return s


def known_pairs_metric(kind: str, pair_values: np.ndarray, known: KnownLabels) -> MacroScore:
    """Per-category ``kind`` and its macro mean from float64 scores at ``known``'s pairs (:func:`pair_scores`)."""
    per = per_category_from_pairs(kind, pair_values, known.values, known.columns(), known.c)
    pos = known.positive_counts()
    return macro_score(per, pos, known.known_counts() - pos)


def sparse_partial_metric(kind: str, scores, labels, label_mask) -> MacroScore:
    """mAP / mAUC with sparse (or dense) ``labels`` / ``label_mask``; ``scores`` N×C dense, or 1-D per known pair
    (see :func:`pair_scores`)."""
    known = known_labels(labels, label_mask)
    return known_pairs_metric(kind, pair_scores(scores, known), known)
