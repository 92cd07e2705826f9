"""``predict_labels``: the label set of each image at a calibrated model's saved per-category thresholds."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from .decisions import THRESHOLDS_ATTRIBUTE, result_thresholds
from .features import preprocessing_of
from .head import CFTHead

logger = logging.getLogger(__name__)

__all__ = ["model_thresholds", "predict_labels", "predict_probabilities"]


def _head(model_or_path, **load_kwargs) -> CFTHead:
    if isinstance(model_or_path, CFTHead):
        return model_or_path
    if isinstance(model_or_path, torch.nn.Module):
        return CFTHead(model_or_path.eval())
    return CFTHead.from_pretrained(os.fspath(model_or_path), **load_kwargs)


def model_thresholds(head: CFTHead) -> list[float] | None:
    """The thresholds saved with a model: ``config.cft_thresholds`` (transformers) or, for a timm model, those of
    its ``cft_report.json``; None when it has none."""
    saved = getattr(getattr(head.model, "config", None), THRESHOLDS_ATTRIBUTE, None)
    return list(saved) if saved is not None else result_thresholds(head.cft_report)


def _open(image):
    from PIL import Image

    return Image.open(image) if isinstance(image, (str, os.PathLike)) else image


@torch.no_grad()
def predict_probabilities(model_or_path, images: Sequence, batch_size: int = 32, **load_kwargs) -> np.ndarray:
    """N×C probabilities (``σ(logits)``) of images (paths or PIL images) under a model (a folder, a Hub id, a
    :class:`~hf_cft.CFTHead` or a loaded classifier), preprocessed as it was trained."""
    head = _head(model_or_path, **load_kwargs)
    prepare, _ = preprocessing_of(head, head.image_processor)
    device = next(head.model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = prepare([_open(im) for im in images[start:start + batch_size]]).to(device)
        out.append(torch.sigmoid(head.forward_with_features(batch)[1].float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, head.num_labels), dtype=np.float32)


def predict_labels(model_or_path, images: Sequence, thresholds: Sequence[float] | None = None,
                   batch_size: int = 32, **load_kwargs) -> list[list[str]]:
    """The labels of each image whose probability reaches its category's threshold (the model's saved
    ``cft_thresholds`` unless ``thresholds`` are given), in label order. ``load_kwargs`` (``revision``,
    ``token``, ...) go to :meth:`CFTHead.from_pretrained`."""
    head = _head(model_or_path, **load_kwargs)
    t = model_thresholds(head) if thresholds is None else list(thresholds)
    if t is None:
        raise ValueError("this model has no saved thresholds (`cft_thresholds` in its config.json): calibrate it "
                         "with hf_cft (recipes/cft.py), or pass `thresholds=` (one per label)")
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (head.num_labels,) or np.isnan(t).any():
        got = f"{t.shape[0] if t.ndim else 'a scalar'} value(s)" + (" with NaN" if np.isnan(t).any() else "")
        raise ValueError(f"`thresholds` must be {head.num_labels} numbers (one per label, no NaN), got {got}")
    names = head.label_names() or [str(i) for i in range(head.num_labels)]
    probs = predict_probabilities(head, images, batch_size)
    return [[names[j] for j in np.flatnonzero(row >= t)] for row in probs]
