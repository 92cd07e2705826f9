"""Shared machinery of the partially labeled dataset builders.

Every builder yields examples with ``image`` (decoded lazily from the local file), ``labels``
(``List(Value("int8"), length=C)``: 1 positive, 0 negative where known, 0 where unknown) and ``label_mask``
(``List(Value("bool"), length=C)``: True where known). Builders that simulate partial labels (COCO, the embedded
digits) add ``full_labels``, every true label, which only the headroom rows of a report read. The dataset
info's ``description`` is a JSON object (read it with :func:`partial_info`) holding the category names in
canonical order, the protocol, the seed, and, per split, the achieved known-label ratio and other counts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np

from ..atomic import write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "PAIR_COLUMNS", "PROTOCOLS", "DataLayout", "PartialBuilder", "PartialConfig", "code_hash", "label_arrays",
    "num_categories", "partial_info", "simulate_known", "stores_pairs", "with_dense_labels",
]

PROTOCOLS = ("uniform", "per_image_fixed", "positives_only")
STATS_NAME = "hf_cft_partial_stats.json"


def code_hash() -> str:
    """A short hash of the data package's source, part of every cache key: a code change never reuses a cache."""
    h = hashlib.sha1()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:12]


@dataclasses.dataclass
class PartialConfig(datasets.BuilderConfig):
    """Options shared by the builders that simulate partial labels from full ones."""

    known_ratio: float = 1.0
    protocol: str = "uniform"
    seed: int = 0
    code_hash: str = ""
    input_hash: str = ""

    def check(self, protocols: tuple[str, ...] = PROTOCOLS) -> None:
        if not 0.0 < self.known_ratio <= 1.0:
            raise ValueError(f"`known_ratio` must be in (0, 1], got {self.known_ratio}")
        if self.protocol not in protocols:
            raise ValueError(f"`protocol` must be one of {protocols}, got {self.protocol!r}")


