"""CFT-BP: full-batch Adam (or gradient descent) on the masked asymmetric loss, all rows of a block as one problem.

The loss of a block is the *sum* of the per-category losses and each category's loss depends only on
its own row, so the gradient of row c is the gradient of category c's loss alone; Adam's update is
element-wise, so one Adam over the B×(d+1) parameters takes exactly the steps of B independent Adams.
With a per-row best snapshot and per-row patience (:class:`BestTracker`) the block therefore returns what
B separate runs would — and so does any split of the block into groups run one after the other.

How a block is computed (one shared pass, or gathered rows in cache-sized groups) is chosen by
:mod:`hf_cft.engine.plan` (the variant's ``fit_view``): the shared pass arrives here as a dense view; a gathered
view whose rows do not fit the cache together is run group by group, each group's whole trajectory at once so
that its rows stay in the cache from one epoch to the next.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

import torch

from ...losses import asymmetric_loss_grad, aucm_loss, wmw_loss
from ..plan import bp_fit_view, bp_groups, sub_view
from ..registry import BlockTask, Variant, check_minimum, register_variant
from ..selection import BestTracker, Judge
from ..views import DenseView

__all__ = ["BP_LOSSES", "BP_OPTIMIZERS", "BPLoss", "BPOptimizer", "BPOptions", "run_bp"]

BPLoss = Literal["asl", "wmw", "aucm"]
BPOptimizer = Literal["adam", "gd"]
BP_LOSSES = typing.get_args(BPLoss)
BP_OPTIMIZERS = typing.get_args(BPOptimizer)


@dataclass
class BPOptions:
    """CFT-BP's options (``CFTConfig`` keywords)."""

    epochs: int = field(default=5000, metadata={"help": "bp: maximum full-batch Adam epochs."})
    lr: float = field(default=1e-4, metadata={"help": "bp: learning rate (of Adam, or of gradient descent)."})
    bp_optimizer: BPOptimizer = field(
        default="adam",
        metadata={"help": "bp: 'adam' (full-batch Adam, the paper's COCO setting) or 'gd' (full-batch gradient "
                  "descent, θ ← θ − lr·∇, the paper's CheXpert setting)."},
    )
    gamma_neg: float = field(default=4.0, metadata={"help": "bp: ASL focusing parameter of negatives (γ−)."})
    gamma_pos: float = field(default=0.0, metadata={"help": "bp: ASL focusing parameter of positives (γ+)."})
    clip: float = field(default=0.05, metadata={"help": "bp: ASL probability margin of negatives (0: none)."})
    bp_loss: BPLoss = field(
        default="asl",
        metadata={"help": "bp: 'asl' (asymmetric loss; γ=0, clip=0 is BCE), 'wmw' (Wilcoxon–Mann–Whitney AUC "
                  "approximation, Yan et al. 2003, p=2) or 'aucm' (AUC-M square loss, Yuan et al. 2021)."},
    )
    wmw_gamma: float = field(default=0.3, metadata={"help": "bp 'wmw': margin γ in (0, 1] on sigmoid scores."})
    aucm_margin: float = field(default=1.0, metadata={"help": "bp 'aucm': margin m on sigmoid scores."})

    def __post_init__(self) -> None:
        check_minimum(self, "epochs", 0)
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}")
        if self.bp_optimizer not in BP_OPTIMIZERS:
            raise ValueError(f"`bp_optimizer` must be 'adam' or 'gd', got {self.bp_optimizer!r}")
        if self.bp_loss not in BP_LOSSES:
            raise ValueError(f"`bp_loss` must be one of {BP_LOSSES}, got {self.bp_loss!r}")
        if not 0.0 < self.wmw_gamma <= 1.0:
            raise ValueError(f"`wmw_gamma` must be in (0, 1], got {self.wmw_gamma}")


