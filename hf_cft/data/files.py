"""The files a builder reads: what ``data_dir`` must hold (:class:`DataLayout`, the one source of data-folder
errors) and downloaded text files read as UTF-8 with a clear error otherwise."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os

logger = logging.getLogger(__name__)

__all__ = ["DataLayout", "open_text"]


@contextlib.contextmanager
def open_text(path: str, csv_rows: bool = False):
    """A downloaded text file's lines (or its CSV rows): UTF-8 with or without a byte-order mark (as spreadsheet
    programs save it); a file in another encoding is an error naming it."""
    with open(path, newline="" if csv_rows else None, encoding="utf-8-sig") as f:
        lines = _decoded(f, path)
        yield csv.reader(lines) if csv_rows else lines


def _decoded(f, path: str):
    try:
        yield from f
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason}, byte 0x{err.object[err.start]:02x}): save it "
                         "as UTF-8 and build again") from None


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """What a builder's ``data_dir`` must hold and where to get it: the one source of its data-folder errors.

    Paths are relative to ``data_dir`` (or to one of ``roots``); a trailing ``/`` marks a folder.
    """

    required: tuple[str, ...] = ()  # must all exist
    any_of: tuple[str, ...] = ()  # at least one must exist (e.g. one CSV per split, some optional)
    shown: tuple[str, ...] = ()  # further lines of the expected layout (e.g. the image files), never checked
    how_to_get: str = ""  # the official download page and how to unpack it
    roots: tuple[str, ...] = ("",)  # subfolders of data_dir that may hold the layout, in order of preference

    def missing(self, folder: str) -> list[str]:
        """The checked paths absent under ``folder`` (an unmet ``any_of`` is one entry naming them all)."""
        out = [r for r in self.required if not _exists(folder, r)]
        if self.any_of and not any(_exists(folder, r) for r in self.any_of):
            out.append(" or ".join(self.any_of))
        return out

    def find(self, data_dir: str) -> str | None:
        """The folder (``data_dir`` or one of its ``roots``) that holds the whole layout, else None."""
        for root in self.roots:
            folder = os.path.normpath(os.path.join(data_dir, root))
            if os.path.isdir(folder) and not self.missing(folder):
                return folder
        return None

    def describe(self) -> str:
        """The expected layout, one relative path a line."""
        prefix = f"{self.roots[0]}/" if self.roots[0] else ""
        lines = [f"  {prefix}{r}" for r in self.required]
        if self.any_of:
            lines.append("  at least one of: " + ", ".join(prefix + r for r in self.any_of))
        lines += [f"  {prefix}{r}" for r in self.shown]
        text = "Expected under `data_dir`:\n" + "\n".join(lines)
        places = [f"under {r}/" if r else "directly in `data_dir`" for r in self.roots[1:]]
        if places:
            text += "\n(the same files may also sit " + ", or ".join(places) + ")"
        return text

    def resolve(self, data_dir: str | None, name: str) -> str:
        """The folder holding the layout under ``data_dir``; else an error saying what is expected and found."""
        if not data_dir:
            raise ValueError(f"The {name} dataset needs `data_dir`: the folder holding its files.\n"
                             f"{self.describe()}\n{self.how_to_get}")
        root = os.path.abspath(os.path.expanduser(data_dir))
        folder = self.find(root)
        if folder is not None:
            return folder
        if not os.path.exists(root):
            problem = f"`data_dir`={root} does not exist"
            near = root
            while not os.path.isdir(near) and os.path.dirname(near) != near:
                near = os.path.dirname(near)
            found = f"Found: nothing there; the nearest existing folder, {near}, holds {_listing(near)}"
        elif not os.path.isdir(root):
            problem = f"`data_dir`={root} is a file, not a folder"
            found = f"Found: a file of {os.path.getsize(root)} bytes"
        else:
            best = min(self.roots, key=lambda r: len(self.missing(os.path.join(root, r))))
            lacks = [os.path.join(best, m) if best else m for m in self.missing(os.path.join(root, best))]
            problem = f"`data_dir`={root} lacks {', '.join(lacks)}"
            found = f"Found in `data_dir`: {_listing(root)}"
            absent = [os.path.join(best, r) for r in (*self.required, *self.any_of)
                      if not _exists(os.path.join(root, best), r)]
            for sub in sorted({os.path.dirname(m.rstrip("/")) for m in absent} - {""}):
                if os.path.isdir(os.path.join(root, sub)):
                    found += f"\nFound in {sub}/: {_listing(os.path.join(root, sub))}"
        lines = [f"{name}: {problem}.", self.describe(), found, self.how_to_get]
        hint = self._elsewhere(root)
        if hint:
            lines.append(f"The files are in {hint}: pass `data_dir={hint}`.")
        raise FileNotFoundError("\n".join(lines))

    def _elsewhere(self, root: str) -> str | None:
        """A nearby folder (the parent, or a subfolder) that holds the layout: the likely intended ``data_dir``."""
        parent = os.path.dirname(root)
        if parent != root and os.path.isdir(parent) and self.find(parent):
            return parent
        if os.path.isdir(root):
            with os.scandir(root) as it:
                for i, entry in enumerate(it):
                    if i >= 200:
                        break
                    if entry.is_dir() and self.find(entry.path):
                        return entry.path
        return None


def _exists(folder: str, relative: str) -> bool:
    path = os.path.join(folder, relative)
    return os.path.isdir(path) if relative.endswith("/") else os.path.isfile(path)


def _listing(folder: str, limit: int = 12) -> str:
    """A folder's entries, folders marked with ``/``, the first ``limit`` of them."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as err:
        return f"nothing readable ({err.strerror})"
    if not entries:
        return "nothing (empty folder)"
    shown = [e + ("/" if os.path.isdir(os.path.join(folder, e)) else "") for e in entries[:limit]]
    return ", ".join(shown) + (f", ... ({len(entries) - limit} more)" if len(entries) > limit else "")
