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
import tempfile
import typing
from dataclasses import dataclass, field

import numpy as np
import torch

from .constants import CFT_RESULTS_NAME, TRAIN_REPORT_NAME
from .engine import CFTConfig, CFTEngine, choose_per_category
from .engine.data import Rows
from .engine.decide import merge_shards
from .engine.variants import AUTO, VARIANTS, variant_choices
from .training import dataset_options, eval_columns

logger = logging.getLogger(__name__)

__all__ = ["EngineArguments", "RecipeArguments", "format_table", "preflight", "run"]

RESULTS_NAME = CFT_RESULTS_NAME  # the name this module exported before hf_cft.constants


@dataclass
class RecipeArguments:
    """What to calibrate, on which data, and where the results go."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of the trained classifier; None: train an Assume-Negative baseline on the "
                "dataset first (recipes/train.py defaults), or reuse it from --baseline_dir."})
    library: str | None = field(default=None, metadata={
        "help": "'transformers' or 'timm'; default: read from the model's config.json (timm when it names an "
                "`architecture` without a `model_type`)."})
    baseline_dir: str = field(default="outputs/train-digits-mosaic", metadata={
        "help": "Where the baseline is trained when no model is given."})
    baseline_epochs: int = field(default=10, metadata={
        "help": "Epochs of that baseline (Assume Negative; on digits_mosaic fine-tuned from a backbone pretrained "
                "on single digits, long enough to fit its pseudo-labels)."})
    dataset: str = field(default="digits_mosaic", metadata={"help": "A builder of hf_cft.data."})
    data_dir: str | None = field(default=None, metadata={"help": "The folder with the dataset's files."})
    known_ratio: float | None = field(default=0.1, metadata={"help": "Simulated known share (COCO, digits)."})
    protocol: str | None = field(default="uniform", metadata={"help": "Simulation protocol (COCO, digits)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Other builder options as JSON."})
    variant: list[str] = field(default_factory=lambda: ["bp", "ga", "refit", "auto"], metadata={
        "help": f"Variants to run ({', '.join(VARIANTS)}; several allowed); 'auto' adds the per-category choice "
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
    image_size: int | None = field(default=None, metadata={
        "help": "Preprocessing of a model saved without an image processor: input side in pixels (with "
                "--image_mean and --image_std). Ignored when the model has its own processor."})
    image_mean: list[float] | None = field(default=None, metadata={
        "help": "Per-channel mean, e.g. 0.485 0.456 0.406."})
    image_std: list[float] | None = field(default=None, metadata={"help": "Per-channel std, e.g. 0.229 0.224 0.225."})
    headroom: bool | None = field(default=None, metadata={
        "help": "Report headroom rows (a known-label row and an all-label row, λ tuned on the evaluation split: "
                "upper bounds, never used to choose anything). Needs datasets whose partial labels are simulated "
                "(digits_mosaic, coco2014); default: on there when the training features are small."})
    eval_categories: list[str] | None = field(default=None, metadata={
        "help": "Categories the evaluation table averages over (names); default: all of them, and on CheXpert the "
                "five competition categories, as the paper reports."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the calibrated model."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for --push_to_hub."})

    def __post_init__(self):
        from .data import BUILDERS

        if self.dataset not in BUILDERS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(BUILDERS)}")
        if self.library not in (None, "transformers", "timm"):
            raise ValueError(f"--library must be 'transformers' or 'timm', got {self.library!r}")
        bad = [v for v in self.variant if v not in variant_choices()]
        if not self.variant or bad:
            raise ValueError(f"--variant must name variants among {variant_choices()}, got {self.variant}")
        if not (self.selection == "auto" or self.selection.startswith(("holdout:", "split:"))):
            raise ValueError(f"--selection must be auto, holdout:<fraction> or split:<name>, got {self.selection!r}")
        if self.selection.startswith("holdout:"):
            try:
                fraction = float(self.selection.split(":", 1)[1])
            except ValueError:
                fraction = float("nan")
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"--selection {self.selection}: the held-out share of the training images must be "
                                 "a number in (0, 1), e.g. holdout:0.15")
        given = [x is not None for x in (self.image_size, self.image_mean, self.image_std)]
        if any(given) and not all(given):
            raise ValueError("--image_size, --image_mean and --image_std go together: pass all three (e.g. "
                             "--image_size 224 --image_mean 0.485 0.456 0.406 --image_std 0.229 0.224 0.225)")
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


def _writable_folder(path: str, what: str) -> None:
    """Raise before any compute when ``path`` (or the folder that would hold it) cannot be written."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ValueError(f"{what} {path!r}: {probe!r} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hf_cft-write-test-", dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise ValueError(f"{what} {path!r} cannot be written ({probe!r}: {err.strerror}); choose a writable "
                         "folder (nothing was computed)") from err


