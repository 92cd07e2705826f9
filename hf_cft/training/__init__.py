"""The accelerate trainer that produces the baselines CFT is applied to (AN, ignore, LL-R, Selective, CL).

``hf-cft train [config.yaml] [--args]`` (``accelerate launch -m hf_cft.cli train``); every argument is a field of
:class:`TrainArguments`. A validation split is held out from the training images (seeded, with its partial
labels) and chooses the best epoch; the test split is only evaluated at the end, for the report.

One module per job, imported downward only (a module imports those above it in this list, never below)::

    methods          the training methods: per-batch targets and weights of the loss, per-epoch refresh
    arguments        TrainArguments (the command line)
    transforms       the image transforms (trainer and pretraining)
    state            TrainData, TrainState, Run (a run's fixed context)
    model            the model built or loaded, its logits, the best model read back
    splits           the dataset, the validation hold-out, the metric categories, the loaders
    saving           the model folders written (through hf_cft.modeling.save.save_model)
    evaluation_loop  masked mAP / mAUC on a loader (scored by hf_cft.evaluation.score_split)
    checkpoints      per-epoch checkpoints and resume
    pretrain         the digits pretraining (``--init_from digits``)
    refresh          after an epoch: the model's scores handed to the method's refresh
    report           validation, the final report, the push
    loop             train() and its steps
"""

from __future__ import annotations

from .arguments import TrainArguments
from .checkpoints import CHECKPOINTS, checkpoint, complete_checkpoints, resume
from .evaluation_loop import evaluate_loader
from .loop import TrainParts, build_optimizer, build_schedule, make_accelerator, train, train_epoch
from .methods import METHOD_REGISTRY, METHODS, LossInputs, Method, method_loss
from .model import BEST, build_model, load_best, model_logits
from .pretrain import pretrain_backbone, pretrain_digits
from .refresh import refresh_after_epoch
from .report import final_report, push_best, score_best, validate
from .saving import save_best
from .splits import (
    SplitDataset,
    build_loaders,
    dataset_options,
    eval_columns,
    load_training_data,
    prepare_splits,
)
from .state import Run, TrainData, TrainState, initial_state
from .transforms import image_transforms

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "METHODS",
    "METHOD_REGISTRY",
    "LossInputs",
    "Method",
    "Run",
    "SplitDataset",
    "TrainArguments",
    "TrainData",
    "TrainParts",
    "TrainState",
    "build_loaders",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "checkpoint",
    "complete_checkpoints",
    "dataset_options",
    "eval_columns",
    "evaluate_loader",
    "final_report",
    "image_transforms",
    "initial_state",
    "load_best",
    "load_training_data",
    "make_accelerator",
    "method_loss",
    "model_logits",
    "prepare_splits",
    "pretrain_backbone",
    "pretrain_digits",
    "push_best",
    "refresh_after_epoch",
    "resume",
    "save_best",
    "score_best",
    "train",
    "train_epoch",
    "validate",
]
