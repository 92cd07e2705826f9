"""The one function that writes a model folder: :func:`save_model`.

Weights in the model's native format (transformers ``save_pretrained``, or timm's ``save_for_hf`` for a timm
model), its config (as a multi-label classifier with its label names, unless told to leave it), its image
preprocessing, and extra files, written atomically through :func:`hf_cft.io.write_folder`.

Example:
    >>> save_model(model, "out/best", SaveOptions(label_names=names, preprocessing=(224, mean, std), replace=True))
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..io import read_json, write_folder, write_plain
from .preprocessing import processor_from_values

logger = logging.getLogger(__name__)

__all__ = ["MULTI_LABEL", "ExtraFile", "SaveOptions", "save_model", "save_timm_model"]

MULTI_LABEL = "multi_label_classification"
# an extra file's content: text (UTF-8), bytes, or a function that writes the file at the path it is given
ExtraFile = str | bytes | Callable[[str], Any]


@dataclass
class SaveOptions:
    """How :func:`save_model` writes a model folder.

    Attributes:
        label_names: the label names to save (transformers' ``id2label`` / ``label2id``, timm's ``label_names``);
            None: the model's own are kept.
        problem_type: written into the config; None: the model's own is kept.
        image_processor: a transformers image processor saved beside the weights (not for a timm model).
        preprocessing: ``(size, mean, std)``, the evaluation transform the model was trained with: a
            ``ViTImageProcessor`` (when no ``image_processor`` is given), or a timm model's data config.
        extra_files: file name (relative, inside the folder) → :data:`ExtraFile`, written after the model.
        replace: True: the folder becomes exactly the new files (:func:`hf_cft.io.swap_in`); False: the folder's
            other files and subfolders stay (:func:`hf_cft.io.move_in`).
        config_attributes: extra top-level entries of ``config.json`` (e.g. ``cft_thresholds``): plain
            transformers users read them as ``model.config.<name>``.
    """

    label_names: Sequence[str] | None = None
    problem_type: str | None = MULTI_LABEL
    image_processor: Any = None
    preprocessing: tuple[int, Sequence[float], Sequence[float]] | None = None
    extra_files: Mapping[str, ExtraFile] = field(default_factory=dict)
    replace: bool = False
    config_attributes: Mapping[str, Any] = field(default_factory=dict)


def save_model(model: nn.Module, directory: str | os.PathLike, options: SaveOptions | None = None) -> str:
    """Write ``model`` to ``directory`` as ``options`` say, atomically; returns the folder's absolute path.

    The in-memory model is left as it was (its config is edited on a copy for the save). Everything is written to
    ``<directory>.tmp`` first (see :func:`hf_cft.io.write_folder`).
    """
    options = options or SaveOptions()
    for name in options.extra_files:
        if os.path.isabs(name) or os.path.normpath(name).startswith(os.pardir):
            raise ValueError(f"extra file name {name!r} must be relative, inside the model folder")

    def fill(folder: str) -> None:
        if hasattr(model, "save_pretrained"):
            _save_transformers(model, folder, options)
        else:
            save_timm_model(model, folder, options.label_names, options.preprocessing, options.problem_type)
            if options.config_attributes:
                path = os.path.join(folder, "config.json")
                write_plain(path, json.dumps({**read_json(path), **options.config_attributes}, indent=2))
        _write_extra_files(folder, options.extra_files)

    return write_folder(directory, fill, replace=options.replace)


def _save_transformers(model: nn.Module, folder: str, options: SaveOptions) -> None:
    """``save_pretrained`` with the config of ``options`` (on a copy) and the image processor beside it."""
    original = model.config
    if options.problem_type is not None or options.label_names is not None or options.config_attributes:
        cfg = copy.deepcopy(original)
        for key, value in options.config_attributes.items():
            setattr(cfg, key, value)
        if options.problem_type is not None:
            cfg.problem_type = options.problem_type
        if options.label_names is not None:
            names = [str(n) for n in options.label_names]
            cfg.id2label = dict(enumerate(names))
            cfg.label2id = {n: i for i, n in enumerate(names)}
        model.config = cfg
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        model.config = original
    processor = options.image_processor
    if processor is None and options.preprocessing is not None:
        processor = processor_from_values(*options.preprocessing)
    if processor is not None:
        processor.save_pretrained(folder)  # the pipeline needs it beside the weights


def _write_extra_files(folder: str, files: Mapping[str, ExtraFile]) -> None:
    """Plain writes: the folder is moved in place only once complete."""
    for name, content in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path) or folder, exist_ok=True)
        if callable(content):
            content(path)
        else:
            write_plain(path, content)


def save_timm_model(model: nn.Module, directory: str, label_names: Sequence[str] | None = None,
                    preprocessing: tuple[int, Sequence[float], Sequence[float]] | None = None,
                    problem_type: str | None = MULTI_LABEL) -> None:
    """Save a timm model (``timm.models.save_for_hf``) so that timm and transformers both load it.

    ``timm.create_model("local-dir:<dir>", pretrained=True)`` and
    ``transformers.AutoModelForImageClassification.from_pretrained(<dir>)`` (``TimmWrapper…``) both work:
    ``num_classes`` is dropped from ``model_args`` (transformers passes it itself and failed with "got multiple
    values for keyword argument 'num_classes'"); it stays at the top level. ``problem_type`` (default
    ``multi_label_classification``) goes into the config and the label names become transformers' ``id2label``.
    ``preprocessing`` ``(size, mean, std)`` records a squash resize to ``size``×``size`` with that normalization
    (the trainer's evaluation transform) in the data config, so that timm's ``resolve_data_config`` gives it back.
    """
    from timm.models import save_for_hf

    names = [str(n) for n in label_names] if label_names is not None else None
    original = model.pretrained_cfg
    if names is not None:  # only for the save: the in-memory model is left as it was
        model.pretrained_cfg = {**original, "label_names": names}
    try:
        save_for_hf(model, directory, model_config={"label_names": names} if names else None,
                    safe_serialization=True)
    finally:
        model.pretrained_cfg = original
    _edit_timm_config(os.path.join(directory, "config.json"), preprocessing, problem_type)


def _edit_timm_config(path: str, preprocessing, problem_type: str | None) -> None:
    """``save_for_hf``'s ``config.json`` made loadable by transformers, with the problem type and preprocessing."""
    cfg = read_json(path)
    if isinstance(cfg.get("model_args"), dict):
        cfg["model_args"].pop("num_classes", None)
    if problem_type is not None:
        cfg["problem_type"] = problem_type
    if preprocessing is not None:
        size, mean, std = preprocessing
        data = cfg.setdefault("pretrained_cfg", {})
        if list(data.get("input_size", [3])[1:]) != [size, size]:
            data["pool_size"] = None
        data.update(input_size=[data.get("input_size", [3])[0], size, size], mean=[float(v) for v in mean],
                    std=[float(v) for v in std], crop_pct=1.0, crop_mode="squash", interpolation="bilinear")
        for key in ("test_input_size", "test_crop_pct"):
            data.pop(key, None)
    write_plain(path, json.dumps(cfg, indent=2))  # a plain write: inside a folder moved in once complete
