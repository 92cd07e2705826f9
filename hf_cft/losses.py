"""Losses on logits with partial labels, shared by the CFT engine and the trainer."""

from __future__ import annotations

import math

import torch

__all__ = [
    "assume_negative",
    "asymmetric_loss",
    "asymmetric_loss_grad",
    "aucm_loss",
    "curriculum_pseudo_labels",
    "ll_r_keep",
    "selective_weights",
    "uncertain_lsr",
    "wmw_loss",
]


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
        reduce_dim: dimensions to sum over (None: all, giving a scalar; ``()``: none, the per-entry loss —
            torch's own ``sum(dim=())`` would sum everything).
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
    if isinstance(reduce_dim, (tuple, list)) and len(reduce_dim) == 0:
        return loss
    return loss.sum(dim=reduce_dim)


def asymmetric_loss_grad(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                         gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                         eps: float = 1e-8) -> torch.Tensor:
    """Gradient of :func:`asymmetric_loss` (summed) with respect to ``logits``, in closed form.

    The derivative autograd takes of the same expression, clamps included (a clamped value passes no
    gradient below its bound), without building a graph: CFT-BP calls it every epoch for every block.
    """
    y = labels.to(logits.dtype)
    p = torch.sigmoid(logits)
    if not gamma_pos and gamma_neg >= 1 and clip and clip >= max(eps, torch.finfo(p.dtype).eps):
        return _asl_grad_shifted(p, y, mask, gamma_neg, clip, eps)
    one_minus_p = 1 - p
    # positives: d/dp [y · log(max(p, eps)) · (1 − p)^γ+]
    pc = p.clamp(min=eps)
    d_pos = torch.where(p >= eps, 1 / pc, torch.zeros_like(p))
    if gamma_pos:
        d_pos = d_pos * one_minus_p.pow(gamma_pos) - torch.log(pc) * (gamma_pos * one_minus_p.pow(gamma_pos - 1))
    # negatives: d/dp [(1 − y) · log(max(1 − p_m, eps)) · p_m^γ−], p_m = max(p − clip, 0)
    if clip and clip > 0:
        shifted = p - clip
        p_neg = shifted.clamp(min=0)
        through = shifted >= 0
    else:
        p_neg, through = p, None
    q = 1 - p_neg
    qc = q.clamp(min=eps)
    d_neg = torch.where(q >= eps, -1 / qc, torch.zeros_like(p))
    if gamma_neg:
        d_neg = d_neg * p_neg.pow(gamma_neg) + torch.log(qc) * (gamma_neg * p_neg.pow(gamma_neg - 1))
    if through is not None:
        d_neg = torch.where(through, d_neg, torch.zeros_like(d_neg))
    grad = -(y * d_pos + (1 - y) * d_neg) * (one_minus_p * p)
    if mask is not None:
        grad = grad * mask.to(grad.dtype)
    return grad


def _asl_grad_shifted(p: torch.Tensor, y: torch.Tensor, mask, gamma_neg: float, clip: float,
                      eps: float) -> torch.Tensor:
    """:func:`asymmetric_loss_grad` in half the operations for the common case (γ+ = 0, γ− ≥ 1, clip ≥ eps and
    ≥ the dtype's machine epsilon; the defaults). With p_m = max(p − clip, 0), q = 1 − p_m ≥ clip > 0 (1 − clip is
    below 1 in the dtype) never meets the eps clamp, and p_m^(γ−−1) is 0 wherever p < clip, so no mask is needed
    there. Positives: −(1 − p) (0 where p < eps, as the clamp gives); negatives: p_m^(γ−−1)·(p_m / q −
    γ−·log q)·p(1 − p). Labels in {0, 1} are taken exactly (``lerp``)."""
    s = p * (1 - p)
    pm = (p - clip).clamp_(min=0)
    q = 1 - pm
    neg = pm.pow(gamma_neg - 1) if gamma_neg != 1 else torch.ones_like(pm)
    neg.mul_(pm / q - gamma_neg * torch.log(q)).mul_(s)
    pos = (p - 1).masked_fill_(p < eps, 0.0)
    grad = torch.lerp(neg, pos, y)
    if mask is not None:
        grad = grad * mask.to(grad.dtype)
    return grad


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


# --- pseudo-labelling schemes of the baselines (the trainer) ----------------------------------------------------


def assume_negative(labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Assume Negative: every unknown label becomes a negative; all entries count."""
    return torch.where(mask, labels.float(), torch.zeros_like(labels, dtype=torch.float)), torch.ones_like(mask)


def ll_r_keep(loss_unknown: torch.Tensor, unknown: torch.Tensor, epoch: int, delta_rel: float) -> torch.Tensor:
    """Large Loss Rejection (Kim et al., 2022): which unknown-as-negative entries keep their loss.

    At epoch ``epoch`` (1-based) the ``ceil(delta_rel · (epoch − 1) · B · C)`` largest losses among the unknown
    entries of the batch (a share of all batch × class entries, as in the reference code) are rejected; the
    first epoch is unchanged. Returns a boolean keep-mask of the batch's shape.
    """
    keep = torch.ones_like(unknown, dtype=torch.bool)
    k = math.ceil(delta_rel * max(epoch - 1, 0) * unknown.numel())
    k = min(k, int(unknown.sum()))
    if k <= 0:
        return keep
    scores = torch.where(unknown, loss_unknown.detach(), torch.full_like(loss_unknown, -float("inf")))
    idx = torch.topk(scores.flatten(), k).indices
    keep.view(-1)[idx] = False
    return keep


def selective_weights(probs: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor, prior_threshold: float = 0.05,
                      likelihood_topk: int = 5) -> torch.Tensor:
    """Class-aware selective loss (Ben-Baruch et al., 2022): which unknown entries count as negatives.

    An unknown entry is *ignored* when its class's estimated prior exceeds ``prior_threshold`` (the class is
    common, so an unknown is often a missed positive). Of the remaining unknown entries (of rare classes), the
    ``likelihood_topk × B`` with the highest predicted probability over the whole batch (B images × classes,
    flattened; any number of them may fall in one class) are ignored as likely positives, as in the authors'
    reference code (PartialLabelingCSL, ``negative_backprop_fun_jit``). The other unknown entries are negatives;
    known entries always count. Returns a float weight mask.
    """
    unknown = ~mask
    counted = unknown & (prior.view(1, -1) <= prior_threshold)
    # entries not counted score -1, below every probability: a k past their number changes nothing (no sync)
    k = min(likelihood_topk * probs.shape[0], probs.numel())
    if k > 0:
        scores = torch.where(counted, probs.detach(), torch.full_like(probs, -1.0)).flatten()
        likely = torch.zeros_like(counted).flatten()
        likely[torch.topk(scores, k).indices] = True
        counted &= ~likely.view_as(counted)
    return (mask | counted).float()


def curriculum_pseudo_labels(probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, mode: str = "score",
                             threshold_pos: float = 0.95, threshold_neg: float = 0.05):
    """Curriculum Labeling (Durand et al., 2019): pseudo-labels for unknown entries from the model's scores.

    ``mode="score"``: an unknown entry with probability ≥ ``threshold_pos`` becomes positive, ≤
    ``threshold_neg`` negative; ``mode="positive"``: only the positive rule applies. Known labels are kept.
    Returns ``(labels, mask)`` including the pseudo-labels.
    """
    if mode not in ("score", "positive"):
        raise ValueError(f"`mode` must be 'score' or 'positive', got {mode!r}")
    unknown = ~mask
    pos = unknown & (probs >= threshold_pos)
    neg = unknown & (probs <= threshold_neg) if mode == "score" else torch.zeros_like(unknown)
    new_labels = torch.where(pos, torch.ones_like(labels), labels)
    new_labels = torch.where(neg, torch.zeros_like(labels), new_labels)
    return new_labels, mask | pos | neg


def uncertain_lsr(labels: torch.Tensor, mask: torch.Tensor, uncertain: torch.Tensor, low: float = 0.55,
                  high: float = 0.85, generator: torch.Generator | None = None):
    """U-LSR (CheXpert): an uncertain label becomes a soft label drawn uniformly from [low, high]."""
    soft = torch.rand(labels.shape, generator=generator, device=labels.device) * (high - low) + low
    return torch.where(uncertain, soft, labels.float()), mask | uncertain
