"""Exact AP and AUROC on known labels only, in torch, batched over any leading shape.

Both functions score along the **last** dimension: ``scores`` of shape ``(..., L)`` against ``labels``
and ``mask`` broadcastable to it, and return one value per leading index (shape ``...``). One call
therefore evaluates C categories, or a population of P candidate rows for each of B categories
(``(B, P, L)`` scores against ``(B, 1, L)`` labels), with one sort.

Ties are handled exactly as scikit-learn does: all entries with the same score form one threshold
(``average_precision_score``: the precision at a threshold counts every tied entry; ``roc_auc_score``:
a tied positive/negative pair counts one half). Entries where ``mask`` is False are ignored wherever
they sort. A row without a known positive (AP) or without a known positive and a known negative
(AUROC) is undefined and returned as NaN.

Also here: :func:`counted_metric` (the same metrics of resampled multisets, for the bootstrap),
:class:`MacroScore` / :func:`macro_score` (the mean over categories) and :func:`check_scores`. This module
imports nothing of hf_cft: every other metric module builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["METRICS", "MacroScore", "auroc", "average_precision", "check_scores", "counted_metric", "macro_score"]


def _prepare(scores, labels, mask):
    scores = torch.as_tensor(scores)
    if not torch.is_floating_point(scores):
        scores = scores.float()
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    labels = torch.as_tensor(labels, device=scores.device)
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=scores.device)
    shape = torch.broadcast_shapes(scores.shape, labels.shape, mask.shape)
    scores = scores.expand(shape)
    known = mask.to(torch.bool).expand(shape)
    pos = (labels.expand(shape) > 0) & known
    return scores, pos.to(acc), known.to(acc)


def _sort_known(scores: torch.Tensor, pos: torch.Tensor, known: torch.Tensor, descending: bool):
    """Sort the last dimension; return a tie key (equal iff tied) and sorted pos / known.

    Unknown entries become NaN, so they never join a tie group of known entries.
    """
    masked = torch.where(known.bool(), scores, float("nan"))
    s, order = torch.sort(masked, dim=-1, descending=descending)
    return s, torch.gather(pos, -1, order), torch.gather(known, -1, order)


_QUIET_NAN = np.int64(0x7FF8_0000_0000_0000)
"""The bits of an unknown entry's packed key: a quiet NaN (sorts last) whose two code bits are 0."""

CHUNK_BYTES = 1 << 20
"""Float64 work per chunk of :func:`_fast_cpu`: a chunk of rows (along the first axis) fits a core's cache and
its buffers are reused chunk after chunk, instead of fresh arrays the size of the whole batch (every first
touch of fresh memory is a page fault: on a population of 49 × 1,000 scores per category that cost more than
the sort)."""


def _fast_cpu(scores: torch.Tensor, labels, mask, kind: str) -> torch.Tensor:
    """AP / AUROC of float32 CPU scores through a numpy value sort; rows with tied known scores are redone.

    The scores are widened to float64 (exact) and each entry's label is packed into the two lowest mantissa
    bits (1 positive, 2 negative); an unknown entry becomes a quiet NaN (sorts last, code 0). Packing never
    changes the order of distinct float32 values and rounding a packed value to float32 gives its score back,
    so one SIMD value sort replaces a much slower arg-sort and equal neighbours of the sorted float32 values are
    the ties. Without ties, AP = mean over positives of TP@i / (i + 1) and AUROC is the Mann–Whitney rank sum.
    """
    labels = torch.as_tensor(labels)
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    shape = np.broadcast_shapes(scores.shape, labels.shape, mask.shape)  # numpy's: a tenth of torch's time
    small = np.broadcast_shapes(labels.shape, mask.shape)
    known_s = mask.expand(small).numpy()
    code = np.where(known_s, np.where(labels.expand(small).numpy() > 0, 1, 2), _QUIET_NAN)  # int64
    a = scores.expand(shape).numpy()
    code = np.broadcast_to(code, shape)
    n_known = np.broadcast_to(known_s.sum(-1), shape[:-1])
    if not shape[:-1]:  # one row: a batch of one
        a, code, n_known = a[None], code[None], n_known[None]
    out, redo = _fast_chunks(a, code, n_known, kind)
    result = torch.from_numpy(out.reshape(shape[:-1]))
    if redo.any():
        length = shape[-1]
        idx = torch.from_numpy(np.flatnonzero(redo))
        flat = lambda t: t.expand(shape).reshape(-1, length)[idx]  # noqa: E731
        exact = _exact(kind, scores.expand(shape).reshape(-1, length)[idx], flat(labels), flat(mask))
        result.view(-1)[idx] = exact.to(result.dtype)
    return result


