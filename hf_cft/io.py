"""Atomic writes: a reader sees the old file (or model folder) or the complete new one, never a half-written one.

A file is written to ``<path>.tmp`` beside it, then renamed onto ``path`` (``os.replace``). A folder is written
completely to ``<dir>.tmp``, then either its files are moved in one by one (:func:`move_in`: the folder's other
files are kept; ``<dir>.tmp`` is marked complete first, so that :func:`recover_model_dir` can finish a killed
move) or the whole folder is swapped in (:func:`swap_in`: the old one is moved aside to ``<dir>.old`` first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from .constants import CFT_CONFIG_NAME, CFT_REPORT_NAME, GAINS_PLOT_NAME

logger = logging.getLogger(__name__)

__all__ = ["atomic_path", "interrupted_save", "move_in", "read_json", "recover_model_dir", "swap_in",
           "write_atomic", "write_folder", "write_json", "write_plain"]

_OLD, _TMP = ".old", ".tmp"  # beside a folder while it is replaced (see swap_in, write_folder)
_COMPLETE = ".hf_cft_complete.json"  # in a temporary model folder: written last, lists its files
_SINGLE, _SHARD_INDEX = "model.safetensors", "model.safetensors.index.json"
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


# -- files -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` on success, removed on failure.

    Example:
        >>> with atomic_path("blocks/a.safetensors") as tmp:
        ...     save_file(tensors, tmp)
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_atomic(path: str | os.PathLike, content: str | bytes) -> str:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        write_plain(tmp, content)
    return os.fspath(path)


def write_plain(path: str | os.PathLike, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` directly: for a file inside a folder that is moved
    in place only once complete (:func:`write_folder`), or the temporary file of :func:`atomic_path`."""
    if isinstance(content, bytes):
        with open(path, "wb") as f:
            f.write(content)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = None, sort_keys: bool = False,
               end: str = "") -> str:
    """Write ``json.dumps(data, indent=indent, sort_keys=sort_keys) + end`` to ``path`` atomically; the path."""
    return write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + end)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value of the UTF-8 file ``path``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- folders -----------------------------------------------------------------------------------------------------
