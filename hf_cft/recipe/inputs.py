"""The recipe's inputs: the model to calibrate (given, or a baseline trained once), the data, the features,
and where rows are chosen."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..constants import TRAIN_REPORT_NAME
from ..data import label_arrays, load_partial_dataset, partial_info
from ..features import BadImagesError
from ..head import CFTHead
from ..io import read_json, recover_model_dir
from ..training import TrainArguments, dataset_options, train
from .arguments import RecipeArguments

logger = logging.getLogger(__name__)

__all__ = ["FeatureExtractor", "feature_extractor", "load_data", "load_head", "load_or_train_model",
           "resolve_selection"]


def load_or_train_model(recipe: RecipeArguments, seed: int, accelerator) -> str:
    """The model to calibrate: the given one, or the baseline trained (once) into ``baseline_dir``."""
    if recipe.model_name_or_path is not None:
        return recipe.model_name_or_path
    model_path = os.path.join(recipe.baseline_dir, "best")
    recover_model_dir(model_path)  # a save killed half-way leaves the previous model beside it
    report = os.path.join(model_path, TRAIN_REPORT_NAME)
    if os.path.exists(report):
        _check_baseline(recipe, report, seed)
    else:
        pretrained = "digits" if recipe.dataset == "digits_mosaic" else None
        accelerator.print(f"no model given: training an Assume-Negative baseline into {recipe.baseline_dir}"
                          + (" from a backbone pretrained on single digits" if pretrained else ""))
        train(TrainArguments(dataset=recipe.dataset, data_dir=recipe.data_dir, known_ratio=recipe.known_ratio,
                             protocol=recipe.protocol, dataset_config=recipe.dataset_config, init_from=pretrained,
                             epochs=recipe.baseline_epochs, output_dir=recipe.baseline_dir, seed=seed,
                             report_split=None, report_to=recipe.report_to))
    return model_path


def _check_baseline(recipe: RecipeArguments, report: str, seed: int) -> None:
    """A baseline found in ``baseline_dir`` is reused only if it was trained on this dataset with these options."""
    tr = read_json(report)
    wanted = {"dataset": recipe.dataset,
              "dataset_config": dataset_options(recipe.dataset, recipe.dataset_config, recipe.known_ratio,
                                                recipe.protocol, seed)}
    found = {k: tr.get(k) for k in wanted}
    if found != wanted:
        differ = "; ".join(f"{k}: trained with {found[k]!r}, asked {wanted[k]!r}" for k in wanted
                           if found[k] != wanted[k])
        raise ValueError(f"--baseline_dir {recipe.baseline_dir} holds a baseline trained on other data ({differ}): "
                         "pass another --baseline_dir (a fresh one is trained there), or remove this one")


def load_head(recipe: RecipeArguments, model_path: str, names: list[str]):
    """The model as a :class:`~hf_cft.head.CFTHead`, with the preprocessing given on the command line if any."""
    head = CFTHead.from_pretrained(model_path, category_names=names, library=recipe.library)
    if recipe.image_size is not None and head.image_processor is None and head.library == "transformers":
        head.set_preprocessing(recipe.image_size, recipe.image_mean, recipe.image_std)
    return head


def load_data(recipe: RecipeArguments, seed: int, accelerator) -> tuple:
    """The dataset (built once, by the main process first) and its category names; checks ``eval_split``."""
    options = dataset_options(recipe.dataset, recipe.dataset_config, recipe.known_ratio, recipe.protocol, seed)
    with accelerator.main_process_first():
        ds = load_partial_dataset(recipe.dataset, data_dir=recipe.data_dir, **options)
    if recipe.eval_split not in ds:
        raise ValueError(f"--eval_split {recipe.eval_split!r} is not a split of {recipe.dataset} ({list(ds)})")
    if recipe.selection.startswith("split:") and recipe.selection.split(":", 1)[1] not in ds:
        raise ValueError(f"--selection {recipe.selection}: {recipe.dataset} has no split "
                         f"{recipe.selection.split(':', 1)[1]!r} ({list(ds)})")
    return ds, partial_info(ds["train"])["categories"]


class FeatureExtractor:
    """``split → features`` (numpy), extracted data parallel and cached under ``cache_dir/features``.

    With the dataset given, the first call extracts every split the recipe reads (train, a ``split:`` selection,
    the evaluation split), so that unreadable images of any of them are named together before anything is
    fitted (:class:`~hf_cft.features.BadImagesError`). With ``--skip_bad_images``, :meth:`labels` gives a
    split's labels with the skipped rows unknown and :meth:`skipped` lists them for the report.
    """

    def __init__(self, recipe: RecipeArguments, head, accelerator, ds=None):
        self.head, self.ds = head, ds
        self.reads = [recipe.selection.split(":", 1)[1]] if recipe.selection.startswith("split:") else []
        self.reads = list(dict.fromkeys(["train", *self.reads, recipe.eval_split]))
        self.options = dict(cache_dir=os.path.join(recipe.cache_dir, "features"), batch_size=recipe.batch_size,
                            dtype=recipe.feature_dtype, accelerator=accelerator, num_workers=recipe.num_workers,
                            skip_bad_images=recipe.skip_bad_images, show_progress=accelerator.is_main_process)
        self.caches: dict = {}

    def __call__(self, split) -> np.ndarray:
        return np.asarray(self.cache(split).features)

    def cache(self, split):
        """The split's :class:`~hf_cft.features.FeatureCache` (extracted once per run)."""
        if self.ds is not None:
            ds, self.ds = self.ds, None
            self._extract_all(ds)
        key = (str(getattr(split, "split", None)), getattr(split, "_fingerprint", id(split)))
        if key not in self.caches:
            self.caches[key] = self.head.extract(split, **self.options)
        return self.caches[key]

    def _extract_all(self, ds) -> None:
        failed = None
        for name in self.reads:
            if name not in ds:
                continue
            try:
                self.cache(ds[name])
            except BadImagesError as err:
                failed = err if failed is None else failed.merged(err)
        if failed is not None:
            raise failed

    def labels(self, split) -> tuple:
        """``label_arrays(split, sparse=None)`` with the rows whose image was skipped unknown."""
        labels, mask = label_arrays(split, sparse=None)
        return labels, self.cache(split).known(mask)

    def skipped(self) -> dict[str, list[dict]]:
        """Split name -> the skipped rows (``row``, ``file``, ``error``) of the splits read."""
        return {split: [b.to_dict() for b in cache.skipped] for (split, _), cache in self.caches.items()
                if cache.skipped}