def simulate_known(full: np.ndarray, protocol: str, known_ratio: float, rng: np.random.Generator,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Which labels of one image's full label vector stay known.

    * ``uniform`` (the paper): each label kept independently with probability ``known_ratio``;
    * ``per_image_fixed``: exactly ``round(known_ratio · C)`` labels of every image, chosen at random;
    * ``positives_only``: each positive kept with probability ``known_ratio``; no negative is known;
    * ``salient``: negatives kept with probability ``known_ratio``; a positive with probability
      ``min(1, 2 · known_ratio · weights)``, ``weights`` in [0, 1] its conspicuousness (mean 0.5 keeps the
      overall ratio near ``known_ratio``).
    """
    c = full.shape[0]
    if known_ratio >= 1.0 and protocol in ("uniform", "per_image_fixed"):
        return np.ones(c, dtype=bool)
    if protocol == "uniform":
        return rng.random(c) < known_ratio
    if protocol == "per_image_fixed":
        known = np.zeros(c, dtype=bool)
        known[rng.permutation(c)[: int(round(known_ratio * c))]] = True
        return known
    if protocol == "positives_only":
        return (full > 0) & (rng.random(c) < known_ratio)
    if protocol == "salient":
        p = np.where(full > 0, np.clip(2 * known_ratio * weights, 0, 1), known_ratio)
        return rng.random(c) < p
    raise ValueError(f"unknown protocol {protocol!r}")


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


def image_rng(seed: int, key: int) -> np.random.Generator:
    """A generator that depends only on the seed and the image, never on generation order."""
    return np.random.default_rng([int(seed), int(key)])


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


class PartialBuilder(datasets.GeneratorBasedBuilder):
    """Base of hf_cft's builders: features, per-split statistics, data-folder checks."""

    BUILDER_CONFIG_CLASS = PartialConfig
    CATEGORIES: list[str] = []
    UNCERTAIN_MASK = False  # builders with uncertain labels add an `uncertain_mask` column
    # True: labels stored by known pair (`positive_categories`, `negative_categories`, and `uncertain_categories`
    # with UNCERTAIN_MASK), so the arrow and the build's memory follow the known pairs, never images × classes
    PAIRS = False
    # builders that simulate partial labels from full ones: `labels` holds the known ones (0 where unknown, as in a
    # real partial-label set) and `full_labels` every true label (reporting only: headroom rows)
    FULL_LABELS_BEHIND_MASK = False
    HOMEPAGE = ""
    CITATION = ""

    def categories(self) -> list[str]:
        return list(self.CATEGORIES)

    SIMULATION_OPTIONS = ("known_ratio", "protocol", "seed")

    @classmethod
    def prepare_options(cls, config: dict[str, Any], name: str) -> dict[str, Any]:
        """The builder options as the cache key should see them; options this builder cannot use are an error
        (the simulation settings on a dataset whose partial labels are real)."""
        given = [k for k in cls.SIMULATION_OPTIONS if k in config]
        if given and not cls.FULL_LABELS_BEHIND_MASK:
            raise ValueError(f"{name} holds real partial labels: {', '.join(f'`{k}`' for k in given)} simulate "
                             "dropped labels from full ones and apply to coco2014 and digits_mosaic only; leave "
                             "them out")
        return dict(config)

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        simulated = self.FULL_LABELS_BEHIND_MASK
        return {
            "dataset": getattr(self, "dataset_name", None) or self.name,
            "categories": self.categories(),
            "protocol": getattr(cfg, "protocol", None),
            "known_ratio": getattr(cfg, "known_ratio", None) if simulated else None,
            "seed": getattr(cfg, "seed", None) if simulated else None,
            "full_labels_behind_mask": self.FULL_LABELS_BEHIND_MASK,
            "label_storage": "pairs" if self.PAIRS else "dense",
        }

    def _info(self) -> datasets.DatasetInfo:
        c = len(self.categories())
        if self.PAIRS:
            features = {"image": datasets.Image(), **{k: datasets.List(datasets.Value("int32"))
                                                       for k in PAIR_COLUMNS[:2]}}
            if self.UNCERTAIN_MASK:
                features[PAIR_COLUMNS[2]] = datasets.List(datasets.Value("int32"))
        else:
            features = {
                "image": datasets.Image(),
                "labels": datasets.List(datasets.Value("int8"), length=c),
                "label_mask": datasets.List(datasets.Value("bool"), length=c),
            }
            if self.UNCERTAIN_MASK:
                features["uncertain_mask"] = datasets.List(datasets.Value("bool"), length=c)
            if self.FULL_LABELS_BEHIND_MASK:  # the truth for reporting only, apart from the partial labels
                features["full_labels"] = datasets.List(datasets.Value("int8"), length=c)
        return datasets.DatasetInfo(
            description=json.dumps(self.metadata()),
            features=datasets.Features(features),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    # -- statistics ----------------------------------------------------------------------------------------
    def _stats_for(self, split: str) -> dict[str, Any]:
        if not hasattr(self, "_stats"):
            self._stats: dict[str, dict[str, Any]] = {}
        return self._stats.setdefault(split, {"images": 0, "known": 0, "positives": 0, "skipped": {}})

    def _count(self, split: str, labels: np.ndarray, mask: np.ndarray, **extra: int) -> None:
        s = self._stats_for(split)
        s["images"] += 1
        s["known"] += int(mask.sum())
        s["positives"] += int((labels.astype(bool) & mask).sum())
        if "known_per_category" not in s:
            s["known_per_category"] = np.zeros(mask.shape[0], dtype=np.int64)
        s["known_per_category"] += mask
        for k, v in extra.items():
            s[k] = s.get(k, 0) + v

    def _count_pairs(self, split: str, positives: np.ndarray, negatives: np.ndarray) -> None:
        """:meth:`_count` for an image given by its known pairs: memory and time follow its pairs only."""
        s = self._stats_for(split)
        s["images"] += 1
        s["known"] += int(positives.size + negatives.size)
        s["positives"] += int(positives.size)
        if "known_per_category" not in s:
            s["known_per_category"] = np.zeros(len(self.categories()), dtype=np.int64)
        s["known_per_category"][positives] += 1
        s["known_per_category"][negatives] += 1

    def _skip(self, split: str, reason: str, example: str | None = None) -> None:
        """Count an image left out for ``reason``; ``example``: its file (the first one is kept and shown)."""
        s = self._stats_for(split)
        s["skipped"][reason] = s["skipped"].get(reason, 0) + 1
        if example is not None:
            s.setdefault("skipped_example", {}).setdefault(reason, example)

    def _prepare_split(self, split_generator, *args, **kwargs):
        """Build one split; a split without a single example is an error that says why, and nothing is cached."""
        super()._prepare_split(split_generator, *args, **kwargs)
        if split_generator.split_info.num_examples:
            return
        name = split_generator.name
        s = self._stats_for(str(name))
        why = ", ".join(f"{n} × {r}" for r, n in s["skipped"].items()) or "its source lists no image"
        lines = [f"{getattr(self, 'dataset_name', None) or self.name}: the {name} split has no examples "
                 f"({why})."]
        for reason, path in s.get("skipped_example", {}).items():
            lines.append(f"First {reason}: {path}")
        if "missing image file" in s["skipped"]:
            lines.append("Are the images downloaded, and where the builder looks for them (`data_dir`, or "
                         "`image_dir` / `image_extension` where the builder has them)?")
        layout = self.data_layout(vars(self.config))
        if layout is not None and layout.how_to_get:
            lines.append(layout.how_to_get)
        raise ValueError("\n".join(lines))

    def _download_and_prepare(self, dl_manager, *args, **kwargs):
        super()._download_and_prepare(dl_manager, *args, **kwargs)
        # written into the build's own folder before it is moved in place: a cached build always has its stats
        stats = getattr(self, "_stats", None) or {}
        c = len(self.categories())
        out = {}
        for split, s in stats.items():
            n = max(s["images"], 1)
            out[split] = {
                **{k: v for k, v in s.items() if k != "known_per_category"},
                "achieved_known_ratio": s["known"] / (n * c),
                "known_per_category": [int(v) for v in s.get("known_per_category", np.zeros(c))],
            }
        write_atomic(os.path.join(self._output_dir, STATS_NAME), json.dumps(out))

    def as_dataset(self, *args, **kwargs):
        ds = super().as_dataset(*args, **kwargs)
        path = os.path.join(self.cache_dir, STATS_NAME)
        stats = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                stats = json.load(f)
        meta = self.metadata()
        for split in getattr(ds, "keys", lambda: [])():
            info = {**meta, "split": split, **stats.get(split, {})}
            ds[split].info.description = json.dumps(info)
        return ds

    # -- files ---------------------------------------------------------------------------------------------
    DATA_LAYOUT: DataLayout | None = None  # what `data_dir` must hold; None: the builder reads no files

    @classmethod
    def data_layout(cls, config: Mapping[str, Any] | None = None) -> DataLayout | None:
        """What ``data_dir`` must hold for this builder with these options (``config``: the builder kwargs)."""
        return cls.DATA_LAYOUT

    @classmethod
    def check_data_dir(cls, data_dir: str | None, config: Mapping[str, Any] | None = None,
                       name: str | None = None) -> str | None:
        """The folder that holds the builder's files (resolved, e.g. CheXpert's subfolder), else a clear error.

        ``None`` for builders that read no files.
        """
        layout = cls.data_layout(config)
        if layout is None:
            return None
        return layout.resolve(data_dir, name or cls.__name__)

    @classmethod
    def input_paths(cls, folder: str, config: Mapping[str, Any]) -> list[str]:
        """The files and folders whose state is part of the cache key (default: the layout's checked paths)."""
        layout = cls.data_layout(config)
        return [os.path.join(folder, r) for r in (*layout.required, *layout.any_of)] if layout else []

    @classmethod
    def input_hash(cls, folder: str | None, config: Mapping[str, Any]) -> str:
        """A hash of the inputs' sizes and modification times (a folder's time changes when a file is added to or
        removed from it): edited annotations or newly downloaded images are never read from an old cache."""
        if folder is None:
            return ""
        h = hashlib.sha1()
        for path in cls.input_paths(folder, config):
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{path}\0{st.st_size if stat.S_ISREG(st.st_mode) else 0}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:12]

    def _data_root(self, dl_manager) -> str:
        """The checked data folder of this build (see :meth:`check_data_dir`)."""
        return self.check_data_dir(dl_manager.manual_dir or self.config.data_dir, vars(self.config),
                                   getattr(self, "dataset_name", None) or self.name)


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
        out.sort_indices()
        return out

    names = {"labels": (PAIR_COLUMNS[0],), "label_mask": PAIR_COLUMNS[:2], "uncertain_mask": (PAIR_COLUMNS[2],)}
    return tuple(csr(names[col], np.int8 if col == "labels" else bool) for col in columns)


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
    """The hf_cft metadata of a split (categories, protocol, seed, achieved known ratio, counts)."""
    return json.loads(dataset.info.description or "{}")
