"""After an epoch: the model's probabilities on the training rows, handed to the method's ``refresh`` (CL's
pseudo-labels, Selective's class prior)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data.loading import loader_options
from .methods import METHOD_REGISTRY
from .model import model_logits
from .splits import SplitDataset
from .state import Run, TrainState
from .transforms import image_transforms

logger = logging.getLogger(__name__)

__all__ = ["refresh_after_epoch"]


@torch.no_grad()
def refresh_after_epoch(run: Run, model, state: TrainState) -> None:
    """Score the training rows (``run.data.fit_rows``, evaluation transform) with ``model`` and let the method of
    ``run.args`` update ``state`` from the probabilities (every process's share gathered)."""
    args, accelerator, data = run.args, run.accelerator, run.data
    size, mean, std = run.preprocessing
    rows = SplitDataset(data.train, data.fit_rows, image_transforms(size, mean, std, False, False), data.labels,
                        data.mask, np.zeros_like(data.mask))
    loader = accelerator.prepare(torch.utils.data.DataLoader(
        rows, batch_size=args.batch_size, **loader_options(args.num_workers, accelerator.device)))
    model.eval()
    probs, idxs = [], []
    for batch in loader:
        p = torch.sigmoid(model_logits(model, batch["pixel_values"]).float())
        p, i = accelerator.gather_for_metrics((p, batch["index"]))
        probs.append(p.cpu()), idxs.append(i.cpu())
    p, idx = torch.cat(probs), torch.cat(idxs)
    METHOD_REGISTRY[args.method].refresh(args, p, idx, state)
