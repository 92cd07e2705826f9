"""A backbone pretrained on another, fully labeled task: the role ImageNet plays for COCO, for the embedded data.

Partial-label models are usually an ImageNet-pretrained backbone fine-tuned with pseudo-labels. For
``digits_mosaic`` the other task is **single-digit classification** on the *training* pool of scikit-learn's
digits (never a digit of the test pool): one digit, at a random contrast, in a random cell of an empty mosaic
canvas, 10-way softmax. The saved model (transformers, with its image processor) is then the
``--init_from`` of :func:`hf_cft.training.train`, whose classifier is initialized afresh.

    python -c "from hf_cft.pretrain import pretrain_digits; pretrain_digits('outputs/pretrain-digits')"
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import numpy as np
import torch

from .hub import swap_in

logger = logging.getLogger(__name__)

__all__ = ["PRETRAIN_REPORT_NAME", "pretrain_digits", "single_digit_canvases", "tiny_resnet"]

PRETRAIN_REPORT_NAME = "pretrain_report.json"
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


def single_digit_canvases(n: int, seed: int, pool_seed: int = 0, grid: int = 3,
                          test_pool_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases (uint8, n × 8·grid × 8·grid) each holding one training-pool digit, and the digits."""
    from .data.digits import digit_pools

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

    from .training import _transforms

    tf = _transforms(IMAGE_SIZE, MEAN, STD, False, False)
    return torch.stack([tf(Image.fromarray(p, mode="L").convert("RGB")) for p in pixels])


# long: a self-contained pretraining run (data, loop, atomic save), read top to bottom like a script
def pretrain_digits(output_dir: str, seed: int = 0, pool_seed: int = 0, n_train: int = 5000, n_val: int = 1000,
                    epochs: int = 3, batch_size: int = 128, learning_rate: float = 3e-3,
                    show_progress: bool = True, test_pool_fraction: float = 0.3) -> dict:
    """Train the small ResNet on single-digit classification and save it to ``output_dir`` (atomically).

    ``pool_seed`` and ``test_pool_fraction`` must be those of the ``digits_mosaic`` dataset trained on later
    (its ``seed`` and ``test_pool_fraction``): they define its pools, and only its training pool is used. Reuses
    a finished ``output_dir`` (its ``pretrain_report.json``) made with the same settings. Returns the report
    (validation accuracy on held-out canvases of the training pool).
    """
    import transformers
    from tqdm.auto import tqdm

    settings = {"seed": seed, "pool_seed": pool_seed, "test_pool_fraction": test_pool_fraction, "n_train": n_train,
                "n_val": n_val, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "task": "digits single-digit, train pool"}
    report_path = os.path.join(output_dir, PRETRAIN_REPORT_NAME)
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("settings") == settings:
            return done
    torch.manual_seed(seed)
    pixels, targets = single_digit_canvases(n_train + n_val, seed, pool_seed, test_pool_fraction=test_pool_fraction)
    x, y = _tensors(pixels), torch.from_numpy(targets)
    x_fit, y_fit, x_val, y_val = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    model = tiny_resnet(10, multi_label=False)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="pretrain (single digits)", disable=not show_progress)
    for _ in range(epochs):
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
    model.eval()
    with torch.no_grad():
        acc = float((model(x_val).logits.argmax(-1) == y_val).float().mean())
    report = {"settings": settings, "validation_accuracy": acc}
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-pretrain-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        transformers.ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=MEAN,
                                       image_std=STD).save_pretrained(tmp)
        with open(os.path.join(tmp, PRETRAIN_REPORT_NAME), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        swap_in(tmp, output_dir)  # a complete backbone is on disk at every instant
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("pretrained backbone: single-digit accuracy %.1f%% on held-out canvases → %s", 100 * acc,
                output_dir)
    return report
