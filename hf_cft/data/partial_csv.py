"""partial_csv: your own partially labeled data from CSV files.

One CSV per split in ``data_dir`` (``train.csv``, and optionally ``validation.csv`` and ``test.csv``; or
name them with ``splits={"train": "mine.csv", ...}``). One column holds the image path (``image_column``,
relative to ``image_dir``, default ``data_dir``); every other column (except ``ignore_columns``) is a
category, in file order. Cell values and their default meaning:

* ``1`` / ``1.0`` → positive; ``0`` / ``0.0`` → negative;
* ``-1`` / ``-1.0`` → ``minus_one`` = ``"uncertain"`` (unknown, flagged in ``uncertain_mask``), or
  ``"unknown"``, or ``"negative"``;
* blank → ``blank`` = ``"unknown"`` or ``"negative"``.

Labels are stored by known pair (``positive_categories``, ``negative_categories``, ``uncertain_categories``:
category indices); :func:`~hf_cft.data.label_arrays` reads them dense or sparse.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np

from .builder import PartialBuilder
from .files import DataLayout, open_text
from .registry import register_builder
from .simulate import PartialConfig


@dataclasses.dataclass
class PartialCsvConfig(PartialConfig):
    image_column: str = "image"
    image_dir: str | None = None
    ignore_columns: tuple[str, ...] = ()
    minus_one: str = "uncertain"
    blank: str = "unknown"
    splits: dict[str, str] | None = None


LAYOUT = DataLayout(
    any_of=("train.csv", "validation.csv", "test.csv"),
    shown=("<image paths listed in the CSVs, relative to `image_dir` (default: `data_dir`)> ...",),
    how_to_get="partial_csv reads your own data, nothing to download: write one CSV per split with a header row, "
               "an image-path column (`image_column`, default \"image\") and one column per category holding 1, 0, "
               "-1 or blank (see the hf_cft.data.partial_csv docstring); name other files with "
               "`splits={\"train\": \"mine.csv\"}`.",
)


@register_builder("partial_csv")
class PartialCsv(PartialBuilder):
    """Partially labeled images listed in CSV files."""

    BUILDER_CONFIG_CLASS = PartialCsvConfig
    UNCERTAIN_MASK = True
    PAIRS = True
    DATA_LAYOUT = LAYOUT

    @classmethod
    def data_layout(cls, config: Mapping[str, Any] | None = None) -> DataLayout:
        """The CSVs named by ``splits`` (default train.csv, validation.csv, test.csv): at least one must exist."""
        splits = (config or {}).get("splits")
        return dataclasses.replace(LAYOUT, any_of=tuple(splits.values())) if splits else LAYOUT

    @classmethod
    def check_data_dir(cls, data_dir: str | None, config: Mapping[str, Any] | None = None,
                       name: str | None = None) -> str:
        """The data folder, checked like every builder's, and ``image_dir`` when given."""
        root = super().check_data_dir(data_dir, config, name)
        image_dir = (config or {}).get("image_dir")
        if image_dir is not None and not os.path.isdir(image_dir):
            column = (config or {}).get("image_column", "image")
            raise FileNotFoundError(f"`image_dir`={image_dir} is not a folder: pass the folder that the CSVs' "
                                    f"{column!r} paths are relative to (default: `data_dir`)")
        return root

    @classmethod
    def prepare_options(cls, config, name: str):
        """``image_dir`` as an absolute path (``~`` expanded), so that the cached paths work from anywhere."""
        config = super().prepare_options(config, name)
        if config.get("image_dir") is not None:
            config["image_dir"] = os.path.abspath(os.path.expanduser(config["image_dir"]))
        return config

    @classmethod
    def input_paths(cls, folder: str, config) -> list[str]:
        """The CSVs and the folder the images are listed relative to."""
        return [*super().input_paths(folder, config), config.get("image_dir") or folder]

    def _files(self) -> dict[str, str]:
        root = self.config.data_dir or ""
        named = self.config.splits or {s: f"{s}.csv" for s in ("train", "validation", "test")}
        return {s: os.path.join(root, f) for s, f in named.items() if os.path.exists(os.path.join(root, f))}

    def categories(self) -> list[str]:
        files = self._files()
        if not files:
            return []
        first = files.get("train") or next(iter(files.values()))
        with open_text(first, csv_rows=True) as reader:
            header = next(reader, [])
        cfg = self.config
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise ValueError(f"{first}: column(s) {twice} appear more than once in the header; give every column "
                             "its own name")
        if cfg.image_column not in header:
            raise ValueError(f"{first}: no image column {cfg.image_column!r} (columns: {header}); "
                             "set `image_column`")
        return [h for h in header if h != cfg.image_column and h not in cfg.ignore_columns]

    def metadata(self):
        cfg = self.config
        return {**super().metadata(), "protocol": "given partial labels", "minus_one": cfg.minus_one,
                "blank": cfg.blank}

    def _split_generators(self, dl_manager):
        cfg = self.config
        if cfg.minus_one not in ("uncertain", "unknown", "negative"):
            raise ValueError(f"`minus_one` must be 'uncertain', 'unknown' or 'negative', got {cfg.minus_one!r}")
        if cfg.blank not in ("unknown", "negative"):
            raise ValueError(f"`blank` must be 'unknown' or 'negative', got {cfg.blank!r}")
        self._data_root(dl_manager)
        files = self._files()
        names = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION, "test": datasets.Split.TEST}
        return [datasets.SplitGenerator(name=names.get(s, s), gen_kwargs={"path": p, "split": s})
                for s, p in files.items()]

    def _generate_examples(self, path: str, split: str):
        cfg = self.config
        cats = self.categories()
        image_dir = cfg.image_dir or cfg.data_dir
        with open_text(path, csv_rows=True) as reader:
            header = next(reader)
            if [h for h in header if h != cfg.image_column and h not in cfg.ignore_columns] != cats:
                raise ValueError(f"{path}: its category columns differ from the train CSV's {cats}")
            img_col = header.index(cfg.image_column)
            cols = [header.index(c) for c in cats]
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise ValueError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
                pos: list[int] = []
                neg: list[int] = []
                unc: list[int] = []
                for i, j in enumerate(cols):
                    v = row[j].strip()
                    if v in ("1", "1.0"):
                        pos.append(i)
                    elif v in ("0", "0.0"):
                        neg.append(i)
                    elif v in ("-1", "-1.0"):
                        if cfg.minus_one == "uncertain":
                            unc.append(i)
                        elif cfg.minus_one == "negative":
                            neg.append(i)
                    elif v == "":
                        if cfg.blank == "negative":
                            neg.append(i)
                    else:
                        raise ValueError(f"{path}, line {line}, column {cats[i]!r}: {v!r} is not 1, 0, -1 or blank")
                image = os.path.join(image_dir, row[img_col])
                if not os.path.exists(image):
                    self._skip(split, "missing image file", image)
                    continue
                positives, negatives = np.array(pos, dtype=np.int32), np.array(neg, dtype=np.int32)
                self._count_pairs(split, positives, negatives)
                yield line, {"image": image, "positive_categories": positives, "negative_categories": negatives,
                             "uncertain_categories": np.array(unc, dtype=np.int32)}