def feature_extractor(recipe: RecipeArguments, head, accelerator, ds=None) -> FeatureExtractor:
    """``split → features`` (numpy): a :class:`FeatureExtractor`; with ``ds``, every split the recipe reads is
    extracted at the first call (unreadable images of all of them named before anything is fitted)."""
    return FeatureExtractor(recipe, head, accelerator, ds)


def resolve_selection(recipe: RecipeArguments, model_path: str, ds, train_features, labels, mask, features_of):
    """Where rows are chosen: ``(fit_rows, selection or None, holdout fraction or None, on_eval)``."""
    n = len(ds["train"])
    choice = recipe.selection
    if choice == "auto":
        rows = None
        report_path = os.path.join(model_path, TRAIN_REPORT_NAME)
        if os.path.exists(report_path):
            tr = read_json(report_path)
            if tr.get("dataset") == recipe.dataset and tr.get("train_rows") == n:
                rows = np.asarray(tr.get("validation_rows") or [], dtype=np.int64)
        if rows is not None and len(rows):
            logger.info("selection: the %d training images the baseline was validated on (never trained on)",
                        len(rows))
            return np.setdiff1d(np.arange(n), rows), (train_features[rows], labels[rows], mask[rows]), None, False
        choice = "holdout:0.15"
    if choice.startswith("holdout:"):
        return np.arange(n), None, float(choice.split(":", 1)[1]), False
    name = choice.split(":", 1)[1]
    if name not in ds:
        raise ValueError(f"--selection {choice}: {recipe.dataset} has no split {name!r} ({list(ds)})")
    labels_of = getattr(features_of, "labels", None) or (lambda split: label_arrays(split, sparse=None))
    return np.arange(n), (features_of(ds[name]), *labels_of(ds[name])), None, name == recipe.eval_split
