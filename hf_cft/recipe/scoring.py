"""The recipe's scoring: the before / after table on the evaluation split, the headroom rows, the card's scores.

Every figure comes from :mod:`hf_cft.evaluation`, the package's one scoring of a split.
"""

from __future__ import annotations

import logging

import numpy as np

from ..data import label_arrays, partial_info
from ..decisions import DECISIONS_KEY, choose_thresholds, result_thresholds
from ..engine.logistic import fit_logistic_rows
from ..evaluation import gain_intervals, pair_probabilities, reliability, score_decisions, score_rows, score_split
from ..metrics.pairs import known_pairs_metric, per_category_from_pairs
from ..sparse import is_sparse
from ..training import eval_columns
from .arguments import RecipeArguments

logger = logging.getLogger(__name__)

__all__ = ["DECISION_COLUMNS", "HEADROOM_L2", "ORACLE", "THRESHOLD_BOUND", "UPPER_BOUND", "decision_figures",
           "evaluate", "evaluate_results", "headroom_rows", "restrict_to_eval_categories", "with_decisions"]


def evaluate_results(features, labels, mask, weight0, bias0, results: dict) -> tuple[list[dict], dict]:
    """Masked mAP / mAUC of the trained rows and of every result (:func:`hf_cft.evaluation.score_rows`): the
    table and the per-result :class:`~hf_cft.evaluation.SplitScores`."""
    rows = {"baseline": (weight0, bias0), **{name: (res.weight, res.bias) for name, res in results.items()}}
    scores = score_rows(features, rows, labels, mask)
    table = [{"method": "baseline", "map": scores["baseline"].ap.value, "mauc": scores["baseline"].auroc.value,
              "improved": 0, "degraded": 0}]
    ref = scores["baseline"].per_category("ap")
    for name, res in results.items():
        per = scores[name].per_category("ap")
        ok = ~np.isnan(per) & ~np.isnan(ref)
        table.append({"method": f"CFT-{name}", "map": scores[name].ap.value, "mauc": scores[name].auroc.value,
                      "changed": res.n_changed, "improved": int((per[ok] > ref[ok] + 1e-12).sum()),
                      "degraded": int((per[ok] < ref[ok] - 1e-12).sum())})
    return table, scores


HEADROOM_L2 = [1e-4, 1e-3, 1e-2, 1e-1]
UPPER_BOUND = "known-label row, λ tuned on the evaluation split (upper bound)"
ORACLE = "all-label row, λ tuned on the evaluation split (head oracle)"
THRESHOLD_BOUND = "kept rows, thresholds tuned on the evaluation split (upper bound)"
DECISION_COLUMNS = ("f1_macro", "f1_micro", "ece", "brier")


def headroom_rows(train_features, labels, mask, eval_features, eval_labels, eval_mask, metric: str) -> list[dict]:
    """What a re-fitted row could reach at most: per category the L2 logistic regression on the training images'
    known labels (or on all their labels, which no partial-label method has) whose λ scores best on the
    evaluation split. Reporting only. ``labels``: every true label (a simulated dataset's ``full_labels``)."""
    ze = np.asarray(eval_features, dtype=np.float64)
    rows = []
    for name, m in ((UPPER_BOUND, mask), (ORACLE, np.ones_like(mask))):
        w, b = fit_logistic_rows(train_features, labels, m, HEADROOM_L2)
        scored = [score_split(ze @ w[:, p].numpy().T + b[:, p].numpy(), eval_labels, eval_mask)
                  for p in range(len(HEADROOM_L2))]
        per_ap, per_auc = [x.per_category("ap") for x in scored], [x.per_category("auroc") for x in scored]
        per_ap, per_auc = np.array(per_ap), np.array(per_auc)
        key = np.nan_to_num(per_ap if metric == "ap" else per_auc, nan=-1.0)
        pick = key.argmax(0)
        cols = np.arange(per_ap.shape[1])
        rows.append({"method": name, "map": float(np.nanmean(per_ap[pick, cols])),
                     "mauc": float(np.nanmean(per_auc[pick, cols])), "reporting_only": True})
    return rows


