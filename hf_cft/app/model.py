"""What the page shows of a calibrated model: loading it (or saying plainly why not), and the probability of each
category for an image before CFT (the trained rows kept in ``cft_original_head.safetensors``) and after (the
model's own logits), with the yes / no answer at the saved thresholds.

No Gradio here: these functions are what the page calls, and what the tests check against torch directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import CFT_REPORT_NAME, ORIGINAL_HEAD_NAME
from ..features import preprocessing_of
from ..head import CFTHead
from ..modeling.load import model_file
from ..modeling.preprocessing import has_timm_data_config, missing_preprocessing_message
from ..predict import model_thresholds

logger = logging.getLogger(__name__)

__all__ = ["AppModel", "AppModelError", "Probabilities", "category_table", "load_app_model", "probabilities",
           "table_headers"]

DECIMALS = 4  # probabilities are shown rounded to this many decimals


class AppModelError(ValueError):
    """The model cannot be shown: the message says why and what to do; the page shows it instead of a traceback."""


@dataclass(frozen=True)
class AppModel:
    """A calibrated model loaded for the page.

    Attributes:
        source: the folder or Hub id it was loaded from.
        head: the :class:`~hf_cft.head.CFTHead` (its rows: after CFT; ``head.original_rows``: before, or None).
        names: the category names, in row order.
        thresholds: the saved per-category thresholds (``config.cft_thresholds``), or None.
        revision: the Hub revision it was read at (None: main, or a folder).
        token: the Hub token it was read with.
    """

    source: str
    head: CFTHead
    names: list[str]
    thresholds: list[float] | None = None
    revision: str | None = None
    token: str | None = None

    @property
    def has_before(self) -> bool:
        """Whether the trained rows were saved with the model (the "before" column)."""
        return self.head.original_rows is not None


def _not_calibrated(source: str) -> AppModelError:
    return AppModelError(
        f"{source} is not a calibrated model: it has no {CFT_REPORT_NAME}. This page shows models calibrated by "
        "hf_cft: run `accelerate launch recipes/cft.py --model_name_or_path <your model> --output_dir <folder>` "
        "(or CFTHead.fit / apply / save_pretrained) and open the folder it writes."
    )


def _check_source(source: str) -> None:
    """A clear error for a path that is neither a folder nor a Hub id (before anything is downloaded)."""
    if os.path.isdir(source):
        return
    if os.path.exists(source):
        raise AppModelError(f"{source} is a file, not a model folder: give the folder that holds config.json and "
                            f"{CFT_REPORT_NAME}.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError as err:
        raise AppModelError(f"{source} is neither an existing folder nor a Hub model id (owner/name): {err}") from err


def load_app_model(source: str | os.PathLike, revision: str | None = None, token: str | None = None) -> AppModel:
    """Load the calibrated model at ``source`` (a folder or a Hub id); :class:`AppModelError` with the reason and
    the fix when it is missing, not calibrated (no ``cft_report.json``), not a classifier hf_cft can load, or
    without known preprocessing."""
    source = os.fspath(source)
    _check_source(source)
    if model_file(source, CFT_REPORT_NAME, revision, token) is None:
        raise _not_calibrated(source)
    try:
        head = CFTHead.from_pretrained(source, revision=revision, token=token)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as err:
        raise AppModelError(f"{source} has a {CFT_REPORT_NAME} but no image classifier hf_cft can load: "
                            f"{type(err).__name__}: {err}") from err
    if head.image_processor is None and not has_timm_data_config(head.model):
        raise AppModelError(missing_preprocessing_message(source))
    if head.original_rows is None:
        logger.info("%s has no %s: the page shows the probabilities after CFT only", source, ORIGINAL_HEAD_NAME)
    names = head.label_names() or [f"LABEL_{i}" for i in range(head.num_labels)]
    thresholds = model_thresholds(head)
    if thresholds is not None and len(thresholds) != head.num_labels:
        logger.warning("%s: %d saved thresholds for %d categories; the yes / no answers are left out", source,
                       len(thresholds), head.num_labels)
        thresholds = None
    return AppModel(source, head, names, thresholds, revision, token)


@dataclass(frozen=True)
class Probabilities:
    """N×C probabilities of a batch of images: ``after`` (the model's logits) and ``before`` (the trained rows on
    the same features; None when the model was saved without them)."""

    after: np.ndarray
    before: np.ndarray | None


@torch.no_grad()
def probabilities(model: AppModel, images: Sequence) -> Probabilities:
    """The probabilities of PIL ``images`` before and after CFT, preprocessed as the model was trained
    (:func:`hf_cft.features.preprocessing_of`): after = ``σ(logits)``, before = ``σ(z·W0ᵀ + b0)`` with ``z`` the
    features that give those logits."""
    head = model.head
    if not images:
        empty = np.zeros((0, head.num_labels), dtype=np.float32)
        return Probabilities(empty, empty if model.has_before else None)
    prepare, _ = preprocessing_of(head, head.image_processor)
    device = next(head.model.parameters()).device
    features, logits = head.forward_with_features(prepare(list(images)).to(device))
    after = torch.sigmoid(logits.float()).cpu().numpy()
    before = None
    if model.has_before:
        weight, bias = head.original_rows
        before = torch.sigmoid(features.float().cpu() @ weight.T + bias).numpy()
    return Probabilities(after, before)


def table_headers(model: AppModel, several: bool = False) -> list[str]:
    """The columns of :func:`category_table` for this model (``several``: a first column naming the image)."""
    cols = ["image"] if several else []
    cols += ["category", "before CFT", "after CFT", "change"] if model.has_before else ["category", "after CFT"]
    return cols + (["answer (threshold)"] if model.thresholds is not None else [])


def category_table(model: AppModel, probs: Probabilities, image_names: Sequence[str] | None = None) -> list[list]:
    """One row per image and category, rounded to :data:`DECIMALS`: the category, its probability before and after
    CFT and the change (or after only), and "yes" / "no" at the saved threshold. Per image, the rows are sorted by
    the size of the change, largest first (without "before": by the probability after); ``image_names`` adds a
    first column naming the image."""
    rows = []
    for i, after in enumerate(probs.after):
        before = None if probs.before is None else probs.before[i]
        key = after if before is None else np.abs(after - before)
        for j in np.argsort(-key, kind="stable"):
            row = [] if image_names is None else [image_names[i]]
            row.append(model.names[j])
            if before is not None:
                row += [round(float(before[j]), DECIMALS), round(float(after[j]), DECIMALS),
                        round(float(after[j] - before[j]), DECIMALS)]
            else:
                row.append(round(float(after[j]), DECIMALS))
            if model.thresholds is not None:
                t = model.thresholds[j]
                row.append(f"{'yes' if after[j] >= t else 'no'} ({t:.{DECIMALS}f})")
            rows.append(row)
    return rows
