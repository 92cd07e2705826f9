"""The end-to-end CFT job behind ``accelerate launch recipes/cft.py``.

Model (or a freshly trained Assume-Negative baseline) → features (cached, data parallel) → every requested
variant, categories sharded across processes and checkpointed per block → per-category ``auto`` choice
→ evaluation before / after on the evaluation split → calibrated model, report, plot and card in
``output_dir`` (→ the Hub).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from dataclasses import dataclass, field

import numpy as np
import torch

from .engine import CFTConfig, CFTEngine, choose_per_category
from .engine.config import RUN_VARIANTS

logger = logging.getLogger(__name__)

__all__ = ["EngineArguments", "RecipeArguments", "format_table", "run"]


@dataclass
class RecipeArguments:
    """What to calibrate, on which data, and where the results go."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of the trained classifier; None: train an Assume-Negative baseline on the "
                "dataset first (recipes/train.py defaults), or reuse it from --baseline_dir."})
    baseline_dir: str = field(default="outputs/train-digits-mosaic", metadata={
        "help": "Where the baseline is trained when no model is given."})
    dataset: str = field(default="digits_mosaic", metadata={"help": "A builder of hf_cft.data."})
    data_dir: str | None = field(default=None, metadata={"help": "The folder with the dataset's files."})
    known_ratio: float | None = field(default=0.1, metadata={"help": "Simulated known share (COCO, digits)."})
    protocol: str | None = field(default="uniform", metadata={"help": "Simulation protocol (COCO, digits)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Other builder options as JSON."})
    variant: list[str] = field(default_factory=lambda: ["bp", "ga", "refit", "auto"], metadata={
        "help": "Variants to run (bp, ga, pygad, refit; several allowed); 'auto' adds the per-category choice "
                "among them (alone: among --auto_variants)."})
    selection: str = field(default="auto", metadata={
        "help": "'auto' (the trainer's held-out validation images when known, else holdout:0.15), "
                "'holdout:<fraction>' of the training images, or 'split:<name>'."})
    eval_split: str = field(default="test", metadata={"help": "The split reported on (never used for selection)."})
    allow_selection_on_eval: bool = field(default=False, metadata={
        "help": "Allow --selection split:<eval_split> (the paper's COCO code did this); the report says so."})
    output_dir: str = field(default="outputs/cft-digits-mosaic", metadata={"help": "Where the results go."})
    cache_dir: str = field(default="outputs/cache", metadata={"help": "Feature cache and finished blocks."})
    batch_size: int = field(default=64, metadata={"help": "Extraction batch size per process."})
    feature_dtype: str = field(default="float32", metadata={"help": "float32 or float16 feature cache."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the calibrated model."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for --push_to_hub."})

    def __post_init__(self):
        from .data import BUILDERS

        if self.dataset not in BUILDERS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(BUILDERS)}")
        bad = [v for v in self.variant if v not in (*RUN_VARIANTS, "auto")]
        if not self.variant or bad:
            raise ValueError(f"--variant must name variants among {(*RUN_VARIANTS, 'auto')}, got {self.variant}")
        if not (self.selection == "auto" or self.selection.startswith(("holdout:", "split:"))):
            raise ValueError(f"--selection must be auto, holdout:<fraction> or split:<name>, got {self.selection!r}")
        if self.selection == f"split:{self.eval_split}" and not self.allow_selection_on_eval:
            raise ValueError(f"--selection {self.selection} selects on the evaluation split {self.eval_split!r}: "
                             "results would be optimistic. Choose another split, or pass --allow_selection_on_eval "
                             "to reproduce the paper's COCO protocol (the report and card will say so).")


