"""The model layer: the head of a classifier (:mod:`.heads`), loading (:mod:`.load`), saving (:mod:`.save`).

``heads``: find the classifier rows of any transformers / timm model, read and write them. ``load``: load any
classifier from a folder or a Hub id, refusing a random head. ``save``: the one function that writes a model
folder (weights, config, preprocessing, extra files; atomically). ``original``: the trained rows a calibrated
model replaced, kept beside it (``cft_original_head.safetensors``).
"""

from .heads import (
    HeadSpec,
    check_label_names,
    find_head,
    forward_with_features,
    is_timm,
    label_names,
    read_rows,
    write_rows,
)
from .load import library_of, load_classifier, model_file, read_calibration
from .original import original_head_file, read_original_head
from .save import MULTI_LABEL, ExtraFile, SaveOptions, save_model, save_timm_model

__all__ = ["MULTI_LABEL", "ExtraFile", "HeadSpec", "SaveOptions", "check_label_names", "find_head",
           "forward_with_features", "is_timm", "label_names", "library_of", "load_classifier", "model_file",
           "original_head_file", "read_calibration", "read_original_head", "read_rows", "save_model",
           "save_timm_model", "write_rows"]
