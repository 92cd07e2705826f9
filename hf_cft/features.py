"""Feature extraction under accelerate into a memory-mapped, resumable on-disk cache.

The cache of one (backbone weights, dataset, preprocessing, dtype) lives in ``<cache_dir>/<key>/``:
``features.npy`` (an N×d ``.npy`` written through a memory map, fp32 or fp16) and ``progress.json`` (rows done,
rewritten atomically after every finished chunk). An interrupted extraction resumes at the first
unfinished chunk; a different model, dataset or preprocessing gets another key, so a stale cache is never
reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "extract_features", "model_fingerprint", "preprocessing_of"]

FEATURES_NAME = "features.npy"
PROGRESS_NAME = "progress.json"


@dataclass
class FeatureCache:
    """Extracted features of one dataset split (memory-mapped, read-only)."""

    path: str
    key: str
    features: np.ndarray  # N × d memmap

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.features.shape)


def model_fingerprint(model: torch.nn.Module, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 of every parameter and buffer (names, sizes, dtypes and bytes), except those under ``exclude``."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if any(name == p or name.startswith(p + ".") for p in exclude):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-dim buffers (BatchNorm counters) too
        h.update(f"{name}:{t.numel()}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def preprocessing_of(head, image_processor=None, transform=None) -> tuple[Callable, str]:
    """``(fn, description)``: ``fn(list of PIL images) -> pixel_values`` and a stable text for the cache key.

    Order of preference: an explicit ``transform`` (its ``repr`` in the key; pass ``transform_id`` to
    :func:`extract_features` to name it), an ``image_processor``, timm's data config for timm models.
    """
    if transform is not None:
        return (lambda images: torch.stack([transform(im.convert("RGB")) for im in images])), repr(transform)
    if image_processor is not None:
        desc = json.dumps(image_processor.to_dict(), sort_keys=True, default=str)
        return (lambda images: image_processor([im.convert("RGB") for im in images],
                                               return_tensors="pt")["pixel_values"]), desc
    model = head.model.timm_model if hasattr(head.model, "timm_model") else head.model
    if hasattr(model, "pretrained_cfg"):
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=model)
        tf = timm.data.create_transform(**cfg)
        return (lambda images: torch.stack([tf(im.convert("RGB")) for im in images])), json.dumps(cfg, default=str)
    raise ValueError("no preprocessing known for this model: pass `image_processor=` (e.g. "
                     "AutoImageProcessor.from_pretrained(model_id)) or `transform=`")


def _atomic_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@torch.no_grad()
def extract_features(
    head,
    dataset,
    cache_dir: str,
    image_processor=None,
    transform=None,
    batch_size: int = 64,
    dtype: str = "float32",
    chunk_size: int = 4096,
    accelerator=None,
    image_column: str = "image",
    num_workers: int = 0,
    show_progress: bool = True,
    transform_id: str | None = None,
) -> FeatureCache:
    """Extract the classifier inputs of every image of ``dataset`` (a ``datasets.Dataset``) into the cache.

    Runs data-parallel under ``accelerator`` (default: a new ``Accelerator()``); padding duplicates of
    uneven last batches are dropped with ``gather_for_metrics``; only the main process writes.
    """
    from accelerate import Accelerator

    if dtype not in ("float32", "float16"):
        raise ValueError(f"`dtype` must be 'float32' or 'float16', got {dtype!r}")
    accelerator = accelerator or Accelerator()
    preprocess, desc = preprocessing_of(head, image_processor, transform)
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError("`dataset` must be a datasets.Dataset (its fingerprint keys the cache)")
    key = hashlib.sha256("|".join([
        # the classifier inputs do not depend on the head's rows: a calibrated model reuses the cache
        model_fingerprint(head.model, exclude=head.spec.paths),
        fingerprint, transform_id or desc, dtype, str(len(dataset)),
    ]).encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir, key)
    path = os.path.join(folder, FEATURES_NAME)
    progress_path = os.path.join(folder, PROGRESS_NAME)
    n, d = len(dataset), head.hidden_size
    done = 0
    if accelerator.is_main_process:
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(progress_path) and os.path.exists(path):
            with open(progress_path, encoding="utf-8") as f:
                state = json.load(f)
            if state.get("n") == n and state.get("d") == d:
                done = int(state["done"])
        if done == 0:
            np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(n, d)).flush()
            _atomic_json(progress_path, {"n": n, "d": d, "done": 0, "dtype": dtype})
    done = int(_broadcast(accelerator, done))
    if done >= n:
        logger.info("feature cache %s is complete (%d×%d)", folder, n, d)
        return FeatureCache(folder, key, np.load(path, mmap_mode="r"))

    model = head.model.eval()
    model.to(accelerator.device)

    def collate(rows):
        return preprocess([r[image_column] for r in rows])

    bar = tqdm(total=n, initial=done, desc="features", unit="img",
               disable=not (show_progress and accelerator.is_main_process))
    for start in range(done, n, chunk_size):
        stop = min(start + chunk_size, n)
        loader = torch.utils.data.DataLoader(dataset.select(range(start, stop)), batch_size=batch_size,
                                             collate_fn=collate, num_workers=num_workers)
        loader = accelerator.prepare(loader)
        parts = []
        for pixel_values in loader:
            feats = head.features(pixel_values.to(accelerator.device))
            feats = accelerator.gather_for_metrics(feats)
            if accelerator.is_main_process:
                parts.append(feats.float().cpu().numpy())
                bar.update(len(feats))
        if accelerator.is_main_process:
            block = np.concatenate(parts) if parts else np.zeros((0, d), np.float32)
            if block.shape != (stop - start, d):
                raise RuntimeError(f"extracted {block.shape} for rows {start}:{stop}; expected {(stop - start, d)}")
            mm = np.load(path, mmap_mode="r+")
            mm[start:stop] = block.astype(mm.dtype)
            mm.flush()
            del mm
            _atomic_json(progress_path, {"n": n, "d": d, "done": stop, "dtype": dtype})
        accelerator.wait_for_everyone()
    bar.close()
    return FeatureCache(folder, key, np.load(path, mmap_mode="r"))


def _broadcast(accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    t = torch.tensor([value], device=accelerator.device)
    return int(broadcast(t)[0])
