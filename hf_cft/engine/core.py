"""The CFT engine: split, skip, block, run a variant per block, and report.

The variants are read from the registry (:mod:`hf_cft.engine.variants`); every per-call option (categories,
shard, checkpoint folder) travels as an argument, so one engine can serve several calls.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..constants import IN_ANOTHER_SHARD, NOT_REQUESTED
from ..labels import apply_uncertain_policy
from ..metrics.core import METRICS
from .checkpoint import block_path, fingerprint, load_block, policy_fingerprint, save_block
from .config import CFTConfig
from .data import Split, ViewFactory, as_features, check_finite, make_blocks
from .decide import Run, decide
from .plan import bp_fit_view
from .result import CategoryReport, CFTResult
from .selection import BestTracker, BlockOutcome, GridTracker, Judge, SelectionPlan, grid_steps, record_block
from .variants import AUTO, Variant, get_variant

logger = logging.getLogger(__name__)

__all__ = ["CFTEngine", "choose_per_category", "fit_cft"]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _block_seed(seed: int, block: Sequence[int]) -> int:
    return (int(seed) * 1_000_003 + int(block[0]) * 7919 + len(block)) % (2**63 - 1)


def _kept_if(cfg: CFTConfig) -> str:
    """When a new row is kept, in the words of the report's protocol."""
    if cfg.selection_rule == "crossfit":
        return (f"its {cfg.judged_by.upper()} gain over the trained row, judged without the category's own labels "
                f"and pooled across categories, was credible (P >= {cfg.selection_confidence:g}, crossfit rule)")
    return f"it scored strictly higher ({cfg.judged_by.upper()}) than the trained row (strict rule)"