def _variants(recipe: RecipeArguments, engine_args) -> list[str]:
    """The variants the recipe runs: those named (``auto`` aside), or alone ``auto``'s ``auto_variants``."""
    return [v for v in recipe.variant if v != AUTO] or list(engine_args.auto_variants)


def preflight(recipe: RecipeArguments, engine_args=None) -> None:
    """Everything that would fail after hours of compute, checked first: writable outputs, a Hub token, the
    engine options (``engine_args``) of every variant."""
    if engine_args is not None:
        base = dataclasses.asdict(engine_args)
        for variant in _variants(recipe, engine_args):
            CFTConfig(variant=variant, **base)  # raises, naming the option, before anything is computed
    _writable_folder(recipe.output_dir, "--output_dir")
    _writable_folder(recipe.cache_dir, "--cache_dir")
    if recipe.model_name_or_path is None:
        _writable_folder(recipe.baseline_dir, "--baseline_dir")
    if recipe.push_to_hub:
        from huggingface_hub import get_token

        if not get_token():
            raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN "
                             "(nothing was computed)")


def load_or_train_model(recipe: RecipeArguments, seed: int, accelerator) -> str:
    """The model to calibrate: the given one, or the baseline trained (once) into ``baseline_dir``."""
    if recipe.model_name_or_path is not None:
        return recipe.model_name_or_path
    from .head import recover_model_dir

    model_path = os.path.join(recipe.baseline_dir, "best")
    recover_model_dir(model_path)  # a save killed half-way leaves the previous model beside it
    report = os.path.join(model_path, TRAIN_REPORT_NAME)
    if os.path.exists(report):
        _check_baseline(recipe, report, seed)
    else:
        from .training import TrainArguments, train

        pretrained = "digits" if recipe.dataset == "digits_mosaic" else None
        accelerator.print(f"no model given: training an Assume-Negative baseline into {recipe.baseline_dir}"
                          + (" from a backbone pretrained on single digits" if pretrained else ""))
        train(TrainArguments(dataset=recipe.dataset, data_dir=recipe.data_dir, known_ratio=recipe.known_ratio,
                             protocol=recipe.protocol, dataset_config=recipe.dataset_config, init_from=pretrained,
                             epochs=recipe.baseline_epochs, output_dir=recipe.baseline_dir, seed=seed,
                             report_split=None))
    return model_path


def _check_baseline(recipe: RecipeArguments, report: str, seed: int) -> None:
    """A baseline found in ``baseline_dir`` is reused only if it was trained on this dataset with these options."""
    with open(report, encoding="utf-8") as f:
        tr = json.load(f)
    wanted = {"dataset": recipe.dataset,
              "dataset_config": dataset_options(recipe.dataset, recipe.dataset_config, recipe.known_ratio,
                                                recipe.protocol, seed)}
    found = {k: tr.get(k) for k in wanted}
    if found != wanted:
        differ = "; ".join(f"{k}: trained with {found[k]!r}, asked {wanted[k]!r}" for k in wanted
                           if found[k] != wanted[k])
        raise ValueError(f"--baseline_dir {recipe.baseline_dir} holds a baseline trained on other data ({differ}): "
                         "pass another --baseline_dir (a fresh one is trained there), or remove this one")


def load_head(recipe: RecipeArguments, model_path: str, names: list[str]):
    """The model as a :class:`~hf_cft.head.CFTHead`, with the preprocessing given on the command line if any."""
    from .head import CFTHead

    head = CFTHead.from_pretrained(model_path, category_names=names, library=recipe.library)
    if recipe.image_size is not None and head.image_processor is None and head.library == "transformers":
        head.set_preprocessing(recipe.image_size, recipe.image_mean, recipe.image_std)
    return head


def resolve_selection(recipe: RecipeArguments, model_path: str, ds, train_features, labels, mask, features_of):
    """Where rows are chosen: ``(fit_rows, selection or None, holdout fraction or None, on_eval)``."""
    from .data import label_arrays

    n = len(ds["train"])
    choice = recipe.selection
    if choice == "auto":
        rows = None
        report_path = os.path.join(model_path, TRAIN_REPORT_NAME)
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as f:
                tr = json.load(f)
            if tr.get("dataset") == recipe.dataset and tr.get("train_rows") == n:
                rows = np.asarray(tr.get("validation_rows") or [], dtype=np.int64)
        if rows is not None and len(rows):
            logger.info("selection: the %d training images the baseline was validated on (never trained on)",
                        len(rows))
            return np.setdiff1d(np.arange(n), rows), (train_features[rows], labels[rows], mask[rows]), None, False
        choice = "holdout:0.15"
    if choice.startswith("holdout:"):
        return np.arange(n), None, float(choice.split(":", 1)[1]), False
    name = choice.split(":", 1)[1]
    if name not in ds:
        raise ValueError(f"--selection {choice}: {recipe.dataset} has no split {name!r} ({list(ds)})")
    return np.arange(n), (features_of(ds[name]), *label_arrays(ds[name], sparse=None)), None, name == recipe.eval_split


