"""Feature extraction under accelerate into a memory-mapped, resumable on-disk cache.

The cache of one (backbone weights and configuration, dataset and image column, preprocessing, dtype) lives in
``<cache_dir>/<key>/``: ``features.npy`` (an N×d ``.npy`` written through a memory map, fp32 or fp16) and
``progress.json`` (rows done, a CRC-32 of every finished chunk and the rows whose image could not be read,
rewritten atomically after each chunk). An interrupted extraction resumes at the first unfinished chunk; a
different model (weights or settings such as its pooling), dataset, image column or preprocessing gets another
key, so a stale cache is never reused. Before a cache is reused its header, size and (with ``verify``) chunk
checksums are checked: a truncated or damaged file is re-extracted from the first bad row, with a warning, never
read as garbage.

Layout: :mod:`.extract` (``extract_features``, ``ExtractionSettings``: one ``DataLoader`` per split, images
decoded in its workers), :mod:`.rows` (the rows read and their decoding), :mod:`.preprocess`, :mod:`.cache` (the
files, their checks, ``FeatureCache``, ``BadImagesError``), :mod:`.fingerprint` (what keys a cache).
"""

from __future__ import annotations

import logging

from .cache import BadImagesError, FeatureCache, hide_rows
from .extract import ExtractionSettings, extract_features
from .fingerprint import config_fingerprint, model_fingerprint
from .preprocess import Preprocess, preprocessing_of

logger = logging.getLogger(__name__)

__all__ = [
    "BadImagesError", "ExtractionSettings", "FeatureCache", "Preprocess", "config_fingerprint", "extract_features",
    "hide_rows", "model_fingerprint", "preprocessing_of",
]
