"""The end of each epoch and of the run: validation (the best model kept), the report on ``report_split``, the push."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import torch

from ..card import baseline_card
from ..constants import MODEL_CARD_NAME, TRAIN_REPORT_NAME
from ..data import label_arrays
from ..data.loading import loader_options
from ..hub import push_folder
from ..io import write_atomic, write_json
from .arguments import TrainArguments
from .evaluation_loop import evaluate_loader
from .model import BEST, load_best
from .saving import save_best
from .splits import SplitDataset
from .state import Run, TrainState
from .transforms import image_transforms

logger = logging.getLogger(__name__)

__all__ = ["final_report", "push_best", "score_best", "validate"]


def validate(run: Run, model, loader, state: TrainState, epoch: int, loss: float) -> None:
    """Score the epoch on validation, keep it in the history and save the model when it is the best so far."""
    args, accelerator, data, preprocessing = run.args, run.accelerator, run.data, run.preprocessing
    names = data.names
    val = evaluate_loader(accelerator, loader, model, data.eval_columns)
    score = val["map"] if args.metric == "ap" else val["mauc"]
    improved = state.best_score is None or score > state.best_score
    state.history.append({"epoch": epoch, "loss": loss, **val})
    if improved:
        state.best_score, state.best_epoch = score, epoch
        save_best(accelerator, model, os.path.join(args.output_dir, BEST), names, preprocessing)
    state.epoch = epoch
    accelerator.print(f"epoch {epoch}: validation mAP {100 * val['map']:.2f} mAUC {100 * val['mauc']:.2f}"
                      + (" (best)" if improved else ""))
    if run.trackers:
        run.trackers.log({"train/loss": loss, "val/map": val["map"], "val/mauc": val["mauc"]}, step=epoch)


def final_report(run: Run, state: TrainState) -> dict:
    """The run's report, with the best model's scores on ``report_split``; written beside it (main process)."""
    args, accelerator, data = run.args, run.accelerator, run.data
    report = {"best_epoch": state.best_epoch, "best_validation": state.best_score, "history": state.history,
              "dataset": args.dataset, "dataset_config": data.dataset_config,
              # the images the model never trained on: CFT selects on these (hf_cft.recipe, selection "auto")
              "validation_rows": data.val_rows.tolist(), "train_rows": len(data.train)}
    split = args.report_split
    if split and split in data.ds:
        report[split] = score_best(run, data.ds[split])
        accelerator.print(f"{split} (best epoch {state.best_epoch}): mAP {100 * report[split]['map']:.2f} mAUC "
                          f"{100 * report[split]['mauc']:.2f}")
        if run.trackers:
            run.trackers.log({f"{split}/map": report[split]["map"], f"{split}/mauc": report[split]["mauc"]},
                             step=state.best_epoch)
    if accelerator.is_main_process:
        for folder in (args.output_dir, os.path.join(args.output_dir, BEST)):
            write_json(os.path.join(folder, TRAIN_REPORT_NAME), report, indent=2)
        repo = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
        card = baseline_card(report, args.method, repo, len(run.data.names))
        write_atomic(os.path.join(args.output_dir, BEST, MODEL_CARD_NAME), str(card))
    return report


def score_best(run: Run, split) -> dict:
    """The best model's masked mAP / mAUC on a dataset split (evaluation transform), over the run's categories."""
    args, accelerator = run.args, run.accelerator
    size, mean, std = run.preprocessing
    best = accelerator.prepare(load_best(args))
    labels, mask = label_arrays(split)
    data = SplitDataset(split, np.arange(len(split)), image_transforms(size, mean, std, False, False),
                        labels.astype(np.float32), mask, np.zeros_like(mask))
    loader = accelerator.prepare(torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, **loader_options(args.num_workers, accelerator.device)))
    return evaluate_loader(accelerator, loader, best, run.data.eval_columns)


def push_best(args: TrainArguments) -> str:
    """Upload the best model with its card to ``hub_model_id`` (default: the output folder's name) in one commit,
    an existing card merged (:func:`hf_cft.hub.push_folder`); returns the commit URL."""
    repo = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    best = os.path.join(args.output_dir, BEST)
    return push_folder(repo, lambda folder: shutil.copytree(best, folder),
                       commit_message=f"{args.method} baseline trained with hf_cft")
