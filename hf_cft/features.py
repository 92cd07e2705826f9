"""Feature extraction under accelerate into a memory-mapped, resumable on-disk cache.

The cache of one (backbone weights and configuration, dataset and image column, preprocessing, dtype) lives in
``<cache_dir>/<key>/``: ``features.npy`` (an N×d ``.npy`` written through a memory map, fp32 or fp16) and
``progress.json`` (rows done and a CRC-32 of every finished chunk, rewritten atomically after each). An
interrupted extraction resumes at the first unfinished chunk; a different model (weights or settings such as
its pooling), dataset, image column or preprocessing gets another key, so a stale cache is never reused. Before
a cache is reused its header, size and (with ``verify``) chunk checksums are checked: a truncated or damaged
file is re-extracted from the first bad row, with a warning, never read as garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .io import read_json, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "ExtractionSettings", "FeatureCache", "config_fingerprint", "extract_features", "model_fingerprint",
    "preprocessing_of",
]

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


@dataclass(frozen=True)
class ExtractionSettings:
    """How :func:`extract_features` reads and stores one split (its keyword arguments past the model and data)."""

    batch_size: int = 64
    dtype: str = "float32"  # of the cache: float32 or float16
    chunk_size: int = 4096  # rows per checksummed, resumable chunk
    image_column: str = "image"
    num_workers: int = 0
    show_progress: bool = True
    transform_id: str | None = None  # names a `transform` in the cache key instead of its repr
    verify: bool = True  # re-read an earlier cache's finished chunks against their checksums

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"`dtype` must be 'float32' or 'float16', got {self.dtype!r}")


@dataclass(frozen=True)
class _Target:
    """The cache folder of one extraction and the N×d array it holds."""

    folder: str
    key: str
    n: int
    d: int
    dtype: str

    @property
    def path(self) -> str:
        return os.path.join(self.folder, FEATURES_NAME)

    @property
    def progress_path(self) -> str:
        return os.path.join(self.folder, PROGRESS_NAME)

    def progress(self, done: int, chunks: list[list[int]]) -> None:
        write_json(self.progress_path, {"n": self.n, "d": self.d, "done": done, "dtype": self.dtype,
                                          "chunks": chunks})

    def load(self) -> FeatureCache:
        return FeatureCache(self.folder, self.key, np.load(self.path, mmap_mode="r"))


@dataclass
class _Extraction:
    """One extraction in progress: what is read, how, and where it goes."""

    head: object
    dataset: object
    preprocess: Callable
    accelerator: object
    settings: ExtractionSettings
    target: _Target


# the public entry point: keyword arguments as users call it, the steps below take an ExtractionSettings
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
    verify: bool = True,
) -> FeatureCache:
    """Extract the classifier inputs of every image of ``dataset`` (a ``datasets.Dataset``) into the cache.

    Runs data-parallel under ``accelerator`` (default: a new ``Accelerator()``); padding duplicates of
    uneven last batches are dropped with ``gather_for_metrics``; only the main process writes. A cache left by
    an earlier run is checked first (header, file size and, with ``verify``, the CRC-32 of every finished chunk,
    which re-reads it once); rows from the first bad one on are extracted again.
    """
    from accelerate import Accelerator

    settings = ExtractionSettings(batch_size=batch_size, dtype=dtype, chunk_size=chunk_size,
                                  image_column=image_column, num_workers=num_workers, show_progress=show_progress,
                                  transform_id=transform_id, verify=verify)
    accelerator = accelerator or Accelerator()
    preprocess, desc = preprocessing_of(head, image_processor, transform)
    target = _target(head, dataset, cache_dir, settings, desc)
    done, chunks = _resume_point(target, settings, accelerator)
    if done >= target.n:
        logger.info("feature cache %s is complete (%d×%d)", target.folder, target.n, target.d)
        return target.load()
    _extract_rest(_Extraction(head, dataset, preprocess, accelerator, settings, target), done, chunks)
    return target.load()


def _target(head, dataset, cache_dir: str, settings: ExtractionSettings, desc: str) -> _Target:
    """The cache of this model, split, image column, preprocessing and dtype."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError("`dataset` must be a datasets.Dataset (its fingerprint keys the cache)")
    key = hashlib.sha256("|".join([
        # the classifier inputs do not depend on the head's rows: a calibrated model reuses the cache
        model_fingerprint(head.model, exclude=head.spec.paths), config_fingerprint(head.model, head.spec.paths),
        fingerprint, f"column={settings.image_column}", settings.transform_id or desc, settings.dtype,
        str(len(dataset)),
    ]).encode()).hexdigest()[:24]
    return _Target(os.path.join(cache_dir, key), key, len(dataset), head.hidden_size, settings.dtype)


def _resume_point(target: _Target, settings: ExtractionSettings, accelerator) -> tuple[int, list[list[int]]]:
    """The rows already done (every process agrees) and their chunk records; the main process prepares the file."""
    done, chunks = 0, []
    n, d, dtype = target.n, target.d, target.dtype
    if accelerator.is_main_process:
        os.makedirs(target.folder, exist_ok=True)
        done, chunks = _usable_rows(target.path, target.progress_path, n, d, np.dtype(dtype), settings.verify)
        if done == 0:
            np.lib.format.open_memmap(target.path, mode="w+", dtype=np.dtype(dtype), shape=(n, d)).flush()
        if done < n:  # what is kept of an earlier run (nothing, a finished prefix): rows after it are redone
            target.progress(done, chunks)
    return int(_broadcast(accelerator, done)), chunks


