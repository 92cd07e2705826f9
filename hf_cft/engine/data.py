"""Input checks, the fit / selection split, and blocks of categories scored in one batched computation.

A *view* holds what one block of ``B`` categories needs on one split and scores candidate rows:
``scores(weight (B, P, d), bias (B, P)) -> (B, P, L)``, with ``labels`` and ``mask`` of shape
``(B, 1, L)``. Two kinds:

* :class:`DenseView`: the split's feature matrix (shared by all dense blocks) with the block's label
  columns masked; used when categories are mostly known (COCO at 10–100%).
* :class:`GatheredView`: each category's known rows gathered into a zero-padded ``(B, L, d)`` tensor,
  ``L`` the block's largest known count; used for sparse labels (OpenImages), so memory grows with the
  known pairs and never with N×C.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..labels import check_labels

__all__ = ["DenseView", "GatheredView", "Split", "as_features", "check_finite", "make_blocks"]

_CHUNK_ROWS = 65536


def as_features(features, name: str = "features") -> torch.Tensor:
    """N×d features (numpy, numpy memmap, torch) as a CPU torch tensor, sharing memory where possible."""
    if isinstance(features, torch.Tensor):
        t = features.detach()
    else:
        try:
            arr = np.asarray(features)
        except Exception as err:
            raise ValueError(f"`{name}` must be an N×d array (numpy, memmap or torch), got {type(features)}") from err
        if arr.dtype == np.float64 or arr.dtype == np.float32 or arr.dtype == np.float16:
            t = torch.from_numpy(arr) if arr.flags.writeable else torch.from_numpy(np.array(arr))
        elif np.issubdtype(arr.dtype, np.number):
            t = torch.from_numpy(arr.astype(np.float32))
        else:
            raise ValueError(f"`{name}` must be numeric, got dtype {arr.dtype}")
    if t.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (N×d), got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        t = t.float()
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or inf (chunked, so memory-mapped inputs stay on disk)."""
    flat = t.reshape(t.shape[0], -1) if t.ndim > 1 else t.reshape(-1, 1)
    for start in range(0, flat.shape[0], _CHUNK_ROWS):
        chunk = flat[start:start + _CHUNK_ROWS]
        if bool(torch.isfinite(chunk.sum(dtype=torch.float64))):  # NaN/inf propagate through a float64 sum
            continue
        ok = torch.isfinite(chunk)
        if not bool(ok.all()):
            row = start + int((~ok).any(-1).nonzero()[0, 0])
            raise ValueError(f"`{name}` holds NaN or inf (first at row {row}); remove or fix those rows")


