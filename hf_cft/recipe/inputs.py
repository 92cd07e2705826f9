"""The recipe's inputs: the model to calibrate (given, or a baseline trained once), the data, the features,
and where rows are chosen."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..constants import TRAIN_REPORT_NAME
from ..data import label_arrays, load_partial_dataset, partial_info
from ..head import CFTHead
from ..io import read_json, recover_model_dir
from ..training import TrainArguments, dataset_options, train
from .arguments import RecipeArguments

logger = logging.getLogger(__name__)

__all__ = ["feature_extractor", "load_data", "load_head", "load_or_train_model", "resolve_selection"]


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


def feature_extractor(recipe: RecipeArguments, head, accelerator):
    """``split → features`` (numpy), extracted data parallel and cached under ``cache_dir/features``."""
    ext = dict(cache_dir=os.path.join(recipe.cache_dir, "features"), batch_size=recipe.batch_size,
               dtype=recipe.feature_dtype, accelerator=accelerator, show_progress=accelerator.is_main_process)

    def features_of(split):
        return np.asarray(head.extract(split, **ext).features)

    return features_of


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
    return np.arange(n), (features_of(ds[name]), *label_arrays(ds[name], sparse=None)), None, name == recipe.eval_split
