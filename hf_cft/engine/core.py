"""The CFT engine: split, skip, block, run a variant per block, and report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..labels import apply_uncertain_policy
from ..metrics.core import METRICS
from .bp import run_bp
from .config import CFTConfig
from .data import Split, ViewFactory, as_features, check_finite, make_blocks
from .decide import IN_ANOTHER_SHARD, Run, decide
from .ga import run_ga
from .pygad_backend import run_pygad
from .refit import run_refit
from .result import CategoryReport, CFTResult
from .selection import BestTracker, BlockOutcome, GridTracker, Judge, SelectionPlan, grid_steps, record_block

logger = logging.getLogger(__name__)

__all__ = ["CFTEngine", "choose_per_category", "fit_cft"]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


BLOCK_FORMAT = 2  # what a block checkpoint holds; a new format never reads an old file

# variant → its runner: (weight, bias, fit view, judge, tracker, config, seed, progress, categories); the runner
# feeds its trajectory to the tracker
RUNNERS = {"bp": run_bp, "ga": run_ga, "pygad": run_pygad, "refit": run_refit}


def _block_seed(seed: int, block: Sequence[int]) -> int:
    return (int(seed) * 1_000_003 + int(block[0]) * 7919 + len(block)) % (2**63 - 1)


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
                f"row was fitted on the known labels of the other {n - n_sel} and kept only where it scored strictly "
                f"higher ({cfg.metric.upper()}) than the trained row on the held-out known labels; no evaluation "
                "data was used"
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
            f"fitted on the known labels of all {train.n} training images; each row kept only where it scored "
            f"strictly higher ({cfg.metric.upper()}) than the trained row on the known labels of the given "
            f"selection split ({sel.n} images)"
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
        self._shard, self._checkpoint_dir, self._fingerprint = shard, checkpoint_dir, None
        if checkpoint_dir is not None:
            # keyed by content, never by object identity: an array changed in place gets new blocks
            self._fingerprint = _fingerprint(fit, sel, weight, bias)
        n_cat, d = fit.n_categories, fit.features.shape[1]
        weight0, bias0 = self._rows(weight, bias, n_cat, d)
        if category_names is not None and len(category_names) != n_cat:
            raise ValueError(f"`category_names` has {len(category_names)} names for {n_cat} categories")
        wanted = list(range(n_cat)) if categories is None else sorted({int(c) for c in categories})
        if wanted and (wanted[0] < 0 or wanted[-1] >= n_cat):
            raise ValueError(f"`categories` must be indices in [0, {n_cat}), got {wanted[0]}..{wanted[-1]}")
        policies: list[str | None] = [None]
        if cfg.uncertain_policies:
            if uncertain_mask is None:
                raise ValueError("`uncertain_policies` is set but no `uncertain_mask` was given")
            policies = list(cfg.uncertain_policies)
        if uncertain_mask is not None:
            unc = torch.as_tensor(np.asarray(uncertain_mask, dtype=bool))
            if tuple(unc.shape) != (fit.features.shape[0], n_cat):
                raise ValueError(f"`uncertain_mask` must be N×C = {fit.features.shape[0]}×{n_cat} like `labels`, "
                                 f"got {tuple(unc.shape)}")
        variants = list(cfg.auto_variants) if cfg.variant == "auto" else [cfg.variant]
        device = _resolve_device(cfg.device)
        dtype = torch.float64 if weight0.dtype == torch.float64 else torch.float32

        runs: dict[str, Run] = {}
        for policy in policies:
            fit_p = fit if policy is None else _with_policy(fit, unc, policy)
            for variant in variants:
                tag = variant if policy is None else f"{variant}/{policy}"
                runs[tag] = self._run_variant(variant, fit_p, sel, weight0, bias0, wanted, category_names,
                                              device, dtype)
        result = decide(runs, weight0, bias0, cfg, protocol)
        logger.info("CFT-%s: %d of %d rows changed (%s rule)", cfg.variant, result.n_changed, n_cat,
                    cfg.selection_rule)
        return result

    def _run_variant(self, variant, fit, sel, weight0, bias0, wanted, category_names, device, dtype):
        cfg = self.config
        metric = METRICS[cfg.metric]
        n_cat, d = weight0.shape
        fit_pos, fit_known = fit.positive_counts(), fit.known_counts()
        sel_pos, sel_known = sel.positive_counts(), sel.known_counts()
        report, todo = [], []
        wanted_set = set(wanted)
        for c in range(n_cat):
            r = CategoryReport(
                index=c,
                name=None if category_names is None else str(category_names[c]),
                n_fit=int(fit_known[c]), n_fit_pos=int(fit_pos[c]),
                n_sel=int(sel_known[c]), n_sel_pos=int(sel_pos[c]),
            )
            if c not in wanted_set:
                r.skipped = "not requested"
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

        new_w, new_b = weight0.clone(), bias0.clone()
        fit_f = ViewFactory(fit, device, dtype, cfg.dense_threshold)
        sel_f = ViewFactory(sel, device, dtype, cfg.dense_threshold)
        population = {"bp": 1, "ga": cfg.population_size, "pygad": cfg.pygad_population_size,
                      "refit": len(cfg.refit_l2)}[variant]
        blocks = make_blocks(todo, fit_f, sel_f, d, population, cfg.block_memory_mb * 2**20)
        if self._shard is not None:
            mine = _deal(blocks, [sum(fit_f.cost(c) + sel_f.cost(c) for c in b) for b in blocks], *self._shard)
            for block in blocks:
                if block not in mine:
                    for c in block:
                        report[c].skipped = IN_ANOTHER_SHARD
            todo = [c for b in mine for c in b]
            blocks = mine
        logger.info(
            "CFT-%s: %d of %d categories in %d block(s) on %s (%d fit / %d selection images)",
            variant, len(todo), n_cat, len(blocks), device, fit.n, sel.n,
        )
        start = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"CFT-{variant}", unit="cat", disable=not cfg.show_progress)
        records: dict[int, dict] = {}
        for block in blocks:
            path = self._block_path(variant, block)
            outcome = _load_block(path, len(block)) if path and os.path.exists(path) else None
            if outcome is None:
                outcome = self._run_block(variant, block, weight0, bias0, fit_f, sel_f, metric, device, dtype, bar)
                if path:
                    _save_block(path, outcome)
            idx = torch.as_tensor(block)
            new_w[idx] = outcome.weight.to("cpu", new_w.dtype)
            new_b[idx] = outcome.bias.to("cpu", new_b.dtype)
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
            bar.update(len(block))
        bar.close()
        logger.info("CFT-%s: done in %.1fs", variant, time.perf_counter() - start)
        return Run(new_w, new_b, report, variant, records if cfg.selection_rule == "crossfit" else None)

    def _block_path(self, variant: str, block: list[int]) -> str | None:
        if self._checkpoint_dir is None:
            return None
        cfg = {k: v for k, v in self.config.to_dict().items() if k != "show_progress"}
        key = hashlib.sha256(json.dumps([BLOCK_FORMAT, variant, cfg, block, self._fingerprint],
                                        sort_keys=True).encode()).hexdigest()[:24]
        return os.path.join(self._checkpoint_dir, f"{variant}-{key}.safetensors")

    def _run_block(self, variant, block, weight0, bias0, fit_f, sel_f, metric, device, dtype, bar) -> BlockOutcome:
        cfg = self.config
        fit_v, sel_v = fit_f.view(block), sel_f.view(block)
        idx = torch.as_tensor(block)
        w = weight0[idx].to(device, dtype)
        b = bias0[idx].to(device, dtype)
        judge = Judge(sel_v, metric)
        original = judge(w, b)
        max_steps = {"bp": cfg.epochs, "ga": cfg.generations, "pygad": cfg.pygad_generations,
                     "refit": len(cfg.refit_l2)}[variant]
        patience = None if variant == "refit" else cfg.patience
        if cfg.selection_rule == "crossfit":
            grid = list(range(1, max_steps + 1)) if variant == "refit" else grid_steps(max_steps)
            tracker = GridTracker(w, b, original, patience, grid)
        else:
            tracker = BestTracker(w, b, original, patience)

        def progress(step: int) -> None:
            if step % 50 == 0:
                bar.set_postfix_str(f"block of {len(block)}, step {step}", refresh=False)

        seed = _block_seed(cfg.seed, block)
        RUNNERS[variant](w, b, fit_v, judge, tracker, cfg, seed=seed, progress=progress, categories=block)
        if cfg.selection_rule == "crossfit":
            return record_block(tracker, judge, SelectionPlan.build(sel_v, block, cfg.selection_folds, cfg.seed))
        out = tracker.outcome()
        if variant == "refit":
            out.detail = [f"l2={cfg.refit_l2[int(s) - 1]:g}" if int(s) > 0 else None for s in out.best_step]
        return out


def choose_per_category(results: dict[str, CFTResult], weight, bias) -> CFTResult:
    """Combine runs made on the same data and selection split: per category keep the best selection score.

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


