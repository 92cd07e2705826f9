"""The trained rows a calibrated model replaced, kept beside it: ``cft_original_head.safetensors``.

A small file (``weight`` C×d and ``bias`` C, float32, in the layout of :func:`hf_cft.modeling.heads.read_rows`)
that lets a reader compare a calibrated model with the model it was made from without downloading that one:
``sigmoid(features @ weight.T + bias)`` are the probabilities before CFT. Plain ``from_pretrained`` never reads it.
"""

from __future__ import annotations

import logging

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..constants import ORIGINAL_HEAD_NAME
from .load import model_file

logger = logging.getLogger(__name__)

__all__ = ["ORIGINAL_HEAD_NAME", "original_head_file", "read_original_head"]


def original_head_file(weight: torch.Tensor, bias: torch.Tensor):
    """An extra file for :class:`hf_cft.modeling.save.SaveOptions`: a function that writes ``weight`` (C×d) and
    ``bias`` (C) as float32 safetensors at the path it is given."""
    tensors = {"weight": torch.as_tensor(weight).detach().float().cpu().contiguous(),
               "bias": torch.as_tensor(bias).detach().float().cpu().contiguous()}
    if tensors["weight"].ndim != 2 or tuple(tensors["bias"].shape) != (tensors["weight"].shape[0],):
        raise ValueError(f"the original head needs weight C×d and bias C, got {tuple(tensors['weight'].shape)} and "
                         f"{tuple(tensors['bias'].shape)}")
    return lambda path: save_file(tensors, path, metadata={"format": "pt"})


def read_original_head(name_or_path: str, shape: tuple[int, int] | None = None, revision: str | None = None,
                       token: str | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(weight, bias)`` of a calibrated folder's or Hub repo's ``cft_original_head.safetensors``; None when it
    has none. ``shape`` (C, d), when given, must be the weight's: a file that does not fit the model, or cannot be
    read, is ignored with a warning (the model itself loads as before)."""
    path = model_file(name_or_path, ORIGINAL_HEAD_NAME, revision, token)
    if path is None:
        return None
    try:
        tensors = load_file(path)
        weight, bias = tensors["weight"], tensors["bias"]
    except (SafetensorError, OSError, KeyError) as err:
        logger.warning("ignoring %s of %s: it cannot be read (%s)", ORIGINAL_HEAD_NAME, name_or_path, err)
        return None
    if (shape is not None and tuple(weight.shape) != tuple(shape)) or tuple(bias.shape) != (weight.shape[0],):
        logger.warning("ignoring %s of %s: weight %s and bias %s do not fit the model's head %s", ORIGINAL_HEAD_NAME,
                       name_or_path, tuple(weight.shape), tuple(bias.shape), shape)
        return None
    return weight.float(), bias.float()