def run_bp(task: BlockTask) -> None:
    """Fit a block of rows (``weight`` B×d, ``bias`` B) with Adam on ``bp_loss``; the task's tracker keeps them."""
    weight, bias, fit = task.weight, task.bias, task.fit
    n_cat = weight.shape[0]
    group = n_cat
    if getattr(fit, "kind", None) == "gathered" and n_cat > 1:
        group = bp_groups(n_cat, fit.length, fit.x.shape[-1], fit.x.element_size(), fit.x.device)
    if group >= n_cat:
        _fit_rows(task)
        return
    for start in range(0, n_cat, group):
        idx = torch.arange(start, min(n_cat, start + group), device=weight.device)
        part = _slice_tracker(task.tracker, idx, n_cat)
        judge = Judge(_slice_view(task.judge.view, idx), task.judge.metric)
        _fit_rows(dataclasses.replace(task, weight=weight[idx], bias=bias[idx], fit=sub_view(fit, idx), judge=judge,
                                      tracker=part))
        _merge_tracker(task.tracker, part, idx, n_cat)


JUDGE_EVERY = 8
"""Epochs whose rows are scored on the selection split in one batched call, at least (then handed to the tracker
one by one, in order, so each row still stops at its own epoch; epochs computed past the last row's stop are
discarded). :func:`judge_span` lengthens it up to :data:`JUDGE_EVERY_MAX` where the snapshots stay small."""

JUDGE_EVERY_MAX = 32
SNAPSHOT_BYTES = 16 * 2**20
"""The most the awaiting snapshots of a block may take (``rows × span × (d+1)`` floats)."""


