"""``extract_features``: one split through the model, data parallel under accelerate, into the resumable cache.

One ``DataLoader`` reads the split's unfinished rows (its workers decode and preprocess the images); the
gathered features are written chunk by chunk, each chunk's rows and checksum recorded once written, so that a
killed run resumes at the first unfinished chunk. An image that cannot be read (missing, empty, truncated, not an
image) does not stop the extraction: its row gets zero features and is recorded with its file and the error;
at the end the run stops with an error naming every such file, or, with ``skip_bad_images``, goes on and the
cache lists them (:attr:`FeatureCache.skipped`). A later run reads the recorded files again (a fixed file is
then extracted), never the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.images import BadImage, BadImageError, decode_image
from ..data.loading import available_cores, loader_options
from .cache import BadImagesError, FeatureCache, Target, usable_rows
from .fingerprint import config_fingerprint, model_fingerprint
from .preprocess import Preprocess, preprocessing_of
from .rows import Collate, ImageRows

logger = logging.getLogger(__name__)

__all__ = ["ExtractionSettings", "extract_features"]


@dataclass(frozen=True)
class ExtractionSettings:
    """How :func:`extract_features` reads and stores one split (its keyword arguments past the model and data)."""

    batch_size: int = 64
    dtype: str = "float32"  # of the cache: float32 or float16
    chunk_size: int = 4096  # rows per checksummed, resumable chunk
    image_column: str = "image"
    num_workers: int | None = None  # DataLoader workers decoding images; None: the cores available, at most 8
    skip_bad_images: bool = False  # go on past unreadable images (zero features, listed) instead of stopping
    show_progress: bool = True
    transform_id: str | None = None  # names a `transform` in the cache key instead of its repr
    verify: bool = True  # re-read an earlier cache's finished chunks against their checksums

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"`dtype` must be 'float32' or 'float16', got {self.dtype!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0 (0: decode in the main process), got {self.num_workers}")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError(f"`batch_size` and `chunk_size` must be >= 1, got {self.batch_size}, {self.chunk_size}")


@dataclass
class _Extraction:
    """One extraction in progress: what is read, how, and where it goes."""

    head: object
    dataset: object
    preprocess: Preprocess
    accelerator: object
    settings: ExtractionSettings
    target: Target


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
    num_workers: int | None = None,
    skip_bad_images: bool = False,
    show_progress: bool = True,
    transform_id: str | None = None,
    verify: bool = True,
) -> FeatureCache:
    """Extract the classifier inputs of every image of ``dataset`` (a ``datasets.Dataset``) into the cache.

    Runs data-parallel under ``accelerator`` (default: a new ``Accelerator()``) with ``num_workers`` loader
    workers per process (default: the cores available, at most 8; 0: decode in the main process); padding
    duplicates of uneven last batches are dropped with ``gather_for_metrics``; only the main process writes. A
    cache left by an earlier run is checked first (header, file size and, with ``verify``, the CRC-32 of every
    finished chunk, which re-reads it once); rows from the first bad one on are extracted again. Unreadable
    images raise :class:`~hf_cft.features.BadImagesError` naming them all, once every other row is extracted;
    with ``skip_bad_images`` they are listed in the returned cache's ``skipped`` instead.
    """
    from accelerate import Accelerator

    settings = ExtractionSettings(batch_size=batch_size, dtype=dtype, chunk_size=chunk_size,
                                  image_column=image_column, num_workers=num_workers,
                                  skip_bad_images=skip_bad_images, show_progress=show_progress,
                                  transform_id=transform_id, verify=verify)
    accelerator = accelerator or Accelerator()
    preprocess, desc = preprocessing_of(head, image_processor, transform)
    target = _target(head, dataset, cache_dir, settings, desc)
    job = _Extraction(head, dataset, preprocess, accelerator, settings, target)
    done, chunks, bad = _resume_point(target, settings, accelerator)
    if bad or done < target.n:
        head.model.eval().to(accelerator.device)
    if bad:  # files that could not be read in an earlier run: read again (a fixed one is extracted now)
        bad = _retry(job, done, chunks, bad)
    if done < target.n:
        _extract_rest(job, done, chunks, bad)
    else:
        logger.info("feature cache %s is complete (%d×%d)", target.folder, target.n, target.d)
    accelerator.wait_for_everyone()
    return _checked(target.load(), dataset, settings, target)


def _checked(cache: FeatureCache, dataset, settings: ExtractionSettings, target: Target) -> FeatureCache:
    """The cache, or the error naming every unreadable image (unless ``skip_bad_images``)."""
    if not cache.skipped:
        return cache
    split = str(getattr(dataset, "split", None) or "this")
    if not settings.skip_bad_images:
        raise BadImagesError({split: list(cache.skipped)}, where=target.progress_path)
    logger.warning("%d image(s) of the %s split cannot be read and are skipped (zero features, labels unknown): "
                   "%s", len(cache.skipped), split, "; ".join(str(b) for b in cache.skipped[:20])
                   + (" ..." if len(cache.skipped) > 20 else ""))
    return cache


def _target(head, dataset, cache_dir: str, settings: ExtractionSettings, desc: str) -> Target:
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
    return Target(os.path.join(cache_dir, key), key, len(dataset), head.hidden_size, settings.dtype)


def _resume_point(target: Target, settings: ExtractionSettings,
                  accelerator) -> tuple[int, list[list[int]], list[BadImage]]:
    """The rows already done (every process agrees), their chunk records and unreadable rows (main process)."""
    done, chunks, bad = 0, [], []
    n, d, dtype = target.n, target.d, target.dtype
    if accelerator.is_main_process:
        os.makedirs(target.folder, exist_ok=True)
        done, chunks = usable_rows(target.path, target.progress_path, n, d, np.dtype(dtype), settings.verify)
        bad = target.bad_rows(done) if done else []
        if done == 0:
            np.lib.format.open_memmap(target.path, mode="w+", dtype=np.dtype(dtype), shape=(n, d)).flush()
        if done < n:  # what is kept of an earlier run (nothing, a finished prefix): rows after it are redone
            target.progress(done, chunks, bad)
    return int(_broadcast(accelerator, done)), chunks, bad


def _features(job: _Extraction, batch: dict) -> torch.Tensor:
    """B×d float32 features of a loader batch on the device: zeros in the rows whose image could not be read."""
    device = job.accelerator.device
    good = batch["good"].to(device)
    out = torch.zeros((len(good), job.target.d), dtype=torch.float32, device=device)
    if batch["pixel_values"] is not None:
        out[good] = job.head.features(batch["pixel_values"].to(device)).float()
    return out


def _extract_rest(job: _Extraction, done: int, chunks: list[list[int]], bad: list[BadImage]) -> None:
    """Rows ``done:`` through one loader; every finished chunk written (main process) with its checksum."""
    accelerator, settings, target = job.accelerator, job.settings, job.target
    rows = ImageRows(job.dataset, settings.image_column, start=done)
    options = loader_options(settings.num_workers, accelerator.device)
    loader = torch.utils.data.DataLoader(rows, batch_size=settings.batch_size,
                                         collate_fn=Collate(job.preprocess, rows.feature), **options)
    loader = accelerator.prepare(loader)
    writer = _ChunkWriter(job, done, chunks, bad)
    bar = tqdm(total=target.n, initial=done, desc="features", unit="img",
               disable=not (settings.show_progress and accelerator.is_main_process))
    threads = torch.get_num_threads()
    if options["num_workers"] and accelerator.device.type == "cpu":
        # the model on the CPU shares the cores with the workers: its threads take those the workers leave
        torch.set_num_threads(max(1, available_cores() - options["num_workers"]))
    try:
        for batch in loader:
            feats = accelerator.gather_for_metrics(_features(job, batch))
            writer.add(feats, batch["bad"])
            bar.update(len(feats))
    finally:
        torch.set_num_threads(threads)
    bar.close()
    if writer.start != target.n:
        raise RuntimeError(f"extracted rows {done}:{writer.start} of {target.n}; expected every row")


class _ChunkWriter:
    """Gathered rows in order; each time a chunk is complete, its unreadable rows are shared by every process and
    the main process writes the chunk and its record."""

    def __init__(self, job: _Extraction, done: int, chunks: list[list[int]], bad: list[BadImage]):
        self.job, self.chunks = job, chunks
        self.start = self.pos = done  # first row not written; rows gathered so far
        self.parts: list[np.ndarray] = []
        self.bad = {b.row: b for b in bad}  # recorded (shared by every process)
        self.local: dict[int, BadImage] = {}  # found by this process since the last chunk

    def add(self, feats: torch.Tensor, bad: list[BadImage]) -> None:
        acc, target = self.job.accelerator, self.job.target
        self.pos += len(feats)
        self.local.update({b.row: b for b in bad})
        if acc.is_main_process:
            self.parts.append(feats.cpu().numpy())
        while self.start < target.n and self.pos >= min(self.start + self.job.settings.chunk_size, target.n):
            self._flush(min(self.start + self.job.settings.chunk_size, target.n))

    def _flush(self, stop: int) -> None:
        acc, target = self.job.accelerator, self.job.target
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            found = gather_object(list(self.local.values()))
        else:
            found = list(self.local.values())
        self.local = {}
        self.bad.update({b.row: b for b in found if b.row < target.n})
        if acc.is_main_process:
            block = np.concatenate(self.parts)
            k = stop - self.start
            self.parts = [block[k:]]
            _write_chunk(target, self.start, block[:k], self.chunks, self.bad.values())
        self.start = stop


def _write_chunk(target: Target, start: int, block: np.ndarray, chunks: list[list[int]], bad) -> None:
    """Rows ``start:start + len(block)`` into the memory map, then their checksum into the progress record."""
    stop = start + len(block)
    if block.shape != (stop - start, target.d):
        raise RuntimeError(f"extracted {block.shape} for rows {start}:{stop}; expected {(stop - start, target.d)}")
    block = np.ascontiguousarray(block, dtype=target.dtype)
    target.write_rows(start, block)
    chunks.append([start, stop, zlib.crc32(block)])
    target.progress(stop, chunks, bad)


def _retry(job: _Extraction, done: int, chunks: list[list[int]], bad: list[BadImage]) -> list[BadImage]:
    """Read the recorded unreadable rows again (main process): those now readable are extracted into their
    chunks (checksums updated); returns the rows still unreadable."""
    if not job.accelerator.is_main_process:
        return bad
    rows = ImageRows(job.dataset, job.settings.image_column)
    readable, still = {}, []
    for b, cell in zip(bad, rows.cells_of([b.row for b in bad])):
        if isinstance(cell, BadImage):
            still.append(cell)
            continue
        try:
            readable[b.row] = decode_image(cell, b.row, rows.feature)
        except BadImageError as err:
            still.append(err.bad)
    if readable:
        order = sorted(readable)
        device = job.accelerator.device
        for i in range(0, len(order), job.settings.batch_size):
            part = order[i:i + job.settings.batch_size]
            feats = job.head.features(job.preprocess([readable[r] for r in part]).to(device)).float().cpu().numpy()
            for r, f in zip(part, feats):
                job.target.write_rows(r, np.ascontiguousarray(f[None], dtype=job.target.dtype))
        for chunk in chunks:
            if any(chunk[0] <= r < chunk[1] for r in order):
                chunk[2] = job.target.checksum(chunk[0], chunk[1])
        logger.info("%d image(s) unreadable in an earlier run are readable now and extracted", len(order))
    job.target.progress(done, chunks, still)
    return still


def _broadcast(accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    t = torch.tensor([value], device=accelerator.device)
    return int(broadcast(t)[0])
