"""The inputs of a fit, checked: the fit / selection split, the trained rows, the categories asked for, the
uncertain-label mask and its policies, and a warning when the selection split has little to go on."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..labels import apply_uncertain_policy
from .config import CFTConfig
from .views import Split, as_features, check_finite

logger = logging.getLogger(__name__)

__all__ = ["THIN_EVIDENCE", "check_names", "check_uncertain_mask", "split_inputs", "trained_rows", "wanted_categories",
           "warn_thin_evidence", "with_policy"]


def _kept_if(cfg: CFTConfig) -> str:
    """When a new row is kept, in the words of the report's protocol."""
    if cfg.selection_rule == "crossfit":
        return (f"its {cfg.judged_by.upper()} gain over the trained row, judged without the category's own labels "
                f"and pooled across categories, was credible (P >= {cfg.selection_confidence:g}, crossfit rule)")
    return f"it scored strictly higher ({cfg.judged_by.upper()}) than the trained row (strict rule)"


def split_inputs(cfg: CFTConfig, features, labels, label_mask, selection) -> tuple[Split, Split, str]:
    """The fit and selection splits of a call (the selection held out of the training images when not given), and
    the selection protocol in words."""
    train = Split.from_arrays(features, labels, label_mask, "training")
    if train.n == 0:
        raise ValueError("the training split is empty (0 images): CFT needs images with known labels to fit on")
    check_finite(train.features, "features")
    if selection is None:
        n = train.n
        n_sel = int(round(cfg.selection_fraction * n))
        if n_sel < 1 or n_sel >= n:
            raise ValueError(
                f"`selection_fraction`={cfg.selection_fraction} of {n} training images gives {n_sel} selection "
                "images; need at least 1 for selection and 1 for fitting. Use more images, change the "
                "fraction, or pass `selection=(features, labels, label_mask)`."
            )
        perm = np.random.default_rng(cfg.seed).permutation(n)
        sel_rows = torch.from_numpy(np.sort(perm[:n_sel]))
        fit_rows = torch.from_numpy(np.sort(perm[n_sel:]))
        protocol = (
            f"held out {n_sel} of the {n} training images ({cfg.selection_fraction:.0%}, seed {cfg.seed}); each "
            f"row was fitted on the known labels of the other {n - n_sel} and kept only where {_kept_if(cfg)} "
            "on the held-out known labels; no evaluation data was used"
        )
        return train.subset(fit_rows), train.subset(sel_rows), protocol
    if not isinstance(selection, (tuple, list)) or len(selection) != 3:
        raise ValueError(
            "`selection` must be None or a tuple (features, labels, label_mask) of a validation split"
        )
    sel = Split.from_arrays(*selection, name="selection")
    if sel.n == 0:
        raise ValueError("`selection` is empty: it needs at least one image with known labels")
    if sel.features.shape[1] != train.features.shape[1]:
        raise ValueError(
            f"selection features have d={sel.features.shape[1]} but training features have "
            f"d={train.features.shape[1]}"
        )
    if sel.n_categories != train.n_categories:
        raise ValueError(
            f"selection labels have C={sel.n_categories} categories but training labels have "
            f"C={train.n_categories}"
        )
    check_finite(sel.features, "selection features")
    protocol = (
        f"fitted on the known labels of all {train.n} training images; each row kept only where "
        f"{_kept_if(cfg)} on the known labels of the given selection split ({sel.n} images)"
    )
    return train, sel, protocol


