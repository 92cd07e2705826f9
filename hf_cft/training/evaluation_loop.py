"""Masked mAP / mAUC of a model on a loader. Moved unchanged from the trainer; to be replaced by the shared
:mod:`hf_cft.evaluation`."""

from __future__ import annotations

import logging

import torch

from ..metrics import partial_auroc, partial_average_precision
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
    if columns is not None:
        s, y, m = s[:, columns], y[:, columns], m[:, columns]
    return {"map": partial_average_precision(s, y, m).value, "mauc": partial_auroc(s, y, m).value, "n": len(s)}
