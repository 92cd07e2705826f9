"""A backbone pretrained on another, fully labeled task: the role ImageNet plays for COCO, for the embedded data.

Partial-label models are usually an ImageNet-pretrained backbone fine-tuned with pseudo-labels. For
``digits_mosaic`` the other task is **single-digit classification** on the *training* pool of scikit-learn's
digits (never a digit of the test pool): one digit, at a random contrast, in a random cell of an empty mosaic
canvas, 10-way softmax. The saved model (transformers, with its image processor) is then the
``--init_from`` of :func:`hf_cft.training.train`, whose classifier is initialized afresh.

    python -c "from hf_cft.training.pretrain import pretrain_digits; pretrain_digits('outputs/pretrain-digits')"
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..data.digits import DigitsMosaicConfig, digit_pools
from ..data.images import to_rgb
from ..io import read_json
from .arguments import TrainArguments
from .model import IMAGE_SIZE, MEAN, STD, tiny_resnet
from .saving import save_backbone
from .state import TrainData
from .transforms import image_transforms

logger = logging.getLogger(__name__)

__all__ = ["PRETRAIN_REPORT_NAME", "PretrainSettings", "pretrain_backbone", "pretrain_digits",
           "single_digit_canvases", "tiny_resnet"]

PRETRAIN_REPORT_NAME = "pretrain_report.json"


@dataclass(frozen=True)
class PretrainSettings:
    """The settings of :func:`pretrain_digits`; a finished folder made with the same ones is reused."""

    seed: int = 0  # the canvases, the initial weights and the shuffles
    pool_seed: int = 0  # the digits_mosaic dataset's seed: its training and test pools
    test_pool_fraction: float = 0.3  # the dataset's test_pool_fraction
    n_train: int = 5000  # canvases trained on
    n_val: int = 1000  # held-out canvases: the report's validation accuracy

    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 3e-3  # the OneCycle peak

    def as_report(self) -> dict:
        """The ``settings`` of ``pretrain_report.json``."""
        return {**asdict(self), "task": "digits single-digit, train pool"}


def pretrain_backbone(args: TrainArguments, accelerator, data: TrainData) -> TrainArguments:
    """With ``--init_from digits``: pretrain the small ResNet on single digits (once) and start from it."""
    if args.init_from != "digits":
        return args
    if args.dataset != "digits_mosaic":
        raise ValueError("--init_from digits pretrains on the embedded digits: use it with digits_mosaic")
    folder = os.path.join(args.output_dir, "pretrained-digits")
    with accelerator.main_process_first():  # the others then find it finished
        # the dataset's own pools (seed and test share), so that no digit of its test pool is pretrained on
        pretrain_digits(folder, seed=args.seed, pool_seed=data.dataset_config.get("seed", args.seed),
                        test_pool_fraction=data.dataset_config.get("test_pool_fraction",
                                                                   DigitsMosaicConfig.test_pool_fraction),
                        show_progress=accelerator.is_local_main_process)
    return dataclasses.replace(args, init_from=folder)



def single_digit_canvases(n: int, seed: int, pool_seed: int = 0, grid: int = 3,
                          test_pool_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases (uint8, n × 8·grid × 8·grid) each holding one training-pool digit, and the digits."""
    images, targets, pools = digit_pools(pool_seed, test_pool_fraction)
    pool = pools["train"]
    rng = np.random.default_rng([int(seed), 31337])
    side = 8 * grid
    canvas = np.zeros((n, side, side), dtype=np.float32)
    picks = pool[rng.integers(len(pool), size=n)]
    cells = rng.integers(grid, size=(n, 2))
    contrast = rng.uniform(0.25, 1.0, size=n).astype(np.float32)
    for i in range(n):
        r, c = cells[i]
        canvas[i, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = images[picks[i]] * contrast[i]
    return (np.clip(canvas, 0, 1) * 255).astype(np.uint8), targets[picks].astype(np.int64)



def _tensors(pixels: np.ndarray) -> torch.Tensor:
    """The trainer's evaluation transform (RGB, resize to 32 px, normalize) on a batch of canvases."""
    from PIL import Image

    tf = image_transforms(IMAGE_SIZE, MEAN, STD, False, False)
    return torch.stack([tf(to_rgb(Image.fromarray(p, mode="L"))) for p in pixels])


def pretrain_digits(output_dir: str, *, show_progress: bool = True, **settings: Any) -> dict:
    """Train the small ResNet on single-digit classification and save it to ``output_dir`` (atomically).

    ``settings`` are fields of :class:`PretrainSettings` (``seed``, ``pool_seed``, ``test_pool_fraction``,
    ``n_train``, ``n_val``, ``epochs``, ``batch_size``, ``learning_rate``). ``pool_seed`` and
    ``test_pool_fraction`` must be those of the ``digits_mosaic`` dataset trained on later (its ``seed`` and
    ``test_pool_fraction``): they define its pools, and only its training pool is used. Reuses a finished
    ``output_dir`` (its ``pretrain_report.json``) made with the same settings. Returns the report (validation
    accuracy on held-out canvases of the training pool).
    """
    cfg = PretrainSettings(**settings)
    report_path = os.path.join(output_dir, PRETRAIN_REPORT_NAME)
    if os.path.exists(report_path):
        done = read_json(report_path)
        if done.get("settings") == cfg.as_report():
            return done
    torch.manual_seed(cfg.seed)
    pixels, targets = single_digit_canvases(cfg.n_train + cfg.n_val, cfg.seed, cfg.pool_seed,
                                            test_pool_fraction=cfg.test_pool_fraction)
    x, y = _tensors(pixels), torch.from_numpy(targets)
    x_fit, y_fit, x_val, y_val = x[:cfg.n_train], y[:cfg.n_train], x[cfg.n_train:], y[cfg.n_train:]
    model = tiny_resnet(10, multi_label=False)
    _fit(model, x_fit, y_fit, cfg, show_progress)
    model.eval()
    with torch.no_grad():
        acc = float((model(x_val).logits.argmax(-1) == y_val).float().mean())
    report = {"settings": cfg.as_report(), "validation_accuracy": acc}
    save_backbone(model, output_dir, (IMAGE_SIZE, MEAN, STD), {PRETRAIN_REPORT_NAME: report})
    logger.info("pretrained backbone: single-digit accuracy %.1f%% on held-out canvases → %s", 100 * acc,
                output_dir)
    return report


def _fit(model, x_fit: torch.Tensor, y_fit: torch.Tensor, cfg: PretrainSettings, show_progress: bool) -> None:
    """AdamW with a OneCycle schedule, cross-entropy, seeded shuffles."""
    from tqdm.auto import tqdm

    n_train, batch_size = cfg.n_train, cfg.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    steps = cfg.epochs * ((n_train + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, total_steps=steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=steps, desc="pretrain (single digits)", disable=not show_progress)
    for _ in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(n_train, generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(x_fit[idx]).logits, y_fit[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
