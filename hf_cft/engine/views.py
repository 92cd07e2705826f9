"""A split as the engine holds it (:class:`Split`, :class:`Rows`, feature checks) and the views that score a block
of categories in one computation (the fit / selection split itself is made by :mod:`hf_cft.engine.inputs`).

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

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..labels import check_labels
from ..sparse import KnownLabels, is_sparse, known_labels

__all__ = ["DenseView", "GatheredView", "Rows", "Split", "ViewFactory", "as_features", "check_finite"]

_CHUNK_ROWS = 65536
_GATHER_ROWS = 16384  # feature rows widened at once when a block is gathered


class Rows:
    """Rows ``rows`` of an N×d feature matrix, taken without copying: ``fit_cft(Rows(z, fit_rows), ...)``.

    The engine reads the rows it needs (each category's known rows) straight from ``features`` (e.g. the
    memory-mapped feature cache) instead of a copied N'×d matrix.
    """

    def __init__(self, features, rows):
        self.features = features
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1:
            raise ValueError(f"`rows` must be 1-D indices, got shape {self.rows.shape}")
        n = len(features)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise ValueError(f"`rows` must be indices in [0, {n}) of the feature matrix")

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.size), int(self.features.shape[1]))


def as_features(features, name: str = "features") -> torch.Tensor:
    """N×d features (numpy, numpy memmap, torch) as a CPU torch tensor, sharing memory where possible.

    A read-only array (e.g. ``np.load(path, mmap_mode="r")``) is shared, never copied: the engine only reads
    features. float16 stays float16 (rows are widened when gathered).
    """
    if isinstance(features, torch.Tensor):
        t = features.detach()
    else:
        try:
            arr = np.asarray(features)
        except Exception as err:
            raise ValueError(f"`{name}` must be an N×d array (numpy, memmap or torch), got {type(features)}") from err
        if arr.dtype == np.float64 or arr.dtype == np.float32 or arr.dtype == np.float16:
            if arr.flags.writeable:
                t = torch.from_numpy(arr)
            else:
                with warnings.catch_warnings():  # torch warns that it cannot protect the memory: it is only read
                    warnings.simplefilter("ignore", UserWarning)
                    t = torch.from_numpy(arr)
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
    # NaN and inf propagate through a sum. A float32 sum of float32 or half features is ~50x faster than a float64
    # one here (1.4 ms against 131 ms for 10,000 x 2048); one that overflows only sends its chunk to the check
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    for start in range(0, flat.shape[0], _CHUNK_ROWS):
        chunk = flat[start:start + _CHUNK_ROWS]
        if bool(torch.isfinite(chunk.sum(dtype=acc))):
            continue
        ok = torch.isfinite(chunk)
        if not bool(ok.all()):
            row = start + int((~ok).any(-1).nonzero()[0, 0])
            raise ValueError(f"`{name}` holds NaN or inf (first at row {row}); remove or fix those rows")


@dataclass
class Split:
    """One split of the data: which feature rows, and their known labels.

    Dense (``labels`` n×C int8 and ``mask`` n×C bool tensors) or sparse (``known``: the known pairs per
    category, :class:`~hf_cft.sparse.KnownLabels`, with ``labels`` and ``mask`` None). Both answer the same
    methods, and the engine gives the same results on either.
    """

    features: torch.Tensor  # N_all × d, possibly memory-mapped; never copied whole
    rows: torch.Tensor | None  # indices into `features` (None: all rows)
    labels: torch.Tensor | None  # n × C int8 (dense)
    mask: torch.Tensor | None  # n × C bool (dense)
    known: KnownLabels | None = None  # sparse

    @property
    def sparse(self) -> bool:
        return self.known is not None

    @property
    def n(self) -> int:
        return self.known.n if self.sparse else self.labels.shape[0]

    @property
    def n_categories(self) -> int:
        return self.known.c if self.sparse else self.labels.shape[1]

    def known_counts(self) -> torch.Tensor:
        if self.sparse:
            return torch.from_numpy(self.known.known_counts())
        return self.mask.sum(0)

    def positive_counts(self) -> torch.Tensor:
        if self.sparse:
            return torch.from_numpy(self.known.positive_counts())
        return ((self.labels > 0) & self.mask).sum(0)

    def column(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Category ``c``'s known rows of this split (ascending) and their labels (int8)."""
        if self.sparse:
            rows, values = self.known.column(c)
            return torch.from_numpy(rows), torch.from_numpy(values)
        rows = self.mask[:, c].nonzero().squeeze(1)
        return rows, self.labels[rows, c]

    def dense_columns(self, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, mask)`` of a few categories, n × len(cols)."""
        if self.sparse:
            y, m = self.known.dense_columns(cols.tolist())
            return torch.from_numpy(y), torch.from_numpy(m)
        return self.labels[:, cols], self.mask[:, cols]

    def label_bytes(self) -> bytes:
        """Bytes that identify the labels (for checkpoint keys)."""
        if self.sparse:
            return b"sparse" + self.known.digest_bytes()
        return self.labels.numpy().tobytes() + self.mask.numpy().tobytes()

    def take(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Feature rows of this split (all when ``rows`` is None) as a fresh float tensor."""
        idx = self.rows if rows is None else (rows if self.rows is None else self.rows[rows])
        if idx is None:
            return self.features
        return self.features.index_select(0, idx)

    def take_into(self, out: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Feature rows written into ``out`` (any dtype and device) chunk by chunk, so a float16 memory map is
        widened without a second copy of the whole."""
        n = out.shape[0]
        for a in range(0, n, _GATHER_ROWS):
            b = min(n, a + _GATHER_ROWS)
            if rows is None and self.rows is None:
                out[a:b] = self.features[a:b]
            else:
                out[a:b] = self.take(torch.arange(a, b) if rows is None else rows[a:b])
        return out

    def take_as(self, rows: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Feature rows (all when ``rows`` is None) as a new ``dtype`` tensor on ``device``."""
        n = self.n if rows is None else rows.numel()
        out = torch.empty(n, self.features.shape[1], dtype=dtype, device=device)
        return self.take_into(out, rows)

    @classmethod
    def from_arrays(cls, features, labels, label_mask, name: str) -> Split:
        """A split from features (an array, a memory map, or :class:`Rows`) and dense or scipy.sparse labels."""
        rows = None
        if isinstance(features, Rows):
            rows = torch.from_numpy(features.rows)
            features = features.features
        feats = as_features(features, f"{name} features")
        n_rows = feats.shape[0] if rows is None else rows.numel()
        label_name = "labels" if name == "training" else f"{name} labels"
        if is_sparse(labels) or is_sparse(label_mask):
            known = known_labels(labels, label_mask, label_name)
            if known.n != n_rows:
                raise ValueError(
                    f"{name} `features` has {n_rows} rows but its `labels` have {known.n}: one row per image"
                )
            return cls(feats, rows, None, None, known)
        y, m = check_labels(labels, label_mask, label_name)
        if y.ndim != 2:
            raise ValueError(f"`{name}` labels must be N×C, got shape {y.shape}")
        if y.shape[0] != n_rows:
            raise ValueError(
                f"{name} `features` has {n_rows} rows but its `labels` have {y.shape[0]}: one row per image"
            )
        return cls(feats, rows, torch.from_numpy(y), torch.from_numpy(m))

    def subset(self, rows: torch.Tensor) -> Split:
        """The images ``rows`` (indices into this split) as a split of their own."""
        idx = rows if self.rows is None else self.rows[rows]
        if self.sparse:
            return Split(self.features, idx, None, None, self.known.take_rows(rows.numpy()))
        return Split(self.features, idx, self.labels[rows], self.mask[rows])


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

    def scores(self, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, P, d)`` rows, ``(B, P)`` biases → ``(B, P, n)`` scores (into ``out`` when given)."""
        b, p, d = weight.shape
        z = (self.x @ weight.reshape(b * p, d).T).T.reshape(b, p, -1)  # n × (B·P), seen per candidate
        return torch.add(z, bias.unsqueeze(-1), out=out)

    linear = scores  # the logits are linear in (weight, bias): a direction's logits are its scores

    def backprop(self, r: torch.Tensor) -> torch.Tensor:
        """``Σ_i r_i · x_i`` per candidate: (B, P, n) → (B, P, d), the weight part of a gradient."""
        b, p, n = r.shape
        return (r.reshape(b * p, n) @ self.x).reshape(b, p, -1)


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

    def scores(self, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, P, d)`` rows, ``(B, P)`` biases → ``(B, P, L)`` scores (into ``out`` when given: a generation of
        the GA reuses one buffer instead of two fresh ones)."""
        z = torch.bmm(weight, self.x.transpose(1, 2), out=out)
        return torch.add(z, bias.unsqueeze(-1), out=out)

    linear = scores

    def backprop(self, r: torch.Tensor) -> torch.Tensor:
        """``Σ_i r_i · x_i`` per candidate: (B, P, L) → (B, P, d), the weight part of a gradient."""
        return torch.bmm(r, self.x)


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
                self._x = self.split.take_as(None, self.dtype, self.device)
            y, m = self.split.dense_columns(cols)
            return DenseView(self._x, y.to(self.device), m.to(self.device))
        length = max(int(self.known[c]) for c in cats)
        d = self.split.features.shape[1]
        x = torch.empty(len(cats), length, d, dtype=self.dtype)  # written once: known rows, then zero padding
        y = torch.zeros(len(cats), length, dtype=torch.int8)
        m = torch.zeros(len(cats), length, dtype=torch.bool)
        for i, c in enumerate(cats):
            rows, values = self.split.column(c)
            k = rows.numel()
            self.split.take_into(x[i, :k], rows)
            x[i, k:] = 0
            y[i, :k] = values
            m[i, :k] = True
        return GatheredView(x.to(self.device), y.to(self.device), m.to(self.device))
