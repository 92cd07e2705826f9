"""Partial metrics: the macro mean over categories of AP / AUROC on known labels only, dense or sparse.

:func:`partial_average_precision` / :func:`partial_auroc` take N×C scores with dense or ``scipy.sparse``
labels and return a :class:`~hf_cft.metrics.ranking.MacroScore`. :func:`compute_partial_metric` is what the
two ``evaluate`` modules (``partial_map``, ``partial_mauc``) compute: the same values, reported as a dict with
an optional category subset and the OpenImages G-groups (:func:`metric_output`). Scoring a model's rows on a
split (both metrics, dense or by known pairs) is :func:`hf_cft.evaluation.score_split`, built on this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..labels import check_known_values
from ..sparse import is_sparse
from .pairs import per_category_from_pairs, sparse_partial_metric
from .ranking import METRICS, MacroScore, check_scores, macro_score

logger = logging.getLogger(__name__)

__all__ = [
    "ReportOptions",
    "compute_partial_metric",
    "dense_inputs",
    "dense_metric",
    "is_sparse_input",
    "metric_output",
    "partial_auroc",
    "partial_average_precision",
    "partial_metric",
    "resolve_categories",
]

METRIC_KEYS = {"ap": "map", "auroc": "mauc"}
"""The key of each metric's macro mean in the ``evaluate`` modules' output."""


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def dense_inputs(scores, labels, label_mask=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N×C ``scores``, ``labels`` and boolean ``label_mask`` (None: all known) as tensors, checked: the shapes,
    the known labels (1 / 0) and the scores at known labels (no NaN)."""
    scores, labels = _tensor(scores), _tensor(labels)
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(f"`scores` and `labels` must be N×C, got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if label_mask is None:
        mask = torch.ones_like(labels, dtype=torch.bool)
    else:
        mask = _tensor(label_mask)
        if mask.shape != scores.shape:
            raise ValueError(f"`label_mask` must be N×C like `scores` {tuple(scores.shape)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    if labels.dtype != torch.bool:
        known = labels[mask]
        check_known_values((known.double() if known.is_floating_point() else known).cpu().numpy())
    check_scores(scores[mask].double().cpu().numpy())  # bfloat16 has no numpy form
    return scores, labels, mask


def dense_metric(kind: str, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> MacroScore:
    """Per-category ``kind`` ("ap" / "auroc", in float64) and its macro mean, from :func:`dense_inputs`."""
    pos = ((labels > 0) & mask).sum(0)
    neg = ((labels <= 0) & mask).sum(0)
    values = METRICS[kind](scores.T.double(), labels.T, mask.T)
    return macro_score(values, pos, neg)


def is_sparse_input(labels, label_mask) -> bool:
    """True when ``labels`` or ``label_mask`` is scipy.sparse (sparse labels without their mask are refused)."""
    if label_mask is None and is_sparse(labels):
        raise ValueError("sparse `labels` need their `label_mask` (which pairs are known): pass both, e.g. from "
                         "hf_cft.data.label_arrays(split, sparse=True)")
    return is_sparse(labels) or is_sparse(label_mask)


def partial_metric(kind: str, scores, labels, label_mask=None) -> MacroScore:
    """``kind`` ("ap" / "auroc") per category and macro, on known labels only, dense or sparse labels."""
    if is_sparse_input(labels, label_mask):
        return sparse_partial_metric(kind, scores, labels, label_mask)
    return dense_metric(kind, *dense_inputs(scores, labels, label_mask))


def partial_average_precision(scores, labels, label_mask=None) -> MacroScore:
    """mAP of N×C ``scores`` on known labels only (macro over categories with a known positive and negative).

    ``labels`` / ``label_mask`` may be scipy.sparse (then ``scores`` may also be 1-D, one per known pair): the
    metric is computed from the known pairs, never densified (:mod:`hf_cft.metrics.pairs`).
    """
    return partial_metric("ap", scores, labels, label_mask)


def partial_auroc(scores, labels, label_mask=None) -> MacroScore:
    """mAUC of N×C ``scores`` on known labels only (macro over categories with a known positive and negative).

    Sparse ``labels`` / ``label_mask`` as in :func:`partial_average_precision`.
    """
    return partial_metric("auroc", scores, labels, label_mask)


@dataclass(frozen=True)
class ReportOptions:
    """How the ``evaluate`` modules report per-category values (every option of their ``compute`` but the data).

    Attributes:
        categories: restrict the mean to these categories (indices, or names with ``category_names``), e.g.
            CheXpert's five competition categories.
        category_names: the C names, in order (needed to select categories by name; echoed in the output).
        groups: split the categories into this many equal groups by known-label count, ascending (the
            OpenImages G1–G5 protocol uses 5); each group's macro mean is returned as "G1", "G2", ….
        known_counts: the per-category known-label counts that order the groups (the protocol uses the
            training set's); default: the known labels counted in the scored split.
    """

    categories: Sequence[int | str] | None = None
    category_names: Sequence[str] | None = None
    groups: int | None = None
    known_counts: Sequence[int] | np.ndarray | None = None


def resolve_categories(categories, category_names, n_cat: int) -> list[int]:
    """Column indices of ``categories`` (indices, or names of ``category_names``); all ``n_cat`` when None."""
    if categories is None:
        return list(range(n_cat))
    chosen = []
    for c in categories:
        if isinstance(c, str):
            if category_names is None or c not in list(category_names):
                raise ValueError(f"category {c!r} is not among category_names; pass category_names in order")
            chosen.append(list(category_names).index(c))
        else:
            if not 0 <= int(c) < n_cat:
                raise ValueError(f"category index {c} is outside [0, {n_cat})")
            chosen.append(int(c))
    return chosen


def _group_means(per: np.ndarray, counts: np.ndarray, groups: int) -> dict[str, float]:
    """"G1".."G<groups>": the mean of ``per`` over equal groups of categories by ascending ``counts``."""
    out = {}
    order = np.argsort(counts, kind="stable")
    for g, part in enumerate(np.array_split(order, groups), start=1):
        vals = per[part]
        good = ~np.isnan(vals)
        out[f"G{g}"] = float(vals[good].mean()) if good.any() else float("nan")
    return out


def metric_output(kind: str, macro: MacroScore, counts, options: ReportOptions) -> dict:
    """The ``evaluate`` modules' dict from per-category values: the chosen categories' mean (numpy's mean, as the
    modules always computed it) and the G-groups. ``counts``: the known labels of each category."""
    n_cat = len(macro.per_category)
    names = options.category_names
    if names is not None and len(names) != n_cat:
        raise ValueError(f"category_names has {len(names)} names for {n_cat} columns")
    chosen = resolve_categories(options.categories, names, n_cat)
    sub = np.array(macro.per_category)[chosen]
    ok = ~np.isnan(sub)
    out = {
        METRIC_KEYS[kind]: float(sub[ok].mean()) if ok.any() else float("nan"),
        "n_categories": int(ok.sum()),
        "n_excluded": int((~ok).sum()),
        "per_category": [None if np.isnan(v) else float(v) for v in sub],
    }
    if names is not None:
        out["category_names"] = [str(names[i]) for i in chosen]
    if options.groups:
        counts = np.asarray(counts if options.known_counts is None else options.known_counts).reshape(-1)
        if counts.shape[0] != n_cat:
            raise ValueError(f"known_counts has {counts.shape[0]} values for {n_cat} categories: give one known-label "
                             "count per category, in order")
        out.update(_group_means(sub, counts[chosen], options.groups))
    return out


def _pair_form(kind: str, predictions, references, pair_categories, num_categories) -> tuple[MacroScore, np.ndarray]:
    """The modules' sparse form: one score, label and category per known pair."""
    if num_categories is None:
        raise ValueError("`num_categories` is needed with `pair_categories`")
    pair_cats = np.asarray(pair_categories, dtype=np.int64)
    refs = np.asarray(references, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.float64)
    check_scores(preds)
    per_cat = per_category_from_pairs(kind, preds, refs, pair_cats, int(num_categories))
    counted = np.bincount(pair_cats, minlength=int(num_categories))
    pos = np.bincount(pair_cats, weights=refs, minlength=int(num_categories))
    return macro_score(per_cat, pos, counted - pos), counted


def _code_form(kind: str, predictions, references) -> tuple[MacroScore, np.ndarray]:
    """The modules' dense form: N×C scores and label codes (1 positive, 0 negative, -1 unknown)."""
    scores = torch.as_tensor(np.asarray(predictions, dtype=np.float64))
    codes = torch.as_tensor(np.asarray(references, dtype=np.int64))
    if scores.ndim != 2 or codes.shape != scores.shape:
        raise ValueError(
            f"predictions and references must both be N×C, got {tuple(scores.shape)} and {tuple(codes.shape)}"
        )
    if not bool(((codes >= -1) & (codes <= 1)).all()):
        raise ValueError("references must be label codes: 1 positive, 0 negative, -1 unknown")
    mask = codes >= 0
    macro = dense_metric(kind, *dense_inputs(scores, (codes > 0).to(torch.int8), mask))
    return macro, mask.sum(0).numpy()


def compute_partial_metric(kind: str, predictions, references, pair_categories=None, num_categories: int | None = None,
                           **options) -> dict:
    """What the ``partial_map`` / ``partial_mauc`` ``evaluate`` modules return.

    Args:
        kind: "ap" or "auroc".
        predictions: N×C scores (logits or probabilities).
        references: N×C label codes, 1 positive / 0 negative / -1 unknown (:func:`hf_cft.labels.to_code`).
        pair_categories, num_categories: the sparse form (Open Images at scale): ``predictions`` and
            ``references`` are then 1-D, one score and one label (1 / 0) per known pair, ``pair_categories``
            the pair's category and ``num_categories`` C. No N×C array is made.
        options: ``categories``, ``category_names``, ``groups``, ``known_counts`` (:class:`ReportOptions`).
    """
    report = ReportOptions(**options)
    if pair_categories is not None:
        macro, counts = _pair_form(kind, predictions, references, pair_categories, num_categories)
    else:
        macro, counts = _code_form(kind, predictions, references)
    return metric_output(kind, macro, counts, report)
