"""The base of hf_cft's dataset builders: features, metadata, per-split statistics, data-folder checks.

Every builder yields examples with ``image`` (decoded lazily from the local file) and its labels, dense
(``labels``, ``label_mask``, optionally ``uncertain_mask`` and ``full_labels``) or by known pair
(``PAIRS = True``); :mod:`hf_cft.data.columns` reads them back. The category names travel in the features, so
that a split saved (``save_to_disk``) or pushed (``push_to_hub``) and loaded back keeps them: the pair columns
are ``List(ClassLabel(names=categories))``, and a dense split also has ``positive_categories`` (its known
positives, added to what the builder yields), whose ``ClassLabel`` carries the names. The dataset info's
``description`` is a JSON object (:func:`~hf_cft.data.columns.partial_info`): the category names in canonical
order, the protocol, the seed, and per split the counts of :mod:`hf_cft.data.stats`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np

from .cache_key import files_hash
from .columns import PAIR_COLUMNS
from .files import DataLayout
from .simulate import PartialConfig
from .stats import SplitStats, read_stats, write_stats

logger = logging.getLogger(__name__)

__all__ = ["PartialBuilder"]


class PartialBuilder(SplitStats, datasets.GeneratorBasedBuilder):
    """Base of hf_cft's builders: features, per-split statistics, data-folder checks."""

    BUILDER_CONFIG_CLASS = PartialConfig
    VERSION = datasets.Version("1.0.0")  # part of the cache path; a builder may set its own
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

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("_generate_examples")
        if own is not None and not getattr(own, "_names_positives", False):
            cls._generate_examples = _with_positive_categories(own)

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
        names = self.categories()
        c = len(names)
        named = datasets.List(datasets.ClassLabel(names=names))  # category indices, with their names
        if self.PAIRS:
            features = {"image": datasets.Image(), **{k: named for k in PAIR_COLUMNS[:2]}}
            if self.UNCERTAIN_MASK:
                features[PAIR_COLUMNS[2]] = named
        else:
            features = {
                "image": datasets.Image(),
                "labels": datasets.List(datasets.Value("int8"), length=c),
                "label_mask": datasets.List(datasets.Value("bool"), length=c),
                PAIR_COLUMNS[0]: named,  # the known positives again, by name: the split's names travel with it
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

    def _prepare_split(self, split_generator, *args, **kwargs):
        """Build one split; a split without a single example is an error that says why, and nothing is cached."""
        super()._prepare_split(split_generator, *args, **kwargs)
        if split_generator.split_info.num_examples:
            return
        lines = self._empty_split_lines(str(split_generator.name))
        layout = self.data_layout(vars(self.config))
        if layout is not None and layout.how_to_get:
            lines.append(layout.how_to_get)
        raise ValueError("\n".join(lines))

    def _download_and_prepare(self, dl_manager, *args, **kwargs):
        super()._download_and_prepare(dl_manager, *args, **kwargs)
        # written into the build's own folder before it is moved in place: a cached build always has its stats
        write_stats(self._output_dir, getattr(self, "_stats", None) or {}, len(self.categories()))

    def as_dataset(self, *args, **kwargs):
        ds = super().as_dataset(*args, **kwargs)
        stats = read_stats(self.cache_dir)
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
        return files_hash(cls.input_paths(folder, config))

    def _data_root(self, dl_manager) -> str:
        """The checked data folder of this build (see :meth:`check_data_dir`)."""
        return self.check_data_dir(dl_manager.manual_dir or self.config.data_dir, vars(self.config),
                                   getattr(self, "dataset_name", None) or self.name)


def _with_positive_categories(generate):
    """A builder's ``_generate_examples`` that adds, to each dense example, ``positive_categories`` (the indices of
    its known positives) when the builder did not yield it."""

    @functools.wraps(generate)
    def with_positives(self, *args, **kwargs):
        for key, example in generate(self, *args, **kwargs):
            if not self.PAIRS and PAIR_COLUMNS[0] not in example:
                known = (np.asarray(example["labels"]) == 1) & np.asarray(example["label_mask"], dtype=bool)
                example = {**example, PAIR_COLUMNS[0]: np.flatnonzero(known).astype(np.int32)}
            yield key, example

    with_positives._names_positives = True
    return with_positives