def write_folder(directory: str | os.PathLike, fill: Callable[[str], None], replace: bool = False) -> str:
    """Write a folder atomically: ``fill(tmp)`` writes it completely into ``<directory>.tmp``; the path.

    ``replace=False``: ``<directory>.tmp`` is marked complete, then each of its files is moved into
    ``directory`` (:func:`move_in`): the folder's other files and subfolders stay. ``replace=True``: the new folder
    takes the place of the old one as a whole (:func:`swap_in`). Either way a kill leaves a folder that
    :func:`recover_model_dir` (called first here, and by loading) finishes or removes.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory} exists and is not a folder; cannot save a model into it")
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    recover_model_dir(directory)  # what an earlier, interrupted save left beside it
    tmp = directory + _TMP
    os.makedirs(tmp)
    try:
        fill(tmp)
        if not replace:
            _mark_complete(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replace:
        swap_in(tmp, directory)
    else:
        move_in(tmp, directory)
    return directory


def swap_in(new: str, directory: str) -> None:
    """Replace ``directory`` by the complete folder ``new`` so that a model is on disk at every instant.

    The old folder is moved aside to ``<directory>.old``, ``new`` is moved in, then the old one is deleted.
    A crash between the two renames leaves ``<directory>.old``: :func:`recover_model_dir` moves it back.
    """
    old = directory + _OLD
    if os.path.isdir(old):  # left by an interrupted swap
        if os.path.exists(directory):
            shutil.rmtree(old)
        else:
            os.replace(old, directory)  # the last complete model goes back in place first
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def move_in(new: str, directory: str) -> None:
    """Move each file of the complete folder ``new`` into ``directory`` (``os.replace``), then remove ``new``.

    Files of ``directory`` that ``new`` does not hold stay, except hf_cft's calibration files and weights
    files that would make it load other weights than the new ones (see :func:`_remove_stale`).
    ``config.json`` goes in last. Safe to repeat after a kill, and beside another process doing the same.
    """
    files = _complete_files(new)
    if files is None:
        raise ValueError(f"{new} is not a completely written model folder")
    os.makedirs(directory, exist_ok=True)
    for rel in sorted(files, key=lambda f: (f == "config.json", f)):
        src, dst = os.path.join(new, rel), os.path.join(directory, rel)
        if not os.path.exists(src):
            continue  # already moved (an earlier, interrupted attempt, or a concurrent recovery)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            continue
    _remove_stale(directory, set(files))
    shutil.rmtree(new, ignore_errors=True)


def recover_model_dir(directory: str | os.PathLike) -> bool:
    """Repair what an interrupted save left beside ``directory``; True when a model was restored or completed.

    ``<directory>.old`` without ``<directory>`` (:func:`swap_in` killed between its two renames): the old model
    is moved back, the last one that was completely in place. ``<directory>.old`` beside ``<directory>`` (killed
    while deleting it) is removed. A ``<directory>.tmp`` marked complete (:func:`write_folder` killed while
    moving its files in) is moved in; one not marked complete (killed while writing it) is removed, and so are
    the ``.tmp-<name>-*`` folders of earlier hf_cft versions.
    """
    directory = os.fspath(directory)
    restored = _restore_old(directory)
    tmp = directory + _TMP
    if os.path.isdir(tmp):
        if _complete_files(tmp) is not None:
            move_in(tmp, directory)
            restored = True
            logger.warning("a save of %s was interrupted while moving its files in: finished it from %s",
                           directory, tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    parent, name = os.path.split(os.path.abspath(directory))
    legacy = re.compile(re.escape(f".tmp-{name}-") + r"[A-Za-z0-9_]{8}")  # tempfile.mkdtemp's names
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        if legacy.fullmatch(entry) and os.path.isdir(os.path.join(parent, entry)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    return restored


def _restore_old(directory: str) -> bool:
    """Move ``<directory>.old`` back when ``directory`` is missing (True), or remove it beside ``directory``."""
    old = directory + _OLD
    if not os.path.isdir(old):
        return False
    if os.path.exists(directory):
        shutil.rmtree(old, ignore_errors=True)
        return False
    try:
        os.replace(old, directory)
    except OSError:
        if not os.path.isdir(directory):  # else another process restored it first
            raise
        return False
    logger.warning("a save of %s was interrupted: restored the previous model from %s", directory, old)
    return True


def interrupted_save(directory: str | os.PathLike) -> bool:
    """Whether :func:`recover_model_dir` has a model to restore or finish at ``directory``."""
    directory = os.fspath(directory)
    return ((os.path.isdir(directory + _OLD) and not os.path.isdir(directory))
            or _complete_files(directory + _TMP) is not None)


def _mark_complete(folder: str) -> None:
    """Record the files of a completely written ``folder`` (written last: its presence means complete)."""
    files = sorted(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                   for root, _, fs in os.walk(folder) for f in fs)
    write_json(os.path.join(folder, _COMPLETE), {"files": files})


def _complete_files(folder: str) -> list[str] | None:
    """The files ``folder`` was completed with (:func:`_mark_complete`), or None when it is not complete."""
    try:
        files = read_json(os.path.join(folder, _COMPLETE))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(f) for f in files] if isinstance(files, list) else None


def _remove_stale(directory: str, written: set[str]) -> None:
    """Remove what an earlier save of hf_cft left that would misdescribe the model just written.

    Calibration files (config, report, gains plot) not written now, safetensors shards and their index not written
    now, and a single ``model.safetensors`` beside new shards (transformers would load it instead).
    """
    stale = [n for n in (CFT_CONFIG_NAME, CFT_REPORT_NAME, GAINS_PLOT_NAME) if n not in written]
    stale += [n for n in os.listdir(directory) if _SHARD.fullmatch(n) and n not in written]
    if _SHARD_INDEX not in written:
        stale.append(_SHARD_INDEX)
    elif _SINGLE not in written:
        stale.append(_SINGLE)
    for name in stale:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            os.remove(path)
