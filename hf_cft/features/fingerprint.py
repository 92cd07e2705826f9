"""What keys a feature cache beyond the data: the model's weights and the settings that change its features."""

from __future__ import annotations

import hashlib
import json
import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["config_fingerprint", "model_fingerprint"]


def model_fingerprint(model: torch.nn.Module, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 of every parameter and buffer (names, sizes, dtypes and bytes), except those under ``exclude``."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if _under(name, exclude):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-dim buffers (BatchNorm counters) too
        h.update(f"{name}:{t.numel()}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# what a configuration says about labels, provenance or versions, not about the features
_LABEL_AND_SOURCE_KEYS = frozenset({
    "id2label", "label2id", "num_labels", "num_classes", "label_names", "label_offset", "problem_type",
    "architectures", "transformers_version", "dtype", "torch_dtype", "name_or_path",
    "file", "source", "url", "hf_hub_id", "hf_hub_filename", "hf_hub_revision", "tag", "license", "origin_url",
    "paper_ids", "paper_name", "notes", "description",
})
_SIMPLE = (bool, int, float, str, type(None))


def _feature_relevant(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in _LABEL_AND_SOURCE_KEYS}


def _under(name: str, paths: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def config_fingerprint(model: torch.nn.Module, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 of how ``model`` was built, beyond its weights: what changes its features with the same weights.

    It covers a transformers config (``config.to_dict()``), a timm ``pretrained_cfg`` and every module's plain
    settings (ints, floats, strings, bools, e.g. timm's ``global_pool`` or a pooling layer's ``pool_type``), less
    the label names, label count and provenance, so that a calibrated model saved with other labels keeps its cache.
    """
    parts: dict[str, object] = {}
    cfg = getattr(model, "config", None)
    if hasattr(cfg, "to_dict"):
        parts["config"] = _feature_relevant(cfg.to_dict())
    for name, mod in model.named_modules():
        if _under(name, exclude):  # the classifier: its label count does not change the features
            continue
        pretrained = getattr(mod, "pretrained_cfg", None)
        if isinstance(pretrained, dict):
            parts[f"{name}:pretrained_cfg"] = _feature_relevant(pretrained)
        settings = {k: v for k, v in vars(mod).items() if isinstance(v, _SIMPLE) or (
            isinstance(v, (tuple, list)) and all(isinstance(i, _SIMPLE) for i in v))}
        settings = _feature_relevant({k: v for k, v in settings.items() if k != "training"})
        parts[f"{name}:{type(mod).__name__}"] = settings
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
