"""``hf-cft evaluate``: a model scored on a dataset split, the recipe's table without any fitting.

The data, the model and its cached features are loaded as the recipe loads them (:func:`hf_cft.recipe.load_job`)
and scored by :func:`hf_cft.recipe.evaluate` (the one scoring of a split underneath), so the figures equal the
recipe's for the same model: ``hf-cft evaluate --model_name_or_path outputs/cft-digits-mosaic`` gives the row the
recipe printed for the variant it kept.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import field

import torch

from ..io import write_json
from ..recipe import EngineArguments, RecipeArguments, evaluate, format_table, load_job
from ..recipe.scoring import restrict_to_eval_categories
from .command import OUTPUT, Command

logger = logging.getLogger(__name__)

__all__ = ["EVALUATE", "EvaluateArguments", "run_evaluate"]

FROM_RECIPE = ("library", "dataset", "data_dir", "known_ratio", "protocol", "dataset_config", "eval_split",
               "eval_categories", "cache_dir", "batch_size", "feature_dtype", "image_size", "image_mean", "image_std")
FROM_ENGINE = ("seed", "metric")


def _copied(cls: type, names: tuple[str, ...]) -> list[tuple]:
    """``cls``'s fields ``names`` (type, default, help) for :func:`dataclasses.make_dataclass`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in names:
            default = ({"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING
                       else {"default": f.default})
            out.append((f.name, hints[f.name], field(metadata=f.metadata, **default)))
    return out


def _check(self) -> None:
    if not self.model_name_or_path:
        raise ValueError("hf-cft evaluate scores a model: give --model_name_or_path (a folder or Hub id)")


EvaluateArguments = dataclasses.make_dataclass("EvaluateArguments", [
    ("model_name_or_path", str | None, field(default=None, metadata={
        "help": "Hub id or folder of the classifier to score (a calibrated model folder, or any other)."})),
    *_copied(RecipeArguments, FROM_RECIPE),
    *_copied(EngineArguments, FROM_ENGINE),
    ("headroom", bool, field(default=False, metadata={
        "help": "Add the headroom rows (known-label and all-label rows with λ tuned on the evaluation split: upper "
                "bounds); extracts the training split's features too. Simulated partial labels only."})),
    ("results_file", str | None, field(default=None, metadata={
        "help": "Also write the table and the per-category scores to this JSON file."})),
], namespace={"__post_init__": _check})
EvaluateArguments.__doc__ = "A model and a dataset split to score (``hf-cft evaluate``)."


def run_evaluate(args) -> dict:
    """Score ``args.model_name_or_path`` on ``args.eval_split``; print the table (main process) and return it."""
    from accelerate import Accelerator

    recipe = RecipeArguments(model_name_or_path=args.model_name_or_path, headroom=args.headroom,
                             **{name: getattr(args, name) for name in FROM_RECIPE})
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    job = load_job(recipe, args.seed, accelerator)
    split = job.ds[recipe.eval_split]
    # as the recipe scores: skipped images' labels unknown, CheXpert's five competition categories (or
    # --eval_categories)
    eval_data = restrict_to_eval_categories(recipe, job.ds, (job.features_of(split), *job.features_of.labels(split)))
    train = (None, None, None)  # the training split is read only for the headroom rows
    if args.headroom:
        train = (job.features_of(job.ds["train"]), *job.features_of.labels(job.ds["train"]))
    table, scores = evaluate(recipe, job.ds, eval_data, (job.head.weight, job.head.bias), {}, train, args.metric,
                             accelerator)
    table[0]["method"] = args.model_name_or_path  # the model scored (the recipe calls it the baseline)
    out = {"model": args.model_name_or_path, "dataset": args.dataset, "eval_split": recipe.eval_split,
           "table": table, "scores": scores["baseline"].to_dict()}
    if accelerator.is_main_process:
        OUTPUT.info("\n%s", format_table(table, recipe.eval_split, kept=""))
        if args.results_file:
            write_json(args.results_file, out, indent=2)
    accelerator.wait_for_everyone()
    return out


EVALUATE = Command(
    name="evaluate",
    summary="Score a model on a dataset split: the recipe's before / after table, without fitting.",
    description="Score a model on a dataset split (masked mAP / mAUC over the known labels), the table the recipe "
                "prints, without fitting anything. A cft configuration gives the data options (its fitting options "
                "are not used).",
    dataclasses=(EvaluateArguments,),
    run=run_evaluate,
    ignored_keys=frozenset(f.name for cls in (RecipeArguments, EngineArguments) for f in dataclasses.fields(cls)),
    configs="cft",
)
