"""Scoring on a split: AP and AUROC of scores, rows or a model's logits on known labels, per category and macro.

This is the one scoring of hf_cft. :func:`score_split` scores N×C scores (or one score per known pair)
against a split's labels, dense or sparse (Open Images' known pairs), optionally on a subset of categories;
:func:`score_rows` does it for named classifier rows ``(weight, bias)`` applied to features;
:func:`evaluate_rows` gives the figures ``CFTHead.evaluate`` and the model card show (the ``evaluate``
modules' output, G-groups included). The result, :class:`SplitScores`, holds both metrics per category and
their macro means. Every number comes from :mod:`hf_cft.metrics` (float64, exact, ties as scikit-learn), so
the ``evaluate`` modules ``partial_map`` / ``partial_mauc`` give the same values.

Two means are kept, each bit for bit as its callers always reported it: :attr:`SplitScores.ap` ``.value``
is torch's mean (the recipe's table and the trainer), :meth:`SplitScores.report` numpy's (the ``evaluate``
modules, ``CFTHead.evaluate``, the card); they may differ in the last bit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .metrics.decision import (
    ECE_BINS,
    brier_per_category,
    ece_per_category,
    f_beta_per_category,
    micro_f_beta,
    nan_mean,
)
from .metrics.pairs import known_pairs_metric, pair_scores, scores_at_known
from .metrics.partial import METRIC_KEYS, ReportOptions, dense_inputs, dense_metric, is_sparse_input, metric_output
from .metrics.ranking import MacroScore, counted_metric, macro_score
from .sparse import KnownLabels, known_labels

logger = logging.getLogger(__name__)

__all__ = ["SplitScores", "evaluate_rows", "gain_intervals", "pair_probabilities", "reliability", "row_scores",
           "score_decisions", "score_rows", "score_split"]

KINDS = ("ap", "auroc")
"""The metrics every scoring computes: average precision and the area under the ROC curve."""


@dataclass
class SplitScores:
    """AP and AUROC of one set of scores on one split.

    Attributes:
        ap, auroc: per category (NaN where a category lacks a known positive or a known negative) and their
            macro mean over the other categories (``.value``).
        columns: the split's categories that were scored, in order (all of them unless a subset was asked).
        known_counts: how many labels of each scored category are known.
    """

    ap: MacroScore
    auroc: MacroScore
    columns: list[int]
    known_counts: np.ndarray

    def macro(self, kind: str) -> MacroScore:
        """The :class:`MacroScore` of ``kind`` ("ap" or "auroc")."""
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
        return self.ap if kind == "ap" else self.auroc

    def per_category(self, kind: str) -> np.ndarray:
        """``kind`` of every scored category as a float array (NaN where excluded)."""
        return np.array(self.macro(kind).per_category, dtype=float)

    def select(self, positions: Sequence[int]) -> SplitScores:
        """These scored categories only (positions in :attr:`columns`), with their macro means."""
        positions = [int(p) for p in positions]
        pick = lambda m: macro_score(np.array(m.per_category)[positions])  # noqa: E731 (excluded ⇔ NaN)
        return SplitScores(pick(self.ap), pick(self.auroc), [self.columns[p] for p in positions],
                           np.asarray(self.known_counts)[positions])

    def to_dict(self) -> dict:
        """Macro means and per-category lists (NaN where excluded), e.g. for the model card."""
        return {"map": self.ap.value, "mauc": self.auroc.value,
                "per_category_ap": self.ap.per_category, "per_category_auroc": self.auroc.per_category}

    def report(self, categories=None, category_names=None, groups: int | None = None, known_counts=None) -> dict:
        """The ``evaluate`` modules' figures of both metrics in one dict, as ``CFTHead.evaluate`` returns them:
        ``map``, ``per_category_ap`` (None where excluded), ``n_excluded``, ``map_G1``…, then the same for
        ``mauc`` / AUROC. Options as :class:`~hf_cft.metrics.partial.ReportOptions` (``categories``: indices
        or names among the scored categories; ``category_names``: one per scored category)."""
        options = ReportOptions(categories, category_names, groups, known_counts)
        out: dict = {}
        for kind in KINDS:
            key = METRIC_KEYS[kind]
            res = metric_output(kind, self.macro(kind), self.known_counts, options)
            out[key] = res[key]
            out[f"per_category_{kind}"] = res["per_category"]
            out["n_excluded"] = res["n_excluded"]
            out.update({f"{key}_{g}": v for g, v in res.items() if g.startswith("G")})
        return out


def _columns(x, cols: list[int]):
    return x[:, cols] if isinstance(x, torch.Tensor) else np.asarray(x)[:, cols]


def _known(labels, label_mask) -> KnownLabels | None:
    """The known pairs of sparse labels (or of a :class:`KnownLabels` given as ``labels``); None when dense."""
    if isinstance(labels, KnownLabels):
        return labels
    return known_labels(labels, label_mask) if is_sparse_input(labels, label_mask) else None


def score_split(scores, labels, label_mask=None, categories: Sequence[int] | None = None) -> SplitScores:
    """AP and AUROC of ``scores`` on the known labels of a split, per category and macro.

    Args:
        scores: N×C (numpy or torch; logits or probabilities), or with sparse labels 1-D with one score per
            known pair in the order of :func:`hf_cft.sparse.known_labels` (e.g. from
            :func:`~hf_cft.metrics.pairs.scores_at_known`).
        labels, label_mask: N×C, dense (numpy or torch; 1 positive / 0 negative where the mask is True; mask
            None: every label known) or ``scipy.sparse``; or ``labels`` a :class:`~hf_cft.sparse.KnownLabels`
            (the known pairs, prepared once for many score sets) and ``label_mask`` None.
        categories: score these columns only, in this order (e.g. CheXpert's five competition categories):
            dense inputs are sliced before scoring (only their labels and scores are read); known pairs are
            scored whole, then these categories picked.

    Categories without a known positive and a known negative are NaN and left out of the macro means.
    """
    known = _known(labels, label_mask)
    if known is not None:
        values = pair_scores(scores, known)
        whole = SplitScores(*(known_pairs_metric(kind, values, known) for kind in KINDS), list(range(known.c)),
                            known.known_counts())
        return whole if categories is None else whole.select(categories)
    cols = None if categories is None else [int(c) for c in categories]
    if cols is not None:
        scores, labels = _columns(scores, cols), _columns(labels, cols)
        label_mask = None if label_mask is None else _columns(label_mask, cols)
    s, y, m = dense_inputs(scores, labels, label_mask)
    return SplitScores(*(dense_metric(kind, s, y, m) for kind in KINDS),
                       list(range(s.shape[1])) if cols is None else cols, m.sum(0).numpy())


def _float32(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def row_scores(features, weight, bias, known: KnownLabels | None = None) -> np.ndarray:
    """``features @ weight.T + bias`` in float32: N×C, or with ``known`` at its known pairs only (1-D)."""
    if known is not None:
        return scores_at_known(features, weight, bias, known)
    return np.asarray(features, dtype=np.float32) @ _float32(weight).T + _float32(bias)


def score_rows(features, rows: Mapping[str, tuple], labels, label_mask=None,
               categories: Sequence[int] | None = None) -> dict[str, SplitScores]:
    """:func:`score_split` of each named classifier rows ``(weight, bias)`` on N×d ``features``.

    With sparse labels only the known pairs are scored (``features`` may be a memory map, read pair by pair);
    dense features are read once as float32.
    """
    known = _known(labels, label_mask)
    if known is not None:
        return {tag: score_split(row_scores(features, w, b, known), known, categories=categories)
                for tag, (w, b) in rows.items()}
    z = np.asarray(features, dtype=np.float32)
    return {tag: score_split(row_scores(z, w, b), labels, label_mask, categories) for tag, (w, b) in rows.items()}


def evaluate_rows(features, rows: Mapping[str, tuple], labels, label_mask=None, groups: int | None = None,
                  categories=None, category_names=None) -> dict:
    """``CFTHead.evaluate``'s figures: ``{tag: SplitScores.report(...)}`` of every named rows on every category.

    Args:
        features: N×d (with sparse labels a memory map is read pair by pair, never copied whole).
        rows: tag → ``(weight, bias)`` (e.g. ``{"before": ..., "after": ...}``).
        groups, categories, category_names: as in :meth:`SplitScores.report` (``categories`` only picks what
            is reported: every category is scored).
    """
    scored = score_rows(features, rows, labels, label_mask)
    return {tag: s.report(categories, category_names, groups) for tag, s in scored.items()}


def pair_probabilities(features, weight, bias, labels, label_mask=None) -> tuple[np.ndarray, KnownLabels]:
    """``σ(features @ weight.T + bias)`` at a split's known pairs (float64), and the pairs."""
    known = _known(labels, label_mask) or known_labels(labels, label_mask if label_mask is not None
                                                       else np.ones(np.shape(labels), dtype=bool))
    logits = row_scores(features, weight, bias, known).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-logits)), known


