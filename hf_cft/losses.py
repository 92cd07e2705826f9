"""Losses on logits with partial labels, shared by the CFT engine and the trainer."""

from __future__ import annotations

import torch

__all__ = ["aucm_loss", "asymmetric_loss", "wmw_loss"]


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


def wmw_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
             gamma: float = 0.3) -> torch.Tensor:
    """Wilcoxon–Mann–Whitney AUC approximation (Yan et al., 2003) with p = 2, per row of the last dimension.

    With ``h = sigmoid(logits)``: mean over known positive/negative pairs (i, j) of
    ``(gamma - (h_i - h_j))²`` where ``h_i - h_j < gamma``, else 0. Computed exactly without forming the
    pairs: negatives sorted once, each positive's share from suffix sums (O(L log L) per row).

    Returns:
        One value per leading index (shape ``logits.shape[:-1]``); 0 for rows without both classes.
    """
    h = torch.sigmoid(logits)
    known = torch.ones_like(h, dtype=torch.bool) if mask is None else mask.expand_as(h).bool()
    pos = (labels.expand_as(h) > 0) & known
    neg = (~(labels.expand_as(h) > 0)) & known
    q, _ = torch.sort(torch.where(neg, h, torch.full_like(h, -1.0)), dim=-1)  # non-negatives first, as -1
    q0 = torch.where(q < -0.5, torch.zeros_like(q), q)
    zero = torch.zeros_like(q[..., :1])
    s1 = torch.cat([q0.flip(-1).cumsum(-1).flip(-1), zero], dim=-1)  # suffix sums of negatives
    s2 = torch.cat([(q0 * q0).flip(-1).cumsum(-1).flip(-1), zero], dim=-1)
    length = q.shape[-1]
    idx = torch.searchsorted(q.detach().contiguous(), (h - gamma).detach().contiguous(), right=True)
    cnt = (length - idx).to(h.dtype)  # negatives with h_j > h_i - gamma
    c = gamma - h
    per_pos = cnt * c * c + 2 * c * torch.gather(s1, -1, idx) + torch.gather(s2, -1, idx)
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    total = (per_pos * pos).sum(-1)
    return torch.where((n_pos > 0) & (n_neg > 0), total / (n_pos * n_neg).clamp(min=1), torch.zeros_like(total))


def aucm_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
              margin: float = 1.0) -> torch.Tensor:
    """AUC-M square loss (Yuan et al., 2021), full batch, per row of the last dimension.

    The min-max objective ``E[(h-a)²|+] + E[(h-b)²|-] + 2α(m - h⁺ + h⁻) - α²`` (``h = sigmoid``, α ≥ 0) has
    closed-form inner solutions on a full batch (a, b the class means, α = (m - mean h⁺ + mean h⁻)₊), giving
    ``Var(h|+) + Var(h|-) + (m - mean h⁺ + mean h⁻)₊²``.
    """
    h = torch.sigmoid(logits)
    known = torch.ones_like(h) if mask is None else mask.expand_as(h).to(h.dtype)
    pos = (labels.expand_as(h) > 0).to(h.dtype) * known
    neg = known - pos
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    mp = (h * pos).sum(-1) / n_pos.clamp(min=1)
    mn = (h * neg).sum(-1) / n_neg.clamp(min=1)
    vp = (((h - mp.unsqueeze(-1)) ** 2) * pos).sum(-1) / n_pos.clamp(min=1)
    vn = (((h - mn.unsqueeze(-1)) ** 2) * neg).sum(-1) / n_neg.clamp(min=1)
    loss = vp + vn + torch.clamp(margin - mp + mn, min=0) ** 2
    return torch.where((n_pos > 0) & (n_neg > 0), loss, torch.zeros_like(loss))