def restrict_to_eval_categories(recipe: RecipeArguments, ds, eval_data: tuple) -> tuple:
    """``eval_data`` (features, labels, mask) with the labels of categories outside ``--eval_categories`` (or
    CheXpert's five competition categories) counted as unknown."""
    ze, ye, me = eval_data
    columns = eval_columns(recipe.dataset, partial_info(ds[recipe.eval_split])["categories"],
                           recipe.eval_categories)
    if columns is None:
        return eval_data
    if is_sparse(me):
        raise ValueError("--eval_categories needs a dataset with dense labels")
    me = me.copy()
    me[:, np.setdiff1d(np.arange(me.shape[1]), columns)] = False
    return ze, ye, me


def evaluate(recipe: RecipeArguments, ds, eval_data: tuple, rows, results: dict, train, metric: str,
             accelerator) -> tuple[list[dict], dict]:
    """The before / after table on ``eval_split`` (with the headroom rows when asked or by default) and scores.

    ``eval_data``: the evaluation split's ``(features, labels, mask)`` (see :func:`restrict_to_eval_categories`),
    ``train`` the training split's."""
    ze, ye, me = eval_data
    table, scores = evaluate_results(ze, ye, me, *rows, results)
    z, _, mask = train
    full_labels = partial_info(ds["train"]).get("full_labels_behind_mask", False)
    want = recipe.headroom if recipe.headroom is not None else full_labels and z.size <= 5e7
    if want and not full_labels:
        logger.warning("--headroom needs simulated partial labels (the true labels behind the mask): skipped")
    elif want and accelerator.is_main_process:
        table += headroom_rows(z, label_arrays(ds["train"], ("full_labels",))[0], mask, ze, ye, me, metric)
    return table, scores


INTERVAL_CATEGORIES = 100  # bootstrap intervals of the gains plot for at most this many categories (largest |gain|)


def decision_figures(eval_data: tuple, rows0: tuple, name: str, kept, uncalibrated, kind: str
                     ) -> tuple[list[dict], dict]:
    """The decisions on the evaluation split's known labels: table rows (the baseline at 0.5, the kept rows ``name``
    uncalibrated at 0.5, calibrated at their saved thresholds, and at thresholds tuned on this split: an upper
    bound, reporting only), and what the card shows (per-category F1 / ECE / Brier before and after, the
    reliability diagram's bins, the gains' bootstrap intervals in ``kind``)."""
    ze, ye, me = eval_data
    p0, known = pair_probabilities(ze, *rows0, ye, me)
    p1, _ = pair_probabilities(ze, kept.weight, kept.bias, ye, me)
    pu, _ = pair_probabilities(ze, uncalibrated.weight, uncalibrated.bias, ye, me)
    thresholds = result_thresholds(kept)
    objective = kept.extra[DECISIONS_KEY]["threshold_objective"]
    tuned, _ = choose_thresholds(p1, known.values, known.columns(), known.c, objective, shrinkage=0.0)
    before, after = score_decisions(p0, known), score_decisions(p1, known, thresholds)
    uncal = {**score_decisions(pu, known), **{key: known_pairs_metric(k, pu, known).value
                                              for k, key in (("ap", "map"), ("auroc", "mauc"))}}
    figures = {"baseline": before, f"CFT-{name}": after, f"CFT-{name} uncalibrated, at 0.5": uncal,
               THRESHOLD_BOUND: score_decisions(p1, known, tuned)}
    gains = np.nan_to_num(per_category_from_pairs(kind, p1, known.values, known.columns(), known.c)
                          - per_category_from_pairs(kind, p0, known.values, known.columns(), known.c))
    largest = np.argsort(-np.abs(gains), kind="stable")[:INTERVAL_CATEGORIES]
    card = {"before": before, "after": after,
            "reliability": {"before": reliability(p0, known), "after": reliability(p1, known)},
            "gain_intervals": {str(c): v for c, v in gain_intervals(p0, p1, known, largest, kind).items()}}
    return [{"method": k, **{m: v[m] for m in (*DECISION_COLUMNS, "map", "mauc") if m in v}}
            for k, v in figures.items()], card


def with_decisions(table: list[dict], rows: list[dict]) -> list[dict]:
    """The before / after table with the decision columns of :func:`decision_figures`: added to the rows of the
    same method, the others (uncalibrated, upper bound) inserted after the kept row as reporting-only rows."""
    by = {row["method"]: row for row in rows}
    out = []
    for row in table:
        out.append({**row, **by.pop(row["method"], {})})
        if row["method"].startswith("CFT-") and any(k.startswith(row["method"] + " ") for k in by):
            out += [{**by.pop(k), "reporting_only": True} for k in list(by) if k.startswith(row["method"] + " ")]
    return out + [{**row, "reporting_only": True} for row in by.values()]
