"""The accelerate trainer that produces the baselines CFT is applied to (AN, ignore, LL-R, Selective, CL).

``accelerate launch recipes/train.py [--args | config.yaml]``; every argument is a field of
:class:`TrainArguments`. A validation split is held out from the training images (seeded, with its partial
labels) and chooses the best epoch; the test split is only evaluated at the end, for the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .io import write_atomic
from .constants import PSEUDO_LABELS_NAME, TRAIN_REPORT_NAME, TRAINER_STATE_NAME
from .losses import (
    assume_negative,
    asymmetric_loss,
    curriculum_pseudo_labels,
    ll_r_keep,
    selective_weights,
    uncertain_lsr,
)

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "TrainArguments", "TrainData", "TrainState", "dataset_options", "train"]

METHODS = ("an", "ignore", "ll_r", "selective", "cl")
SIMULATED_DATASETS = ("coco2014", "digits_mosaic")  # builders whose partial labels are simulated (known_ratio, …)
BEST, CHECKPOINTS = "best", "checkpoints"  # folders of output_dir: the best model, the per-epoch states


@dataclass
class TrainArguments:
    """Everything a baseline run needs (also the command line of ``recipes/train.py``)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of a transformers or timm image classifier (pretrained weights used when "
                "present); None: a small ResNet built from a config, randomly initialized."})
    model_type: str = field(default="transformers", metadata={"help": "'transformers' or 'timm' (a timm name)."})
    init_from: str | None = field(default=None, metadata={
        "help": "A model (folder or Hub id) pretrained on another task whose backbone starts the training; its "
                "classifier is initialized afresh, as ImageNet weights are used for COCO. 'digits' pretrains the "
                "small ResNet on single-digit classification of the embedded data's training pool first."})
    dataset: str = field(default="digits_mosaic", metadata={"help": "A builder name of hf_cft.data."})
    data_dir: str | None = field(default=None, metadata={"help": "The folder with the dataset's files."})
    known_ratio: float | None = field(default=0.1, metadata={"help": "Simulated known share (COCO, digits)."})
    protocol: str | None = field(default="uniform", metadata={"help": "Simulation protocol (COCO, digits)."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "Other builder options as JSON, e.g. '{\"frontal_only\": true}'."})
    method: str = field(default="an", metadata={"help": f"One of {METHODS}."})
    loss: str = field(default="asl", metadata={"help": "'asl' or 'bce' (ASL with γ=0, clip=0)."})
    gamma_neg: float = field(default=4.0, metadata={"help": "ASL γ− (the paper's trainer: 4)."})
    gamma_pos: float = field(default=0.0, metadata={"help": "ASL γ+."})
    clip: float = field(default=0.05, metadata={"help": "ASL clip."})
    delta_rel: float = field(default=0.002, metadata={"help": "LL-R: rejection rate growth per epoch."})
    prior_threshold: float = field(default=0.05, metadata={"help": "Selective: class prior above which unknowns "
                                                                    "are ignored."})
    likelihood_topk: int = field(default=5, metadata={
        "help": "Selective: K; the K × batch size unknown entries of rare classes with the highest probability in "
                "the batch (over all its images and classes) are ignored as likely positives."})
    cl_mode: str = field(default="score", metadata={
        "help": "CL: 'score' (thresholds) or 'positive'. Pseudo-labels accumulate: each epoch adds labels for "
                "entries still unknown, earlier ones are kept."})
    cl_threshold_pos: float = field(default=0.95, metadata={"help": "CL: probability for a positive pseudo-label."})
    cl_threshold_neg: float = field(default=0.05, metadata={"help": "CL: probability for a negative pseudo-label."})
    uncertain_policy: str = field(default="u_ignore", metadata={
        "help": "CheXpert uncertain labels: u_ignore, u_ones, u_zeros or u_lsr."})
    lsr_low: float = field(default=0.55, metadata={"help": "U-LSR lower bound."})
    lsr_high: float = field(default=0.85, metadata={"help": "U-LSR upper bound."})
    optimizer: str = field(default="adamw", metadata={"help": "'adam' or 'adamw'."})
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
    metric: str = field(default="ap", metadata={"help": "'ap' or 'auroc': picks the best epoch on validation."})
    eval_categories: list[str] | None = field(default=None, metadata={
        "help": "Categories the validation and report metrics average over (names); default: all of them, and on "
                "CheXpert the five competition categories, as the paper reports."})
    output_dir: str = field(default="outputs/train-digits-mosaic", metadata={"help": "Where models go."})
    seed: int = field(default=0, metadata={"help": "Seed of everything."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint folder, or 'latest' for the newest in output_dir/checkpoints."})
    with_tracking: bool = field(default=False, metadata={"help": "Log to tensorboard in output_dir."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training images."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    stop_after_epochs: int | None = field(default=None, metadata={
        "help": "Stop (as if killed) after this many epochs of this run; for resume tests."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the best model to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for --push_to_hub."})
    cpu: bool | None = field(default=None, metadata={"help": "Force the CPU (default: when no GPU)."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}")
        if self.loss not in ("asl", "bce"):
            raise ValueError(f"`loss` must be 'asl' or 'bce', got {self.loss!r}")
        if self.uncertain_policy not in ("u_ignore", "u_ones", "u_zeros", "u_lsr"):
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


# -- model and data ------------------------------------------------------------------------------------------
def build_model(args: TrainArguments, names: list[str]):
    """The model to train and its input size, mean and std (with ``init_from``: its classifier made afresh)."""
    model, size, mean, std = _load_model(args, names)
    if args.init_from:
        from .head import find_head

        torch.manual_seed(args.seed)
        for path in find_head(model).paths:
            model.get_submodule(path).reset_parameters()
    return model, size, mean, std


def _load_model(args: TrainArguments, names: list[str]):
    id2label = dict(enumerate(names))
    source = args.init_from or args.model_name_or_path
    if args.model_type == "timm":
        import timm

        name = str(source)
        local = os.path.isdir(name)
        # pretrained where the weights are at hand (a local folder or a Hub repo); a bare timm name: random init
        model = timm.create_model(f"local-dir:{name}" if local else name,
                                  pretrained=local or name.startswith("hf-hub:"), num_classes=len(names))
        cfg = timm.data.resolve_data_config({}, model=model)
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": names}
        return model, args.image_size or cfg["input_size"][-1], cfg["mean"], cfg["std"]
    import transformers

    if source is None:
        from .pretrain import IMAGE_SIZE, MEAN, STD, tiny_resnet

        torch.manual_seed(args.seed)
        return tiny_resnet(len(names), id2label), args.image_size or IMAGE_SIZE, MEAN, STD
    model = transformers.AutoModelForImageClassification.from_pretrained(
        source, num_labels=len(names), id2label=id2label,
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True,
        problem_type="multi_label_classification")
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(source)
        size = getattr(proc, "size", {}) or {}
        side = size.get("height") or size.get("shortest_edge") or 224
        return model, args.image_size or side, proc.image_mean, proc.image_std
    except (OSError, ValueError):
        return model, args.image_size or 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _transforms(size: int, mean, std, train: bool, randaugment: bool, args: TrainArguments | None = None):
    """Resize and normalize; on training images also the augmentations ``args`` asks for (flip, rotation and
    scaling, e.g. the paper's CheXpert setup; RandAugment, its COCO setup)."""
    from torchvision import transforms as T

    ops = [T.Resize((size, size))]
    if train and args is not None and args.hflip:
        ops.append(T.RandomHorizontalFlip())
    if train and args is not None and (args.rotate_degrees or args.scale_range):
        ops.append(T.RandomAffine(degrees=args.rotate_degrees,
                                  scale=tuple(args.scale_range) if args.scale_range else None))
    if train and randaugment:
        ops.append(T.RandAugment())
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class _Split(torch.utils.data.Dataset):
    """Images of a datasets split with their labels, masks and row index (for pseudo-labels)."""

    def __init__(self, ds, rows: np.ndarray, transform, labels, mask, uncertain):
        self.ds, self.rows, self.transform = ds, rows, transform
        self.labels, self.mask, self.uncertain = labels, mask, uncertain

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = int(self.rows[i])
        image = self.ds[r]["image"].convert("RGB")
        return {"pixel_values": self.transform(image), "labels": torch.from_numpy(self.labels[r]),
                "label_mask": torch.from_numpy(self.mask[r]), "uncertain": torch.from_numpy(self.uncertain[r]),
                "index": torch.tensor(r)}


# -- the loop ------------------------------------------------------------------------------------------------
def _logits(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm weights
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class TrainData:
    """The training split's labels as the trainer uses them (the uncertain policy applied), and its splits."""

    ds: Any  # the DatasetDict
    names: list[str]
    labels: np.ndarray  # N × C float32
    mask: np.ndarray  # N × C bool
    uncertain: np.ndarray  # N × C bool
    dataset_config: dict
    fit_rows: np.ndarray | None = None
    val_rows: np.ndarray | None = None
    eval_columns: list[int] | None = None  # the categories the metrics average over (None: all)

    @property
    def train(self):
        return self.ds["train"]


@dataclass
class TrainState:
    """What a checkpoint holds besides accelerate's state: progress, history, CL pseudo-labels, Selective prior."""

    epoch: int
    best_score: float | None
    best_epoch: int | None
    history: list[dict]
    pseudo: dict[str, torch.Tensor]
    prior: torch.Tensor

    def progress(self) -> dict:
        """The JSON part (``trainer_state.json``)."""
        return {"epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "history": self.history}


def train(args: TrainArguments) -> dict:
    """Train a baseline; returns the report (best validation score, epochs, report-split metrics)."""
    from accelerate.utils import set_seed

    accelerator = make_accelerator(args)
    set_seed(args.seed)
    data = load_training_data(args, accelerator)
    data.fit_rows, data.val_rows = prepare_splits(args, len(data.train))
    args = pretrain_backbone(args, accelerator, data)
    model, size, mean, std = build_model(args, data.names)
    gen = torch.Generator().manual_seed(args.seed)
    train_loader, val_loader = build_loaders(args, data, (size, mean, std), gen)
    optimizer = build_optimizer(args, model)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    scheduler, ema = build_schedule(args, accelerator, model, optimizer, len(train_loader))
    state = resume(args, accelerator, initial_state(data))
    if args.with_tracking:
        accelerator.init_trackers("hf_cft_train", config={k: v for k, v in asdict(args).items()
                                                          if isinstance(v, (int, float, str, bool))})
    lsr_gen = torch.Generator(device=accelerator.device)
    ran = 0
    for epoch in range(state.epoch + 1, args.epochs + 1):
        gen.manual_seed(args.seed * 1000 + epoch)  # the shuffle of an epoch does not depend on resuming,
        lsr_gen.manual_seed(args.seed * 1000 + epoch)  # nor do its U-LSR soft labels
        loss = train_epoch(args, accelerator, model, optimizer, scheduler, ema, train_loader, state, epoch, lsr_gen)
        eval_model = ema.module if ema is not None else model
        if args.method in ("cl", "selective"):
            _refresh(args, accelerator, eval_model, data.train, data.fit_rows, size, mean, std, state.pseudo,
                     state.prior, data.labels, data.mask)
        validate(args, accelerator, eval_model, val_loader, state, epoch, loss, data, (size, mean, std))
        checkpoint(accelerator, state, os.path.join(args.output_dir, CHECKPOINTS))
        ran += 1
        if args.stop_after_epochs and ran >= args.stop_after_epochs and epoch < args.epochs:
            accelerator.print(f"stopping after {ran} epoch(s) as asked")
            return {"stopped_at_epoch": epoch, **state.progress()}
    report = final_report(args, accelerator, data, state, (size, mean, std))
    if args.push_to_hub and accelerator.is_main_process:
        push_best(args)
    if args.with_tracking:
        accelerator.end_training()
    return report


# -- the steps of train, in order ------------------------------------------------------------------------------
def make_accelerator(args: TrainArguments):
    """The Accelerator of a run (CPU when no GPU or when asked; tensorboard with ``--with_tracking``)."""
    from accelerate import Accelerator

    cpu = (not torch.cuda.is_available()) if args.cpu is None else args.cpu
    if args.with_tracking:
        try:
            import tensorboard  # noqa: F401
        except ImportError as err:
            raise ImportError("--with_tracking logs to tensorboard: pip install 'hf_cft[tracking]'") from err
    return Accelerator(cpu=cpu, gradient_accumulation_steps=args.gradient_accumulation_steps,
                       log_with="tensorboard" if args.with_tracking else None, project_dir=args.output_dir)


def dataset_options(dataset: str, dataset_config: str | None, known_ratio: float | None, protocol: str | None,
                    seed: int) -> dict:
    """The builder options of a run: ``dataset_config`` (JSON) with the simulation settings where they apply."""
    config = json.loads(dataset_config) if dataset_config else {}
    if dataset in SIMULATED_DATASETS:
        config.setdefault("known_ratio", known_ratio)
        config.setdefault("protocol", protocol)
        config.setdefault("seed", seed)
    return config


def load_training_data(args: TrainArguments, accelerator) -> TrainData:
    """The dataset and the training split's labels, with a CheXpert U-Ones / U-Zeros policy applied."""
    from .data import label_arrays, load_partial_dataset, partial_info

    config = dataset_options(args.dataset, args.dataset_config, args.known_ratio, args.protocol, args.seed)
    with accelerator.main_process_first():
        ds = load_partial_dataset(args.dataset, data_dir=args.data_dir, **config)
    train_ds = ds["train"]
    columns = ("labels", "label_mask", "uncertain_mask") if "uncertain_mask" in train_ds.features else \
        ("labels", "label_mask")
    arrays = label_arrays(train_ds, columns)
    labels, mask = arrays[0].astype(np.float32), arrays[1]
    uncertain = arrays[2] if len(arrays) == 3 else np.zeros_like(mask)
    if args.uncertain_policy in ("u_ones", "u_zeros"):
        labels[uncertain] = 1.0 if args.uncertain_policy == "u_ones" else 0.0
        mask = mask | uncertain
    names = partial_info(train_ds)["categories"]
    # checked here, before any training: a wrong --eval_categories fails at once
    columns = eval_columns(args.dataset, names, args.eval_categories)
    return TrainData(ds, names, labels, mask, uncertain, config, eval_columns=columns)


def prepare_splits(args: TrainArguments, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_rows, val_rows)``: a seeded hold-out of ``val_fraction`` of the (first ``max_train_samples``) images."""
    order = np.random.default_rng(args.seed).permutation(n)
    if args.max_train_samples:
        order = order[: args.max_train_samples]
    n_val = max(1, int(round(args.val_fraction * len(order))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pretrain_backbone(args: TrainArguments, accelerator, data: TrainData) -> TrainArguments:
    """With ``--init_from digits``: pretrain the small ResNet on single digits (once) and start from it."""
    if args.init_from != "digits":
        return args
    if args.dataset != "digits_mosaic":
        raise ValueError("--init_from digits pretrains on the embedded digits: use it with digits_mosaic")
    from .data.digits import DigitsMosaicConfig
    from .pretrain import pretrain_digits

    folder = os.path.join(args.output_dir, "pretrained-digits")
    with accelerator.main_process_first():  # the others then find it finished
        # the dataset's own pools (seed and test share), so that no digit of its test pool is pretrained on
        pretrain_digits(folder, seed=args.seed, pool_seed=data.dataset_config.get("seed", args.seed),
                        test_pool_fraction=data.dataset_config.get("test_pool_fraction",
                                                                   DigitsMosaicConfig.test_pool_fraction),
                        show_progress=accelerator.is_local_main_process)
    return dataclasses.replace(args, init_from=folder)


def build_loaders(args: TrainArguments, data: TrainData, preprocessing, gen: torch.Generator):
    """The shuffled (by ``gen``) training loader and the validation loader."""
    size, mean, std = preprocessing
    augmented = _transforms(size, mean, std, True, args.randaugment, args)
    fit_set = _Split(data.train, data.fit_rows, augmented, data.labels, data.mask, data.uncertain)
    val_set = _Split(data.train, data.val_rows, _transforms(size, mean, std, False, False), data.labels, data.mask,
                     data.uncertain)
    train_loader = torch.utils.data.DataLoader(fit_set, batch_size=args.batch_size, shuffle=True, generator=gen,
                                               num_workers=args.num_workers, drop_last=False)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, num_workers=args.num_workers)
    return train_loader, val_loader


def build_optimizer(args: TrainArguments, model) -> torch.optim.Optimizer:
    """Adam, or AdamW without decay on biases and norm weights."""
    opt_cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    params = _param_groups(model, args.weight_decay) if args.optimizer == "adamw" else model.parameters()
    return opt_cls(params, lr=args.learning_rate)


def build_schedule(args: TrainArguments, accelerator, model, optimizer, n_batches: int):
    """The OneCycle scheduler and the EMA of the weights (each None when off), registered for checkpointing."""
    scheduler = ema = None
    if args.one_cycle:
        steps_per_epoch = math.ceil(n_batches / args.gradient_accumulation_steps)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate,
                                                        total_steps=max(1, steps_per_epoch * args.epochs))
        accelerator.register_for_checkpointing(scheduler)
    if args.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            accelerator.unwrap_model(model), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema_decay))
        accelerator.register_for_checkpointing(ema)
    return scheduler, ema


def initial_state(data: TrainData) -> TrainState:
    """Epoch 0: the given labels as CL pseudo-labels and, as the Selective prior, their known positive share over
    the rows trained on (``fit_rows``; all rows when unset), never the held-out validation rows."""
    rows = data.fit_rows if data.fit_rows is not None else slice(None)
    labels, mask = data.labels[rows], data.mask[rows]
    prior = torch.from_numpy(np.where(mask, labels, 0).sum(0) / np.maximum(mask.sum(0), 1)).float()
    return TrainState(0, None, None, [], {"labels": torch.from_numpy(data.labels.copy()),
                                          "mask": torch.from_numpy(data.mask.copy())}, prior)


def resume(args: TrainArguments, accelerator, state: TrainState) -> TrainState:
    """The state of ``--resume_from_checkpoint`` (a folder or ``latest``), accelerate's part loaded in place."""
    if not args.resume_from_checkpoint:
        return state
    path = args.resume_from_checkpoint
    if path == "latest":
        root = os.path.join(args.output_dir, CHECKPOINTS)
        done = complete_checkpoints(root)
        if not done:
            raise FileNotFoundError(f"no checkpoint in {root} to resume from (incomplete ones are skipped)")
        path = done[-1]
    accelerator.load_state(path)
    with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as f:
        progress = json.load(f)
    extra = load_file(os.path.join(path, PSEUDO_LABELS_NAME))
    accelerator.print(f"resumed from {path} (epoch {progress['epoch']})")
    return TrainState(progress["epoch"], progress["best_score"], progress["best_epoch"], progress["history"],
                      {"labels": extra["labels"], "mask": extra["mask"]}, extra["prior"])


def complete_checkpoints(root: str) -> list[str]:
    """The complete ``<root>/epoch_<n>`` folders, oldest first: a ``.tmp`` (a save killed half-way) is skipped,
    and so is a folder without its trainer state files."""
    if not os.path.isdir(root):
        return []
    epochs = sorted(int(m.group(1)) for d in os.listdir(root) if (m := re.fullmatch(r"epoch_(\d+)", d)))
    paths = [os.path.join(root, f"epoch_{n}") for n in epochs]
    return [p for p in paths if all(os.path.isfile(os.path.join(p, f)) for f in (TRAINER_STATE_NAME,
                                                                                   PSEUDO_LABELS_NAME))]


def method_loss(args: TrainArguments, logits: torch.Tensor, batch: dict, epoch: int, state: TrainState,
                lsr_gen: torch.Generator | None = None) -> torch.Tensor:
    """The loss of a batch under ``args.method`` (AN, ignore, LL-R, Selective, CL): ASL weighted per entry,
    summed and divided by the batch size."""
    y, m = batch["labels"].float(), batch["label_mask"]
    if args.uncertain_policy == "u_lsr":
        y, m = uncertain_lsr(y, m, batch["uncertain"], args.lsr_low, args.lsr_high, lsr_gen)
    idx = batch["index"].cpu()
    if args.method == "cl":
        y = state.pseudo["labels"][idx].to(y.device)
        m = state.pseudo["mask"][idx].to(m.device)
    gn, gp, cl = (args.gamma_neg, args.gamma_pos, args.clip) if args.loss == "asl" else (0.0, 0.0, 0.0)
    if args.method == "ignore" or args.method == "cl":
        weights = m.float()
    elif args.method == "an":
        y, ones = assume_negative(y, m)
        weights = ones.float()
    elif args.method == "ll_r":
        y_an, _ = assume_negative(y, m)
        per = asymmetric_loss(logits, y_an, None, gn, gp, cl, reduce_dim=())
        weights = ll_r_keep(per, ~m, epoch, args.delta_rel).float()
        y = y_an
    else:  # selective
        with torch.no_grad():
            probs = torch.sigmoid(logits)
        weights = selective_weights(probs, m, state.prior.to(logits.device), args.prior_threshold,
                                    args.likelihood_topk)
        y = torch.where(m, y, torch.zeros_like(y))
    loss = asymmetric_loss(logits, y, None, gn, gp, cl, reduce_dim=()) * weights
    return loss.sum() / max(1, logits.shape[0])


def train_epoch(args: TrainArguments, accelerator, model, optimizer, scheduler, ema, loader, state: TrainState,
                epoch: int, lsr_gen: torch.Generator) -> float:
    """One pass over the training loader; the mean batch loss, averaged over the processes."""
    model.train()
    bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
    total = 0.0
    for batch in bar:
        with accelerator.accumulate(model):
            logits = _logits(model, batch["pixel_values"]).float()
            loss = method_loss(args, logits, batch, epoch, state, lsr_gen)
            accelerator.backward(loss)
            optimizer.step()
            if accelerator.sync_gradients and scheduler is not None:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None and accelerator.sync_gradients:
                ema.update_parameters(accelerator.unwrap_model(model))
            value = float(loss.detach())
            total += value
            bar.set_postfix(loss=f"{value:.3f}")
    mean = torch.tensor(total / max(1, len(loader)), dtype=torch.float32, device=accelerator.device)
    return float(accelerator.reduce(mean, reduction="mean"))  # every process's shard, not the main one's only


def eval_columns(dataset: str, names: list[str], chosen: list[str] | None) -> list[int] | None:
    """The categories the metrics average over: ``chosen`` (names), CheXpert's five competition categories by
    default there, else None (all)."""
    if chosen is None and dataset == "chexpert":
        from .data import CHEXPERT_COMPETITION

        chosen = list(CHEXPERT_COMPETITION)
    if chosen is None:
        return None
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"eval_categories {unknown} are not categories of the dataset ({names})")
    return [names.index(c) for c in chosen]


def evaluate_loader(accelerator, loader, model, columns: list[int] | None = None) -> dict:
    """Masked mAP / mAUC of ``model`` on a loader (every process's share gathered, padding dropped), averaged
    over ``columns`` (default: every category)."""
    from .metrics import partial_auroc, partial_average_precision

    model.eval()
    outs, ys, ms = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = _logits(model, batch["pixel_values"])
            logits, y, m = accelerator.gather_for_metrics((logits, batch["labels"], batch["label_mask"]))
            outs.append(logits.float().cpu()), ys.append(y.cpu()), ms.append(m.cpu())
    s, y, m = torch.cat(outs), torch.cat(ys), torch.cat(ms)
    if columns is not None:
        s, y, m = s[:, columns], y[:, columns], m[:, columns]
    return {"map": partial_average_precision(s, y, m).value, "mauc": partial_auroc(s, y, m).value, "n": len(s)}


def validate(args: TrainArguments, accelerator, model, loader, state: TrainState, epoch: int, loss: float,
             data: TrainData, preprocessing) -> None:
    """Score the epoch on validation, keep it in the history and save the model when it is the best so far."""
    names = data.names
    val = evaluate_loader(accelerator, loader, model, data.eval_columns)
    score = val["map"] if args.metric == "ap" else val["mauc"]
    improved = state.best_score is None or score > state.best_score
    state.history.append({"epoch": epoch, "loss": loss, **val})
    if improved:
        state.best_score, state.best_epoch = score, epoch
        _save_model(accelerator, model, os.path.join(args.output_dir, BEST), names, preprocessing)
    state.epoch = epoch
    accelerator.print(f"epoch {epoch}: validation mAP {100 * val['map']:.2f} mAUC {100 * val['mauc']:.2f}"
                      + (" (best)" if improved else ""))
    if args.with_tracking:
        accelerator.log({"train/loss": loss, "val/map": val["map"], "val/mauc": val["mauc"]}, step=epoch)


def checkpoint(accelerator, state: TrainState, root: str) -> str:
    """Save accelerate's state and ours as ``<root>/epoch_<n>``, atomically; every process waits for it.

    Everything is written to ``epoch_<n>.tmp``; once every process has written its part, the main process moves
    it in place (:func:`hf_cft.hub.swap_in`). A kill at any point leaves no incomplete ``epoch_<n>``, so
    ``--resume_from_checkpoint latest`` resumes from the last complete epoch. Returns the path.
    """
    from .hub import recover_model_dir, swap_in

    path = os.path.join(root, f"epoch_{state.epoch}")
    tmp = path + ".tmp"
    if accelerator.is_main_process:
        recover_model_dir(path)  # what a killed save left: a stale .tmp removed, an .old moved back
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        # plain writes: the folder is moved in place only once complete
        with open(os.path.join(tmp, TRAINER_STATE_NAME), "w", encoding="utf-8") as f:
            json.dump(state.progress(), f)
        save_file({"labels": state.pseudo["labels"].contiguous(), "mask": state.pseudo["mask"].contiguous(),
                   "prior": state.prior.contiguous()}, os.path.join(tmp, PSEUDO_LABELS_NAME))
    accelerator.wait_for_everyone()  # every process's part (its random states) is in the folder
    if accelerator.is_main_process:
        swap_in(tmp, path)
    accelerator.wait_for_everyone()
    return path


def final_report(args: TrainArguments, accelerator, data: TrainData, state: TrainState, preprocessing) -> dict:
    """The run's report, with the best model's scores on ``report_split``; written beside it (main process)."""
    report = {"best_epoch": state.best_epoch, "best_validation": state.best_score, "history": state.history,
              "dataset": args.dataset, "dataset_config": data.dataset_config,
              # the images the model never trained on: CFT selects on these (hf_cft.recipe, selection "auto")
              "validation_rows": data.val_rows.tolist(), "train_rows": len(data.train)}
    split = args.report_split
    if split and split in data.ds:
        report[split] = _score_best(args, accelerator, data.ds[split], preprocessing, data.eval_columns)
        accelerator.print(f"{split} (best epoch {state.best_epoch}): mAP {100 * report[split]['map']:.2f} mAUC "
                          f"{100 * report[split]['mauc']:.2f}")
    if accelerator.is_main_process:
        for folder in (args.output_dir, os.path.join(args.output_dir, BEST)):
            write_atomic(os.path.join(folder, TRAIN_REPORT_NAME), json.dumps(report, indent=2))
    return report


def _score_best(args: TrainArguments, accelerator, split, preprocessing, columns: list[int] | None) -> dict:
    from .data import label_arrays

    size, mean, std = preprocessing
    best = accelerator.prepare(_load_best(args))
    labels, mask = label_arrays(split)
    data = _Split(split, np.arange(len(split)), _transforms(size, mean, std, False, False),
                  labels.astype(np.float32), mask, np.zeros_like(mask))
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=args.batch_size))
    return evaluate_loader(accelerator, loader, best, columns)


def push_best(args: TrainArguments) -> None:
    """Upload the best model to ``hub_model_id`` (default: the output folder's name)."""
    from huggingface_hub import HfApi

    repo = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    HfApi().create_repo(repo, exist_ok=True)
    HfApi().upload_folder(repo_id=repo, folder_path=os.path.join(args.output_dir, BEST),
                          commit_message=f"{args.method} baseline trained with hf_cft")


@torch.no_grad()
def _refresh(args, accelerator, model, train_ds, fit_rows, size, mean, std, pseudo, prior, labels, mask):
    """After an epoch: CL pseudo-labels from the model's scores; the Selective class prior from its mean score.

    CL's pseudo-labels accumulate, as Curriculum Labeling (Durand et al., 2019) adds labels over its rounds:
    entries still unknown may get one, those given one in an earlier epoch (and the known ones) keep theirs.
    """
    data = _Split(train_ds, fit_rows, _transforms(size, mean, std, False, False), labels, mask, np.zeros_like(mask))
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=args.batch_size))
    model.eval()
    probs, idxs = [], []
    for batch in loader:
        p = torch.sigmoid(_logits(model, batch["pixel_values"]).float())
        p, i = accelerator.gather_for_metrics((p, batch["index"]))
        probs.append(p.cpu()), idxs.append(i.cpu())
    p, idx = torch.cat(probs), torch.cat(idxs)
    if args.method == "cl":
        y0, m0 = pseudo["labels"][idx], pseudo["mask"][idx]  # the known labels and every earlier pseudo-label
        new_y, new_m = curriculum_pseudo_labels(p, y0, m0, args.cl_mode, args.cl_threshold_pos, args.cl_threshold_neg)
        pseudo["labels"][idx] = new_y
        pseudo["mask"][idx] = new_m
    else:
        prior.copy_(p.mean(0))


def _save_model(accelerator, model, directory: str, names: list[str], preprocessing=None) -> None:
    """Save the model (main process) with its labels and evaluation preprocessing ``(size, mean, std)``, atomically.

    The new folder is written to ``<directory>.tmp``, the old one moved aside to ``<directory>.old``, the new one
    moved in, the old one deleted: a kill at any point leaves a complete model at ``directory`` or at
    ``<directory>.old``, which the next save (or ``CFTHead.from_pretrained``) moves back.
    """
    from .hub import recover_model_dir, save_timm_model, swap_in

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model)
    recover_model_dir(directory)  # a previous save killed half-way; also removes a stale <directory>.tmp
    tmp = directory + ".tmp"
    if hasattr(model, "save_pretrained"):
        model.config.problem_type = "multi_label_classification"
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {n: i for i, n in enumerate(names)}
        model.save_pretrained(tmp, safe_serialization=True)
        if preprocessing is not None:  # exactly the evaluation transform the model was trained with
            import transformers

            size, mean, std = preprocessing
            transformers.ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean),
                                           image_std=list(std)).save_pretrained(tmp)
    else:  # timm: the preprocessing goes into the data config of config.json
        save_timm_model(model, tmp, names, preprocessing)
    swap_in(tmp, directory)


def _load_best(args):
    path = os.path.join(args.output_dir, BEST)
    if args.model_type == "timm":
        import timm

        return timm.create_model(f"local-dir:{path}", pretrained=True)
    import transformers

    return transformers.AutoModelForImageClassification.from_pretrained(path)
