"""The model a run trains (built, or loaded with a fresh classifier), its logits, and the best model read back."""

from __future__ import annotations

import logging
import os

import torch

from ..modeling.heads import find_head
from .arguments import TrainArguments

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SIZE", "MEAN", "STD", "build_model", "load_best", "model_logits", "tiny_resnet"]

BEST = "best"  # the folder of output_dir that holds the best model
IMAGE_SIZE, MEAN, STD = 32, [0.5] * 3, [0.5] * 3  # the trainer's preprocessing of the embedded data


def tiny_resnet(num_labels: int, id2label: dict[int, str] | None = None, multi_label: bool = True):
    """The small ResNet the trainer builds when no model is given (random weights)."""
    import transformers

    id2label = id2label or {i: str(i) for i in range(num_labels)}
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
                                    layer_type="basic", num_labels=num_labels, id2label=id2label,
                                    label2id={n: i for i, n in id2label.items()},
                                    problem_type="multi_label_classification" if multi_label else
                                    "single_label_classification")
    return transformers.ResNetForImageClassification(cfg)


def build_model(args: TrainArguments, names: list[str]):
    """The model to train and its input size, mean and std (with ``init_from``: its classifier made afresh)."""
    model, size, mean, std = _load_model(args, names)
    if args.init_from:
        torch.manual_seed(args.seed)
        for path in find_head(model).paths:
            model.get_submodule(path).reset_parameters()
    return model, size, mean, std


def _load_model(args: TrainArguments, names: list[str]):
    id2label = dict(enumerate(names))
    source = args.init_from or args.model_name_or_path
    if args.model_type == "timm":
        import timm

        name = str(source)
        local = os.path.isdir(name)
        # pretrained where the weights are at hand (a local folder or a Hub repo); a bare timm name: random init
        model = timm.create_model(f"local-dir:{name}" if local else name,
                                  pretrained=local or name.startswith("hf-hub:"), num_classes=len(names))
        cfg = timm.data.resolve_data_config({}, model=model)
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": names}
        return model, args.image_size or cfg["input_size"][-1], cfg["mean"], cfg["std"]
    import transformers

    if source is None:
        torch.manual_seed(args.seed)
        return tiny_resnet(len(names), id2label), args.image_size or IMAGE_SIZE, MEAN, STD
    model = transformers.AutoModelForImageClassification.from_pretrained(
        source, num_labels=len(names), id2label=id2label,
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True,
        problem_type="multi_label_classification")
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(source)
        size = getattr(proc, "size", {}) or {}
        side = size.get("height") or size.get("shortest_edge") or 224
        return model, args.image_size or side, proc.image_mean, proc.image_std
    except (OSError, ValueError):
        return model, args.image_size or 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def model_logits(model, x):
    """The logits of a transformers (``.logits``) or timm (a tensor) model."""
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def load_best(args: TrainArguments):
    """The best model of a run, read back from ``output_dir/best``."""
    path = os.path.join(args.output_dir, BEST)
    if args.model_type == "timm":
        import timm

        return timm.create_model(f"local-dir:{path}", pretrained=True)
    import transformers

    return transformers.AutoModelForImageClassification.from_pretrained(path)
