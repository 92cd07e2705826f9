"""Simulated partial labels: which of an image's full labels stay known, by protocol, seeded per image."""

from __future__ import annotations

import dataclasses
import logging

import datasets
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "PartialConfig", "image_rng", "simulate_known"]

PROTOCOLS = ("uniform", "per_image_fixed", "positives_only")


@dataclasses.dataclass
class PartialConfig(datasets.BuilderConfig):
    """Options shared by the builders that simulate partial labels from full ones."""

    known_ratio: float = 1.0
    protocol: str = "uniform"
    seed: int = 0
    code_hash: str = ""
    input_hash: str = ""

    def check(self, protocols: tuple[str, ...] = PROTOCOLS) -> None:
        if not 0.0 < self.known_ratio <= 1.0:
            raise ValueError(f"`known_ratio` must be in (0, 1], got {self.known_ratio}")
        if self.protocol not in protocols:
            raise ValueError(f"`protocol` must be one of {protocols}, got {self.protocol!r}")


def simulate_known(full: np.ndarray, protocol: str, known_ratio: float, rng: np.random.Generator,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Which labels of one image's full label vector stay known.

    * ``uniform`` (the paper): each label kept independently with probability ``known_ratio``;
    * ``per_image_fixed``: exactly ``round(known_ratio · C)`` labels of every image, chosen at random;
    * ``positives_only``: each positive kept with probability ``known_ratio``; no negative is known;
    * ``salient``: negatives kept with probability ``known_ratio``; a positive with probability
      ``min(1, 2 · known_ratio · weights)``, ``weights`` in [0, 1] its conspicuousness (mean 0.5 keeps the
      overall ratio near ``known_ratio``).
    """
    c = full.shape[0]
    if known_ratio >= 1.0 and protocol in ("uniform", "per_image_fixed"):
        return np.ones(c, dtype=bool)
    if protocol == "uniform":
        return rng.random(c) < known_ratio
    if protocol == "per_image_fixed":
        known = np.zeros(c, dtype=bool)
        known[rng.permutation(c)[: int(round(known_ratio * c))]] = True
        return known
    if protocol == "positives_only":
        return (full > 0) & (rng.random(c) < known_ratio)
    if protocol == "salient":
        p = np.where(full > 0, np.clip(2 * known_ratio * weights, 0, 1), known_ratio)
        return rng.random(c) < p
    raise ValueError(f"unknown protocol {protocol!r}")


def image_rng(seed: int, key: int) -> np.random.Generator:
    """A generator that depends only on the seed and the image, never on generation order."""
    return np.random.default_rng([int(seed), int(key)])
