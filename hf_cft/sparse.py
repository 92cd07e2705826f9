"""Sparse partial labels: known (image, category) pairs instead of N×C arrays.

The sparse form of ``(labels, label_mask)`` is a pair of ``scipy.sparse`` matrices of shape N×C: ``labels``
holds 1 where a known label is positive (zeros may be stored or not), ``label_mask`` is True where a label is
known. :func:`hf_cft.data.label_arrays` returns them with ``sparse=True``; the engine, the metrics and the
recipe take them wherever they take dense arrays, and give the same results.

Internally one class, :class:`KnownLabels`, holds the known pairs per category (a CSC layout): for category
``c`` the sorted rows ``rows[indptr[c]:indptr[c + 1]]`` and their 0/1 ``values``. Its memory is that of the
known pairs (about 13 bytes a pair), never N×C.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .labels import check_known_values

logger = logging.getLogger(__name__)

__all__ = ["KnownLabels", "is_sparse", "known_labels"]


def is_sparse(x) -> bool:
    """True for a ``scipy.sparse`` matrix or array (without importing scipy when it is not loaded)."""
    if type(x).__module__.split(".")[0] != "scipy":
        return False
    import scipy.sparse as sp

    return sp.issparse(x)


@dataclass
class KnownLabels:
    """The known labels of ``n`` images × ``c`` categories, per category (CSC): memory ∝ known pairs.

    Attributes:
        n, c: shape.
        indptr: ``c + 1`` int64 offsets; category ``j``'s pairs are ``indptr[j]:indptr[j + 1]``.
        rows: int64 image indices of the pairs, ascending within a category.
        values: int8 labels of the pairs (1 positive, 0 negative).
    """

    n: int
    c: int
    indptr: np.ndarray
    rows: np.ndarray
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.c)

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[0])

    def known_counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def positive_counts(self) -> np.ndarray:
        if self.nnz == 0:
            return np.zeros(self.c, dtype=np.int64)
        cols = np.repeat(np.arange(self.c), self.known_counts())
        return np.bincount(cols, weights=self.values, minlength=self.c).astype(np.int64)

    def column(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Category ``j``'s known rows (ascending) and their labels."""
        a, b = self.indptr[j], self.indptr[j + 1]
        return self.rows[a:b], self.values[a:b]

    def columns(self) -> np.ndarray:
        """The category index of every pair (``nnz`` int64)."""
        return np.repeat(np.arange(self.c, dtype=np.int64), self.known_counts())

    def dense_columns(self, cols) -> tuple[np.ndarray, np.ndarray]:
        """``(labels int8, mask bool)`` of shape ``n × len(cols)`` for a few categories."""
        y = np.zeros((self.n, len(cols)), dtype=np.int8)
        m = np.zeros((self.n, len(cols)), dtype=bool)
        for i, j in enumerate(cols):
            r, v = self.column(int(j))
            y[r, i] = v
            m[r, i] = True
        return y, m

    def take_rows(self, rows) -> KnownLabels:
        """The known labels of images ``rows`` (in that order, renumbered 0..len(rows)-1)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"`rows` must be 1-D, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise ValueError(f"`rows` must be indices in [0, {self.n})")
        if np.unique(rows).size != rows.size:
            raise ValueError("`rows` must not repeat an image")
        new = np.full(self.n, -1, dtype=np.int64)
        new[rows] = np.arange(rows.size)
        mapped = new[self.rows]
        keep = mapped >= 0
        cols = self.columns()[keep]
        mapped = mapped[keep]
        values = self.values[keep]
        if rows.size > 1 and not (np.diff(rows) > 0).all():  # a new order of images: sort within categories
            order = np.lexsort((mapped, cols))
            cols, mapped, values = cols[order], mapped[order], values[order]
        indptr = np.zeros(self.c + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=self.c), out=indptr[1:])
        return KnownLabels(int(rows.size), self.c, indptr, mapped, values)

    def to_dense(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels int8, mask bool)`` N×C (small data only)."""
        return self.dense_columns(range(self.c))

    def to_scipy(self):
        """``(labels, mask)`` as ``scipy.sparse`` CSR matrices (labels store the positives only)."""
        import scipy.sparse as sp

        mask = sp.csc_matrix((np.ones(self.nnz, dtype=bool), self.rows, self.indptr), shape=self.shape).tocsr()
        pos = self.values > 0
        cols = self.columns()[pos]
        labels = sp.csr_matrix((np.ones(int(pos.sum()), dtype=np.int8), (self.rows[pos], cols)), shape=self.shape)
        return labels, mask

    def digest_bytes(self) -> bytes:
        """Bytes that identify the content (shape and every pair)."""
        return (np.array([self.n, self.c], dtype=np.int64).tobytes() + self.indptr.astype(np.int64).tobytes()
                + self.rows.astype(np.int64).tobytes() + self.values.astype(np.int8).tobytes())


def known_labels(labels, label_mask, name: str = "labels") -> KnownLabels:
    """``(labels, label_mask)``, sparse (scipy) or dense, as :class:`KnownLabels`; checked like the dense form.

    Known entries must be 0 or 1; unknown entries may hold anything. A dense input is converted column by
    column, so no N×C temporary beyond the inputs is made.
    """
    mask_name = "label_mask" if name == "labels" else f"{name} mask"
    shape_y = getattr(labels, "shape", None)
    shape_m = getattr(label_mask, "shape", None)
    if not is_sparse(labels):
        labels = np.asarray(labels)
        shape_y = labels.shape
    if not is_sparse(label_mask):
        label_mask = np.asarray(label_mask)
        shape_m = label_mask.shape
    if shape_y is None or len(shape_y) != 2:
        raise ValueError(f"`{name}` must be N×C, got shape {shape_y}")
    if tuple(shape_y) != tuple(shape_m):
        raise ValueError(f"`{name}` and `{mask_name}` must have the same shape, got {tuple(shape_y)} and "
                         f"{tuple(shape_m)}")
    n, c = (int(v) for v in shape_y)
    mask = _canonical(label_mask)
    if mask.nnz and not np.isin(mask.data, (0, 1)).all():
        raise ValueError(f"`{mask_name}` must be boolean (True = known); found values other than 0/1")
    mask = mask.astype(bool)
    mask.eliminate_zeros()  # explicitly stored False entries are unknown, as in the dense mask
    if is_sparse(labels):
        y = _canonical(labels)
        if y.dtype == np.bool_:
            y = y.astype(np.int8)
        vals = np.asarray(y[mask.indices, np.repeat(np.arange(c), np.diff(mask.indptr))]).ravel() if mask.nnz \
            else np.zeros(0)
    else:
        y = labels
        vals = y[mask.indices, np.repeat(np.arange(c), np.diff(mask.indptr))] if mask.nnz else np.zeros(0)
    vals = np.asarray(vals)
    if vals.dtype == np.bool_:
        vals = vals.astype(np.int8)
    check_known_values(vals, name, mask_name)
    return KnownLabels(n, c, mask.indptr.astype(np.int64), mask.indices.astype(np.int64), vals.astype(np.int8))


def _canonical(x):
    """A CSC copy of ``x`` with duplicate entries summed and indices sorted: the matrix ``x.toarray()`` shows.

    The caller's matrix is never changed (scipy may store explicit zeros, repeated entries, unsorted indices).
    """
    import scipy.sparse as sp

    out = sp.csc_matrix(x, copy=True)
    out.sum_duplicates()
    return out
