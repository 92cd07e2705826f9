"""The recipe's outputs: the calibrated model folder (report, plot, card; the Hub if asked) and the printed
before / after table."""

from __future__ import annotations

import json
import logging
import os

from ..constants import CFT_RESULTS_NAME
from ..hub import base_model_license
from .job import Job, Outcome
from .scoring import THRESHOLD_BOUND, UPPER_BOUND

logger = logging.getLogger(__name__)

__all__ = ["format_table", "save_outputs"]


def save_outputs(job: Job, outcome: Outcome) -> None:
    """The calibrated model, report, plot and card in ``output_dir`` (main process), then the Hub if asked."""
    recipe, head, kept, scores = job.recipe, job.head, outcome.kept, outcome.scores
    base_model = recipe.model_name_or_path or job.model_path
    decisions = outcome.decisions or {}
    evaluation = {recipe.eval_split: {
        "before": {**scores["baseline"].to_dict(), **decisions.get("before", {})},
        "after": {**scores[kept].to_dict(), **decisions.get("after", {})},
        **{k: v for k, v in decisions.items() if k not in ("before", "after")}}}
    head.apply(outcome.results[kept])
    license_ = recipe.license or base_model_license(base_model)
    skipped = getattr(job.features_of, "skipped", dict)()  # images --skip_bad_images left out, by split
    results_json = json.dumps({"eval_split": recipe.eval_split, "kept": kept, "table": outcome.table,
                               "skipped_images": {"count": sum(map(len, skipped.values())), "by_split": skipped}},
                              indent=2)
    head.save_pretrained(recipe.output_dir, category_names=job.names, repo_id=recipe.hub_model_id,
                         base_model=base_model, dataset_name=recipe.dataset, license=license_,
                         evaluation=evaluation, selection_on_eval=outcome.selection_on_eval,
                         extra_files={CFT_RESULTS_NAME: results_json + "\n"})
    if recipe.push_to_hub:
        head.push_to_hub(recipe.hub_model_id or os.path.basename(os.path.normpath(recipe.output_dir)),
                         base_model=base_model, dataset_name=recipe.dataset, license=license_,
                         evaluation=evaluation, selection_on_eval=outcome.selection_on_eval,
                         revision=recipe.hub_revision, create_pr=recipe.hub_create_pr)
    job.accelerator.print(f"calibrated model, report, plot and card: {recipe.output_dir}")


def _pct(row: dict, key: str) -> str:
    value = row.get(key)
    return "–" if value is None else f"{100 * value:.2f}"


def format_table(table: list[dict], split: str, kept: str) -> str:
    """The before / after table as markdown (headroom rows, when present, last, with the share CFT took).

    Macro F1 is at 0.5 for the baseline and at the saved per-category thresholds for the kept rows; ECE and
    Brier score are of the probabilities (lower is better); all on known labels."""
    lines = [f"| {split} | mAP | mAUC | macro-F1 | micro-F1 | ECE | Brier | rows changed | categories improved / "
             "degraded |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        mark = " (kept)" if row["method"] == f"CFT-{kept}" else ""
        changed = row.get("changed", "–")
        counts = "–" if row.get("reporting_only") else f"{row['improved']} / {row['degraded']}"
        lines.append(f"| {row['method']}{mark} | {_pct(row, 'map')} | {_pct(row, 'mauc')} | {_pct(row, 'f1_macro')} | "
                     f"{_pct(row, 'f1_micro')} | {_pct(row, 'ece')} | {_pct(row, 'brier')} | {changed} | {counts} |")
    by = {row["method"]: row for row in table}
    base, final, upper = by.get("baseline"), by.get(f"CFT-{kept}"), by.get(UPPER_BOUND)
    text = "\n".join(lines) + "\n"
    if base and final and upper and upper["map"] > base["map"]:
        share = (final["map"] - base["map"]) / (upper["map"] - base["map"])
        text += (f"\nCFT-{kept} took {100 * share:.0f}% of the mAP gain the known-label upper bound shows "
                 f"({100 * (final['map'] - base['map']):+.2f} of {100 * (upper['map'] - base['map']):+.2f} points).\n")
    bound = by.get(THRESHOLD_BOUND)
    if final and bound and final.get("f1_macro") is not None and bound.get("f1_macro"):
        text += (f"Macro-F1 at the saved thresholds is {100 * final['f1_macro'] / bound['f1_macro']:.0f}% of the "
                 "macro-F1 of thresholds tuned on this split (upper bound, reporting only).\n")
    return text
