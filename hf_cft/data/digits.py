"""digits_mosaic: the embedded, download-free multi-label dataset.

Built from scikit-learn's bundled handwritten digits (1,797 images of 8×8 px). Each example is a k×k mosaic
of cells (default 3×3, 24×24 px, grayscale); each cell holds a digit with probability ``fill`` (at random
from the split's pool, with a random contrast in [0.25, 1]), plus optional Gaussian noise. Category d is
positive when digit d appears. ``train`` and ``test`` draw from disjoint pools of source digits; ``test``
is fully labeled; ``train`` is partially labeled with the COCO protocols (``uniform``, ``per_image_fixed``,
``positives_only``) or ``salient``: a positive is more likely known when its digit is conspicuous (high
contrast, several copies), an annotator bias that makes Assume Negative systematically wrong, unlike
uniform dropping. Deterministic by ``seed``; builds in seconds.
"""

from __future__ import annotations

import dataclasses
import io

import datasets
import numpy as np
from PIL import Image

from .builder import PartialBuilder
from .registry import register_builder
from .simulate import PROTOCOLS, PartialConfig, image_rng, simulate_known

CATEGORIES = [str(d) for d in range(10)]


def digit_pools(seed: int, test_pool_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's 8×8 digits in [0, 1], their targets, and the disjoint source pools of ``train`` and ``test``.

    The same ``seed`` gives the same pools everywhere (the builder, and the single-digit pretraining of
    :mod:`hf_cft.training.pretrain`, which must never see a digit of the test pool).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("digits_mosaic is built from scikit-learn's digits: pip install scikit-learn") from err
    digits = load_digits()
    perm = np.random.default_rng(seed).permutation(len(digits.target))
    n_test_pool = int(round(test_pool_fraction * len(perm)))
    images = (digits.images / 16.0).astype(np.float32)
    return images, digits.target, {"test": perm[:n_test_pool], "train": perm[n_test_pool:]}


@dataclasses.dataclass
class DigitsMosaicConfig(PartialConfig):
    known_ratio: float = 0.1
    grid: int = 3
    fill: float = 0.35
    noise: float = 0.0
    n_train: int = 3000
    n_test: int = 1000
    test_pool_fraction: float = 0.3


@register_builder("digits_mosaic")
class DigitsMosaic(PartialBuilder):
    """Multi-label digit mosaics: 10 categories, no download."""

    FULL_LABELS_BEHIND_MASK = True  # partial labels are simulated from the full ones

    BUILDER_CONFIG_CLASS = DigitsMosaicConfig
    CATEGORIES = CATEGORIES
    CITATION = "UCI ML hand-written digits (Alpaydin & Kaynak, 1998), as bundled with scikit-learn."

    def metadata(self):
        cfg = self.config
        return {**super().metadata(), "grid": cfg.grid, "fill": cfg.fill, "noise": cfg.noise,
                "n_train": cfg.n_train, "n_test": cfg.n_test}

    def _split_generators(self, dl_manager):
        cfg = self.config
        cfg.check((*PROTOCOLS, "salient"))
        if cfg.grid < 1 or not 0 < cfg.fill <= 1 or cfg.n_train < 1 or cfg.n_test < 1:
            raise ValueError("digits_mosaic needs grid >= 1, 0 < fill <= 1 and n_train, n_test >= 1")
        if not 0 < cfg.test_pool_fraction < 1:
            raise ValueError(f"`test_pool_fraction` must be in (0, 1) (the share of scikit-learn's digits kept for "
                             f"the test mosaics), got {cfg.test_pool_fraction}")
        if int(cfg.seed) < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {cfg.seed}")
        images, targets, pools = digit_pools(cfg.seed, cfg.test_pool_fraction)
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={
                "images": images, "targets": targets, "pool": pools["train"], "n": cfg.n_train,
                "split": "train", "offset": 0}),
            datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={
                "images": images, "targets": targets, "pool": pools["test"], "n": cfg.n_test,
                "split": "test", "offset": 10_000_000}),
        ]

    def _generate_examples(self, images, targets, pool, n: int, split: str, offset: int):
        cfg = self.config
        k = cfg.grid
        for i in range(n):
            rng = image_rng(cfg.seed, offset + i)
            canvas = np.zeros((8 * k, 8 * k), dtype=np.float32)
            labels = np.zeros(10, dtype=np.int8)
            salience = np.zeros(10, dtype=np.float32)
            filled = rng.random((k, k)) < cfg.fill
            if not filled.any():
                filled[rng.integers(k), rng.integers(k)] = True  # every mosaic holds at least one digit
            for r, c in zip(*np.nonzero(filled)):
                j = pool[rng.integers(len(pool))]
                contrast = rng.uniform(0.25, 1.0)
                canvas[8 * r:8 * r + 8, 8 * c:8 * c + 8] = images[j] * contrast
                d = targets[j]
                labels[d] = 1
                salience[d] = min(1.0, salience[d] + contrast * 0.75)  # brighter and repeated digits stand out
            if cfg.noise > 0:
                canvas += rng.normal(0, cfg.noise, canvas.shape).astype(np.float32)
            pixels = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
            if split == "train":
                mask = simulate_known(labels, cfg.protocol, cfg.known_ratio, rng, weights=salience)
            else:
                mask = np.ones(10, dtype=bool)
            buf = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(buf, format="PNG")
            self._count(split, labels, mask)
            yield i, {"image": {"bytes": buf.getvalue(), "path": None}, "labels": (labels * mask).tolist(),
                      "label_mask": mask.tolist(), "full_labels": labels.tolist()}