def _engine_fields():
    hints = typing.get_type_hints(CFTConfig)
    out = []
    for f in dataclasses.fields(CFTConfig):
        if f.name == "variant":  # the recipe takes several: RecipeArguments.variant
            continue
        default = {"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING \
            else {"default": f.default}
        out.append((f.name, hints[f.name], field(metadata=f.metadata, **default)))
    return out


EngineArguments = dataclasses.make_dataclass("EngineArguments", _engine_fields())
EngineArguments.__doc__ = "The CFTConfig fields (except `variant`) as command-line arguments."


def _shard_categories(accelerator):
    return (accelerator.process_index, accelerator.num_processes) if accelerator.num_processes > 1 else None


def run(recipe: RecipeArguments, engine_args) -> dict:
    """Run the job; returns the results table (also written to ``output_dir/cft_results.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from .data import label_arrays, load_partial_dataset, partial_info
    from .head import CFTHead
    from .metrics import partial_auroc, partial_average_precision

    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu)
    base = dataclasses.asdict(engine_args)
    config = json.loads(recipe.dataset_config) if recipe.dataset_config else {}
    if recipe.dataset in ("coco2014", "digits_mosaic"):
        config.setdefault("known_ratio", recipe.known_ratio)
        config.setdefault("protocol", recipe.protocol)
        config.setdefault("seed", base.get("seed", 0))

    model_path = recipe.model_name_or_path
    if model_path is None:
        model_path = os.path.join(recipe.baseline_dir, "best")
        if not os.path.exists(os.path.join(model_path, "train_report.json")):
            from .training import TrainArguments, train

            accelerator.print(f"no model given: training an Assume-Negative baseline into {recipe.baseline_dir}")
            train(TrainArguments(dataset=recipe.dataset, data_dir=recipe.data_dir, known_ratio=recipe.known_ratio,
                                 protocol=recipe.protocol, dataset_config=recipe.dataset_config,
                                 output_dir=recipe.baseline_dir, seed=base.get("seed", 0), report_split=None))
    with accelerator.main_process_first():
        ds = load_partial_dataset(recipe.dataset, data_dir=recipe.data_dir, **config)
    if recipe.eval_split not in ds:
        raise ValueError(f"--eval_split {recipe.eval_split!r} is not a split of {recipe.dataset} ({list(ds)})")
    names = partial_info(ds["train"])["categories"]
    head = CFTHead.from_pretrained(model_path, category_names=names)
    if getattr(head, "image_processor", None) is None and head.library == "transformers":
        import transformers

        head.image_processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                                              image_std=[0.5] * 3)
        logger.warning("no image processor saved with the model: using 32 px, mean/std 0.5 (the trainer's default)")
    ext = dict(cache_dir=os.path.join(recipe.cache_dir, "features"), batch_size=recipe.batch_size,
               dtype=recipe.feature_dtype, accelerator=accelerator, show_progress=accelerator.is_main_process)
    train_ds = ds["train"]
    z = np.asarray(head.extract(train_ds, **ext).features)
    labels, mask = label_arrays(train_ds)

    # -- selection ------------------------------------------------------------------------------------------
    selection, selection_on_eval, fit_rows = None, False, np.arange(len(train_ds))
    choice = recipe.selection
    report_path = os.path.join(model_path, "train_report.json")
    if choice == "auto":
        rows = None
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as f:
                tr = json.load(f)
            if tr.get("dataset") == recipe.dataset and tr.get("train_rows") == len(train_ds):
                rows = np.asarray(tr.get("validation_rows") or [], dtype=np.int64)
        choice = "holdout:0.15" if rows is None or not len(rows) else "rows"
    if choice == "rows":
        fit_rows = np.setdiff1d(np.arange(len(train_ds)), rows)
        selection = (z[rows], labels[rows], mask[rows])
        accelerator.print(f"selection: the {len(rows)} training images the baseline was validated on (never "
                          "trained on)")
    elif choice.startswith("holdout:"):
        base["selection_fraction"] = float(choice.split(":", 1)[1])
    else:
        name = choice.split(":", 1)[1]
        if name not in ds:
            raise ValueError(f"--selection {choice}: {recipe.dataset} has no split {name!r} ({list(ds)})")
        selection_on_eval = name == recipe.eval_split
        sel_ds = ds[name]
        selection = (np.asarray(head.extract(sel_ds, **ext).features), *label_arrays(sel_ds))

    # -- the engine, sharded and checkpointed ---------------------------------------------------------------
    results = {}
    weight0, bias0 = head.weight, head.bias
    variants = [v for v in recipe.variant if v != "auto"] or list(engine_args.auto_variants)
    want_auto = "auto" in recipe.variant and len(variants) > 1
    engine = CFTEngine()
    zf, yf, mf = z[fit_rows], labels[fit_rows], mask[fit_rows]  # one copy for every variant
    for variant in variants:
        engine.config = CFTConfig(variant=variant, **{**base, "show_progress": accelerator.is_main_process and
                                                      base.get("show_progress", True)})
        part = engine.fit(zf, yf, mf, weight0, bias0, selection=selection,
                                  category_names=names, shard=_shard_categories(accelerator),
                                  checkpoint_dir=os.path.join(recipe.cache_dir, "blocks"))
        parts = gather_object([part]) if accelerator.num_processes > 1 else [part]
        results[variant] = _merge(parts, weight0, bias0)
    if want_auto:
        results["auto"] = choose_per_category(results, weight0, bias0)
    final_name = "auto" if want_auto else variants[-1] if len(variants) == 1 else None
    if final_name is None:  # several variants without auto: keep the best on the selection split overall
        final_name = max(results, key=lambda k: results[k].summary()["selection_score_best"] or -1.0)
    final = results[final_name]
    if selection_on_eval:
        final.selection += (f"; SELECTION WAS DONE ON THE EVALUATION SPLIT ({recipe.eval_split}), as in the paper's "
                            "COCO code: the evaluation figures are optimistic")

    # -- evaluation ------------------------------------------------------------------------------------------
    ev_ds = ds[recipe.eval_split]
    ze = np.asarray(head.extract(ev_ds, **ext).features, dtype=np.float32)
    ye, me = label_arrays(ev_ds)
    table = []

    def score(w, b):
        s = ze @ np.asarray(w, dtype=np.float32).T + np.asarray(b, dtype=np.float32)
        ap = partial_average_precision(s, ye, me)
        return ap, partial_auroc(s, ye, me)

    base_ap, base_auc = score(weight0, bias0)
    table.append({"method": "baseline", "map": base_ap.value, "mauc": base_auc.value, "improved": 0, "degraded": 0})
    scores = {}
    for name, res in results.items():
        ap, auc = scores[name] = score(res.weight, res.bias)
        per, ref = np.array(ap.per_category, dtype=float), np.array(base_ap.per_category, dtype=float)
        ok = ~np.isnan(per) & ~np.isnan(ref)
        table.append({"method": f"CFT-{name}", "map": ap.value, "mauc": auc.value, "changed": res.n_changed,
                      "improved": int((per[ok] > ref[ok] + 1e-12).sum()),
                      "degraded": int((per[ok] < ref[ok] - 1e-12).sum())})
    if accelerator.is_main_process:
        logger.info("evaluation on %s:\n%s", recipe.eval_split, format_table(table, recipe.eval_split, final_name))
        final_scores = scores[final_name]
        evaluation = {recipe.eval_split: {
            "before": {"map": base_ap.value, "mauc": base_auc.value, "per_category_ap": base_ap.per_category},
            "after": {"map": final_scores[0].value, "mauc": final_scores[1].value,
                      "per_category_ap": final_scores[0].per_category},
        }}
        head.apply(final)
        head.save_pretrained(recipe.output_dir, category_names=names, repo_id=recipe.hub_model_id,
                             base_model=recipe.model_name_or_path, dataset_name=recipe.dataset,
                             evaluation=evaluation, selection_on_eval=selection_on_eval,
                             extra_files={"cft_results.json": json.dumps({"eval_split": recipe.eval_split,
                                                                          "kept": final_name, "table": table},
                                                                         indent=2) + "\n"})
        if recipe.push_to_hub:
            head.push_to_hub(recipe.hub_model_id or os.path.basename(os.path.normpath(recipe.output_dir)),
                             dataset_name=recipe.dataset, evaluation=evaluation, selection_on_eval=selection_on_eval)
        accelerator.print(f"calibrated model, report, plot and card: {recipe.output_dir}")
    accelerator.wait_for_everyone()
    return {"eval_split": recipe.eval_split, "kept": final_name, "table": table}


def _merge(parts, weight0, bias0):
    """One result from the shards' results: each category from the shard that ran it."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    w, b = weight0.clone().to(first.weight.dtype), bias0.clone().to(first.bias.dtype)
    report = []
    for c in range(len(first.report)):
        owner = next((p for p in parts if p.report[c].skipped != "in another shard"), first)
        w[c], b[c] = owner.weight[c], owner.bias[c]
        report.append(owner.report[c])
    return dataclasses.replace(first, weight=w, bias=b, report=report)


def format_table(table: list[dict], split: str, kept: str) -> str:
    """The before / after table as markdown."""
    lines = [f"| {split} | mAP | mAUC | rows changed | categories improved / degraded |", "|---|---:|---:|---:|---:|"]
    for row in table:
        mark = " (kept)" if row["method"] == f"CFT-{kept}" else ""
        changed = row.get("changed", "–")
        lines.append(f"| {row['method']}{mark} | {100 * row['map']:.2f} | {100 * row['mauc']:.2f} | {changed} | "
                     f"{row['improved']} / {row['degraded']} |")
    return "\n".join(lines) + "\n"
