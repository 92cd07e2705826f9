"""Losses on logits with partial labels, shared by the CFT engine and the trainer."""

from __future__ import annotations

import torch

__all__ = ["asymmetric_loss"]


def asymmetric_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    reduce_dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., 2021) summed over the known entries.

    With ``p = sigmoid(logits)`` and the shifted probability ``p_m = max(p - clip, 0)``:
    ``L+ = (1 - p)^gamma_pos * log(p)`` and ``L- = p_m^gamma_neg * log(1 - p_m)``; the loss is
    ``-sum(y * L+ + (1 - y) * L-)`` over entries where ``mask`` is True. ``gamma_neg = gamma_pos = 0`` and
    ``clip = 0`` give binary cross-entropy (summed). The focusing weights are differentiated like the rest.

    Args:
        logits: raw scores, any shape.
        labels: 1 positive, 0 negative, broadcastable to ``logits``.
        mask: True where the label is known (None: all known).
        reduce_dim: dimensions to sum over (None: all, giving a scalar).
    """
    labels = labels.to(logits.dtype)
    p = torch.sigmoid(logits)
    loss_pos = labels * torch.log(p.clamp(min=eps))
    p_neg = (p - clip).clamp(min=0) if clip and clip > 0 else p
    loss_neg = (1 - labels) * torch.log((1 - p_neg).clamp(min=eps))
    if gamma_pos:
        loss_pos = loss_pos * (1 - p).pow(gamma_pos)
    if gamma_neg:
        loss_neg = loss_neg * p_neg.pow(gamma_neg)
    loss = -(loss_pos + loss_neg)
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    if reduce_dim is None:
        return loss.sum()
    return loss.sum(dim=reduce_dim)
