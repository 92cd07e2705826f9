"""Blocks of categories: partitioned within a memory budget, dealt out to shards, run by a variant, reported.

A block is a list of categories of one kind (dense or gathered on each split) and similar size, fitted together
in one batched computation. :func:`make_blocks` partitions the categories (deterministically, so every process of
a sharded run computes the same partition), :func:`shard_blocks` deals them out to the ranks, :func:`run_block`
runs one variant on one block and :func:`record_outcome` copies its figures into the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..constants import IN_ANOTHER_SHARD, NOT_REQUESTED
from .config import CFTConfig
from .registry import BlockTask, Variant
from .result import CategoryReport
from .selection import BestTracker, BlockOutcome, GridTracker, Judge, SelectionFolds, grid_steps, record_block
from .views import ViewFactory

__all__ = ["FitCall", "VariantPass", "block_seed", "category_reports", "deal_blocks", "make_blocks",
           "record_outcome", "run_block", "shard_blocks"]


@dataclass(frozen=True)
class FitCall:
    """The options of one :meth:`CFTEngine.fit` call, handed down to its variants and blocks (never kept)."""

    wanted: list[int]
    category_names: Sequence[str] | None
    device: torch.device
    dtype: torch.dtype
    shard: tuple[int, int] | None = None
    checkpoint_dir: str | None = None
    fingerprint: str | None = None


@dataclass
class VariantPass:
    """One variant's pass over the blocks of one call: what every block of it reads."""

    config: CFTConfig
    variant: Variant
    weight0: torch.Tensor
    bias0: torch.Tensor
    fit: ViewFactory
    sel: ViewFactory
    metric: Any
    call: FitCall
    bar: Any  # the tqdm bar the progress is shown on


def block_seed(seed: int, block: Sequence[int]) -> int:
    """The seed of one block: of the config's seed and the block alone."""
    return (int(seed) * 1_000_003 + int(block[0]) * 7919 + len(block)) % (2**63 - 1)


def run_block(ps: VariantPass, block: list[int]) -> BlockOutcome:
    """Run the pass's variant on one block of categories; its tracker's outcome (strict) or record (crossfit)."""
    cfg, variant, call = ps.config, ps.variant, ps.call
    options = cfg.options[variant.name]
    fit_v = variant.fit_view(ps.fit, block) if variant.fit_view is not None else ps.fit.view(block)
    sel_v = ps.sel.view(block)
    idx = torch.as_tensor(block)
    w = ps.weight0[idx].to(call.device, call.dtype)
    b = ps.bias0[idx].to(call.device, call.dtype)
    judge = Judge(sel_v, ps.metric)
    original = judge(w, b)
    max_steps, patience = variant.max_steps(options), variant.patience(cfg.patience)
    if cfg.selection_rule == "crossfit":
        grid = list(range(1, max_steps + 1)) if variant.grid else grid_steps(max_steps)
        tracker = GridTracker(w, b, original, patience, grid)
    else:
        tracker = BestTracker(w, b, original, patience)

    def progress(step: int) -> None:
        if step % 50 == 0:
            ps.bar.set_postfix_str(f"block of {len(block)}, step {step}", refresh=False)

    task = BlockTask(w, b, fit_v, judge, tracker, options, cfg, seed=block_seed(cfg.seed, block), progress=progress,
                     categories=block)
    variant.runner(task)
    if cfg.selection_rule == "crossfit":
        out = record_block(tracker, judge, SelectionFolds.build(sel_v, block, cfg.selection_folds, cfg.seed))
    else:
        out = tracker.outcome()
        if variant.detail is not None:
            out.detail = [variant.describe(options, int(s)) for s in out.best_step]
    out.notes = [task.notes.get(int(c)) for c in block] if task.notes else None
    return out


def category_reports(fit: ViewFactory, sel: ViewFactory, n_cat: int,
                     call: FitCall) -> tuple[list[CategoryReport], list[int]]:
    """One report per category with its counts (the known counts the view factories hold), and the categories to
    fit (the others say why they are not)."""
    fit_pos, fit_known = fit.split.positive_counts(), fit.known
    sel_pos, sel_known = sel.split.positive_counts(), sel.known
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


