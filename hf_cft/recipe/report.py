"""The recipe's outputs: the calibrated model folder (report, plot, card; the Hub if asked) and the printed
before / after table."""

from __future__ import annotations

import json
import logging
import os

from ..constants import CFT_RESULTS_NAME
from .job import Job, Outcome
from .scoring import UPPER_BOUND

logger = logging.getLogger(__name__)

__all__ = ["format_table", "save_outputs"]


def save_outputs(job: Job, outcome: Outcome) -> None:
    """The calibrated model, report, plot and card in ``output_dir`` (main process), then the Hub if asked."""
    recipe, head, kept, scores = job.recipe, job.head, outcome.kept, outcome.scores
    base_model = recipe.model_name_or_path or job.model_path
    evaluation = {recipe.eval_split: {"before": scores["baseline"].to_dict(),
                                      "after": scores[kept].to_dict()}}
    head.apply(outcome.results[kept])
    skipped = getattr(job.features_of, "skipped", dict)()  # images --skip_bad_images left out, by split
    results_json = json.dumps({"eval_split": recipe.eval_split, "kept": kept, "table": outcome.table,
                               "skipped_images": {"count": sum(map(len, skipped.values())), "by_split": skipped}},
                              indent=2)
    head.save_pretrained(recipe.output_dir, category_names=job.names, repo_id=recipe.hub_model_id,
                         base_model=base_model, dataset_name=recipe.dataset,
                         evaluation=evaluation, selection_on_eval=outcome.selection_on_eval,
                         extra_files={CFT_RESULTS_NAME: results_json + "\n"})
    if recipe.push_to_hub:
        head.push_to_hub(recipe.hub_model_id or os.path.basename(os.path.normpath(recipe.output_dir)),
                         base_model=base_model, dataset_name=recipe.dataset,
                         evaluation=evaluation, selection_on_eval=outcome.selection_on_eval,
                         revision=recipe.hub_revision, create_pr=recipe.hub_create_pr)
    job.accelerator.print(f"calibrated model, report, plot and card: {recipe.output_dir}")


def format_table(table: list[dict], split: str, kept: str) -> str:
    """The before / after table as markdown (headroom rows, when present, last, with the share CFT took)."""
    lines = [f"| {split} | mAP | mAUC | rows changed | categories improved / degraded |", "|---|---:|---:|---:|---:|"]
    for row in table:
        mark = " (kept)" if row["method"] == f"CFT-{kept}" else ""
        changed = row.get("changed", "–")
        counts = "–" if row.get("reporting_only") else f"{row['improved']} / {row['degraded']}"
        lines.append(f"| {row['method']}{mark} | {100 * row['map']:.2f} | {100 * row['mauc']:.2f} | {changed} | "
                     f"{counts} |")
    by = {row["method"]: row for row in table}
    base, final, upper = by.get("baseline"), by.get(f"CFT-{kept}"), by.get(UPPER_BOUND)
    text = "\n".join(lines) + "\n"
    if base and final and upper and upper["map"] > base["map"]:
        share = (final["map"] - base["map"]) / (upper["map"] - base["map"])
        text += (f"\nCFT-{kept} took {100 * share:.0f}% of the mAP gain the known-label upper bound shows "
                 f"({100 * (final['map'] - base['map']):+.2f} of {100 * (upper['map'] - base['map']):+.2f} points).\n")
    return text
