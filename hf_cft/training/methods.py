"""The training methods (Assume Negative, ignore, LL-R, Selective, Curriculum Labeling): per batch, the targets and
per-entry weights of the asymmetric loss; after an epoch, what a method refreshes from the model's scores.

A method is one :class:`Method` in :data:`METHOD_REGISTRY`; ``--method`` takes its key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..losses import (
    assume_negative,
    asymmetric_loss,
    curriculum_pseudo_labels,
    ll_r_keep,
    selective_weights,
    uncertain_lsr,
)

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "METHOD_REGISTRY", "LossInputs", "Method", "method_loss"]


@dataclass
class LossInputs:
    """One batch as a method reads it: labels and mask (U-LSR applied), the ASL settings ``(γ−, γ+, clip)``."""

    args: Any  # TrainArguments
    logits: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    batch: dict
    epoch: int
    state: Any  # TrainState (hf_cft.training.state, which imports this module's METHODS)
    asl: tuple[float, float, float]


@dataclass(frozen=True)
class Method:
    """A training method: ``targets`` gives a batch's ``(labels, weights)`` for the per-entry ASL; ``refresh``
    (optional) updates the state after an epoch from the model's probabilities on the training rows."""

    targets: Callable[[LossInputs], tuple[torch.Tensor, torch.Tensor]]
    refresh: Callable[[Any, torch.Tensor, torch.Tensor, Any], None] | None = None


def _known_only(x: LossInputs):
    """ignore: only the known entries count."""
    return x.labels, x.mask.float()


def _assume_negative(x: LossInputs):
    """AN: every unknown label is a negative."""
    y, ones = assume_negative(x.labels, x.mask)
    return y, ones.float()


def _large_loss_rejection(x: LossInputs):
    """LL-R: AN, with the largest losses of unknown entries rejected, more each epoch."""
    gn, gp, cl = x.asl
    y_an, _ = assume_negative(x.labels, x.mask)
    per = asymmetric_loss(x.logits, y_an, None, gn, gp, cl, reduce_dim=())
    return y_an, ll_r_keep(per, ~x.mask, x.epoch, x.args.delta_rel).float()


def _selective(x: LossInputs):
    """Selective: unknowns of common classes and the batch's likeliest unknowns are ignored, the rest negative."""
    with torch.no_grad():
        probs = torch.sigmoid(x.logits)
    weights = selective_weights(probs, x.mask, x.state.prior.to(x.logits.device), x.args.prior_threshold,
                                x.args.likelihood_topk)
    return torch.where(x.mask, x.labels, torch.zeros_like(x.labels)), weights


def _curriculum(x: LossInputs):
    """CL: the known labels and the pseudo-labels given so far, read by image index; only those count."""
    idx = x.batch["index"].cpu()
    y = x.state.pseudo["labels"][idx].to(x.labels.device)
    m = x.state.pseudo["mask"][idx].to(x.mask.device)
    return y, m.float()


def _refresh_prior(args, probs: torch.Tensor, idx: torch.Tensor, state) -> None:
    """Selective: the class prior becomes the model's mean probability over the training rows."""
    state.prior.copy_(probs.mean(0))


def _refresh_pseudo_labels(args, probs: torch.Tensor, idx: torch.Tensor, state) -> None:
    """CL: pseudo-labels accumulate, as Curriculum Labeling (Durand et al., 2019) adds labels over its rounds:
    entries still unknown may get one, those given one in an earlier epoch (and the known ones) keep theirs."""
    pseudo = state.pseudo
    y0, m0 = pseudo["labels"][idx], pseudo["mask"][idx]  # the known labels and every earlier pseudo-label
    new_y, new_m = curriculum_pseudo_labels(probs, y0, m0, args.cl_mode, args.cl_threshold_pos, args.cl_threshold_neg)
    pseudo["labels"][idx] = new_y
    pseudo["mask"][idx] = new_m


METHOD_REGISTRY: dict[str, Method] = {
    "an": Method(_assume_negative),
    "ignore": Method(_known_only),
    "ll_r": Method(_large_loss_rejection),
    "selective": Method(_selective, refresh=_refresh_prior),
    "cl": Method(_curriculum, refresh=_refresh_pseudo_labels),
}
METHODS = tuple(METHOD_REGISTRY)


def method_loss(args, logits: torch.Tensor, batch: dict, epoch: int, state,
                lsr_gen: torch.Generator | None = None) -> torch.Tensor:
    """The loss of a batch under ``args.method`` (AN, ignore, LL-R, Selective, CL): ASL weighted per entry,
    summed and divided by the batch size."""
    y, m = batch["labels"].float(), batch["label_mask"]
    if args.uncertain_policy == "u_lsr":
        y, m = uncertain_lsr(y, m, batch["uncertain"], args.lsr_low, args.lsr_high, lsr_gen)
    asl = (args.gamma_neg, args.gamma_pos, args.clip) if args.loss == "asl" else (0.0, 0.0, 0.0)
    y, weights = METHOD_REGISTRY[args.method].targets(LossInputs(args, logits, y, m, batch, epoch, state, asl))
    loss = asymmetric_loss(logits, y, None, *asl, reduce_dim=()) * weights
    return loss.sum() / max(1, logits.shape[0])
