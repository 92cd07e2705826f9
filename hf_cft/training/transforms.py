"""The image transforms of the trainer and of the digits pretraining (evaluation: resize and normalize)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .arguments import TrainArguments

logger = logging.getLogger(__name__)

__all__ = ["image_transforms"]


def image_transforms(size: int, mean, std, train: bool, randaugment: bool, args: TrainArguments | None = None):
    """Resize and normalize; on training images also the augmentations ``args`` asks for (flip, rotation and
    scaling, e.g. the paper's CheXpert setup; RandAugment, its COCO setup)."""
    from torchvision import transforms as T

    ops = [T.Resize((size, size))]
    if train and args is not None and args.hflip:
        ops.append(T.RandomHorizontalFlip())
    if train and args is not None and (args.rotate_degrees or args.scale_range):
        ops.append(T.RandomAffine(degrees=args.rotate_degrees,
                                  scale=tuple(args.scale_range) if args.scale_range else None))
    if train and randaugment:
        ops.append(T.RandAugment())
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)