def _fingerprint(fit: Split, sel: Split, weight, bias) -> str:
    """SHA-256 of everything a block's result depends on besides the config: features, labels, rows."""
    h = hashlib.sha256()
    for split in (fit, sel):
        feats = split.features
        if split is sel and feats is fit.features:  # a hold-out of the same matrix: hashed once
            h.update(b"same features")
        else:
            for start in range(0, feats.shape[0], 65536):
                h.update(np.ascontiguousarray(feats[start:start + 65536].numpy()).tobytes())
        h.update(b"rows" + (split.rows.numpy().tobytes() if split.rows is not None else b"all"))
        h.update(split.label_bytes())
    for t in (weight, bias):
        h.update(np.ascontiguousarray(np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                                                 dtype=np.float64)).tobytes())
    return h.hexdigest()


def _save_block(path: str, out: BlockOutcome) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    names = [k for k in (*BlockOutcome.TENSORS, *BlockOutcome.GRID) if getattr(out, k) is not None]
    tensors = {k: getattr(out, k).detach().cpu().clone().contiguous() for k in names}  # no shared storage
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"detail": json.dumps(out.detail)})
    os.replace(tmp, path)


def _load_block(path: str, size: int) -> BlockOutcome | None:
    """A finished block, or None (with a warning) when the file is unreadable or does not fit the block."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
            detail = json.loads((f.metadata() or {}).get("detail", "null"))
        out = BlockOutcome(**{k: t[k] for k in BlockOutcome.TENSORS},
                           **{k: t.get(k) for k in BlockOutcome.GRID}, detail=detail)
        if any(t[k].shape[0] != size for k in BlockOutcome.TENSORS):
            raise ValueError(f"it holds rows for another block size than {size}")
    except Exception as err:  # truncated, corrupt or foreign: recompute, never trust it
        logger.warning("block checkpoint %s is unreadable (%s): recomputing the block", path, err)
        return None
    return out


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
