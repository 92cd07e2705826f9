"""The arguments of a baseline run: every field is a flag of ``hf-cft train`` (and ``recipes/train.py``).

An option with a fixed set of values is a ``Literal`` (or, for a registry's names, has ``choices`` in its
metadata), so that ``--help`` lists the values and the parser refuses any other before anything loads.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from typing import Literal

from ..data import BUILDERS
from ..engine.config import Metric
from ..tracking import REPORT_TO_CHOICES, REPORT_TO_HELP, check_report_to
from .methods import METHOD_REGISTRY, METHODS

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "Library", "Protocol", "TrainArguments"]

Library = Literal["transformers", "timm"]
Protocol = Literal["uniform", "per_image_fixed", "positives_only", "salient"]
"""The simulation protocols of the builders whose partial labels are simulated (``salient``: digits_mosaic only)."""
UncertainPolicy = Literal["u_ignore", "u_ones", "u_zeros", "u_lsr"]


@dataclass
class TrainArguments:
    """Everything a baseline run needs (also the command line of ``hf-cft train``)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of a transformers or timm image classifier (pretrained weights used when "
                "present); None: a small ResNet built from a config, randomly initialized."})
    model_type: Library = field(default="transformers", metadata={"help": "'transformers' or 'timm' (a timm name)."})
    init_from: str | None = field(default=None, metadata={
        "help": "A model (folder or Hub id) pretrained on another task whose backbone starts the training; its "
                "classifier is initialized afresh, as ImageNet weights are used for COCO. 'digits' pretrains the "
                "small ResNet on single-digit classification of the embedded data's training pool first."})
    dataset: str = field(default="digits_mosaic", metadata={"choices": BUILDERS.keys(),
                                                            "help": "A builder name of hf_cft.data."})
    data_dir: str | None = field(default=None, metadata={"help": "The folder with the dataset's files."})
    known_ratio: float | None = field(default=0.1, metadata={"help": "Simulated known share (COCO, digits)."})
    protocol: Protocol | None = field(default="uniform", metadata={"help": "Simulation protocol (COCO, digits)."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "Other builder options as JSON, e.g. '{\"frontal_only\": true}'."})
    method: str = field(default="an", metadata={"choices": METHOD_REGISTRY.keys(), "help": "The training method."})
    loss: Literal["asl", "bce"] = field(default="asl", metadata={"help": "'asl' or 'bce' (ASL with γ=0, clip=0)."})
    gamma_neg: float = field(default=4.0, metadata={"help": "ASL γ− (the paper's trainer: 4)."})
    gamma_pos: float = field(default=0.0, metadata={"help": "ASL γ+."})
    clip: float = field(default=0.05, metadata={"help": "ASL clip."})
    delta_rel: float = field(default=0.002, metadata={"help": "LL-R: rejection rate growth per epoch."})
    prior_threshold: float = field(default=0.05, metadata={"help": "Selective: class prior above which unknowns "
                                                                    "are ignored."})
    likelihood_topk: int = field(default=5, metadata={
        "help": "Selective: K; the K × batch size unknown entries of rare classes with the highest probability in "
                "the batch (over all its images and classes) are ignored as likely positives."})
    cl_mode: Literal["score", "positive"] = field(default="score", metadata={
        "help": "CL: 'score' (thresholds) or 'positive'. Pseudo-labels accumulate: each epoch adds labels for "
                "entries still unknown, earlier ones are kept."})
    cl_threshold_pos: float = field(default=0.95, metadata={"help": "CL: probability for a positive pseudo-label."})
    cl_threshold_neg: float = field(default=0.05, metadata={"help": "CL: probability for a negative pseudo-label."})
    uncertain_policy: UncertainPolicy = field(default="u_ignore", metadata={
        "help": "CheXpert uncertain labels: u_ignore, u_ones, u_zeros or u_lsr."})
    lsr_low: float = field(default=0.55, metadata={"help": "U-LSR lower bound."})
    lsr_high: float = field(default=0.85, metadata={"help": "U-LSR upper bound."})
    optimizer: Literal["adam", "adamw"] = field(default="adamw", metadata={"help": "'adam' or 'adamw'."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Not applied to biases and norm parameters."})
    one_cycle: bool = field(default=True, metadata={"help": "OneCycle schedule (else constant)."})
    epochs: int = field(default=8, metadata={"help": "Training epochs."})
    batch_size: int = field(default=64, metadata={"help": "Per-process batch size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    ema_decay: float | None = field(default=None, metadata={"help": "EMA of the weights (e.g. 0.9997); evaluated "
                                                                    "and saved instead of the raw weights."})
    image_size: int | None = field(default=None, metadata={"help": "Resize to this (default: the model's own)."})
    randaugment: bool = field(default=False, metadata={"help": "RandAugment on training images."})
    hflip: bool = field(default=False, metadata={"help": "Horizontal flip of training images (probability 0.5)."})
    rotate_degrees: float = field(default=0.0, metadata={
        "help": "Random rotation of training images within ± this many degrees (0: none)."})
    scale_range: list[float] | None = field(default=None, metadata={
        "help": "Random scaling of training images by a factor in [low, high], e.g. 0.9 1.1 (default: none)."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of training images held out for validation."})
    report_split: str | None = field(default="test", metadata={
        "help": "Split evaluated once at the end for the report (never for choosing the epoch); None: none."})
    metric: Metric = field(default="ap", metadata={"help": "'ap' or 'auroc': picks the best epoch on validation."})
    eval_categories: list[str] | None = field(default=None, metadata={
        "help": "Categories the validation and report metrics average over (names); default: all of them, and on "
                "CheXpert the five competition categories, as the paper reports."})
    output_dir: str = field(default="outputs/train-digits-mosaic", metadata={"help": "Where models go."})
    seed: int = field(default=0, metadata={"help": "Seed of everything."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint folder, or 'latest' for the newest in output_dir/checkpoints."})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={
        "choices": REPORT_TO_CHOICES, "metavar": "TRACKER",
        "help": "Log each epoch's loss and validation metrics, and the report split's, to these trackers (their local "
                "files under output_dir). " + REPORT_TO_HELP})
    with_tracking: bool = field(default=False, metadata={
        "help": "Deprecated: use --report_to tensorboard (which it means)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training images."})
    num_workers: int | None = field(default=None, metadata={
        "help": "DataLoader workers decoding images (default: the cores available, at most 8; 0: none)."})
    stop_after_epochs: int | None = field(default=None, metadata={
        "help": "Stop (as if killed) after this many epochs of this run; for resume tests."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the best model to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for --push_to_hub."})
    cpu: bool | None = field(default=None, metadata={"help": "Force the CPU (default: when no GPU)."})

    def __post_init__(self):
        if self.dataset not in BUILDERS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(BUILDERS)}")
        if self.with_tracking:
            logger.warning("--with_tracking is deprecated: use --report_to tensorboard (which it means)")
            self.report_to = [*(r for r in self.report_to if r != "none"), "tensorboard"]
            self.with_tracking = False  # folded into report_to (a copy made with dataclasses.replace warns no more)
        self.report_to = check_report_to(self.report_to)
        if self.method not in METHOD_REGISTRY:  # the built-in METHODS and any registered later
            raise ValueError(f"`method` must be one of {tuple(METHOD_REGISTRY)}, got {self.method!r}")
        if self.loss not in ("asl", "bce"):
            raise ValueError(f"`loss` must be 'asl' or 'bce', got {self.loss!r}")
        if self.uncertain_policy not in typing.get_args(UncertainPolicy):
            raise ValueError(f"`uncertain_policy` must be u_ignore, u_ones, u_zeros or u_lsr, got "
                             f"{self.uncertain_policy!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {self.val_fraction}")
        if self.init_from and self.model_name_or_path:
            raise ValueError("give --model_name_or_path (continue a model, its classifier included) or --init_from "
                             "(a pretrained backbone, classifier made afresh), not both")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"`optimizer` must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.rotate_degrees < 0:
            raise ValueError(f"`rotate_degrees` must be >= 0, got {self.rotate_degrees}")
        if self.scale_range is not None and (len(self.scale_range) != 2
                                             or not 0 < self.scale_range[0] <= self.scale_range[1]):
            raise ValueError(f"`scale_range` must be two factors 0 < low <= high, got {self.scale_range}")
        if self.metric not in ("ap", "auroc"):
            raise ValueError(f"`metric` must be 'ap' (mAP) or 'auroc' (mAUC), got {self.metric!r}")
        if self.cl_mode not in ("score", "positive"):
            raise ValueError(f"`cl_mode` must be 'score' or 'positive', got {self.cl_mode!r}")
