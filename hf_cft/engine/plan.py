"""How CFT-BP runs a block: one shared pass, or gathered rows in cache-sized groups — chosen by modelled cost.

A BP epoch needs, for every category c of a block, two products with its known rows: the logits
``X_c w_c`` and the gradient ``X_cᵀ g_c``. Two ways to compute them:

* **shared pass** (:class:`~hf_cft.engine.views.DenseView` over the union of the block's known rows): one
  matrix product of the ``U`` union rows with all ``B`` rows of the block serves every category, the loss
  masked to its known labels. It does ``4·U·d·B`` flops (most of them on unknown labels when each category
  knows few images) but reads the features only twice per epoch, whatever B is: compute-bound, and per-row
  cost falls with C until it is.
* **gathered** (:class:`~hf_cft.engine.views.GatheredView`, ``B × L × d``): each category reads only its own
  known rows, ``8·L·d`` bytes per epoch (two matrix–vector passes), memory-bound. When a group of categories'
  rows fits in the cache together (:data:`CACHE_BYTES`),
  :func:`run_bp <hf_cft.engine.variants.bp.run_bp>` runs that group's whole trajectory before the next group's, so
  after the first epoch its rows are read from the cache, not from memory; each group costs one epoch's fixed
  overhead (Python, small kernels, the selection score).

:func:`bp_plan` models both per epoch with the constants of :data:`COST` (measured on the development machine,
``docs/benchmarks.md``) and takes the cheaper. The model is a deterministic function of the block's shape, so
a run, its shards and a rerun make the same choice (a timing taken at run time would not), and the results of
both ways equal the per-row loop within float rounding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .views import DenseView, GatheredView

logger = logging.getLogger(__name__)

__all__ = ["COST", "CACHE_BYTES", "BPPlan", "bp_fit_view", "bp_groups", "bp_plan"]

CACHE_BYTES = 16 * 2**20
"""The gathered rows that stay in the cache from one epoch to the next on the CPU: half of the development
machine's 32 MiB L3. A group of categories fills at most this much (measured on the idle machine, COCO-shaped
rows of 7 MB per category at C = 80: groups of 2 (14 MB) 0.037 s per row, groups of 1 0.055, groups of 3
(21 MB) 0.057, the whole block 0.056)."""


@dataclass(frozen=True)
class Cost:
    """Throughputs of one device kind: matrix-product flops/s, memory and cache bytes/s, fixed s per epoch."""

    flops: float
    memory: float
    cache: float
    epoch: float


COST = {
    # measured on the 2-core development machine with nothing else running (benchmarks/engine.py --calibrate):
    # 136–139 Gflop/s, 27–28 GB/s and 88–98 GB/s through a BP epoch's two products, 0.23–0.25 ms per epoch
    "cpu": Cost(flops=135e9, memory=27e9, cache=90e9, epoch=2.5e-4),
    # a conservative accelerator: products far cheaper than bytes, no cache grouping
    "cuda": Cost(flops=10e12, memory=1e12, cache=1e12, epoch=2e-4),
}


@dataclass(frozen=True)
class BPPlan:
    """The chosen way (``"shared"`` or ``"gathered"``), the modelled seconds per epoch of both, and the group size
    of the gathered way (categories whose trajectories run together)."""

    kind: str
    shared_s: float
    gathered_s: float
    group: int


def _cost(device: torch.device) -> Cost:
    return COST["cpu"] if device.type == "cpu" else COST["cuda"]


def _gathered(n_cat: int, length: int, d: int, itemsize: int, group: int, c: Cost, device: torch.device) -> float:
    fits = device.type == "cpu" and group * length * d * itemsize <= CACHE_BYTES
    groups = -(-n_cat // group)
    return 2.0 * n_cat * length * d * itemsize / (c.cache if fits else c.memory) + groups * c.epoch


def bp_groups(n_cat: int, length: int, d: int, itemsize: int, device: torch.device) -> int:
    """Categories per group of a gathered block: as many as fit the cache together, or the whole block when
    that is modelled cheaper (each group pays the fixed cost of its epochs; off the CPU, always the block)."""
    if device.type != "cpu":
        return n_cat
    c = _cost(device)
    cached = max(1, min(n_cat, int(CACHE_BYTES // max(1, length * d * itemsize))))
    return min((cached, n_cat), key=lambda g: (_gathered(n_cat, length, d, itemsize, g, c, device), -g))


def bp_plan(n_cat: int, union: int, length: int, d: int, itemsize: int, device: torch.device) -> BPPlan:
    """Modelled seconds per epoch of a block of ``n_cat`` categories: shared over ``union`` rows, or gathered
    (padded ``length`` known rows per category) in groups of :func:`bp_groups`."""
    c = _cost(device)
    shared = 4.0 * union * d * n_cat / c.flops + 2.0 * union * d * itemsize / c.memory + c.epoch
    group = bp_groups(n_cat, length, d, itemsize, device)
    gathered = _gathered(n_cat, length, d, itemsize, group, c, device)
    return BPPlan("shared" if shared < gathered else "gathered", shared, gathered, group)


def bp_fit_view(factory, block: list[int]):
    """The fit view of a BP block: the factory's own for dense categories, else shared or gathered by
    :func:`bp_plan`."""
    if factory.is_dense(block[0]):
        return factory.view(block)
    split = factory.split
    cols = torch.as_tensor(block, dtype=torch.long)
    if split.sparse:  # the union of the block's known rows, from its categories' pairs (ascending, as below)
        rows = torch.unique(torch.cat([split.column(c)[0] for c in block]))
    else:
        rows = split.mask[:, cols].any(1).nonzero().squeeze(1)
    length = max(int(factory.known[c]) for c in block)
    itemsize = torch.empty((), dtype=factory.dtype).element_size()
    plan = bp_plan(len(block), rows.numel(), length, split.features.shape[1], itemsize, factory.device)
    logger.debug("CFT-bp block of %d: %s (modelled %.2f ms/epoch shared, %.2f ms gathered, groups of %d)",
                 len(block), plan.kind, 1e3 * plan.shared_s, 1e3 * plan.gathered_s, plan.group)
    if plan.kind == "gathered":
        return factory.view(block)
    x = split.take_as(rows, factory.dtype, factory.device)
    y, known = split.subset(rows).dense_columns(cols)
    return DenseView(x, y.to(factory.device), known.to(factory.device))


def sub_view(view, idx: torch.Tensor):
    """The rows ``idx`` of a gathered view, trimmed to their own longest known count (a copy: cache-warm)."""
    mask = view.mask[idx]  # k × 1 × L
    length = max(1, int(mask.sum(-1).max()))
    out = GatheredView.__new__(GatheredView)
    out.x = view.x[idx, :length].contiguous()
    out.labels, out.mask = view.labels[idx, :, :length], mask[..., :length]
    return out
