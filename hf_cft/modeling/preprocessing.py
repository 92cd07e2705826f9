"""The image preprocessing a classifier's features are extracted with: an image processor, or timm's data config."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["has_timm_data_config", "missing_preprocessing_message", "processor_from_values"]


def processor_from_values(image_size: int | Sequence[int], image_mean: float | Sequence[float],
                          image_std: float | Sequence[float]):
    """A ``transformers.ViTImageProcessor``: resize to ``image_size`` (an int for a square, or ``(height, width)``),
    scale to [0, 1], normalize with ``image_mean`` / ``image_std`` (3 values, or one for every channel)."""
    from transformers import ViTImageProcessor

    sizes = [image_size] * 2 if isinstance(image_size, int) else [int(v) for v in image_size]
    if len(sizes) != 2 or any(v <= 0 for v in sizes):
        raise ValueError(f"`image_size` must be a positive int or (height, width), got {image_size!r}")
    mean, std = _three("image_mean", image_mean), _three("image_std", image_std)
    if any(v <= 0 for v in std):
        raise ValueError(f"`image_std` values must be > 0, got {image_std!r}")
    return ViTImageProcessor(size={"height": sizes[0], "width": sizes[1]}, image_mean=mean, image_std=std)


def _three(name: str, value) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"`{name}` needs 3 values (R, G, B) or one for all, got {value!r}")
    return values


def has_timm_data_config(model: nn.Module) -> bool:
    """Whether ``model`` (timm, or transformers' wrapper of a timm model) knows its preprocessing."""
    model = model.timm_model if hasattr(model, "timm_model") else model
    return bool(getattr(model, "pretrained_cfg", None))


def missing_preprocessing_message(where: str) -> str:
    """The error (or warning) when no preprocessing is known for the model ``where``, with the fixes."""
    return (
        f"no image preprocessing is known for {where}: no image processor was saved with it "
        "(preprocessor_config.json) or given, so the input size and normalization it was trained with are "
        "unknown and any guess gives wrong features. Fix: save an image processor with the model: "
        "processor.save_pretrained(<folder>); or pass one: CFTHead.from_pretrained(..., image_processor=...) "
        "or extract(..., image_processor=...); or give image_size, image_mean and image_std: "
        "head.set_preprocessing(image_size, image_mean, image_std) (on the command line: "
        "--image_size/--image_mean/--image_std)"
    )
