"""What keys a built dataset's cache besides its options: hf_cft's data code and the state of the input files."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import stat
from collections.abc import Iterable

logger = logging.getLogger(__name__)

__all__ = ["code_hash", "files_hash"]


def code_hash(builder: type | None = None) -> str:
    """A short hash of the data package's source and of ``builder``'s own module when it lives elsewhere (a
    builder of your own), part of every cache key: a code change never reuses a cache."""
    h = hashlib.sha1()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + f.read())
    source = inspect.getsourcefile(builder) if builder is not None else None
    if source and os.path.dirname(os.path.abspath(source)) != here:
        with open(source, "rb") as f:
            h.update(b"builder\0" + f.read())
    return h.hexdigest()[:12]


def files_hash(paths: Iterable[str]) -> str:
    """A hash of the sizes and modification times of ``paths`` (a folder's time changes when a file is added to
    or removed from it; a missing path is left out)."""
    h = hashlib.sha1()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        h.update(f"{path}\0{st.st_size if stat.S_ISREG(st.st_mode) else 0}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]
