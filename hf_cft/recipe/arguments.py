"""The recipe's command line: what to calibrate, on which data, where the results go, and the engine options.

An option with a fixed set of values is a ``Literal`` (a registry's names: ``choices`` in its metadata), so that
``--help`` lists the values and the parser refuses any other before anything loads.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Literal

from ..data import BUILDERS
from ..decisions import DecisionConfig
from ..engine.config import keyword_fields
from ..engine.registry import AUTO, VARIANTS, LiveChoices, variant_choices
from ..tracking import REPORT_TO_CHOICES, REPORT_TO_HELP, check_report_to
from ..training.arguments import Library, Protocol

logger = logging.getLogger(__name__)

__all__ = ["EngineArguments", "RecipeArguments", "decision_config", "engine_settings", "requested_variants"]


@dataclass
class RecipeArguments:
    """What to calibrate, on which data, and where the results go."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of the trained classifier; None: train an Assume-Negative baseline on the "
                "dataset first (hf-cft train's defaults), or reuse it from --baseline_dir."})
    library: Library | None = field(default=None, metadata={
        "help": "'transformers' or 'timm'; default: read from the model's config.json (timm when it names an "
                "`architecture` without a `model_type`)."})
    baseline_dir: str = field(default="outputs/train-digits-mosaic", metadata={
        "help": "Where the baseline is trained when no model is given."})
    baseline_epochs: int = field(default=10, metadata={
        "help": "Epochs of that baseline (Assume Negative; on digits_mosaic fine-tuned from a backbone pretrained "
                "on single digits, long enough to fit its pseudo-labels)."})
    dataset: str = field(default="digits_mosaic", metadata={"choices": BUILDERS.keys(),
                                                            "help": "A builder of hf_cft.data."})
    data_dir: str | None = field(default=None, metadata={"help": "The folder with the dataset's files."})
    known_ratio: float | None = field(default=0.1, metadata={"help": "Simulated known share (COCO, digits)."})
    protocol: Protocol | None = field(default="uniform", metadata={"help": "Simulation protocol (COCO, digits)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Other builder options as JSON."})
    variant: list[str] = field(default_factory=lambda: ["bp", "ga", "refit", "auto"], metadata={
        "choices": LiveChoices(variant_choices),
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
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={
        "choices": REPORT_TO_CHOICES, "metavar": "TRACKER",
        "help": "Log the before / after metrics of every variant, the per-category table and the gains plot to these "
                "trackers (their local files under output_dir). " + REPORT_TO_HELP})
    batch_size: int = field(default=64, metadata={"help": "Extraction batch size per process."})
    feature_dtype: Literal["float32", "float16"] = field(default="float32", metadata={
        "help": "float32 or float16 feature cache."})
    num_workers: int | None = field(default=None, metadata={
        "help": "DataLoader workers decoding images per process (default: the cores available, at most 8; 0: in "
                "the main process)."})
    skip_bad_images: bool = field(default=False, metadata={
        "help": "Go on past image files that cannot be read (missing, empty, truncated, not an image): their rows "
                "are left out of fitting and scoring and listed in cft_results.json. Default: stop, naming them."})
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
    hub_revision: str | None = field(default=None, metadata={
        "help": "Branch --push_to_hub commits to (default: main)."})
    hub_create_pr: bool = field(default=False, metadata={
        "help": "--push_to_hub opens a pull request with the commit instead of committing to the branch."})
    license: str | None = field(default=None, metadata={
        "help": "The calibrated model's license in its card (default: the base model card's, when it has one)."})

    def __post_init__(self):
        if self.dataset not in BUILDERS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(BUILDERS)}")
        self.report_to = check_report_to(self.report_to)
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
    out = []
    for f, hint in keyword_fields():  # the shared settings and every variant's options
        if f.name == "variant":  # the recipe takes several: RecipeArguments.variant
            continue
        default = {"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING \
            else {"default": f.default}
        out.append((f.name, hint, field(metadata=f.metadata, **default)))
    hints = {"calibrate": bool, "calibration_prior": float | None, "calibration_center": str,
             "threshold_objective": str, "threshold_shrinkage": float}
    for f in dataclasses.fields(DecisionConfig):  # how the kept rows are calibrated and thresholded
        out.append((f.name, hints[f.name], field(default=f.default, metadata=f.metadata)))
    return out


_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(DecisionConfig))


EngineArguments = dataclasses.make_dataclass("EngineArguments", _engine_fields())
EngineArguments.__doc__ = ("The CFTConfig fields (except `variant`) and the DecisionConfig fields as command-line "
                           "arguments.")


def engine_settings(engine_args) -> dict:
    """The CFTConfig keywords of the engine arguments (the decision settings left out)."""
    return {k: v for k, v in dataclasses.asdict(engine_args).items() if k not in _DECISION_FIELDS}


def decision_config(engine_args) -> DecisionConfig:
    """How the kept rows are calibrated and thresholded (:class:`hf_cft.decisions.DecisionConfig`)."""
    return DecisionConfig(**{k: getattr(engine_args, k) for k in _DECISION_FIELDS})


def requested_variants(recipe: RecipeArguments, engine_args) -> list[str]:
    """The variants the recipe runs: those named (``auto`` aside), or alone ``auto``'s ``auto_variants``."""
    return [v for v in recipe.variant if v != AUTO] or list(engine_args.auto_variants)