def score_decisions(probs: np.ndarray, known: KnownLabels, thresholds=None) -> dict:
    """Macro and micro F1 at ``thresholds`` (one per category; default 0.5), macro ECE and Brier score of pair
    probabilities (:func:`pair_probabilities`), with their per-category values (None where undefined)."""
    t = np.full(known.c, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    per = {"f1": f_beta_per_category(probs, known, t), "ece": ece_per_category(probs, known),
           "brier": brier_per_category(probs, known)}
    out = {"f1_macro": nan_mean(per["f1"]), "f1_micro": micro_f_beta(probs, known, t),
           "ece": nan_mean(per["ece"]), "brier": nan_mean(per["brier"])}
    out.update({f"per_category_{k}": [None if np.isnan(x) else float(x) for x in v] for k, v in per.items()})
    return out


def reliability(probs: np.ndarray, known: KnownLabels, bins: int = ECE_BINS) -> dict:
    """Pooled over every known pair: per equal-width probability bin its count, mean probability and share of
    positives (None for an empty bin), for a reliability diagram."""
    b = np.minimum((probs * bins).astype(np.int64), bins - 1)
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=probs, minlength=bins) / count
        rate = np.bincount(b, weights=known.values, minlength=bins) / count
    clean = lambda v: [None if c == 0 else float(x) for x, c in zip(v, count)]  # noqa: E731
    return {"count": count.tolist(), "mean_probability": clean(mean_p), "positive_rate": clean(rate)}


def gain_intervals(before: np.ndarray, after: np.ndarray, known: KnownLabels, categories: Sequence[int],
                   kind: str = "ap", resamples: int = 200, seed: int = 0) -> dict[int, tuple[float, float]]:
    """95% paired-bootstrap intervals of each category's gain in ``kind`` from ``before`` to ``after`` scores (at
    known pairs): the category's known images resampled with replacement, both scores on the same resample."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in categories:
        a, b = known.indptr[c], known.indptr[c + 1]
        y = known.values[a:b]
        if b - a < 2 or y.min() == y.max():
            continue
        counts = torch.from_numpy(rng.multinomial(b - a, np.full(b - a, 1.0 / (b - a)), size=resamples))[None]
        pos = torch.from_numpy(y.astype(np.float64))[None]
        diff = (counted_metric(kind, torch.from_numpy(after[a:b])[None], pos, counts.double())
                - counted_metric(kind, torch.from_numpy(before[a:b])[None], pos, counts.double()))[0].numpy()
        diff = diff[~np.isnan(diff)]
        if diff.size:
            out[int(c)] = (float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975)))
    return out
