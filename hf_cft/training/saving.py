"""Model folders the trainer writes — the best model (:func:`save_best`) and the pretrained digits backbone
(:func:`save_backbone`) — both through the package's one folder writer, :func:`hf_cft.modeling.save.save_model`
(written to ``<directory>.tmp``, then swapped in whole: a complete model is on disk at every instant)."""

from __future__ import annotations

import json
import logging

from ..modeling import save as model_folder

logger = logging.getLogger(__name__)

__all__ = ["save_backbone", "save_best"]


def save_best(accelerator, model, directory: str, names: list[str], preprocessing=None) -> None:
    """Save the model (main process) as a multi-label classifier with its labels and evaluation preprocessing
    ``(size, mean, std)``, atomically (a kill at any point leaves a complete model that the next save, or
    ``CFTHead.from_pretrained``, recovers)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    options = model_folder.SaveOptions(label_names=names, preprocessing=preprocessing, replace=True)
    model_folder.save_model(accelerator.unwrap_model(model), directory, options)


def save_backbone(model, output_dir: str, preprocessing, files: dict[str, dict]) -> None:
    """Save the pretrained backbone (its config as it is) with a ``ViTImageProcessor`` of ``preprocessing``
    ``(size, mean, std)`` and the JSON ``files`` (name -> content), moved in once complete."""
    extra = {name: json.dumps(content, indent=2) for name, content in files.items()}
    options = model_folder.SaveOptions(problem_type=None, preprocessing=preprocessing, extra_files=extra,
                                       replace=True)
    model_folder.save_model(model, output_dir, options)
