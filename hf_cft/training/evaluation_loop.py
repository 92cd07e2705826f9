"""Masked mAP / mAUC of a model on a loader, scored by :func:`hf_cft.evaluation.score_split`."""

from __future__ import annotations

import logging

import torch

from ..evaluation import score_split
from .model import model_logits

logger = logging.getLogger(__name__)

__all__ = ["evaluate_loader"]


def evaluate_loader(accelerator, loader, model, columns: list[int] | None = None) -> dict:
    """Masked mAP / mAUC of ``model`` on a loader (every process's share gathered, padding dropped), averaged
    over ``columns`` (default: every category)."""
    model.eval()
    outs, ys, ms = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = model_logits(model, batch["pixel_values"])
            logits, y, m = accelerator.gather_for_metrics((logits, batch["labels"], batch["label_mask"]))
            outs.append(logits.float().cpu()), ys.append(y.cpu()), ms.append(m.cpu())
    s, y, m = torch.cat(outs), torch.cat(ys), torch.cat(ms)
    scores = score_split(s, y, m, columns)
    return {"map": scores.ap.value, "mauc": scores.auroc.value, "n": len(s)}