class CFTEngine:
    """Re-fits every category row of a linear classifier on known labels only.

    Example:
        >>> engine = CFTEngine(CFTConfig(variant="ga", metric="auroc"))
        >>> result = engine.fit(features, labels, label_mask, weight, bias)
        >>> result.weight, result.bias, result.to_markdown()
    """

    def __init__(self, config: CFTConfig | None = None):
        if config is not None and not isinstance(config, CFTConfig):
            raise ValueError(f"`config` must be a CFTConfig, got {type(config).__name__}")
        self.config = config or CFTConfig()

    # -- inputs ---------------------------------------------------------------------------------------------
    def _splits(self, features, labels, label_mask, selection) -> tuple[Split, Split, str]:
        cfg = self.config
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

    @staticmethod
    def _rows(weight, bias, n_cat: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
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

    # -- run -----------------------------------------------------------------------------------------------
    def fit(
        self,
        features,
        labels,
        label_mask,
        weight,
        bias,
        selection=None,
        categories: Sequence[int] | None = None,
        category_names: Sequence[str] | None = None,
        uncertain_mask=None,
        shard: tuple[int, int] | None = None,
        checkpoint_dir: str | None = None,
    ) -> CFTResult:
        """Re-fit the rows; see :func:`fit_cft`.

        Args:
            categories: restrict the run to these rows.
            shard: ``(rank, world_size)``: run only this rank's share of the blocks (blocks are planned over all
                categories, then dealt out balanced by cost), so that the shards together equal one run.
            checkpoint_dir: keep each finished block there (safetensors, written atomically); a run started
                again with the same inputs and config reuses them and computes only the rest.
        """
        cfg = self.config
        fit, sel, protocol = self._splits(features, labels, label_mask, selection)
        if shard is not None and not (0 <= shard[0] < shard[1]):
            raise ValueError(f"`shard` must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        n_cat, d = fit.n_categories, fit.features.shape[1]
        weight0, bias0 = self._rows(weight, bias, n_cat, d)
        call = _Call(
            wanted=_wanted(categories, n_cat),
            category_names=_names(category_names, n_cat),
            device=_resolve_device(cfg.device),
            dtype=torch.float64 if weight0.dtype == torch.float64 else torch.float32,
            shard=shard,
            checkpoint_dir=checkpoint_dir,
            # keyed by content, never by object identity: an array changed in place gets new blocks
            fingerprint=None if checkpoint_dir is None else fingerprint(fit, sel, weight, bias),
        )
        if shard is None or shard[0] == 0:
            _warn_thin_evidence(sel, call.wanted, cfg, explicit=selection is not None)
        unc = _uncertain(uncertain_mask, fit.features.shape[0], n_cat)
        policies: list[str | None] = [None]
        if cfg.uncertain_policies:
            if unc is None:
                raise ValueError("`uncertain_policies` is set but no `uncertain_mask` was given")
            policies = list(cfg.uncertain_policies)
        variants = list(cfg.auto_variants) if cfg.variant == AUTO else [cfg.variant]
        runs: dict[str, Run] = {}
        for policy in policies:
            fit_p = fit if policy is None else _with_policy(fit, unc, policy)
            call_p = _policy_call(call, policy, fit_p)
            for variant in variants:
                tag = variant if policy is None else f"{variant}/{policy}"
                runs[tag] = self._run_variant(get_variant(variant), fit_p, sel, weight0, bias0, call_p)
        result = decide(runs, weight0, bias0, cfg, protocol)
        logger.info("CFT-%s: %d of %d rows changed (%s rule)", cfg.variant, result.n_changed, n_cat,
                    cfg.selection_rule)
        return result

    def _run_variant(self, variant: Variant, fit: Split, sel: Split, weight0, bias0, call: _Call) -> Run:
        """One variant over every wanted category (this shard's blocks), from the checkpoints where present."""
        cfg = self.config
        n_cat, d = weight0.shape
        report, todo = _plan_report(fit, sel, n_cat, call)
        new_w, new_b = weight0.clone(), bias0.clone()
        fit_f = ViewFactory(fit, call.device, call.dtype, cfg.dense_threshold)
        sel_f = ViewFactory(sel, call.device, call.dtype, cfg.dense_threshold)
        blocks = make_blocks(todo, fit_f, sel_f, d, variant.population(cfg), cfg.block_memory_mb * 2**20)
        if call.shard is not None:
            blocks = _my_blocks(blocks, fit_f, sel_f, call.shard, report)
        n_todo = sum(len(b) for b in blocks)
        logger.info("CFT-%s: %d of %d categories in %d block(s) on %s (%d fit / %d selection images)",
                    variant.name, n_todo, n_cat, len(blocks), call.device, fit.n, sel.n)
        start = time.perf_counter()
        bar = tqdm(total=n_todo, desc=f"CFT-{variant.name}", unit="cat", disable=not cfg.show_progress)
        records: dict[int, dict] = {}
        metric = METRICS[cfg.judged_by]  # the GA's fitness is `metric`, read from the config
        # the largest categories first: a block bigger than the memory budget (one category with very many known
        # labels) meets the least kept so far, and a run that cannot fit fails in its first minute
        for block in sorted(blocks, key=lambda b: -max(fit_f.cost(c) for c in b)):
            path = block_path(cfg, variant.name, block, call.checkpoint_dir, call.fingerprint)
            outcome = load_block(path, len(block)) if path and os.path.exists(path) else None
            if outcome is None:
                outcome = self._run_block(variant, block, weight0, bias0, fit_f, sel_f, metric, call, bar)
                if path:
                    save_block(path, outcome)
            idx = torch.as_tensor(block)
            new_w[idx] = outcome.weight.to("cpu", new_w.dtype)
            new_b[idx] = outcome.bias.to("cpu", new_b.dtype)
            _record_outcome(variant.name, block, outcome, report, records)
            bar.update(len(block))
        bar.close()
        logger.info("CFT-%s: done in %.1fs", variant.name, time.perf_counter() - start)
        return Run(new_w, new_b, report, variant.name, records if cfg.selection_rule == "crossfit" else None)

    def _run_block(self, variant: Variant, block, weight0, bias0, fit_f, sel_f, metric, call: _Call,
                   bar) -> BlockOutcome:
        """Run ``variant`` on one block of categories; its tracker's outcome (strict) or record (crossfit)."""
        cfg = self.config
        fit_v = bp_fit_view(fit_f, block) if variant.name == "bp" else fit_f.view(block)  # plan.py: shared or gathered
        sel_v = sel_f.view(block)
        idx = torch.as_tensor(block)
        w = weight0[idx].to(call.device, call.dtype)
        b = bias0[idx].to(call.device, call.dtype)
        judge = Judge(sel_v, metric)
        original = judge(w, b)
        max_steps, patience = variant.max_steps(cfg), variant.patience(cfg)
        if cfg.selection_rule == "crossfit":
            grid = list(range(1, max_steps + 1)) if variant.grid else grid_steps(max_steps)
            tracker = GridTracker(w, b, original, patience, grid)
        else:
            tracker = BestTracker(w, b, original, patience)

        def progress(step: int) -> None:
            if step % 50 == 0:
                bar.set_postfix_str(f"block of {len(block)}, step {step}", refresh=False)

        seed = _block_seed(cfg.seed, block)
        variant.runner(w, b, fit_v, judge, tracker, cfg, seed=seed, progress=progress, categories=block)
        if cfg.selection_rule == "crossfit":
            return record_block(tracker, judge, SelectionPlan.build(sel_v, block, cfg.selection_folds, cfg.seed))
        out = tracker.outcome()
        if variant.detail is not None:
            out.detail = [variant.describe(cfg, int(s)) for s in out.best_step]
        return out


@dataclass(frozen=True)
class _Call:
    """The options of one :meth:`CFTEngine.fit` call, handed down to its variants and blocks (never kept)."""

    wanted: list[int]
    category_names: Sequence[str] | None
    device: torch.device
    dtype: torch.dtype
    shard: tuple[int, int] | None = None
    checkpoint_dir: str | None = None
    fingerprint: str | None = None


_WARNED: set[tuple] = set()
THIN_EVIDENCE = 10
"""Known positives (or negatives, whichever are fewer) per category on the selection split below which
:meth:`CFTEngine.fit` warns that the selection has little to go on."""


def _warn_thin_evidence(sel: Split, wanted: list[int], cfg: CFTConfig, explicit: bool) -> None:
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
    more = ("a larger validation split (`selection`; with recipes/cft.py, `--selection split:<name>` or a "
            "baseline trained with a larger `--val_fraction`)" if explicit else
            f"a larger `selection_fraction` (now {cfg.selection_fraction:g}), or an explicit validation split with "
            "its labels")
    logger.warning(
        "thin selection evidence: the selection split has a median of %d known positives (or negatives, whichever "
        "are fewer) per category (%d of %d categories have fewer than %d); %s. Give CFT more selection labels: %s.",
        median, int((fewer < THIN_EVIDENCE).sum()), len(wanted), THIN_EVIDENCE, effect, more)


def _wanted(categories: Sequence[int] | None, n_cat: int) -> list[int]:
    wanted = list(range(n_cat)) if categories is None else sorted({int(c) for c in categories})
    if wanted and (wanted[0] < 0 or wanted[-1] >= n_cat):
        raise ValueError(f"`categories` must be indices in [0, {n_cat}), got {wanted[0]}..{wanted[-1]}")
    return wanted


def _names(category_names: Sequence[str] | None, n_cat: int) -> Sequence[str] | None:
    if category_names is not None and len(category_names) != n_cat:
        raise ValueError(f"`category_names` has {len(category_names)} names for {n_cat} categories")
    return category_names


def _uncertain(uncertain_mask, n: int, n_cat: int) -> torch.Tensor | None:
    if uncertain_mask is None:
        return None
    unc = torch.as_tensor(np.asarray(uncertain_mask, dtype=bool))
    if tuple(unc.shape) != (n, n_cat):
        raise ValueError(f"`uncertain_mask` must be N×C = {n}×{n_cat} like `labels`, got {tuple(unc.shape)}")
    return unc


def _plan_report(fit: Split, sel: Split, n_cat: int, call: _Call) -> tuple[list[CategoryReport], list[int]]:
    """One report per category with its counts, and the categories to fit (the others say why they are not)."""
    fit_pos, fit_known = fit.positive_counts(), fit.known_counts()
    sel_pos, sel_known = sel.positive_counts(), sel.known_counts()
    report, todo = [], []
    wanted = set(call.wanted)
    for c in range(n_cat):
        r = CategoryReport(
            index=c,
            name=None if call.category_names is None else str(call.category_names[c]),
            n_fit=int(fit_known[c]), n_fit_pos=int(fit_pos[c]),
            n_sel=int(sel_known[c]), n_sel_pos=int(sel_pos[c]),
        )
        if c not in wanted:
            r.skipped = NOT_REQUESTED
        elif r.n_fit_pos == 0:
            r.skipped = "no known positive in the fit split"
        elif r.n_fit_pos == r.n_fit:
            r.skipped = "no known negative in the fit split"
        elif r.n_sel_pos == 0:
            r.skipped = "no known positive in the selection split"
        elif r.n_sel_pos == r.n_sel:
            r.skipped = "no known negative in the selection split"
        else:
            todo.append(c)
        report.append(r)
    return report, todo


def _my_blocks(blocks: list[list[int]], fit_f, sel_f, shard: tuple[int, int],
               report: list[CategoryReport]) -> list[list[int]]:
    """This rank's blocks; the categories of the others are reported as in another shard."""
    mine = _deal(blocks, [sum(fit_f.cost(c) + sel_f.cost(c) for c in b) for b in blocks], *shard)
    for block in blocks:
        if block not in mine:
            for c in block:
                report[c].skipped = IN_ANOTHER_SHARD
    return mine


def _record_outcome(variant: str, block: list[int], outcome: BlockOutcome, report: list[CategoryReport],
                    records: dict[int, dict]) -> None:
    """Copy a block's figures into the report and, for the crossfit rule, its trajectories into ``records``."""
    for j, c in enumerate(block):
        r = report[c]
        r.original_score = float(outcome.original[j])
        r.best_score = float(outcome.best_score[j])
        r.best_step = int(outcome.best_step[j])
        r.steps_run = int(outcome.steps_run[j])
        r.variant = variant if r.best_step > 0 else "original"
        if outcome.detail is not None and r.best_step > 0:
            r.detail = outcome.detail[j]
        if outcome.listed is not None:
            n = int(outcome.n_known[j])
            records[c] = {"index": c, "weight": outcome.weight[j], "bias": outcome.bias[j],
                          "grid_weight": outcome.grid_weight[j], "grid_bias": outcome.grid_bias[j],
                          "grid_step": outcome.grid_step, "listed": outcome.listed[j, :, :n],
                          "n_pos": int(outcome.n_pos[j]), "folds": outcome.folds[j, :n]}


def choose_per_category(results: dict[str, CFTResult], weight, bias) -> CFTResult:
    """Combine runs made on the same data and selection split: per category keep the trained row or the candidate
    the selection rule prefers (crossfit: one joint choice over every run's recorded candidates; strict, or a run
    without candidates such as one rebuilt from JSON: each run as decided, the best selection score).

    Args:
        results: tag → result (e.g. ``{"refit": r1, "bp": r2}``), all from the same inputs and seed.
        weight, bias: the trained rows (kept where no run beat them).
    """
    if not results:
        raise ValueError("`results` is empty")
    first = next(iter(results.values()))
    selections = {r.selection for r in results.values()}
    if len(selections) != 1:
        raise ValueError("the results were selected on different splits; run them with the same data and seed")
    w0 = torch.as_tensor(np.asarray(weight) if not isinstance(weight, torch.Tensor) else weight).to(first.weight.dtype)
    b0 = torch.as_tensor(np.asarray(bias) if not isinstance(bias, torch.Tensor) else bias).to(first.bias.dtype)
    runs = {}
    for tag, r in results.items():
        if len(r.runs) == 1:
            runs[tag] = next(iter(r.runs.values()))
        elif r.runs:  # an auto or greedy result: every run it holds
            runs.update({f"{tag}:{t}": run for t, run in r.runs.items()})
        else:  # a result without its candidates (e.g. rebuilt from JSON): its rows as they were decided
            runs[tag] = Run(r.weight, r.bias, r.report)
    variants = [r.config.variant for r in results.values()]
    config = dataclasses.replace(first.config, variant="auto", auto_variants=variants)
    return decide(runs, w0, b0, config, first.selection)


def _deal(blocks: list[list[int]], costs: list[float], rank: int, world: int) -> list[list[int]]:
    """Blocks of ``rank``: dealt largest first to the least-loaded rank (deterministic)."""
    load = [0.0] * world
    owner = {}
    for i in sorted(range(len(blocks)), key=lambda i: (-costs[i], blocks[i][0])):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[i] = r
        load[r] += costs[i]
    return [b for i, b in enumerate(blocks) if owner[i] == rank]


def _policy_call(call: _Call, policy: str | None, fit: Split) -> _Call:
    """The call for one uncertain-label policy: its fit labels differ, so its blocks are kept under their own key."""
    if policy is None or call.fingerprint is None:
        return call
    return dataclasses.replace(call, fingerprint=policy_fingerprint(call.fingerprint, policy, fit))


def _with_policy(split: Split, uncertain: torch.Tensor, policy: str) -> Split:
    """The split with an uncertain-label policy applied to its rows."""
    if split.sparse:
        raise ValueError("`uncertain_policies` need dense labels and `uncertain_mask` (N×C arrays), not sparse ones")
    rows = split.rows if split.rows is not None else torch.arange(split.n)
    y, m = apply_uncertain_policy(split.labels.numpy(), split.mask.numpy(), uncertain[rows].numpy(), policy)
    return Split(split.features, split.rows, torch.from_numpy(y), torch.from_numpy(m))


def fit_cft(
    features,
    labels,
    label_mask,
    weight,
    bias,
    config: CFTConfig | None = None,
    selection=None,
    **kwargs,
) -> CFTResult:
    """Category-wise fine-tuning of a linear classifier on known labels only.

    Args:
        features: N×d classifier inputs of the training images (numpy, memory-mapped numpy or torch).
        labels: N×C, 1 positive / 0 negative where known.
        label_mask: N×C booleans, True where the label is known.
        weight: C×d trained classifier weight.
        bias: C trained classifier bias.
        config: a :class:`CFTConfig` (default: CFT-BP with the paper's COCO settings).
        selection: ``(features, labels, label_mask)`` of a validation split to choose each row's best
            version on, or None to hold out ``config.selection_fraction`` of the training images (seeded).
        **kwargs: ``categories`` (restrict to these rows), ``category_names`` (for the report),
            ``uncertain_mask`` (N×C, True where a label was uncertain; with ``config.uncertain_policies``
            each category's policy is chosen on the selection split, CheXpert greedy).

    Returns:
        A :class:`CFTResult` with the new ``weight`` and ``bias`` (new tensors; the inputs are untouched)
        and the per-category report.
    """
    return CFTEngine(config).fit(features, labels, label_mask, weight, bias, selection=selection, **kwargs)