def run_variants(recipe: RecipeArguments, engine_args, fit, selection, weight0, bias0, names, accelerator) -> dict:
    """Every requested variant (sharded across processes, checkpointed per block) and the per-category choice."""
    from accelerate.utils import gather_object

    base = dataclasses.asdict(engine_args)
    results = {}
    variants = _variants(recipe, engine_args)
    engine = CFTEngine()
    for variant in variants:
        engine.config = CFTConfig(variant=variant, **{**base, "show_progress": accelerator.is_main_process and
                                                      base.get("show_progress", True)})
        part = engine.fit(*fit, weight0, bias0, selection=selection, category_names=names,
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


def evaluate_results(features, labels, mask, weight0, bias0, results: dict) -> tuple[list[dict], dict]:
    """Masked mAP / mAUC of the trained rows and of every result: the table and the per-result scores."""
    from .metrics import partial_auroc, partial_average_precision
    from .metrics.pairs import scores_at_known
    from .sparse import is_sparse, known_labels

    known = known_labels(labels, mask) if is_sparse(mask) else None  # sparse: scores at the known pairs only
    features = features if known is not None else np.asarray(features, dtype=np.float32)

    def score(w, b):
        if known is not None:
            s = scores_at_known(features, w, b, known)
        else:
            s = features @ np.asarray(w, dtype=np.float32).T + np.asarray(b, dtype=np.float32)
        return {"map": partial_average_precision(s, labels, mask), "mauc": partial_auroc(s, labels, mask)}

    scores = {"baseline": score(weight0, bias0)}
    table = [{"method": "baseline", "map": scores["baseline"]["map"].value, "mauc": scores["baseline"]["mauc"].value,
              "improved": 0, "degraded": 0}]
    ref = np.array(scores["baseline"]["map"].per_category, dtype=float)
    for name, res in results.items():
        scores[name] = score(res.weight, res.bias)
        per = np.array(scores[name]["map"].per_category, dtype=float)
        ok = ~np.isnan(per) & ~np.isnan(ref)
        table.append({"method": f"CFT-{name}", "map": scores[name]["map"].value, "mauc": scores[name]["mauc"].value,
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
    from .engine.refit import fit_logistic_rows
    from .metrics import partial_auroc, partial_average_precision

    ze = np.asarray(eval_features, dtype=np.float64)
    rows = []
    for name, m in ((UPPER_BOUND, mask), (ORACLE, np.ones_like(mask))):
        w, b = fit_logistic_rows(train_features, labels, m, HEADROOM_L2)
        per_ap, per_auc = [], []
        for p in range(len(HEADROOM_L2)):
            s = ze @ w[:, p].numpy().T + b[:, p].numpy()
            per_ap.append(np.array(partial_average_precision(s, eval_labels, eval_mask).per_category, dtype=float))
            per_auc.append(np.array(partial_auroc(s, eval_labels, eval_mask).per_category, dtype=float))
        per_ap, per_auc = np.array(per_ap), np.array(per_auc)
        key = np.nan_to_num(per_ap if metric == "ap" else per_auc, nan=-1.0)
        pick = key.argmax(0)
        cols = np.arange(per_ap.shape[1])
        rows.append({"method": name, "map": float(np.nanmean(per_ap[pick, cols])),
                     "mauc": float(np.nanmean(per_auc[pick, cols])), "reporting_only": True})
    return rows


def _card_scores(scores: dict) -> dict:
    return {"map": scores["map"].value, "mauc": scores["mauc"].value,
            "per_category_ap": scores["map"].per_category, "per_category_auroc": scores["mauc"].per_category}


def save_outputs(recipe: RecipeArguments, head, model_path: str, names, final, final_name: str, table, scores,
                 selection_on_eval: bool, accelerator) -> None:
    """The calibrated model, report, plot and card in ``output_dir`` (main process), then the Hub if asked."""
    evaluation = {recipe.eval_split: {"before": _card_scores(scores["baseline"]),
                                      "after": _card_scores(scores[final_name])}}
    head.apply(final)
    results_json = json.dumps({"eval_split": recipe.eval_split, "kept": final_name, "table": table}, indent=2)
    head.save_pretrained(recipe.output_dir, category_names=names, repo_id=recipe.hub_model_id,
                         base_model=recipe.model_name_or_path or model_path, dataset_name=recipe.dataset,
                         evaluation=evaluation, selection_on_eval=selection_on_eval,
                         extra_files={CFT_RESULTS_NAME: results_json + "\n"})
    if recipe.push_to_hub:
        head.push_to_hub(recipe.hub_model_id or os.path.basename(os.path.normpath(recipe.output_dir)),
                         base_model=recipe.model_name_or_path or model_path, dataset_name=recipe.dataset,
                         evaluation=evaluation, selection_on_eval=selection_on_eval)
    accelerator.print(f"calibrated model, report, plot and card: {recipe.output_dir}")


def run(recipe: RecipeArguments, engine_args) -> dict:
    """Run the job; returns the results table (also written to ``output_dir/cft_results.json``)."""
    from accelerate import Accelerator

    from .data import label_arrays

    preflight(recipe, engine_args)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    seed = engine_args.seed
    model_path = load_or_train_model(recipe, seed, accelerator)
    ds, names = load_data(recipe, seed, accelerator)
    head = load_head(recipe, model_path, names)
    features_of = feature_extractor(recipe, head, accelerator)
    z = features_of(ds["train"])
    labels, mask = label_arrays(ds["train"], sparse=None)  # sparse for pair-stored splits (Open Images)
    fit_rows, selection, holdout, on_eval = resolve_selection(recipe, model_path, ds, z, labels, mask, features_of)
    if holdout is not None:
        engine_args = dataclasses.replace(engine_args, selection_fraction=holdout)
    weight0, bias0 = head.weight, head.bias
    # the fit rows are read from the feature cache, never copied
    fit = (z if len(fit_rows) == len(z) else Rows(z, fit_rows), labels[fit_rows], mask[fit_rows])
    results = run_variants(recipe, engine_args, fit, selection, weight0, bias0, names, accelerator)
    final_name = final_variant(recipe, results)
    if on_eval:
        state_selection_on_eval(results[final_name], recipe.eval_split)
    table, scores = evaluate(recipe, ds, features_of, (weight0, bias0), results, (z, labels, mask),
                             engine_args.metric, accelerator)
    if accelerator.is_main_process:
        logger.info("evaluation on %s:\n%s", recipe.eval_split, format_table(table, recipe.eval_split, final_name))
        save_outputs(recipe, head, model_path, names, results[final_name], final_name, table, scores, on_eval,
                     accelerator)
    accelerator.wait_for_everyone()
    return {"eval_split": recipe.eval_split, "kept": final_name, "table": table}


def load_data(recipe: RecipeArguments, seed: int, accelerator) -> tuple:
    """The dataset (built once, by the main process first) and its category names; checks ``eval_split``."""
    from .data import load_partial_dataset, partial_info

    options = dataset_options(recipe.dataset, recipe.dataset_config, recipe.known_ratio, recipe.protocol, seed)
    with accelerator.main_process_first():
        ds = load_partial_dataset(recipe.dataset, data_dir=recipe.data_dir, **options)
    if recipe.eval_split not in ds:
        raise ValueError(f"--eval_split {recipe.eval_split!r} is not a split of {recipe.dataset} ({list(ds)})")
    if recipe.selection.startswith("split:") and recipe.selection.split(":", 1)[1] not in ds:
        raise ValueError(f"--selection {recipe.selection}: {recipe.dataset} has no split "
                         f"{recipe.selection.split(':', 1)[1]!r} ({list(ds)})")
    return ds, partial_info(ds["train"])["categories"]


def feature_extractor(recipe: RecipeArguments, head, accelerator):
    """``split → features`` (numpy), extracted data parallel and cached under ``cache_dir/features``."""
    ext = dict(cache_dir=os.path.join(recipe.cache_dir, "features"), batch_size=recipe.batch_size,
               dtype=recipe.feature_dtype, accelerator=accelerator, show_progress=accelerator.is_main_process)

    def features_of(split):
        return np.asarray(head.extract(split, **ext).features)

    return features_of


def state_selection_on_eval(result, eval_split: str) -> None:
    """Say in the result's protocol, in capitals, that its rows were selected on the evaluation split."""
    result.selection += (f"; SELECTION WAS DONE ON THE EVALUATION SPLIT ({eval_split}), as in the paper's "
                         "COCO code: the evaluation figures are optimistic")


def evaluate(recipe: RecipeArguments, ds, features_of, rows, results: dict, train, metric: str,
             accelerator) -> tuple[list[dict], dict]:
    """The before / after table on ``eval_split`` (with the headroom rows when asked or by default) and scores."""
    from .data import label_arrays, partial_info

    ev = ds[recipe.eval_split]
    ze, (ye, me) = features_of(ev), label_arrays(ev, sparse=None)
    columns = eval_columns(recipe.dataset, partial_info(ev)["categories"], recipe.eval_categories)
    if columns is not None:  # the other categories' labels count as unknown here
        from .sparse import is_sparse

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
