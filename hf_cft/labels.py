"""The one label encoding of hf_cft, its converters and the uncertain-label policies.

Encoding (used by datasets, trainer, engine and metrics alike):

* ``labels``: ``C`` values per image, ``1`` positive and ``0`` negative. A value is meaningful only where
  the category is known.
* ``label_mask``: ``C`` booleans per image, ``True`` where the label of that category is known.
* ``uncertain_mask`` (CheXpert only): ``True`` where the annotation was "uncertain" (``-1.0`` in the CSV).
  An uncertain label is unknown in ``label_mask`` until a policy (:func:`apply_uncertain_policy`) says
  otherwise.

Two compact forms convert to and from it:

* the **code** form, one ``int8`` per entry: ``1`` positive, ``0`` negative, ``-1`` unknown
  (:func:`to_code`, :func:`from_code`); the ``evaluate`` metric modules take references in this form;
* the paper's **signed** form: ``+1`` positive, ``-1`` negative, ``0`` unknown (:func:`to_signed`,
  :func:`from_signed`).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch

__all__ = [
    "UNKNOWN",
    "UncertainPolicy",
    "apply_uncertain_policy",
    "check_labels",
    "from_code",
    "from_signed",
    "simulate_partial_labels",
    "to_code",
    "to_signed",
]

UNKNOWN = -1
"""The value of an unknown entry in the code form."""


class UncertainPolicy(str, Enum):
    """What an uncertain (CheXpert ``-1.0``) label becomes."""

    IGNORE = "u_ignore"  # unknown
    ONES = "u_ones"  # positive
    ZEROS = "u_zeros"  # negative


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"`{name}` must be array-like (numpy, torch, lists), got {type(x).__name__}") from err


def check_known_values(known: np.ndarray, name: str = "labels", mask_name: str = "label_mask") -> None:
    """Refuse known labels other than 1 / 0, naming the converter for the common other encodings."""
    if known.size and not np.isin(known, (0, 1)).all():
        bad = np.unique(known[~np.isin(known, (0, 1))])[:5]
        raise ValueError(
            f"`{name}` must hold 1 (positive) or 0 (negative) where `{mask_name}` is True; found {bad.tolist()}. "
            "If your labels use the signed form (+1/-1/0) call hf_cft.labels.from_signed, if they use -1 for "
            "unknown call hf_cft.labels.from_code."
        )


def check_labels(labels, label_mask, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``labels``/``label_mask`` and return them as ``int8`` / ``bool`` numpy arrays.

    Known entries must be 0 or 1 (booleans and floats equal to 0.0/1.0 are accepted); unknown entries may
    hold anything (NaN included). Raises ``ValueError`` naming the argument, what was expected and what
    was given.
    """
    y = _as_numpy(labels, name)
    m = _as_numpy(label_mask, f"{name}_mask" if name != "labels" else "label_mask")
    mask_name = "label_mask" if name == "labels" else f"{name} mask"
    if y.shape != m.shape:
        raise ValueError(f"`{name}` and `{mask_name}` must have the same shape, got {y.shape} and {m.shape}")
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"`{mask_name}` must be boolean (True = known); found values other than 0/1")
        m = m.astype(bool)
    if y.dtype == np.bool_:
        return y.astype(np.int8), m
    known = y[m]
    check_known_values(known, name, mask_name)
    out = np.zeros(y.shape, dtype=np.int8)
    out[m] = known.astype(np.int8)
    return out, m


def to_code(labels, label_mask) -> np.ndarray:
    """``labels``/``label_mask`` → ``int8`` code (1 positive, 0 negative, -1 unknown)."""
    y, m = check_labels(labels, label_mask)
    return np.where(m, y, np.int8(UNKNOWN)).astype(np.int8)


def from_code(code) -> tuple[np.ndarray, np.ndarray]:
    """``int8`` code (1, 0, -1 unknown) → ``(labels int8, label_mask bool)``."""
    c = _as_numpy(code, "code")
    if c.size and not np.isin(c, (-1, 0, 1)).all():
        bad = np.unique(c[~np.isin(c, (-1, 0, 1))])[:5]
        raise ValueError(f"`code` must hold 1 (positive), 0 (negative) or -1 (unknown); found {bad.tolist()}")
    m = c != UNKNOWN
    return np.where(m, c, 0).astype(np.int8), m


def to_signed(labels, label_mask) -> np.ndarray:
    """``labels``/``label_mask`` → the paper's signed form (+1 positive, -1 negative, 0 unknown)."""
    y, m = check_labels(labels, label_mask)
    return np.where(m, 2 * y - 1, 0).astype(np.int8)


def from_signed(signed) -> tuple[np.ndarray, np.ndarray]:
    """The paper's signed form (+1, -1, 0 unknown) → ``(labels int8, label_mask bool)``."""
    s = _as_numpy(signed, "signed")
    if s.size and not np.isin(s, (-1, 0, 1)).all():
        bad = np.unique(s[~np.isin(s, (-1, 0, 1))])[:5]
        raise ValueError(f"`signed` must hold +1 (positive), -1 (negative) or 0 (unknown); found {bad.tolist()}")
    return (s > 0).astype(np.int8), s != 0


def apply_uncertain_policy(labels, label_mask, uncertain_mask, policy: str | UncertainPolicy):
    """Turn uncertain labels into unknown (U-Ignore), positive (U-Ones) or negative (U-Zeros).

    Returns new ``(labels, label_mask)``; the inputs are not modified.
    """
    y, m = check_labels(labels, label_mask)
    u = _as_numpy(uncertain_mask, "uncertain_mask").astype(bool)
    if u.shape != y.shape:
        raise ValueError(f"`uncertain_mask` must have the shape of `labels` {y.shape}, got {u.shape}")
    try:
        policy = UncertainPolicy(policy)
    except ValueError:
        choices = ", ".join(p.value for p in UncertainPolicy)
        raise ValueError(f"`policy` must be one of {choices}, got {policy!r}") from None
    y, m = y.copy(), m.copy()
    if policy is UncertainPolicy.IGNORE:
        m[u] = False
    else:
        y[u] = 1 if policy is UncertainPolicy.ONES else 0
        m[u] = True
    return y, m


def simulate_partial_labels(full_labels, known_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The paper's COCO protocol: keep each (image, category) label independently with prob. ``known_ratio``."""
    if not 0.0 < known_ratio <= 1.0:
        raise ValueError(f"`known_ratio` must be in (0, 1], got {known_ratio}")
    y = _as_numpy(full_labels, "full_labels")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("`full_labels` must hold only 0 and 1 (a fully labeled set)")
    rng = np.random.default_rng(seed)
    return y.astype(np.int8), rng.random(y.shape) < known_ratio
