"""The on-disk feature cache of one split: the N×d array, its progress record, the checks before reuse, and the
rows whose image could not be read.

``progress.json`` holds ``n``, ``d``, ``dtype``, ``done`` (rows finished), ``chunks`` (``[start, stop, CRC-32]``
of every finished chunk, in order) and ``bad_rows`` (``{"row", "file", "error"}`` of every finished row whose
image could not be read: its features are zeros).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..data.images import BadImage
from ..io import read_json, write_json

logger = logging.getLogger(__name__)

__all__ = ["BadImagesError", "FeatureCache", "hide_rows"]

FEATURES_NAME = "features.npy"
PROGRESS_NAME = "progress.json"
MAX_LISTED = 100  # bad files an error message lists one per line


@dataclass
class FeatureCache:
    """Extracted features of one dataset split (memory-mapped, read-only).

    ``skipped``: the rows whose image could not be read (extracted with ``skip_bad_images``): their features are
    zeros; :meth:`known` makes their labels unknown so that nothing is fitted or scored on them.
    """

    path: str
    key: str
    features: np.ndarray  # N × d memmap
    skipped: tuple[BadImage, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.features.shape)

    @property
    def skipped_rows(self) -> np.ndarray:
        return np.array([b.row for b in self.skipped], dtype=np.int64)

    def known(self, mask):
        """``mask`` (N×C, dense or scipy.sparse) with the skipped rows unknown (a copy when there are any)."""
        return hide_rows(mask, self.skipped_rows)


def hide_rows(mask, rows: Iterable[int]):
    """``mask`` (N×C bool, dense or scipy.sparse) with ``rows`` all False; ``mask`` itself when none."""
    rows = np.asarray(list(rows), dtype=np.int64)
    if rows.size == 0:
        return mask
    if hasattr(mask, "tocsr"):  # scipy.sparse
        out = mask.tocsr(copy=True)
        entry_rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
        out.data[np.isin(entry_rows, rows)] = 0
        out.eliminate_zeros()
        return out
    out = np.array(mask, copy=True)
    out[rows] = False
    return out


class BadImagesError(ValueError):
    """Images that could not be read, by split (``.bad``: split name -> :class:`~hf_cft.data.images.BadImage`)."""

    def __init__(self, bad: dict[str, list[BadImage]], where: str | None = None):
        self.bad = {k: list(v) for k, v in bad.items() if v}
        self.where = where
        super().__init__(self._message())

    def merged(self, other: BadImagesError) -> BadImagesError:
        return BadImagesError({**self.bad, **other.bad})

    def _message(self) -> str:
        total = sum(len(v) for v in self.bad.values())
        lines = [f"{total} image file(s) cannot be read:"]
        listed = 0
        for split, items in self.bad.items():
            lines.append(f"  {split} split, dataset rows {', '.join(str(b.row) for b in items)}:")
            for b in items[: max(0, MAX_LISTED - listed)]:
                lines.append(f"    {b}")
            listed += len(items)
        if listed > MAX_LISTED:
            lines.append(f"    ... and {listed - MAX_LISTED} more" + (f" (all in {self.where})" if self.where else ""))
        lines.append("Fix or remove these files and run again (the features of every other image are kept in the "
                     "feature cache: only these files are read again), or skip them: --skip_bad_images on the "
                     "command line, skip_bad_images=True in extract_features / CFTHead.extract / fit / evaluate. "
                     "A skipped image gets zero features and its labels count as unknown (nothing is fitted or "
                     "scored on it), and the report lists it.")
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
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

    def progress(self, done: int, chunks: list[list[int]], bad: Iterable[BadImage] = ()) -> None:
        write_json(self.progress_path, {"n": self.n, "d": self.d, "done": done, "dtype": self.dtype,
                                          "chunks": chunks,
                                          "bad_rows": [b.to_dict() for b in sorted(bad, key=lambda b: b.row)
                                                       if b.row < done]})

    def bad_rows(self, done: int | None = None) -> list[BadImage]:
        """The recorded rows (below ``done``) whose image could not be read; none when the record is unreadable."""
        try:
            state = read_json(self.progress_path)
            items = [BadImage(int(b["row"]), str(b["file"]), str(b["error"])) for b in state.get("bad_rows", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        limit = int(state.get("done", 0)) if done is None else done
        return [b for b in items if b.row < limit]

    def load(self) -> FeatureCache:
        return FeatureCache(self.folder, self.key, np.load(self.path, mmap_mode="r"), tuple(self.bad_rows()))

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Rows ``start:start + len(block)`` into the memory map."""
        mm = np.load(self.path, mmap_mode="r+")
        mm[start:start + len(block)] = block
        mm.flush()
        del mm

    def checksum(self, start: int, stop: int) -> int:
        mm = np.load(self.path, mmap_mode="r")
        return zlib.crc32(np.ascontiguousarray(mm[start:stop]))


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


def usable_rows(path: str, progress_path: str, n: int, d: int, dtype: np.dtype,
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
    return _checked_chunks(path, chunks, intact, done, verify)


def _checked_chunks(path: str, chunks, intact: int, done: int, verify: bool) -> tuple[int, list[list[int]]]:
    """The leading chunks that are contiguous, within the intact rows and (with ``verify``) match their CRC."""
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