@dataclass
class Split:
    """One split of the data: which feature rows and their labels (int8) and mask (bool)."""

    features: torch.Tensor  # N_all × d, possibly memory-mapped; never copied whole
    rows: torch.Tensor | None  # indices into `features` (None: all rows)
    labels: torch.Tensor  # n × C int8
    mask: torch.Tensor  # n × C bool

    @property
    def n(self) -> int:
        return self.labels.shape[0]

    def known_counts(self) -> torch.Tensor:
        return self.mask.sum(0)

    def positive_counts(self) -> torch.Tensor:
        return ((self.labels > 0) & self.mask).sum(0)

    def take(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Feature rows of this split (all when ``rows`` is None) as a fresh float tensor."""
        idx = self.rows if rows is None else (rows if self.rows is None else self.rows[rows])
        if idx is None:
            return self.features
        return self.features.index_select(0, idx)

    @classmethod
    def from_arrays(cls, features, labels, label_mask, name: str) -> Split:
        feats = as_features(features, f"{name} features")
        y, m = check_labels(labels, label_mask, "labels" if name == "training" else f"{name} labels")
        if y.ndim != 2:
            raise ValueError(f"`{name}` labels must be N×C, got shape {y.shape}")
        if y.shape[0] != feats.shape[0]:
            raise ValueError(
                f"{name} `features` has {feats.shape[0]} rows but its `labels` have {y.shape[0]}: one row per image"
            )
        return cls(feats, None, torch.from_numpy(y), torch.from_numpy(m))

    def subset(self, rows: torch.Tensor) -> Split:
        return Split(self.features, rows, self.labels[rows], self.mask[rows])


class DenseView:
    """A block scored as masked columns of the split's whole feature matrix."""

    kind = "dense"

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        self.x = x  # n × d on the compute device
        self.labels = labels.T.unsqueeze(1)  # B × 1 × n
        self.mask = mask.T.unsqueeze(1)

    @property
    def length(self) -> int:
        return self.x.shape[0]

    def scores(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, p, d = weight.shape
        out = self.x @ weight.reshape(b * p, d).T  # n × (B·P)
        return out.T.reshape(b, p, -1) + bias.unsqueeze(-1)


class GatheredView:
    """A block whose categories' known rows are gathered into a padded ``(B, L, d)`` tensor."""

    kind = "gathered"

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        self.x = x  # B × L × d
        self.labels = labels.unsqueeze(1)  # B × 1 × L
        self.mask = mask.unsqueeze(1)

    @property
    def length(self) -> int:
        return self.x.shape[1]

    def scores(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.bmm(weight, self.x.transpose(1, 2)) + bias.unsqueeze(-1)


class ViewFactory:
    """Builds the views of one split; the dense feature matrix is moved to the device once and shared."""

    def __init__(self, split: Split, device: torch.device, dtype: torch.dtype, dense_threshold: float):
        self.split, self.device, self.dtype = split, device, dtype
        self.known = split.known_counts()
        self.dense = self.known >= dense_threshold * max(split.n, 1)
        self._x: torch.Tensor | None = None

    def is_dense(self, category: int) -> bool:
        return bool(self.dense[category])

    def cost(self, category: int) -> int:
        """Rows scored for this category."""
        return self.split.n if self.is_dense(category) else int(self.known[category])

    def view(self, cats: list[int]):
        cols = torch.as_tensor(cats, dtype=torch.long)
        if self.is_dense(cats[0]):
            if self._x is None:
                self._x = self.split.take().to(self.device, self.dtype)
            y = self.split.labels[:, cols].to(self.device)
            m = self.split.mask[:, cols].to(self.device)
            return DenseView(self._x, y, m)
        length = max(int(self.known[c]) for c in cats)
        d = self.split.features.shape[1]
        x = torch.zeros(len(cats), length, d, dtype=self.dtype)
        y = torch.zeros(len(cats), length, dtype=torch.int8)
        m = torch.zeros(len(cats), length, dtype=torch.bool)
        for i, c in enumerate(cats):
            rows = self.split.mask[:, c].nonzero().squeeze(1)
            k = rows.numel()
            x[i, :k] = self.split.take(rows).to(self.dtype)
            y[i, :k] = self.split.labels[rows, c]
            m[i, :k] = True
        return GatheredView(x.to(self.device), y.to(self.device), m.to(self.device))


def make_blocks(
    cats: list[int], fit: ViewFactory, sel: ViewFactory, d: int, population: int, budget_bytes: float
) -> list[list[int]]:
    """Group categories into blocks of one kind and similar size within a memory budget.

    Deterministic in its inputs, so every process of a sharded run computes the same partition.
    A block's bytes: gathered features ``B·L·d`` plus candidate scores and sort buffers ``~6·B·P·L``
    (4-byte floats) per split.
    """
    groups: dict[tuple[bool, bool], list[int]] = {}
    for c in cats:
        groups.setdefault((fit.is_dense(c), sel.is_dense(c)), []).append(c)
    blocks: list[list[int]] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda c: (fit.cost(c), c))
        block: list[int] = []
        for c in members:
            trial = block + [c]
            per_cat = 0.0
            for factory, dense in ((fit, key[0]), (sel, key[1])):
                length = max(factory.cost(i) for i in trial)
                per_cat += (0 if dense else length * d) + 6 * population * length
            if block and 4.0 * per_cat * len(trial) > budget_bytes:
                blocks.append(block)
                block = [c]
            else:
                block = trial
        if block:
            blocks.append(block)
    return blocks