def trained_rows(weight, bias, n_cat: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained rows as tensors (copies), checked against the labels' categories and the feature size."""
    w = as_features(weight, "weight").clone()
    b = torch.as_tensor(np.asarray(bias) if not isinstance(bias, torch.Tensor) else bias.detach()).clone()
    if w.shape != (n_cat, d):
        raise ValueError(
            f"`weight` must be C×d = {n_cat}×{d} (categories of `labels` × feature size), got {tuple(w.shape)}"
        )
    if b.shape != (n_cat,):
        raise ValueError(f"`bias` must have C={n_cat} values, got shape {tuple(b.shape)}")
    check_finite(w, "weight")
    check_finite(b.double(), "bias")
    return w, b.to(w.dtype)


_WARNED: set[tuple] = set()
THIN_EVIDENCE = 10
"""Known positives (or negatives, whichever are fewer) per category on the selection split below which
:meth:`CFTEngine.fit` warns that the selection has little to go on."""


def warn_thin_evidence(sel: Split, wanted: list[int], cfg: CFTConfig, explicit: bool) -> None:
    """Warn when the median category has fewer than :data:`THIN_EVIDENCE` known positives or negatives on the
    selection split: the crossfit rule then has little power (it pools across categories, but keeps rows whose
    gains are not credible), the strict rule keeps noise."""
    if not wanted:
        return
    idx = torch.as_tensor(wanted, dtype=torch.long)
    pos = sel.positive_counts()[idx].long()
    fewer = torch.minimum(pos, sel.known_counts()[idx].long() - pos)
    median = int(fewer.median())
    key = (sel.n, len(wanted), median, cfg.selection_rule, explicit)
    if median >= THIN_EVIDENCE or key in _WARNED:  # once per selection split, not once per variant of a recipe
        return
    _WARNED.add(key)
    effect = ("the crossfit rule replaces a row only where its gain is credible, so it may keep rows that more "
              "labels would show worth replacing" if cfg.selection_rule == "crossfit"
              else "the strict rule keeps whatever scored best on these few labels, noise included")
    more = ("a larger validation split (`selection`; with hf-cft cft, `--selection split:<name>` or a "
            "baseline trained with a larger `--val_fraction`)" if explicit else
            f"a larger `selection_fraction` (now {cfg.selection_fraction:g}), or an explicit validation split with "
            "its labels")
    logger.warning(
        "thin selection evidence: the selection split has a median of %d known positives (or negatives, whichever "
        "are fewer) per category (%d of %d categories have fewer than %d); %s. Give CFT more selection labels: %s.",
        median, int((fewer < THIN_EVIDENCE).sum()), len(wanted), THIN_EVIDENCE, effect, more)


def wanted_categories(categories: Sequence[int] | None, n_cat: int) -> list[int]:
    wanted = list(range(n_cat)) if categories is None else sorted({int(c) for c in categories})
    if wanted and (wanted[0] < 0 or wanted[-1] >= n_cat):
        raise ValueError(f"`categories` must be indices in [0, {n_cat}), got {wanted[0]}..{wanted[-1]}")
    return wanted


def check_names(category_names: Sequence[str] | None, n_cat: int) -> Sequence[str] | None:
    if category_names is not None and len(category_names) != n_cat:
        raise ValueError(f"`category_names` has {len(category_names)} names for {n_cat} categories")
    return category_names


def check_uncertain_mask(given, n: int, n_cat: int) -> torch.Tensor | None:
    if given is None:
        return None
    unc = torch.as_tensor(np.asarray(given, dtype=bool))
    if tuple(unc.shape) != (n, n_cat):
        raise ValueError(f"`uncertain_mask` must be N×C = {n}×{n_cat} like `labels`, got {tuple(unc.shape)}")
    return unc


def with_policy(split: Split, uncertain: torch.Tensor, policy: str) -> Split:
    """The split with an uncertain-label policy applied to its rows."""
    if split.sparse:
        raise ValueError("`uncertain_policies` need dense labels and `uncertain_mask` (N×C arrays), not sparse ones")
    rows = split.rows if split.rows is not None else torch.arange(split.n)
    y, m = apply_uncertain_policy(split.labels.numpy(), split.mask.numpy(), uncertain[rows].numpy(), policy)
    return Split(split.features, split.rows, torch.from_numpy(y), torch.from_numpy(m))
