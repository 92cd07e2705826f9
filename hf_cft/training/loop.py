"""The trainer's loop: :func:`train` runs the named steps in order (data, splits, model, loaders, optimizer,
schedule, resume), then per epoch trains, refreshes the method's state, validates and checkpoints."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..tracking import open_trackers
from .arguments import TrainArguments
from .checkpoints import CHECKPOINTS, checkpoint, resume
from .methods import METHOD_REGISTRY, method_loss
from .model import build_model, model_logits
from .pretrain import pretrain_backbone
from .refresh import refresh_after_epoch
from .report import final_report, push_best, validate
from .splits import build_loaders, load_training_data, prepare_splits
from .state import Run, TrainState, initial_state

logger = logging.getLogger(__name__)

__all__ = ["TRACKING_PROJECT", "TrainParts", "build_optimizer", "build_schedule", "make_accelerator", "train",
           "train_epoch"]

TRACKING_PROJECT = "hf_cft_train"  # the trackers' project (tensorboard: output_dir/hf_cft_train)


@dataclass
class TrainParts:
    """What an optimizer step updates: the (prepared) model, its optimizer, the OneCycle scheduler and the EMA of
    the weights (each None when off)."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    ema: Any = None

    @property
    def eval_model(self):
        """The model validated and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def train(args: TrainArguments) -> dict:
    """Train a baseline; returns the report (best validation score, epochs, report-split metrics)."""
    from accelerate.utils import set_seed

    accelerator = make_accelerator(args)
    set_seed(args.seed)
    data = load_training_data(args, accelerator)
    data.fit_rows, data.val_rows = prepare_splits(args, len(data.train))
    args = pretrain_backbone(args, accelerator, data)
    model, size, mean, std = build_model(args, data.names)
    run = Run(args, accelerator, data, (size, mean, std))
    try:
        return _train_run(run, model)
    finally:
        if run.trackers:
            run.trackers.finish()


def _train_run(run: Run, model) -> dict:
    """The loaders, optimizer and schedule of a run, its resume point, its epochs and its report."""
    args, accelerator, data = run.args, run.accelerator, run.data
    gen = torch.Generator().manual_seed(args.seed)
    train_loader, val_loader = build_loaders(args, data, run.preprocessing, gen, accelerator.device)
    optimizer = build_optimizer(args, model)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    parts = TrainParts(model, optimizer, *build_schedule(args, accelerator, model, optimizer, len(train_loader)))
    state = resume(args, accelerator, initial_state(data))
    run.trackers = open_trackers(args.report_to, TRACKING_PROJECT, args.output_dir, config=asdict(args))
    lsr_gen = torch.Generator(device=accelerator.device)
    ran = 0
    for epoch in range(state.epoch + 1, args.epochs + 1):
        gen.manual_seed(args.seed * 1000 + epoch)  # the shuffle of an epoch does not depend on resuming,
        lsr_gen.manual_seed(args.seed * 1000 + epoch)  # nor do its U-LSR soft labels
        loss = train_epoch(run, parts, train_loader, state, epoch, lsr_gen)
        if METHOD_REGISTRY[args.method].refresh is not None:
            refresh_after_epoch(run, parts.eval_model, state)
        validate(run, parts.eval_model, val_loader, state, epoch, loss)
        checkpoint(accelerator, state, os.path.join(args.output_dir, CHECKPOINTS))
        ran += 1
        if args.stop_after_epochs and ran >= args.stop_after_epochs and epoch < args.epochs:
            accelerator.print(f"stopping after {ran} epoch(s) as asked")
            return {"stopped_at_epoch": epoch, **state.progress()}
    report = final_report(run, state)
    if args.push_to_hub and accelerator.is_main_process:
        push_best(args)
    return report


def make_accelerator(args: TrainArguments):
    """The Accelerator of a run (CPU when no GPU or when asked)."""
    from accelerate import Accelerator

    cpu = (not torch.cuda.is_available()) if args.cpu is None else args.cpu
    return Accelerator(cpu=cpu, gradient_accumulation_steps=args.gradient_accumulation_steps,
                       project_dir=args.output_dir)


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm weights
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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


def train_epoch(run: Run, parts: TrainParts, loader, state: TrainState, epoch: int, lsr_gen: torch.Generator) -> float:
    """One pass over the training loader; the mean batch loss, averaged over the processes."""
    args, accelerator, model = run.args, run.accelerator, parts.model
    model.train()
    bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
    total = 0.0
    for batch in bar:
        with accelerator.accumulate(model):
            logits = model_logits(model, batch["pixel_values"]).float()
            loss = method_loss(args, logits, batch, epoch, state, lsr_gen)
            accelerator.backward(loss)
            parts.optimizer.step()
            if accelerator.sync_gradients and parts.scheduler is not None:
                parts.scheduler.step()
            parts.optimizer.zero_grad(set_to_none=True)
            if parts.ema is not None and accelerator.sync_gradients:
                parts.ema.update_parameters(accelerator.unwrap_model(model))
            value = float(loss.detach())
            total += value
            bar.set_postfix(loss=f"{value:.3f}")
    mean = torch.tensor(total / max(1, len(loader)), dtype=torch.float32, device=accelerator.device)
    return float(accelerator.reduce(mean, reduction="mean"))  # every process's shard, not the main one's only
