"""``load_partial_dataset``: build (or reuse from cache) a registered dataset as a ``DatasetDict``."""

from __future__ import annotations

import logging
import os

import datasets

from .cache_key import code_hash
from .registry import get_builder

logger = logging.getLogger(__name__)

__all__ = ["load_partial_dataset"]


def load_partial_dataset(name: str, data_dir: str | None = None, cache_dir: str | None = None,
                         rebuild: bool = False, **config) -> datasets.DatasetDict:
    """Build (or reuse from cache) a partially labeled ``DatasetDict``.

    Args:
        name: one of ``coco2014``, ``chexpert``, ``openimages_v3``, ``digits_mosaic``, ``partial_csv`` (or a
            builder of your own registered with :func:`~hf_cft.data.register_builder`).
        data_dir: the folder holding the files you downloaded (not needed for ``digits_mosaic``); a missing or
            wrong one is an error naming the expected layout (``BUILDERS[name].DATA_LAYOUT``), what was found and
            the official download page.
        cache_dir: where built datasets are cached (default: the ``datasets`` cache). The cache key holds the
            options, hf_cft's data code and the sizes and modification times of the annotation files and image
            folders, so edited labels or newly added images are read again.
        rebuild: build again even where a cache matches (e.g. after adding images inside nested folders, such
            as CheXpert's patient folders, whose top folder's time does not change).
        **config: the builder's options, e.g. ``known_ratio=0.1, protocol="uniform", seed=0``.

    Every example has ``image`` and its labels: ``labels`` (int8, 1/0 where known) and ``label_mask`` (bool),
    CheXpert adds ``uncertain_mask``; ``openimages_v3`` and ``partial_csv`` store them by known pair
    (``positive_categories``, ``negative_categories``, partial_csv adds ``uncertain_categories``), so that memory
    and disk follow the known pairs. Read any split's labels with :func:`label_arrays` (dense, or
    ``sparse=True`` for scipy.sparse CSR matrices); :func:`with_dense_labels` gives per-example dense lists.
    :func:`partial_info` reads a split's metadata (category names in
    order, protocol, seed, achieved known ratio, counts of skipped images).
    """
    cls = get_builder(name)
    config = cls.prepare_options(config, name)
    folder = None
    if cls.data_layout(config) is None:
        if data_dir is not None:
            logger.warning("%s reads no files: `data_dir`=%s is ignored", name, data_dir)
    else:  # before the builder touches the cache: a wrong folder says what it should hold and where to get it
        folder = cls.check_data_dir(data_dir, config, name)
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    builder = cls(cache_dir=cache_dir, data_dir=data_dir, dataset_name=name, code_hash=code_hash(cls),
                  input_hash=cls.input_hash(folder, config), **config)
    try:
        builder.download_and_prepare(download_mode=datasets.DownloadMode.FORCE_REDOWNLOAD if rebuild else None)
    except datasets.exceptions.DatasetGenerationError as err:
        # show the builder's own error (file, line, what is wrong) rather than the generic wrapper
        if isinstance(err.__cause__, (ValueError, FileNotFoundError)):
            raise err.__cause__ from None
        raise
    return builder.as_dataset()
