"""A built split's label columns, however they are stored: dense N×C lists or known pairs.

Dense splits hold ``labels`` (``List(Value("int8"), length=C)``: 1 positive, 0 negative where known, 0 where
unknown), ``label_mask`` (``List(Value("bool"), length=C)``: True where known) and, with uncertain labels,
``uncertain_mask``; builders that simulate partial labels add ``full_labels``. Pair-stored splits (Open Images,
partial_csv) hold the category indices of each image's known labels: ``positive_categories``,
``negative_categories`` (and ``uncertain_categories``). The category names are in the features: the pair columns
are ``List(ClassLabel(names=...))`` (dense splits have ``positive_categories`` too, their known positives), so
that they survive ``save_to_disk`` and ``push_to_hub``; :func:`category_names` reads them (from the split info
for splits built before). The split info's ``description`` is a JSON object (read it with :func:`partial_info`)
holding the category names in canonical order, the protocol, the seed, and the split's achieved known-label ratio
and other counts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import datasets
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PAIR_COLUMNS", "category_names", "label_arrays", "num_categories", "partial_info", "stores_pairs",
           "with_dense_labels"]

PAIR_COLUMNS = ("positive_categories", "negative_categories", "uncertain_categories")
_PAIR_OF = {"labels": (PAIR_COLUMNS[0],), "label_mask": PAIR_COLUMNS[:2], "uncertain_mask": (PAIR_COLUMNS[2],)}
DENSE_LIMIT = 2**31  # entries of the largest dense N×C array label_arrays builds from pairs (int8: 2 GiB)


def stores_pairs(dataset) -> bool:
    """True when a split stores its labels by known pair (``positive_categories`` / ``negative_categories``)."""
    return all(k in dataset.features for k in PAIR_COLUMNS[:2])


def num_categories(dataset) -> int:
    """C of a split (from its metadata for pair storage, from the column length otherwise)."""
    if stores_pairs(dataset):
        cats = partial_info(dataset).get("categories")
        if cats is None:
            raise ValueError("this split stores labels by pair but its info holds no `categories`")
        return len(cats)
    return dataset.features["labels"].length


def label_arrays(dataset, columns=("labels", "label_mask"), sparse: bool | None = False,
                 chunk_size: int = 65536) -> tuple:
    """A split's N×C label columns: ``labels`` (int8, 1 positive), ``label_mask`` / ``uncertain_mask`` (bool).

    Args:
        dataset: a split of :func:`load_partial_dataset` (labels stored dense or by known pair).
        columns: which of ``labels``, ``label_mask``, ``uncertain_mask``, in the order returned.
        sparse: False: numpy arrays (small C); True: ``scipy.sparse`` CSR matrices (``labels`` stores the
            positives, masks the True entries), read ``chunk_size`` images at a time, memory ∝ known pairs;
            None: sparse exactly when the split stores its labels by pair (Open Images, partial_csv).
    """
    columns = tuple(columns)
    unknown = [c for c in columns if c not in (*_PAIR_OF, "full_labels")]
    if unknown:
        raise ValueError(f"unknown label column(s) {unknown}; choose among {[*_PAIR_OF, 'full_labels']}")
    pairs = stores_pairs(dataset)
    if sparse is None:
        sparse = pairs
    if not pairs:
        missing = [c for c in columns if c not in dataset.features]
        if missing:
            raise ValueError(f"this split has no column {missing[0]!r} (columns: {list(dataset.features)})")
        if not sparse:
            data = dataset.with_format("numpy", columns=list(columns))[:]
            return tuple(data[c].astype(np.int8 if c.endswith("labels") else bool) for c in columns)
        return _dense_to_sparse(dataset, columns, chunk_size)
    if "full_labels" in columns:
        raise ValueError("this split stores its real partial labels by pair: it has no `full_labels`")
    need = sorted({p for c in columns for p in _PAIR_OF[c]})
    missing = [p for p in need if p not in dataset.features]
    if missing:
        raise ValueError(f"this split has no column {missing[0]!r} (columns: {list(dataset.features)})")
    n, c = dataset.num_rows, num_categories(dataset)
    if not sparse and n * c > DENSE_LIMIT:
        raise ValueError(f"dense labels of {n} images × {c} categories would take {n * c / 2**30:.0f} GiB per "
                         "array: call label_arrays(split, sparse=True) for scipy.sparse matrices")
    out = _pairs_to_csr(dataset, columns, need, n, c, chunk_size)
    if sparse:
        return out
    return tuple(m.toarray().astype(np.int8 if col == "labels" else bool) for col, m in zip(columns, out))


def _pairs_to_csr(dataset, columns, need, n: int, c: int, chunk_size: int) -> tuple:
    import scipy.sparse as sp

    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in need}  # (per-row counts, indices)
    for batch in dataset.with_format("arrow", columns=list(need)).iter(batch_size=chunk_size):
        for p in need:
            col = batch.column(p).combine_chunks()
            offsets = np.asarray(col.offsets, dtype=np.int64)
            idx = np.asarray(col.flatten(), dtype=np.int32)
            if idx.size and (idx.min() < 0 or idx.max() >= c):
                raise ValueError(f"column {p!r} holds a category index outside [0, {c})")
            parts[p].append((np.diff(offsets), idx))

    def csr(names: tuple[str, ...], dtype) -> sp.csr_matrix:
        counts = sum(np.concatenate([q[0] for q in parts[k]]) if parts[k] else np.zeros(n, np.int64)
                     for k in names)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        if len(names) == 1:
            indices = np.concatenate([q[1] for q in parts[names[0]]]) if parts[names[0]] else np.zeros(0, np.int32)
        else:  # interleave each row's positives and negatives, one chunk at a time
            chunks = []
            for (ca, ia), (cb, ib) in zip(parts[names[0]], parts[names[1]]):
                rows = np.concatenate([np.repeat(np.arange(ca.size), ca), np.repeat(np.arange(cb.size), cb)])
                both = np.concatenate([ia, ib])
                chunks.append(both[np.lexsort((both, rows))])
            indices = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
        out = sp.csr_matrix((np.ones(indices.size, dtype=dtype), indices, indptr), shape=(n, c))
        out.sum_duplicates()  # a category listed twice for an image (or positive and negative) is one known pair
        out.data[:] = 1
        return out

    return tuple(csr(_PAIR_OF[col], np.int8 if col == "labels" else bool) for col in columns)


def _dense_to_sparse(dataset, columns, chunk_size: int) -> tuple:
    import scipy.sparse as sp

    parts: dict[str, list] = {col: [] for col in columns}
    for start in range(0, dataset.num_rows, chunk_size):
        data = dataset.with_format("numpy", columns=list(columns))[start:start + chunk_size]
        for col in columns:
            parts[col].append(sp.csr_matrix(data[col].astype(np.int8 if col.endswith("labels") else bool)))
    c = dataset.features[columns[0]].length
    return tuple(sp.vstack(parts[col], format="csr") if parts[col] else
                 sp.csr_matrix((0, c), dtype=np.int8 if col.endswith("labels") else bool) for col in columns)


def with_dense_labels(dataset):
    """The split with ``labels`` / ``label_mask`` (and ``uncertain_mask``) as dense per-example lists.

    For pair-stored splits (Open Images, partial_csv) this is an on-the-fly transform (only the rows read are
    expanded); a dense split is returned as is.
    """
    if not stores_pairs(dataset):
        return dataset
    c = num_categories(dataset)

    def expand(batch):
        out = dict(batch)
        k = len(batch[PAIR_COLUMNS[0]])
        y = np.zeros((k, c), dtype=np.int8)
        m = np.zeros((k, c), dtype=bool)
        for i, (pos, neg) in enumerate(zip(batch[PAIR_COLUMNS[0]], batch[PAIR_COLUMNS[1]])):
            y[i, pos] = 1
            m[i, pos] = True
            m[i, neg] = True
        out["labels"], out["label_mask"] = y.tolist(), m.tolist()
        if PAIR_COLUMNS[2] in batch:
            u = np.zeros((k, c), dtype=bool)
            for i, unc in enumerate(batch[PAIR_COLUMNS[2]]):
                u[i, unc] = True
            out["uncertain_mask"] = u.tolist()
        return out

    return dataset.with_transform(expand)


def partial_info(dataset) -> dict[str, Any]:
    """The hf_cft metadata of a split (categories, protocol, seed, achieved known ratio, counts); ``categories``
    from the features when they name them (:func:`category_names`), so that a split loaded from the Hub has them."""
    info = json.loads(dataset.info.description or "{}")
    names = _feature_names(dataset)
    if names is not None:
        info["categories"] = names
    return info


def category_names(dataset) -> list[str] | None:
    """The split's category names in order: from its features (the ``ClassLabel`` of a pair column), else from
    its info's description (splits built before the names were in the features); None when neither has them."""
    names = _feature_names(dataset)
    if names is not None:
        return names
    return json.loads(dataset.info.description or "{}").get("categories")


def _feature_names(dataset) -> list[str] | None:
    features = getattr(dataset, "features", None) or {}
    for column in PAIR_COLUMNS:
        inner = getattr(features.get(column), "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            return list(inner.names)
    return None