def _fast_chunks(a: np.ndarray, code: np.ndarray, n_known: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_fast_cpu` on ``a`` (rows… × L, float32) with its packed codes, chunk by chunk along the first axis
    (index by index of it, recursively, while one index alone is larger than a chunk): the values (float32) and
    which rows have tied known scores."""
    lead, length = a.shape[:-1], a.shape[-1]
    if not lead[0]:
        return np.empty(lead, np.float32), np.zeros(lead, np.bool_)
    per_index = int(np.prod(lead[1:], dtype=np.int64)) * length
    if len(lead) > 1 and 8 * per_index > CHUNK_BYTES:
        parts = [_fast_chunks(a[i], code[i], n_known[i], kind) for i in range(lead[0])]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    step = max(1, min(lead[0], CHUNK_BYTES // max(1, 8 * per_index)))
    buf = (step,) + lead[1:]
    wide = np.empty(buf + (length,), np.float64)
    back = np.empty(buf + (length,), np.float32)
    tied = np.empty(buf + (max(length - 1, 0),), np.bool_)
    acc = np.float32 if kind == "ap" else np.float64
    posf = np.empty(buf + (length,), acc)
    cum = np.empty(buf + (length,), np.float32) if kind == "ap" else None
    ranks = np.arange(1, length + 1, dtype=acc)
    weights = 1.0 / ranks if kind == "ap" else ranks
    out = np.empty(lead, np.float32)
    redo = np.zeros(lead, np.bool_)
    for i in range(0, lead[0], step):
        n = min(lead[0], i + step) - i
        rows = slice(i, i + n)
        redo[rows] = _sort_packed(a[rows], code[rows], n_known[rows], kind, wide[:n], back[:n], tied[:n])
        out[rows] = _sorted_value(wide[:n], back[:n], posf[:n], None if cum is None else cum[:n], n_known[rows],
                                  kind, weights)
    return out, redo


def _sort_packed(a, code, known, kind: str, w, back, tied) -> np.ndarray:
    """Pack a chunk's scores and labels into float64 keys in ``w`` and sort them; ``back`` gets the sorted float32
    scores. Returns the rows the exact path must redo (tied or non-finite known scores)."""
    if kind == "ap":
        np.subtract(0.0, a, out=w, dtype=np.float64)  # 0 − (±0.0) = +0.0: equal scores, equal bits
    else:
        np.add(a, 0.0, out=w, dtype=np.float64)
    bits = w.view(np.int64)
    np.bitwise_or(bits, code, out=bits)
    w.sort(axis=-1)
    np.copyto(back, w, casting="same_kind")  # rounds the code bits away: the float32 score again
    # an infinite or NaN known score became a NaN (its label bits lost) and sorted behind the finite ones, so the
    # row's last known place holds a NaN: such rows take the exact path
    last = np.take_along_axis(back, np.maximum(known - 1, 0)[..., None], -1)[..., 0]
    redo = np.isnan(last) & (known > 0)
    if a.shape[-1] > 1:
        np.equal(back[..., 1:], back[..., :-1], out=tied)
        redo |= tied.any(-1)
    return redo


def _sorted_value(w, back, p, c, known, kind: str, weights) -> np.ndarray:
    """AP or AUROC of sorted packed keys ``w`` (``back``, ``p``, ``c``: float buffers of their shape)."""
    np.copyto(p, w.view(np.uint8)[..., ::8] & 1)  # the lowest byte: code 1 = positive
    if kind == "ap":
        torch.cumsum(torch.from_numpy(p), -1, out=torch.from_numpy(c))  # torch's cumsum: several times numpy's
        n_pos = c[..., -1].copy()
        np.multiply(p, c, out=c)
        np.multiply(c, weights, out=c)  # the precision at each positive
        # summed by a running sum (torch's: in order along the row, in float64): the same bits whatever batch the
        # row comes in (a matrix-vector product or numpy's sum may order a row's terms by the batch shape)
        total = torch.cumsum(torch.from_numpy(c), -1, out=torch.from_numpy(back)).numpy()[..., -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos > 0, total / n_pos, np.nan)
    n_pos = p.sum(-1)
    n_neg = known - n_pos
    rank_sum = p @ weights  # a sum of integers: exact in any order
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), value, np.nan)


def _group_bounds(key: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """First and last index of the tie group of every position of a sorted last dimension (None: no ties)."""
    length = key.shape[-1]
    idx = torch.arange(length, device=key.device).expand(key.shape)
    tied = key[..., 1:] == key[..., :-1]
    if not bool(tied.any()):
        return None, None
    differs = ~tied
    edge = torch.ones(key.shape[:-1] + (1,), dtype=torch.bool, device=key.device)
    is_first = torch.cat([edge, differs], dim=-1)
    is_last = torch.cat([differs, edge], dim=-1)
    start = torch.cummax(torch.where(is_first, idx, torch.zeros_like(idx)), dim=-1).values
    end_marks = torch.where(is_last, idx, torch.full_like(idx, length - 1)).flip(-1)
    end = torch.cummin(end_marks, dim=-1).values.flip(-1)
    return start, end


def _ranked(kind: str, key: torch.Tensor, pos: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """AP or AUROC from a sorted last dimension (AP: descending, AUROC: ascending).

    ``key``: the sorted scores (tie groups are runs of equal keys; NaN never ties); ``pos``: 1 where positive;
    ``count``: how many times each entry is taken (the known mask, or a resample's counts), which may have
    more leading dimensions than ``key``. An entry counted 0 changes nothing, even inside a tie group.
    """
    start, end = _group_bounds(key)

    def at(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, -1, idx.expand_as(t))

    cp = count * pos
    n_pos = cp.sum(-1)
    nan = torch.full_like(n_pos, float("nan"))
    if kind == "ap":
        cum_tp, cum_n = cp.cumsum(-1), count.cumsum(-1)
        if end is not None:
            cum_tp, cum_n = at(cum_tp, end), at(cum_n, end)
        precision_sum = (cp * cum_tp / cum_n.clamp(min=1)).sum(-1)
        return torch.where(n_pos > 0, precision_sum / n_pos.clamp(min=1), nan)
    cn = count - cp
    cum_neg = cn.cumsum(-1)
    neg_below = cum_neg - cn
    if start is None:  # no ties: a positive has no tied negative
        neg_tied = torch.zeros_like(neg_below)
    else:
        neg_below = at(neg_below, start)
        neg_tied = at(cum_neg, end) - neg_below
    n_neg = cn.sum(-1)
    wins = (cp * (neg_below + 0.5 * neg_tied)).sum(-1)
    return torch.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg).clamp(min=1), nan)


def _exact_ap(scores, labels, mask) -> torch.Tensor:
    scores, pos, known = _prepare(scores, labels, mask)
    if scores.shape[-1] == 0:
        return torch.full(scores.shape[:-1], float("nan"), dtype=pos.dtype, device=scores.device)
    return _ranked("ap", *_sort_known(scores, pos, known, descending=True))


def _exact_auroc(scores, labels, mask) -> torch.Tensor:
    scores, pos, known = _prepare(scores, labels, mask)
    if scores.shape[-1] == 0:
        return torch.full(scores.shape[:-1], float("nan"), dtype=pos.dtype, device=scores.device)
    return _ranked("auroc", *_sort_known(scores, pos, known, descending=False))


def _exact(kind: str, scores, labels, mask) -> torch.Tensor:
    return _exact_ap(scores, labels, mask) if kind == "ap" else _exact_auroc(scores, labels, mask)


def _dispatch(kind: str, scores, labels, mask) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    if scores.dtype == torch.float32 and scores.device.type == "cpu" and scores.shape[-1] > 0:
        return _fast_cpu(scores, labels, mask, kind)
    return _exact(kind, scores, labels, mask)


@torch.no_grad()
def average_precision(scores, labels, mask=None) -> torch.Tensor:
    """Average precision along the last dimension, known entries only (NaN without a known positive)."""
    return _dispatch("ap", scores, labels, mask)


@torch.no_grad()
def auroc(scores, labels, mask=None) -> torch.Tensor:
    """Area under the ROC curve along the last dimension, known entries only (NaN without both classes)."""
    return _dispatch("auroc", scores, labels, mask)


METRICS = {"ap": average_precision, "auroc": auroc}


@torch.no_grad()
def counted_metric(kind: str, scores: torch.Tensor, pos: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """AP or AUROC of multisets, one sort per row for all of them (bootstrap resamples).

    ``scores``, ``pos``: R × W; ``counts``: R × S × W, entry i of row r taken ``counts[r, s, i]`` times in the
    s-th multiset (0: left out). Equal to the metric of each multiset written out as a list (ties as in
    :func:`average_precision` / :func:`auroc`: copies of one entry tie). Returns R × S, NaN where undefined.
    """
    if kind not in METRICS:
        raise ValueError(f"kind must be one of {sorted(METRICS)}, got {kind!r}")
    key, order = torch.sort(scores, dim=-1, descending=kind == "ap")
    pos = torch.gather(pos.to(counts.dtype), -1, order).unsqueeze(1)
    return _ranked(kind, key.unsqueeze(1), pos, torch.gather(counts, -1, order.unsqueeze(1).expand_as(counts)))


@dataclass
class MacroScore:
    """A macro mean over categories and what went into it.

    Attributes:
        value: mean over the categories that have a known positive and a known negative (NaN if none).
        per_category: one value per category, NaN where excluded.
        n_included: categories in the mean.
        n_excluded: categories left out for lack of a known positive or a known negative.
    """

    value: float
    per_category: list[float]
    n_included: int
    n_excluded: int
    excluded: list[int] = field(default_factory=list)


def macro_score(per_category, n_pos=None, n_neg=None) -> MacroScore:
    """Macro mean of per-category values; categories without both a known positive and negative excluded."""
    v = torch.as_tensor(per_category, dtype=torch.float64).flatten()
    ok = ~torch.isnan(v)
    if n_pos is not None:
        ok &= torch.as_tensor(n_pos).flatten() > 0
    if n_neg is not None:
        ok &= torch.as_tensor(n_neg).flatten() > 0
    value = float(v[ok].mean()) if ok.any() else float("nan")
    per = [float(x) if k else float("nan") for x, k in zip(v.tolist(), ok.tolist())]
    excluded = [i for i, k in enumerate(ok.tolist()) if not k]
    return MacroScore(value, per, int(ok.sum()), len(excluded), excluded)


def check_scores(known_scores: np.ndarray) -> None:
    """Scores at known labels must not be NaN (a diverged model?): NaN has no rank. ±inf rank as they are."""
    nan = int(np.isnan(known_scores).sum()) if np.issubdtype(known_scores.dtype, np.floating) else 0
    if nan:
        raise ValueError(f"`scores` hold {nan} NaN value(s) at known labels: NaN has no rank (did the model "
                         "diverge?); fix or drop them before scoring")