def judge_span(n_rows: int, d: int, itemsize: int, patience: int | None) -> int:
    """Epochs per selection call: as many as fit :data:`SNAPSHOT_BYTES`, at most :data:`JUDGE_EVERY_MAX` and
    an eighth of the patience (so a stopped row wastes little), never fewer than :data:`JUDGE_EVERY`. Measured
    at C = 80 in groups of two rows (`docs/benchmarks.md`): 32 epochs per call 0.034 s per row, 8 per call
    0.039–0.065 (each call scores the selection rows, which pushes the group's fit rows out of the cache)."""
    span = SNAPSHOT_BYTES // max(1, n_rows * (d + 1) * itemsize)
    if patience:
        span = min(span, patience // 8)
    return int(max(JUDGE_EVERY, min(JUDGE_EVERY_MAX, span)))


def _fit_rows(task: BlockTask) -> None:
    """The trajectory of the task's rows (a whole block, or one group of it): full-batch Adam (or gradient
    descent), each epoch's rows handed to its tracker.

    Weight and bias are one ``B × (d+1)`` leaf; Adam is written out with exactly the operations of
    ``torch.optim.Adam`` (defaults: β = (0.9, 0.999), ε = 1e-8), which are element-wise, so the steps are those
    of one Adam per row, without the optimizer's per-step bookkeeping.
    """
    fit, judge, tracker, config, progress = task.fit, task.judge, task.tracker, task.options, task.progress
    n_cat, d = task.weight.shape
    theta = torch.cat([task.weight.detach(), task.bias.detach().unsqueeze(1)], dim=1).requires_grad_(True)
    gd = config.bp_optimizer == "gd"
    exp_avg, exp_avg_sq = (None, None) if gd else (torch.zeros_like(theta), torch.zeros_like(theta))
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, config.lr
    fit_labels = fit.labels.squeeze(1).to(theta.dtype)  # converted once, not every epoch
    fit_mask = fit.mask.squeeze(1).to(theta.dtype)
    every = judge_span(n_cat, d, theta.element_size(), task.config.patience)
    snaps = torch.empty(n_cat, every, d + 1, dtype=theta.dtype, device=theta.device)
    done, epoch = 0, 0
    while done < config.epochs:
        span = min(every, config.epochs - done)
        for j in range(span):
            epoch = done + j + 1
            grad = _gradient(theta, fit, fit_labels, fit_mask, config)
            with torch.no_grad():
                if gd:  # plain full-batch gradient descent
                    theta.sub_(grad, alpha=lr)
                else:  # torch.optim.Adam's single-tensor step, operation for operation
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    step_size = lr / (1 - beta1**epoch)
                    denom = (exp_avg_sq.sqrt() / (1 - beta2**epoch) ** 0.5).add_(eps)
                    theta.addcdiv_(exp_avg, denom, value=-step_size)
                snaps[:, j] = theta
        with torch.no_grad():
            cand = snaps[:, :span]
            scores = judge(cand[..., :d], cand[..., d])  # B × span, one batched call
            for j in range(span):
                step = done + j + 1
                running = tracker.update(step, cand[:, j, :d], cand[:, j, d], scores[:, j])
                if progress is not None:
                    progress(step)
                if not running:
                    return
        done += span


def _gradient(theta: torch.Tensor, fit, labels, mask, config: BPOptions) -> torch.Tensor:
    """d(block loss)/dθ, B × (d+1). ASL in closed form: the two products and a few element-wise passes, no
    graph; the AUC surrogates through autograd."""
    d = theta.shape[1] - 1
    if config.bp_loss == "asl":
        with torch.no_grad():
            logits = fit.scores(theta[:, :d].unsqueeze(1), theta[:, d].unsqueeze(1)).squeeze(1)  # B × L
            g = asymmetric_loss_grad(logits, labels, mask, gamma_neg=config.gamma_neg, gamma_pos=config.gamma_pos,
                                     clip=config.clip)
            grad = torch.empty_like(theta)
            if fit.kind == "gathered":  # B × L × d
                grad[:, :d] = torch.bmm(g.unsqueeze(1), fit.x).squeeze(1)
            else:  # the shared n × d matrix
                grad[:, :d] = g @ fit.x
            grad[:, d] = g.sum(-1)
        return grad
    theta.grad = None
    logits = fit.scores(theta[:, :d].unsqueeze(1), theta[:, d].unsqueeze(1)).squeeze(1)
    if config.bp_loss == "wmw":
        loss = wmw_loss(logits, labels, mask, gamma=config.wmw_gamma).sum()
    else:
        loss = aucm_loss(logits, labels, mask, margin=config.aucm_margin).sum()
    loss.backward()
    return theta.grad


def _slice_view(view, idx: torch.Tensor):
    """Rows ``idx`` of a selection view (gathered: trimmed copy; dense: the shared matrix, their columns)."""
    if view.kind == "gathered":
        return sub_view(view, idx)
    out = DenseView.__new__(DenseView)
    out.x, out.labels, out.mask = view.x, view.labels[idx], view.mask[idx]
    return out


def _per_row(tracker, n_cat: int):
    return [(k, v) for k, v in vars(tracker).items() if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n_cat]


def _slice_tracker(tracker: BestTracker, idx: torch.Tensor, n_cat: int) -> BestTracker:
    """A tracker of rows ``idx`` alone (every per-row state copied; grid and patience shared)."""
    part = copy.copy(tracker)
    for k, v in _per_row(tracker, n_cat):
        setattr(part, k, v[idx].clone())
    return part


def _merge_tracker(tracker: BestTracker, part: BestTracker, idx: torch.Tensor, n_cat: int) -> None:
    for k, v in _per_row(tracker, n_cat):
        v[idx] = getattr(part, k)


register_variant(Variant(
    name="bp", runner=run_bp, options=BPOptions,
    population=lambda o: 1, max_steps=lambda o: o.epochs,
    card_fields=("epochs", "lr", "bp_optimizer", "gamma_neg", "gamma_pos", "clip", "bp_loss"),
    fit_view=bp_fit_view,
    summary="full-batch Adam on the masked asymmetric loss or an AUC surrogate (paper §III-C)",
))
