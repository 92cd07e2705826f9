"""CFT-BP: full-batch Adam on the masked asymmetric loss, all rows of a block as one problem.

The loss of a block is the *sum* of the per-category losses and each category's loss depends only on
its own row, so the gradient of row c is the gradient of category c's loss alone; Adam's update is
element-wise, so one Adam over the B×(d+1) parameters takes exactly the steps of B independent Adams.
With a per-row best snapshot and per-row patience (:class:`BestTracker`) the block therefore returns what
B separate runs would.
"""

from __future__ import annotations

import torch

from ..losses import asymmetric_loss, aucm_loss, wmw_loss
from .config import CFTConfig
from .selection import BestTracker, Judge

__all__ = ["run_bp"]


def run_bp(weight: torch.Tensor, bias: torch.Tensor, fit, judge: Judge, tracker: BestTracker, config: CFTConfig,
           seed: int = 0, progress=None, categories: list[int] | None = None) -> None:
    """Fit a block of rows (``weight`` B×d, ``bias`` B) with Adam on ``config.bp_loss``; ``tracker`` keeps them."""
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=config.lr)
    fit_labels, fit_mask = fit.labels.squeeze(1), fit.mask.squeeze(1)
    for epoch in range(1, config.epochs + 1):
        opt.zero_grad(set_to_none=True)
        logits = fit.scores(w.unsqueeze(1), b.unsqueeze(1)).squeeze(1)
        if config.bp_loss == "asl":
            loss = asymmetric_loss(logits, fit_labels, fit_mask, gamma_neg=config.gamma_neg,
                                   gamma_pos=config.gamma_pos, clip=config.clip)
        elif config.bp_loss == "wmw":
            loss = wmw_loss(logits, fit_labels, fit_mask, gamma=config.wmw_gamma).sum()
        else:
            loss = aucm_loss(logits, fit_labels, fit_mask, margin=config.aucm_margin).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            running = tracker.update(epoch, w, b, judge(w.detach(), b.detach()))
        if progress is not None:
            progress(epoch)
        if not running:
            break
