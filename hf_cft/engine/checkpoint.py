"""Block checkpoints: each finished block of a run kept as a safetensors file, named by what it depends on.

A file is named by :func:`block_key`: a hash of the variant, the config's result settings
(:meth:`CFTConfig.to_dict`: never the runtime settings, the device name and progress bars), the block's
categories, a SHA-256 of the inputs (features, labels, masks, trained rows) and the kind of device the block runs on
(see :func:`block_key`), so a run started again computes only the missing blocks and different inputs or settings
never reuse a stale one. Files are written atomically; an unreadable one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io import atomic_path
from .config import CFTConfig
from .selection import BlockOutcome
from .views import Split

logger = logging.getLogger(__name__)

__all__ = ["BLOCK_FORMAT", "block_key", "block_path", "fingerprint", "load_block", "policy_fingerprint", "save_block"]

BLOCK_FORMAT = 2  # what a block checkpoint holds; a new format never reads an old file


def block_key(config: CFTConfig, variant: str, block: list[int], inputs: str | None) -> str:
    """The key of a finished block: everything its rows depend on. The variant, the config's result settings
    (:meth:`CFTConfig.to_dict`: the shared settings such as the rule, seed, metrics and the memory budget, which
    decides the blocks, and the options of the chosen variants; never the runtime settings: the device name and
    progress bars change nothing in a block's rows), the block's categories and ``inputs``: the inputs'
    :func:`fingerprint` and the kind of device the block runs on."""
    return hashlib.sha256(json.dumps([BLOCK_FORMAT, variant, config.to_dict(), block, inputs],
                                     sort_keys=True).encode()).hexdigest()[:24]


def block_path(config: CFTConfig, variant: str, block: list[int], checkpoint_dir: str | None,
               inputs: str | None) -> str | None:
    """Where a finished block is kept (None without a checkpoint folder): named by :func:`block_key`."""
    if checkpoint_dir is None:
        return None
    return os.path.join(checkpoint_dir, f"{variant}-{block_key(config, variant, block, inputs)}.safetensors")


def fingerprint(fit: Split, sel: Split, weight, bias) -> str:
    """SHA-256 of everything a block's result depends on besides the config: features, labels, rows."""
    h = hashlib.sha256()
    for split in (fit, sel):
        feats = split.features
        if split is sel and feats is fit.features:  # a hold-out of the same matrix: hashed once
            h.update(b"same features")
        else:
            for start in range(0, feats.shape[0], 65536):
                h.update(np.ascontiguousarray(feats[start:start + 65536].numpy()).tobytes())
        h.update(b"rows" + (split.rows.numpy().tobytes() if split.rows is not None else b"all"))
        h.update(split.label_bytes())
    for t in (weight, bias):
        h.update(np.ascontiguousarray(np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                                                 dtype=np.float64)).tobytes())
    return h.hexdigest()


def policy_fingerprint(inputs: str, policy: str, fit: Split) -> str:
    """The inputs' fingerprint for the run of an uncertain-label policy: the policy and the fit labels it made."""
    return hashlib.sha256(inputs.encode() + b"\0" + policy.encode() + b"\0" + fit.label_bytes()).hexdigest()


def save_block(path: str, out: BlockOutcome) -> None:
    """Write a finished block (its tensors and details), atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    names = [k for k in (*BlockOutcome.TENSORS, *BlockOutcome.GRID) if getattr(out, k) is not None]
    tensors = {k: getattr(out, k).detach().cpu().clone().contiguous() for k in names}  # no shared storage
    with atomic_path(path) as tmp:
        # one metadata entry: safetensors writes several in no fixed order, and a block's bytes must not vary
        block = {"detail": out.detail} if out.notes is None else {"detail": out.detail, "notes": out.notes}
        save_file(tensors, tmp, metadata={"block": json.dumps(block, sort_keys=True)})


def load_block(path: str, size: int) -> BlockOutcome | None:
    """A finished block, or None (with a warning) when the file is unreadable or does not fit the block."""
    try:
        with safe_open(path, framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
            block = json.loads(meta["block"]) if "block" in meta else {k: json.loads(meta.get(k, "null"))
                                                                         for k in ("detail", "notes")}
            detail, notes = block.get("detail"), block.get("notes")
        out = BlockOutcome(**{k: t[k] for k in BlockOutcome.TENSORS},
                           **{k: t.get(k) for k in BlockOutcome.GRID}, detail=detail, notes=notes)
        if any(t[k].shape[0] != size for k in BlockOutcome.TENSORS):
            raise ValueError(f"it holds rows for another block size than {size}")
    except Exception as err:  # truncated, corrupt or foreign: recompute, never trust it
        logger.warning("block checkpoint %s is unreadable (%s): recomputing the block", path, err)
        return None
    return out