def shard_blocks(blocks: list[list[int]], fit_f, sel_f, shard: tuple[int, int],
               report: list[CategoryReport]) -> list[list[int]]:
    """This rank's blocks; the categories of the others are reported as in another shard."""
    mine = deal_blocks(blocks, [sum(fit_f.cost(c) + sel_f.cost(c) for c in b) for b in blocks], *shard)
    for block in blocks:
        if block not in mine:
            for c in block:
                report[c].skipped = IN_ANOTHER_SHARD
    return mine


def deal_blocks(blocks: list[list[int]], costs: list[float], rank: int, world: int) -> list[list[int]]:
    """Blocks of ``rank``: dealt largest first to the least-loaded rank (deterministic)."""
    load = [0.0] * world
    owner = {}
    for i in sorted(range(len(blocks)), key=lambda i: (-costs[i], blocks[i][0])):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[i] = r
        load[r] += costs[i]
    return [b for i, b in enumerate(blocks) if owner[i] == rank]


def record_outcome(variant: str, block: list[int], outcome: BlockOutcome, report: list[CategoryReport],
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
        if outcome.notes is not None:
            r.note = outcome.notes[j]
        if outcome.listed is not None:
            n = int(outcome.n_known[j])
            records[c] = {"index": c, "weight": outcome.weight[j], "bias": outcome.bias[j],
                          "grid_weight": outcome.grid_weight[j], "grid_bias": outcome.grid_bias[j],
                          "grid_step": outcome.grid_step, "listed": outcome.listed[j, :, :n],
                          "n_pos": int(outcome.n_pos[j]), "folds": outcome.folds[j, :n]}


PAD_RATIO, PAD_SLACK = 1.5, 16  # a gathered block's longest category is at most 1.5 × its shortest + 16 rows
SOLVER_FLOATS = 24  # per candidate and feature: the solver's state (L-BFGS history of 10 pairs, Adam moments, …)


def make_blocks(
    cats: list[int], fit: ViewFactory, sel: ViewFactory, d: int, population: int, budget_bytes: float
) -> list[list[int]]:
    """Group categories into blocks of one kind and similar size within a memory budget.

    Deterministic in its inputs, so every process of a sharded run computes the same partition.
    A block's bytes: gathered features ``B·L·d`` plus candidate scores and sort buffers ``~6·B·P·L``
    (4-byte floats) per split, and the solver's state ``SOLVER_FLOATS·P·(d+1)``, which dominates for the many
    categories with few known labels of sparse data. Gathered categories are padded to their block's longest,
    so a block spans known counts within ``PAD_RATIO`` (plus ``PAD_SLACK`` rows): with the skewed counts of
    sparse labels (Open Images) padding stays under a third of the work. Linear in the number of categories.
    """
    groups: dict[tuple[bool, bool], list[int]] = {}
    for c in cats:
        groups.setdefault((fit.is_dense(c), sel.is_dense(c)), []).append(c)
    blocks: list[list[int]] = []
    for key in sorted(groups):
        fit_cost = {c: fit.cost(c) for c in groups[key]}
        sel_cost = {c: sel.cost(c) for c in groups[key]}
        members = sorted(groups[key], key=lambda c: (fit_cost[c], c))
        block: list[int] = []
        fit_max = sel_max = 0
        for c in members:
            f_len, s_len = max(fit_max, fit_cost[c]), max(sel_max, sel_cost[c])
            per_cat = (0 if key[0] else f_len * d) + 6 * population * f_len
            per_cat += (0 if key[1] else s_len * d) + 6 * population * s_len + SOLVER_FLOATS * population * (d + 1)
            too_big = 4.0 * per_cat * (len(block) + 1) > budget_bytes
            too_ragged = not key[0] and fit_cost[c] > PAD_RATIO * fit_cost[block[0]] + PAD_SLACK if block else False
            if block and (too_big or too_ragged):
                blocks.append(block)
                block, fit_max, sel_max = [c], fit_cost[c], sel_cost[c]
            else:
                block.append(c)
                fit_max, sel_max = f_len, s_len
        if block:
            blocks.append(block)
    return blocks
