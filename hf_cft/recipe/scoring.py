"""The recipe's scoring: the before / after table on the evaluation split, the headroom rows, the card's scores.

Every figure comes from :mod:`hf_cft.evaluation`, the package's one scoring of a split.
"""

from __future__ import annotations

import logging

import numpy as np

from ..data import label_arrays, partial_info
from ..engine.variants.refit import fit_logistic_rows
from ..evaluation import score_rows, score_split
from ..sparse import is_sparse
from ..training import eval_columns
from .arguments import RecipeArguments

logger = logging.getLogger(__name__)

__all__ = ["HEADROOM_L2", "ORACLE", "UPPER_BOUND", "evaluate", "evaluate_results", "headroom_rows"]


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


def evaluate(recipe: RecipeArguments, ds, eval_data: tuple, rows, results: dict, train, metric: str,
             accelerator) -> tuple[list[dict], dict]:
    """The before / after table on ``eval_split`` (with the headroom rows when asked or by default) and scores.

    ``eval_data``: the evaluation split's ``(features, labels, mask)``, ``train`` the training split's."""
    ze, ye, me = eval_data
    columns = eval_columns(recipe.dataset, partial_info(ds[recipe.eval_split])["categories"],
                           recipe.eval_categories)
    if columns is not None:  # the other categories' labels count as unknown here
        if is_sparse(me):
            raise ValueError("--eval_categories needs a dataset with dense labels")
        me = me.copy()
        me[:, np.setdiff1d(np.arange(me.shape[1]), columns)] = False
    table, scores = evaluate_results(ze, ye, me, *rows, results)
    z, _, mask = train
    full_labels = partial_info(ds["train"]).get("full_labels_behind_mask", False)
    want = recipe.headroom if recipe.headroom is not None else full_labels and z.size <= 5e7
    if want and not full_labels:
        logger.warning("--headroom needs simulated partial labels (the true labels behind the mask): skipped")
    elif want and accelerator.is_main_process:
        table += headroom_rows(z, label_arrays(ds["train"], ("full_labels",))[0], mask, ze, ye, me, metric)
    return table, scores
