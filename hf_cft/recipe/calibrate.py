"""The recipe's calibration: every requested variant (categories sharded across processes, checkpointed per
block), the per-category ``auto`` choice, and the result the model keeps."""

from __future__ import annotations

import logging
import os

from ..decisions import heldout_split, make_decisions
from ..engine import CFTConfig, CFTEngine, choose_per_category
from ..engine.decide import merge_shards
from ..engine.registry import AUTO
from .arguments import RecipeArguments, decision_config, engine_settings, requested_variants
from .job import Job

logger = logging.getLogger(__name__)

__all__ = ["final_variant", "make_kept_decisions", "run_variants", "state_selection_on_eval"]


def _shard_categories(accelerator):
    return (accelerator.process_index, accelerator.num_processes) if accelerator.num_processes > 1 else None


def run_variants(job: Job, engine_args, fit, selection, rows0: tuple) -> dict:
    """Every requested variant on ``fit`` (features, labels, mask) from the trained rows ``rows0`` (weight,
    bias), sharded across processes and checkpointed per block, and the per-category choice."""
    from accelerate.utils import gather_object

    recipe, accelerator = job.recipe, job.accelerator
    weight0, bias0 = rows0
    base = engine_settings(engine_args)
    results = {}
    variants = requested_variants(recipe, engine_args)
    engine = CFTEngine()
    for variant in variants:
        engine.config = CFTConfig(variant=variant, **{**base, "show_progress": accelerator.is_main_process and
                                                      base.get("show_progress", True)})
        part = engine.fit(*fit, weight0, bias0, selection=selection, category_names=job.names,
                          shard=_shard_categories(accelerator),
                          checkpoint_dir=os.path.join(recipe.cache_dir, "blocks"))
        parts = gather_object([part]) if accelerator.num_processes > 1 else [part]
        results[variant] = merge_shards(parts, weight0, bias0)
    if AUTO in recipe.variant and len(variants) > 1:
        results[AUTO] = choose_per_category(results, weight0, bias0)
    return results


def final_variant(recipe: RecipeArguments, results: dict) -> str:
    """The result written to the model: ``auto`` when run, the only variant, else the best on selection."""
    if AUTO in results:
        return AUTO
    if len(results) == 1:
        return next(iter(results))
    return max(results, key=lambda k: results[k].summary()["selection_score_best"] or -1.0)


def state_selection_on_eval(result, eval_split: str) -> None:
    """Say in the result's protocol, in capitals, that its rows were selected on the evaluation split."""
    result.selection += (f"; SELECTION WAS DONE ON THE EVALUATION SPLIT ({eval_split}), as in the paper's "
                         "COCO code: the evaluation figures are optimistic")


def make_kept_decisions(engine_args, fit, selection, result):
    """The kept result with its calibration folded in and its thresholds, both from the held-out known labels
    its rows were chosen on (the selection split, or the seeded hold-out of the training images)."""
    config = CFTConfig(**engine_settings(engine_args))  # its seed and selection fraction give the hold-out
    return make_decisions(result, heldout_split(config, *fit, selection), decision_config(engine_args))
