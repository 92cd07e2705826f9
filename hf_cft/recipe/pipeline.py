"""``run``: the recipe's steps in order, each a named function of its own module."""

from __future__ import annotations

import dataclasses
import logging

import torch

from ..engine.views import Rows
from .arguments import RecipeArguments
from .calibrate import final_variant, make_kept_decisions, run_variants, state_selection_on_eval
from .checks import preflight
from .inputs import feature_extractor, load_data, load_head, load_or_train_model, resolve_selection
from .job import Job, Outcome
from .report import format_table, save_outputs
from .scoring import decision_figures, evaluate, restrict_to_eval_categories, with_decisions
from .tracking import log_outcome

logger = logging.getLogger(__name__)

__all__ = ["load_job", "run"]


def load_job(recipe: RecipeArguments, seed: int, accelerator) -> Job:
    """The model (given, or a baseline trained once), the data, the head and its cached features."""
    model_path = load_or_train_model(recipe, seed, accelerator)
    ds, names = load_data(recipe, seed, accelerator)
    head = load_head(recipe, model_path, names)
    return Job(recipe, accelerator, model_path, ds, names, head, feature_extractor(recipe, head, accelerator, ds))


def run(recipe: RecipeArguments, engine_args) -> dict:
    """Run the job; returns the results table (also written to ``output_dir/cft_results.json``)."""
    from accelerate import Accelerator

    preflight(recipe, engine_args)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    job = load_job(recipe, engine_args.seed, accelerator)
    z = job.features_of(job.ds["train"])
    labels, mask = job.features_of.labels(job.ds["train"])  # sparse for pair-stored splits; skipped rows unknown
    fit_rows, selection, holdout, on_eval = resolve_selection(recipe, job.model_path, job.ds, z, labels, mask,
                                                              job.features_of)
    if holdout is not None:
        engine_args = dataclasses.replace(engine_args, selection_fraction=holdout)
    rows0 = (job.head.weight, job.head.bias)
    # the fit rows are read from the feature cache, never copied
    fit = (z if len(fit_rows) == len(z) else Rows(z, fit_rows), labels[fit_rows], mask[fit_rows])
    results = run_variants(job, engine_args, fit, selection, rows0)
    kept = final_variant(recipe, results)
    if on_eval:
        state_selection_on_eval(results[kept], recipe.eval_split)
    uncalibrated = results[kept]
    results[kept] = make_kept_decisions(engine_args, fit, selection, uncalibrated)
    ev = job.ds[recipe.eval_split]
    # rows selected on the evaluation split: its features and labels are already read (``selection``)
    eval_data = restrict_to_eval_categories(
        recipe, job.ds, selection if on_eval else (job.features_of(ev), *job.features_of.labels(ev)))
    table, scores = evaluate(recipe, job.ds, eval_data, rows0, results, (z, labels, mask), engine_args.metric,
                             accelerator)
    rows, decisions = decision_figures(eval_data, rows0, kept, results[kept], uncalibrated, engine_args.metric)
    table = with_decisions(table, rows)
    if accelerator.is_main_process:
        logger.info("evaluation on %s:\n%s", recipe.eval_split, format_table(table, recipe.eval_split, kept))
        outcome = Outcome(results, kept, on_eval, table, scores, decisions)
        save_outputs(job, outcome)
        log_outcome(job, outcome)  # the trackers of --report_to (none by default)
    accelerator.wait_for_everyone()
    return {"eval_split": recipe.eval_split, "kept": kept, "table": table}
