"""Images as the models see them: one RGB conversion for the trainer and for feature extraction, and the
decoding of a dataset's image cell with the file named when it cannot be read.

:func:`to_rgb` maps every mode found in real image folders to 8-bit RGB:

* ``RGB``: unchanged; ``L`` (grayscale) and ``1`` (1-bit: 0 or 255): the gray value in the three channels;
* ``RGBA``, ``LA``, ``RGBa``, ``PA`` and palette (``P``) images with a transparent colour: composited
  on **white** (a transparent pixel is white, a half-transparent one is blended with white; a fully opaque
  image is unchanged) — dropping the alpha channel instead would show whatever colour the transparent pixels
  happen to hold, often black;
* ``P`` without transparency: its palette colours;
* ``CMYK``: Pillow's conversion (Adobe's inverted CMYK JPEGs are inverted back when decoded); ``YCbCr``,
  ``LAB``, ``HSV``: Pillow's conversion;
* 16-bit (``I;16``, ``I;16B``, ``I;16L``) and 32-bit integer (``I``, the mode Pillow gives 16-bit PNGs)
  grayscale: the full 16-bit range scaled to 8 bits (value / 257, rounded; 65535 → 255, values outside
  [0, 65535] clipped). A 12-bit image stored in 16 bits therefore looks dark: rescale such files to the full
  range first. ``F`` (32-bit float): clipped to [0, 255].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["BadImage", "BadImageError", "decode_image", "image_source", "read_image", "to_rgb"]

_ALPHA_MODES = ("RGBA", "LA", "RGBa", "PA")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image):
    """``image`` (a ``PIL.Image``, any mode) as an 8-bit RGB ``PIL.Image`` (see the module's docstring)."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _WIDE_MODES or mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        gray = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        gray = np.rint(np.clip(np.asarray(image, dtype=np.float64), 0, 255)).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class BadImage:
    """An image cell that could not be decoded: its dataset row, its file (or what held it) and why."""

    row: int
    file: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "file": self.file, "error": self.error}

    def __str__(self) -> str:
        return f"row {self.row}: {self.file}: {self.error}"


class BadImageError(OSError):
    """One image cell could not be decoded (``.bad`` says which, where and why)."""

    def __init__(self, bad: BadImage):
        super().__init__(f"image of dataset row {bad.row} cannot be read: {bad.file}: {bad.error}")
        self.bad = bad


def image_source(value) -> str:
    """Where an undecoded image cell (``{"path", "bytes"}``, a path, or an image) comes from, for messages."""
    if isinstance(value, dict):
        if value.get("path"):
            return str(value["path"])
        return "image bytes stored in the dataset"
    if isinstance(value, str):
        return value
    return "an image object of the dataset"


def decode_image(value, row: int, feature=None):
    """The image of one dataset cell as 8-bit RGB (:func:`to_rgb`), or :class:`BadImageError` naming the row and
    the file when it cannot be read (a missing, empty, truncated or non-image file).

    ``value``: the undecoded cell (``{"path", "bytes"}`` or a path) decoded like ``feature`` (a
    ``datasets.Image``, its mode and EXIF orientation applied), or an already decoded ``PIL.Image``.
    """
    try:
        if feature is not None and isinstance(value, (dict, str)):
            image = feature.decode_example(value if isinstance(value, dict) else {"path": value, "bytes": None})
        else:
            image = value
        if not hasattr(image, "mode"):
            raise TypeError(f"not an image but a {type(image).__name__}")
        return to_rgb(image)
    except Exception as err:  # any failure to read this one file is reported with its row and file
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise BadImageError(BadImage(int(row), image_source(value), message)) from err


def read_image(dataset, row: int, column: str = "image"):
    """``dataset[row][column]`` as 8-bit RGB (:func:`to_rgb`); :class:`BadImageError` naming the row and the file
    when it cannot be read."""
    try:
        return to_rgb(dataset[row][column])
    except Exception as err:
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise BadImageError(BadImage(int(row), _source_of(dataset, row, column), message)) from err


def _source_of(dataset, row: int, column: str) -> str:
    """Where the (undecoded) image cell of ``row`` comes from; a description of the row when unknown."""
    try:
        import datasets

        if isinstance(dataset.features.get(column), datasets.Image):
            cells = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
            return image_source(cells[int(row)][column])
    except Exception:  # the source is only for the message
        pass
    return f"row {row} of the dataset"
