"""The CFT engine: split, skip, block, run a variant per block, and decide.

The variants are read from the registry (:mod:`hf_cft.engine.registry`); every per-call option (categories,
shard, checkpoint folder) travels as an argument, so one engine can serve several calls. The steps live in
:mod:`~hf_cft.engine.inputs` (checks and splits), :mod:`~hf_cft.engine.blocks` (blocks and their runs),
:mod:`~hf_cft.engine.checkpoint` (finished blocks on disk) and :mod:`~hf_cft.engine.decide` (the decision).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics.ranking import METRICS
from .blocks import FitCall, VariantPass, category_reports, make_blocks, record_outcome, run_block, shard_blocks
from .checkpoint import block_path, fingerprint, load_block, policy_fingerprint, save_block
from .config import CFTConfig
from .decide import Run, decide
from .inputs import (
    check_names,
    check_uncertain_mask,
    split_inputs,
    trained_rows,
    wanted_categories,
    warn_thin_evidence,
    with_policy,
)
from .registry import Variant, get_variant
from .result import CFTResult
from .views import Split, ViewFactory

logger = logging.getLogger(__name__)

__all__ = ["CFTEngine", "choose_per_category", "fit_cft"]


def _block_inputs(fit, sel, weight, bias, device: torch.device) -> str:
    """What a finished block depends on besides the config: the inputs by content (never by object identity: an
    array changed in place gets new blocks) and the kind of device it ran on (a GPU rounds differently and draws
    the GA's numbers from torch). ``device="auto"`` and ``"cpu"`` on a machine without a GPU share blocks."""
    return f"{fingerprint(fit, sel, weight, bias)}-{device.type}"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        fit, sel, protocol = split_inputs(cfg, features, labels, label_mask, selection)
        if shard is not None and not (0 <= shard[0] < shard[1]):
            raise ValueError(f"`shard` must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        n_cat, d = fit.n_categories, fit.features.shape[1]
        weight0, bias0 = trained_rows(weight, bias, n_cat, d)
        device = _resolve_device(cfg.device)
        call = FitCall(
            wanted=wanted_categories(categories, n_cat),
            category_names=check_names(category_names, n_cat),
            device=device,
            dtype=torch.float64 if weight0.dtype == torch.float64 else torch.float32,
            shard=shard,
            checkpoint_dir=checkpoint_dir,
            fingerprint=None if checkpoint_dir is None else _block_inputs(fit, sel, weight, bias, device),
        )
        if shard is None or shard[0] == 0:
            warn_thin_evidence(sel, call.wanted, cfg, explicit=selection is not None)
        unc = check_uncertain_mask(uncertain_mask, fit.features.shape[0], n_cat)
        policies: list[str | None] = [None]
        if cfg.uncertain_policies:
            if unc is None:
                raise ValueError("`uncertain_policies` is set but no `uncertain_mask` was given")
            policies = list(cfg.uncertain_policies)
        runs: dict[str, Run] = {}
        for policy in policies:
            fit_p = fit if policy is None else with_policy(fit, unc, policy)
            call_p = _policy_call(call, policy, fit_p)
            for variant in cfg.chosen_variants():
                tag = variant if policy is None else f"{variant}/{policy}"
                runs[tag] = self._run_variant(get_variant(variant), fit_p, sel, (weight0, bias0), call_p)
        result = decide(runs, weight0, bias0, cfg, protocol)
        logger.info("CFT-%s: %d of %d rows changed (%s rule)", cfg.variant, result.n_changed, n_cat,
                    cfg.selection_rule)
        return result

    def _run_variant(self, variant: Variant, fit: Split, sel: Split, rows: tuple[torch.Tensor, torch.Tensor],
                     call: FitCall) -> Run:
        """One variant over every wanted category (this shard's blocks), from the checkpoints where present."""
        cfg = self.config
        weight0, bias0 = rows
        n_cat, d = weight0.shape
        fit_f = ViewFactory(fit, call.device, call.dtype, cfg.dense_threshold)
        sel_f = ViewFactory(sel, call.device, call.dtype, cfg.dense_threshold)
        report, todo = category_reports(fit_f, sel_f, n_cat, call)
        new_w, new_b = weight0.clone(), bias0.clone()
        population = variant.population(cfg.options[variant.name])
        blocks = make_blocks(todo, fit_f, sel_f, d, population, cfg.block_memory_mb * 2**20)
        if call.shard is not None:
            blocks = shard_blocks(blocks, fit_f, sel_f, call.shard, report)
        n_todo = sum(len(b) for b in blocks)
        logger.info("CFT-%s: %d of %d categories in %d block(s) on %s (%d fit / %d selection images)",
                    variant.name, n_todo, n_cat, len(blocks), call.device, fit.n, sel.n)
        start = time.perf_counter()
        bar = tqdm(total=n_todo, desc=f"CFT-{variant.name}", unit="cat", disable=not cfg.show_progress)
        records: dict[int, dict] = {}
        metric = METRICS[cfg.judged_by]  # the GA's fitness is `metric`, read from the config
        ps = VariantPass(cfg, variant, weight0, bias0, fit_f, sel_f, metric, call, bar)
        # the largest categories first: a block bigger than the memory budget (one category with very many known
        # labels) meets the least kept so far, and a run that cannot fit fails in its first minute
        for block in sorted(blocks, key=lambda b: -max(fit_f.cost(c) for c in b)):
            path = block_path(cfg, variant.name, block, call.checkpoint_dir, call.fingerprint)
            outcome = load_block(path, len(block)) if path and os.path.exists(path) else None
            if outcome is None:
                outcome = run_block(ps, block)
                if path:
                    save_block(path, outcome)
            idx = torch.as_tensor(block)
            new_w[idx] = outcome.weight.to("cpu", new_w.dtype)
            new_b[idx] = outcome.bias.to("cpu", new_b.dtype)
            record_outcome(variant.name, block, outcome, report, records)
            bar.update(len(block))
        bar.close()
        logger.info("CFT-%s: done in %.1fs", variant.name, time.perf_counter() - start)
        return Run(new_w, new_b, report, variant.name, records if cfg.selection_rule == "crossfit" else None)


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


def _policy_call(call: FitCall, policy: str | None, fit: Split) -> FitCall:
    """The call for one uncertain-label policy: its fit labels differ, so its blocks are kept under their own key."""
    if policy is None or call.fingerprint is None:
        return call
    return dataclasses.replace(call, fingerprint=policy_fingerprint(call.fingerprint, policy, fit))


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