def _extract_rest(job: _Extraction, done: int, chunks: list[list[int]]) -> None:
    """Extract rows ``done:`` chunk by chunk; after each, the main process writes it and its checksum."""
    accelerator, settings, target = job.accelerator, job.settings, job.target
    model = job.head.model.eval()
    model.to(accelerator.device)
    bar = tqdm(total=target.n, initial=done, desc="features", unit="img",
               disable=not (settings.show_progress and accelerator.is_main_process))
    for start in range(done, target.n, settings.chunk_size):
        stop = min(start + settings.chunk_size, target.n)
        parts = _extract_chunk(job, start, stop, bar)
        if accelerator.is_main_process:
            _write_chunk(target, start, stop, parts, chunks)
        accelerator.wait_for_everyone()
    bar.close()


def _extract_chunk(job: _Extraction, start: int, stop: int, bar) -> list[np.ndarray]:
    """Rows ``start:stop`` through the model, gathered on the main process (fp32 numpy batches)."""
    accelerator, settings = job.accelerator, job.settings

    def collate(rows):
        return job.preprocess([r[settings.image_column] for r in rows])

    loader = torch.utils.data.DataLoader(job.dataset.select(range(start, stop)), batch_size=settings.batch_size,
                                         collate_fn=collate, num_workers=settings.num_workers)
    loader = accelerator.prepare(loader)
    parts = []
    for pixel_values in loader:
        feats = job.head.features(pixel_values.to(accelerator.device))
        feats = accelerator.gather_for_metrics(feats)
        if accelerator.is_main_process:
            parts.append(feats.float().cpu().numpy())
            bar.update(len(feats))
    return parts


def _write_chunk(target: _Target, start: int, stop: int, parts: list[np.ndarray], chunks: list[list[int]]) -> None:
    """Rows ``start:stop`` into the memory map, then their checksum into the progress record."""
    d = target.d
    block = np.concatenate(parts) if parts else np.zeros((0, d), np.float32)
    if block.shape != (stop - start, d):
        raise RuntimeError(f"extracted {block.shape} for rows {start}:{stop}; expected {(stop - start, d)}")
    block = np.ascontiguousarray(block, dtype=target.dtype)
    mm = np.load(target.path, mmap_mode="r+")
    mm[start:stop] = block
    mm.flush()
    del mm
    chunks.append([start, stop, zlib.crc32(block)])
    target.progress(stop, chunks)


def _npy_layout(path: str) -> tuple[tuple[int, ...], np.dtype, bool, int] | None:
    """``(shape, dtype, fortran_order, data offset)`` from a ``.npy`` header; None if it is unreadable."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            reader = readers.get(np.lib.format.read_magic(f))
            if reader is None:
                return None
            shape, fortran, dt = reader(f)
            return shape, dt, fortran, f.tell()
    except (OSError, ValueError, EOFError):
        return None


def _usable_rows(path: str, progress_path: str, n: int, d: int, dtype: np.dtype,
                 verify: bool) -> tuple[int, list[list[int]]]:
    """How many leading rows of an existing cache are finished and intact, and their chunk records.

    0 means start over. A file shorter than its header says (an interrupted copy, a full disk) is extended
    again to full size, keeping the intact rows before the cut.
    """
    if not (os.path.exists(progress_path) and os.path.exists(path)):
        return 0, []
    try:
        state = read_json(progress_path)
        done = int(state["done"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("feature cache %s: unreadable %s (%s); extracting again", path, PROGRESS_NAME, err)
        return 0, []
    if state.get("n") != n or state.get("d") != d or state.get("dtype", dtype.name) != dtype.name:
        logger.warning("feature cache %s: %s records %s×%s %s, expected %d×%d %s; extracting again", path,
                       PROGRESS_NAME, state.get("n"), state.get("d"), state.get("dtype"), n, d, dtype.name)
        return 0, []
    if done <= 0:
        return 0, []
    layout = _npy_layout(path)
    if layout is None or layout[:3] != ((n, d), dtype, False):
        logger.warning("feature cache %s: header unreadable or not a %d×%d %s array (%s); extracting again",
                       path, n, d, dtype.name, layout and layout[:3])
        return 0, []
    offset = layout[3]
    row_bytes = d * dtype.itemsize
    expected, size = offset + n * row_bytes, os.path.getsize(path)
    if size > expected:
        logger.warning("feature cache %s holds %d bytes, more than the %d of its header; extracting again",
                       path, size, expected)
        return 0, []
    intact = min(done, max(0, size - offset) // row_bytes)
    if size < expected:
        logger.warning("feature cache %s is truncated: %d of %d bytes (%d of %d rows); re-extracting from row %d",
                       path, size, expected, (size - offset) // row_bytes if size > offset else 0, n, intact)
        with open(path, "r+b") as f:
            f.truncate(expected)  # back to full size; the lost rows read as zeros until extracted again
    chunks = state.get("chunks")
    if chunks is None:  # a cache written before chunk checksums: only its size can be checked
        return intact, []
    kept: list[list[int]] = []
    stop = 0
    mm = np.load(path, mmap_mode="r") if verify and intact else None
    for start, end, crc in chunks:
        if start != stop or end > intact:
            break
        if mm is not None and zlib.crc32(np.ascontiguousarray(mm[start:end])) != crc:
            logger.warning("feature cache %s: rows %d:%d do not match their checksum; re-extracting from row %d",
                           path, start, end, start)
            return stop, kept
        kept.append([start, end, crc])
        stop = end
    if stop < intact == done:  # (a truncation was reported above)
        logger.warning("feature cache %s: %s records finished chunks up to row %d of %d done; re-extracting from "
                       "there", path, PROGRESS_NAME, stop, done)
    return stop, kept


def _broadcast(accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    t = torch.tensor([value], device=accelerator.device)
    return int(broadcast(t)[0])
