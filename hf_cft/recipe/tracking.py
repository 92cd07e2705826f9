"""The recipe's outcome in the trackers of ``--report_to`` (:mod:`hf_cft.tracking`): per method (the baseline,
each variant, the headroom rows) its mAP / mAUC and its change against the baseline, the per-category table of the
variant kept, the gains plot, and the run's settings."""

from __future__ import annotations

import dataclasses
import logging
import os
import re

from ..constants import GAINS_PLOT_NAME
from ..tracking import open_trackers
from .job import Job, Outcome
from .scoring import ORACLE, UPPER_BOUND

logger = logging.getLogger(__name__)

__all__ = ["TRACKING_PROJECT", "log_outcome", "outcome_metrics", "per_category_table"]

TRACKING_PROJECT = "hf_cft_cft"  # the trackers' project (tensorboard: output_dir/hf_cft_cft)
_SHORT = {UPPER_BOUND: "upper_bound", ORACLE: "oracle"}


def _key(method: str) -> str:
    return _SHORT.get(method) or re.sub(r"[^A-Za-z0-9_.-]+", "_", method)


def outcome_metrics(table: list[dict], split: str) -> dict[str, float]:
    """``<split>/<method>/map`` and ``/mauc`` of every row of the table; for the variants also the change against
    the baseline (``map_gain``, ``mauc_gain``), the rows changed and the categories improved / degraded."""
    base = next((row for row in table if row["method"] == "baseline"), None)
    out = {}
    for row in table:
        key = f"{split}/{_key(row['method'])}"
        out.update({f"{key}/map": row["map"], f"{key}/mauc": row["mauc"]})
        if base is not None and row is not base:
            out.update({f"{key}/map_gain": row["map"] - base["map"], f"{key}/mauc_gain": row["mauc"] - base["mauc"]})
        if not row.get("reporting_only") and row is not base:
            out.update({f"{key}/{k}": row[k] for k in ("changed", "improved", "degraded") if k in row})
    return out


def per_category_table(names: list[str], outcome: Outcome) -> tuple[list[str], list[list]]:
    """Columns and rows: per scored category its AP and AUROC before and after (the variant kept), the AP gain,
    and the variant that gave its row."""
    before, after = outcome.scores["baseline"], outcome.scores[outcome.kept]
    report = outcome.results[outcome.kept].report
    ap0, ap1 = before.per_category("ap"), after.per_category("ap")
    auc0, auc1 = before.per_category("auroc"), after.per_category("auroc")
    columns = ["category", "AP before", "AP after", "AP gain", "AUROC before", "AUROC after", "row from"]
    rows = [[names[c] if c < len(names) else str(c), float(ap0[i]), float(ap1[i]), float(ap1[i] - ap0[i]),
             float(auc0[i]), float(auc1[i]), report[c].variant if c < len(report) else None]
            for i, c in enumerate(after.columns)]
    return columns, rows


def log_outcome(job: Job, outcome: Outcome) -> None:
    """Log the outcome to the trackers ``--report_to`` names (main process; nothing for ``none``), then close them."""
    recipe = job.recipe
    config = {**dataclasses.asdict(recipe), **outcome.results[outcome.kept].config.to_dict(), "kept": outcome.kept}
    trackers = open_trackers(recipe.report_to, TRACKING_PROJECT, recipe.output_dir, config=config)
    if not trackers:
        return
    try:
        split = recipe.eval_split
        trackers.log(outcome_metrics(outcome.table, split), step=0)
        trackers.log_table(f"{split}/per_category", *per_category_table(job.names, outcome), step=0)
        plot = os.path.join(recipe.output_dir, GAINS_PLOT_NAME)
        if os.path.exists(plot):
            trackers.log_image(f"{split}/gains", plot, step=0)
        logger.info("logged to %s", ", ".join(trackers.names))
    finally:
        trackers.finish()


