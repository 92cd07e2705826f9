"""Partially labeled datasets: builders for COCO 2014, CheXpert, Open Images V3, an embedded dataset and CSV.

Layout: :mod:`.builder` (``PartialBuilder``, the base of every builder), :mod:`.files` (``DataLayout``: what
``data_dir`` must hold), :mod:`.simulate` (simulated partial labels), :mod:`.stats` (per-split counts),
:mod:`.cache_key`, :mod:`.columns` (reading a split's labels: ``label_arrays``, ``partial_info``),
:mod:`.registry` (``BUILDERS``, ``register_builder``) and :mod:`.load` (``load_partial_dataset``); one module
per dataset. Importing this package registers the shipped builders.
"""

from __future__ import annotations

import logging

from .builder import PartialBuilder
from .cache_key import code_hash
from .chexpert import COMPETITION as CHEXPERT_COMPETITION
from .chexpert import Chexpert
from .coco import Coco2014
from .columns import (
    PAIR_COLUMNS,
    category_names,
    label_arrays,
    num_categories,
    partial_info,
    stores_pairs,
    with_dense_labels,
)
from .digits import DigitsMosaic
from .files import DataLayout
from .load import load_partial_dataset
from .openimages import OpenImagesV3
from .partial_csv import PartialCsv
from .registry import BUILDERS, register_builder
from .simulate import PartialConfig, simulate_known

logger = logging.getLogger(__name__)

__all__ = [
    "BUILDERS",
    "CHEXPERT_COMPETITION",
    "Chexpert",
    "Coco2014",
    "category_names",
    "PAIR_COLUMNS",
    "DataLayout",
    "DigitsMosaic",
    "OpenImagesV3",
    "PartialBuilder",
    "PartialConfig",
    "PartialCsv",
    "code_hash",
    "label_arrays",
    "load_partial_dataset",
    "num_categories",
    "partial_info",
    "register_builder",
    "simulate_known",
    "stores_pairs",
    "with_dense_labels",
]
