"""Model folders the trainer writes: the best model (``save_model``) and the pretrained digits backbone
(``save_backbone``), each moved in once complete. Moved unchanged from the trainer and the pretraining; to be
replaced by the shared :mod:`hf_cft.modeling.save`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from ..hub import recover_model_dir, save_timm_model, swap_in

logger = logging.getLogger(__name__)

__all__ = ["save_backbone", "save_model"]


def save_model(accelerator, model, directory: str, names: list[str], preprocessing=None) -> None:
    """Save the model (main process) with its labels and evaluation preprocessing ``(size, mean, std)``, atomically.

    The new folder is written to ``<directory>.tmp``, the old one moved aside to ``<directory>.old``, the new one
    moved in, the old one deleted: a kill at any point leaves a complete model at ``directory`` or at
    ``<directory>.old``, which the next save (or ``CFTHead.from_pretrained``) moves back.
    """
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model)
    recover_model_dir(directory)  # a previous save killed half-way; also removes a stale <directory>.tmp
    tmp = directory + ".tmp"
    if hasattr(model, "save_pretrained"):
        model.config.problem_type = "multi_label_classification"
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {n: i for i, n in enumerate(names)}
        model.save_pretrained(tmp, safe_serialization=True)
        if preprocessing is not None:  # exactly the evaluation transform the model was trained with
            import transformers

            size, mean, std = preprocessing
            transformers.ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean),
                                           image_std=list(std)).save_pretrained(tmp)
    else:  # timm: the preprocessing goes into the data config of config.json
        save_timm_model(model, tmp, names, preprocessing)
    swap_in(tmp, directory)


def save_backbone(model, output_dir: str, preprocessing, files: dict[str, dict]) -> None:
    """Save a transformers model with a ``ViTImageProcessor`` of ``preprocessing`` ``(size, mean, std)`` and the
    JSON ``files`` (name -> content) to ``output_dir``, moved in once complete (a complete folder is on disk at
    every instant)."""
    import transformers

    size, mean, std = preprocessing
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-pretrain-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        transformers.ViTImageProcessor(size={"height": size, "width": size}, image_mean=mean,
                                       image_std=std).save_pretrained(tmp)
        for name, content in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
        swap_in(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
