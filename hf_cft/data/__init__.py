"""Partially labeled datasets: builders for COCO 2014, CheXpert, Open Images V3, an embedded dataset and CSV."""

from __future__ import annotations

import logging
import os

import datasets

from .base import PartialBuilder, PartialConfig, code_hash, label_arrays, partial_info, simulate_known
from .chexpert import COMPETITION as CHEXPERT_COMPETITION
from .chexpert import Chexpert
from .coco import Coco2014
from .digits import DigitsMosaic
from .openimages import OpenImagesV3
from .partial_csv import PartialCsv

logger = logging.getLogger(__name__)

__all__ = [
    "BUILDERS",
    "CHEXPERT_COMPETITION",
    "Chexpert",
    "Coco2014",
    "DigitsMosaic",
    "OpenImagesV3",
    "PartialBuilder",
    "PartialConfig",
    "PartialCsv",
    "label_arrays",
    "load_partial_dataset",
    "partial_info",
    "simulate_known",
]

BUILDERS: dict[str, type[PartialBuilder]] = {
    "coco2014": Coco2014,
    "chexpert": Chexpert,
    "openimages_v3": OpenImagesV3,
    "digits_mosaic": DigitsMosaic,
    "partial_csv": PartialCsv,
}


def load_partial_dataset(name: str, data_dir: str | None = None, cache_dir: str | None = None,
                         **config) -> datasets.DatasetDict:
    """Build (or reuse from cache) a partially labeled ``DatasetDict``.

    Args:
        name: one of ``coco2014``, ``chexpert``, ``openimages_v3``, ``digits_mosaic``, ``partial_csv``.
        data_dir: the folder holding the files you downloaded (not needed for ``digits_mosaic``).
        cache_dir: where built datasets are cached (default: the ``datasets`` cache).
        **config: the builder's options, e.g. ``known_ratio=0.1, protocol="uniform", seed=0``.

    Every example has ``image``, ``labels`` (int8, 1/0 where known) and ``label_mask`` (bool); CheXpert and
    partial_csv add ``uncertain_mask``. :func:`partial_info` reads a split's metadata (category names in
    order, protocol, seed, achieved known ratio, counts of skipped images).
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"`data_dir`={data_dir} is not a folder")
    builder = BUILDERS[name](cache_dir=cache_dir, data_dir=data_dir, dataset_name=name, code_hash=code_hash(),
                             **config)
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as err:
        # show the builder's own error (file, line, what is wrong) rather than the generic wrapper
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise
    return builder.as_dataset()
