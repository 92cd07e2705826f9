"""The preprocessing features are extracted with: ``list of images -> pixel_values``, picklable for workers."""

from __future__ import annotations

import json
import logging

import torch

from ..data.images import to_rgb

logger = logging.getLogger(__name__)

__all__ = ["Preprocess", "preprocessing_of"]


class Preprocess:
    """``fn(list of PIL images) -> pixel_values``: every image made RGB by :func:`~hf_cft.data.images.to_rgb`,
    then a torchvision-style ``transform`` (one image -> tensor) or an ``image_processor`` (a batch). An object
    rather than a closure, so that ``DataLoader`` workers started by ``spawn`` (macOS, Windows) receive it."""

    def __init__(self, transform=None, image_processor=None):
        if (transform is None) == (image_processor is None):
            raise ValueError("Preprocess takes a `transform` or an `image_processor`, exactly one of them")
        self.transform, self.image_processor = transform, image_processor

    def __call__(self, images) -> torch.Tensor:
        images = [to_rgb(im) for im in images]
        if self.transform is not None:
            return torch.stack([self.transform(im) for im in images])
        return self.image_processor(images, return_tensors="pt")["pixel_values"]


def preprocessing_of(head, image_processor=None, transform=None) -> tuple[Preprocess, str]:
    """``(fn, description)``: ``fn(list of PIL images) -> pixel_values`` and a stable text for the cache key.

    Order of preference: an explicit ``transform`` (its ``repr`` in the key; pass ``transform_id`` to
    :func:`~hf_cft.features.extract_features` to name it), an ``image_processor``, timm's data config for timm
    models.
    """
    if transform is not None:
        return Preprocess(transform=transform), repr(transform)
    if image_processor is not None:
        desc = json.dumps(image_processor.to_dict(), sort_keys=True, default=str)
        return Preprocess(image_processor=image_processor), desc
    model = head.model.timm_model if hasattr(head.model, "timm_model") else head.model
    if hasattr(model, "pretrained_cfg"):
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=model)
        return Preprocess(transform=timm.data.create_transform(**cfg)), json.dumps(cfg, default=str)
    raise ValueError("no preprocessing known for this model: pass `image_processor=` (e.g. "
                     "AutoImageProcessor.from_pretrained(model_id)) or `transform=`")
