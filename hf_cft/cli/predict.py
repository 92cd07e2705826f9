"""``hf-cft predict``: a model and images (files or folders) → one JSON line per image with its score, its
probability and, when the model has saved thresholds, its labels.

The images go through the model's own preprocessing and the extraction the recipe uses (``CFTHead.extract``, into
a temporary cache), and the scores are the model's logits (``features @ weight.T + bias``). Labels are decided in
one place, :func:`decide_labels`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from ..head import CFTHead
from ..io import write_atomic
from ..predict import model_thresholds
from ..training.arguments import Library
from .command import Command

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "PREDICT", "PredictArguments", "decide_labels", "image_paths", "predict",
           "saved_thresholds"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class PredictArguments:
    """A model and the images to label (``hf-cft predict``)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Hub id or folder of the classifier (a calibrated model folder, or any other)."})
    images: list[str] | None = field(default=None, metadata={
        "help": f"Image files and folders (searched recursively for {', '.join(IMAGE_SUFFIXES)})."})
    library: Library | None = field(default=None, metadata={
        "help": "'transformers' or 'timm'; default: read from the model's config.json."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    image_size: int | None = field(default=None, metadata={
        "help": "Preprocessing of a model saved without an image processor (with --image_mean and --image_std)."})
    image_mean: list[float] | None = field(default=None, metadata={"help": "Per-channel mean."})
    image_std: list[float] | None = field(default=None, metadata={"help": "Per-channel std."})
    output_file: str | None = field(default=None, metadata={
        "help": "Write the JSON lines to this file (atomically) instead of the standard output."})

    def __post_init__(self) -> None:
        if not self.model_name_or_path or not self.images:
            raise ValueError("hf-cft predict needs a model and images: --model_name_or_path <folder or Hub id> "
                             "--images <files or folders>")


def image_paths(inputs: Sequence[str]) -> list[str]:
    """The image files of ``inputs``: files as given, folders searched recursively (sorted); an input that does
    not exist, or a folder without images, is an error naming it."""
    out = []
    for item in inputs:
        if os.path.isfile(item):
            out.append(item)
        elif os.path.isdir(item):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(item) for name in names
                           if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise ValueError(f"{item}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            raise ValueError(f"{item}: no such file or folder")
    return out


def saved_thresholds(head: CFTHead) -> np.ndarray | None:
    """The per-category decision thresholds saved with the model (``cft_thresholds`` in its config, one per
    category in ``id2label`` order), or None; a list of the wrong length or with a non-finite value is an error."""
    values = model_thresholds(head)  # config.json's cft_thresholds, or a timm model's report
    if values is None:
        return None
    t = np.asarray(values, dtype=np.float64)
    if t.shape != (head.num_labels,) or not np.isfinite(t).all():
        raise ValueError(f"{head.name_or_path}: `cft_thresholds` must hold one finite threshold per category "
                         f"({head.num_labels}), got {list(values)[:10]}")
    return t


def decide_labels(head: CFTHead, probabilities: np.ndarray, names: Sequence[str]) -> list[list[str]] | None:
    """Each image's labels: the categories whose probability reaches the model's saved threshold; None when the
    model saved none. The one place ``hf-cft predict`` decides labels (per-category decisions of the library go
    here)."""
    thresholds = saved_thresholds(head)
    if thresholds is None:
        return None
    return [[names[c] for c in np.flatnonzero(row >= thresholds)] for row in probabilities]


def predict(head: CFTHead, paths: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """N×C logits of the images at ``paths`` (float64): their features, extracted as the recipe extracts them,
    times the head's rows."""
    import datasets

    ds = datasets.Dataset.from_dict({"image": [os.path.abspath(p) for p in paths]})
    ds = ds.cast_column("image", datasets.Image())
    with tempfile.TemporaryDirectory(prefix="hf_cft_predict_") as cache:
        z = np.array(head.extract(ds, cache, batch_size=batch_size, show_progress=False).features, dtype=np.float64)
    return z @ head.weight.double().numpy().T + head.bias.double().numpy()


def _line(path: str, names: Sequence[str], logits: np.ndarray, probs: np.ndarray, labels: list[str] | None) -> str:
    record = {"image": path, "scores": dict(zip(names, logits.tolist())),
              "probabilities": dict(zip(names, probs.tolist()))}
    if labels is not None:
        record["labels"] = labels
    return json.dumps(record)


def run_predict(args: PredictArguments) -> list[str]:
    """Write one JSON line per image (standard output, or ``output_file``); returns the lines."""
    paths = image_paths(args.images)
    head = CFTHead.from_pretrained(args.model_name_or_path, library=args.library)
    if args.image_size is not None and head.image_processor is None and head.library == "transformers":
        head.set_preprocessing(args.image_size, args.image_mean, args.image_std)
    names = head.label_names() or [str(i) for i in range(head.num_labels)]
    logits = predict(head, paths, args.batch_size)
    probs = expit(logits)
    labels = decide_labels(head, probs, names)
    lines = [_line(p, names, logits[i], probs[i], None if labels is None else labels[i]) for i, p in enumerate(paths)]
    text = "".join(line + "\n" for line in lines)
    if args.output_file:
        write_atomic(args.output_file, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return lines


PREDICT = Command(
    name="predict",
    summary="Label images with a model: one JSON line per image (scores, probabilities, labels at its thresholds).",
    description="Label images with a model: one JSON line per image with each category's score (logit) and "
                "probability (sigmoid) and, when the model saved per-category thresholds (`cft_thresholds`), the "
                "labels whose probability reaches them.",
    dataclasses=(PredictArguments,),
    run=run_predict,
)
