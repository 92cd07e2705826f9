"""The dataset of a run: its training labels (the uncertain policy applied), the seeded validation hold-out, the
categories the metrics average over, and the loaders."""

from __future__ import annotations

import json
import logging

import numpy as np
import torch

from ..data import BUILDERS, CHEXPERT_COMPETITION, label_arrays, load_partial_dataset, partial_info
from ..data.images import read_image
from ..data.loading import loader_options
from .arguments import TrainArguments
from .state import TrainData
from .transforms import image_transforms

logger = logging.getLogger(__name__)

__all__ = ["SplitDataset", "build_loaders", "dataset_options", "eval_columns",
           "load_training_data", "prepare_splits"]


class SplitDataset(torch.utils.data.Dataset):
    """Images of a datasets split with their labels, masks and row index (for pseudo-labels)."""

    def __init__(self, ds, rows: np.ndarray, transform, labels, mask, uncertain):
        self.ds, self.rows, self.transform = ds, rows, transform
        self.labels, self.mask, self.uncertain = labels, mask, uncertain

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = int(self.rows[i])
        image = read_image(self.ds, r)  # RGB as in feature extraction; a bad file is named
        return {"pixel_values": self.transform(image), "labels": torch.from_numpy(self.labels[r]),
                "label_mask": torch.from_numpy(self.mask[r]), "uncertain": torch.from_numpy(self.uncertain[r]),
                "index": torch.tensor(r)}


def dataset_options(dataset: str, dataset_config: str | None, known_ratio: float | None, protocol: str | None,
                    seed: int) -> dict:
    """The builder options of a run: ``dataset_config`` (JSON) with the simulation settings where they apply."""
    config = json.loads(dataset_config) if dataset_config else {}
    builder = BUILDERS.get(dataset)
    if builder is not None and builder.FULL_LABELS_BEHIND_MASK:  # partial labels simulated: known_ratio, …
        config.setdefault("known_ratio", known_ratio)
        config.setdefault("protocol", protocol)
        config.setdefault("seed", seed)
    return config


def load_training_data(args: TrainArguments, accelerator) -> TrainData:
    """The dataset and the training split's labels, with a CheXpert U-Ones / U-Zeros policy applied."""
    config = dataset_options(args.dataset, args.dataset_config, args.known_ratio, args.protocol, args.seed)
    with accelerator.main_process_first():
        ds = load_partial_dataset(args.dataset, data_dir=args.data_dir, **config)
    train_ds = ds["train"]
    columns = ("labels", "label_mask", "uncertain_mask") if "uncertain_mask" in train_ds.features else \
        ("labels", "label_mask")
    arrays = label_arrays(train_ds, columns)
    labels, mask = arrays[0].astype(np.float32), arrays[1]
    uncertain = arrays[2] if len(arrays) == 3 else np.zeros_like(mask)
    if args.uncertain_policy in ("u_ones", "u_zeros"):
        labels[uncertain] = 1.0 if args.uncertain_policy == "u_ones" else 0.0
        mask = mask | uncertain
    names = partial_info(train_ds)["categories"]
    # checked here, before any training: a wrong --eval_categories fails at once
    columns = eval_columns(args.dataset, names, args.eval_categories)
    return TrainData(ds, names, labels, mask, uncertain, config, eval_columns=columns)


def prepare_splits(args: TrainArguments, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_rows, val_rows)``: a seeded hold-out of ``val_fraction`` of the (first ``max_train_samples``) images."""
    order = np.random.default_rng(args.seed).permutation(n)
    if args.max_train_samples:
        order = order[: args.max_train_samples]
    n_val = max(1, int(round(args.val_fraction * len(order))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def eval_columns(dataset: str, names: list[str], chosen: list[str] | None) -> list[int] | None:
    """The categories the metrics average over: ``chosen`` (names), CheXpert's five competition categories by
    default there, else None (all)."""
    if chosen is None and dataset == "chexpert":
        chosen = list(CHEXPERT_COMPETITION)
    if chosen is None:
        return None
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"eval_categories {unknown} are not categories of the dataset ({names})")
    return [names.index(c) for c in chosen]


def build_loaders(args: TrainArguments, data: TrainData, preprocessing, gen: torch.Generator, device=None):
    """The shuffled (by ``gen``) training loader and the validation loader (``args.num_workers`` workers, default
    the cores available; memory pinned for a CUDA ``device``). The training loader's workers start again each
    epoch, seeded from ``gen`` (reseeded per epoch): a resumed run repeats the random augmentations."""
    size, mean, std = preprocessing
    augmented = image_transforms(size, mean, std, True, args.randaugment, args)
    fit_set = SplitDataset(data.train, data.fit_rows, augmented, data.labels, data.mask, data.uncertain)
    val_set = SplitDataset(data.train, data.val_rows, image_transforms(size, mean, std, False, False), data.labels,
                           data.mask, data.uncertain)
    options = loader_options(args.num_workers, device)
    train_loader = torch.utils.data.DataLoader(fit_set, batch_size=args.batch_size, shuffle=True, generator=gen,
                                               drop_last=False, **options)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size,
                                             **loader_options(args.num_workers, device, reused=True))
    return train_loader, val_loader
