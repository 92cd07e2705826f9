"""The rows an extraction reads: a split's image cells, undecoded, decoded (and checked) in the loader's workers."""

from __future__ import annotations

import logging

import torch

from ..data.images import BadImage, BadImageError, decode_image

logger = logging.getLogger(__name__)

__all__ = ["Collate", "ImageRows"]


class ImageRows(torch.utils.data.Dataset):
    """Rows ``start:`` of ``dataset``'s image column as ``(row, cell)``: the cell undecoded for a plain
    ``datasets.Image`` column (decoded by :class:`Collate` in a worker, with its file named when it cannot be
    read), else as the dataset gives it (an unreadable one as a :class:`~hf_cft.data.images.BadImage`)."""

    def __init__(self, dataset, column: str, start: int = 0):
        import datasets

        feature = (dataset.features or {}).get(column)
        plain = dataset.format.get("type") is None
        if isinstance(feature, datasets.Image) and feature.decode and plain:
            self.cells = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
            self.feature = feature
        else:
            self.cells, self.feature = dataset, None
        self.column, self.start, self.n = column, int(start), len(dataset)

    def __len__(self) -> int:
        return self.n - self.start

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        rows = [self.start + int(i) for i in indices]
        return list(zip(rows, self.cells_of(rows)))

    def cells_of(self, rows: list[int]) -> list:
        """The cells of ``rows`` (absolute row numbers)."""
        if self.feature is not None:
            return list(self.cells[rows][self.column])
        out = []
        for r in rows:  # decoded by the dataset itself: a failure is this row's
            try:
                out.append(self.cells[r][self.column])
            except Exception as err:
                out.append(BadImage(r, f"row {r} of the dataset", f"{type(err).__name__}: {err}"))
        return out


class Collate:
    """``[(row, cell), ...]`` -> ``{"pixel_values": the readable images preprocessed (None if none),
    "good": bool per row, "bad": [BadImage, ...]}``."""

    def __init__(self, preprocess, feature=None):
        self.preprocess, self.feature = preprocess, feature

    def decode(self, items) -> tuple[list, list[bool], list[BadImage]]:
        images, good, bad = [], [], []
        for row, cell in items:
            if isinstance(cell, BadImage):
                bad.append(cell)
                good.append(False)
                continue
            try:
                images.append(decode_image(cell, row, self.feature))
                good.append(True)
            except BadImageError as err:
                bad.append(err.bad)
                good.append(False)
        return images, good, bad

    def __call__(self, items) -> dict:
        images, good, bad = self.decode(items)
        pixels = self.preprocess(images) if images else None
        return {"pixel_values": pixels, "good": torch.tensor(good, dtype=torch.bool), "bad": bad}

