"""CFT-refit: per-category L2-regularized logistic regression solved to convergence, batched.

Each (category, L2 strength) pair is one independent convex problem

    min_{w, b}  mean_i  s_i · BCE(x_i·w + b, y_i)  +  (λ / 2) · ||w − w_ref||²

over the category's known fit labels (``s_i`` = 1, or class-balancing weights), with ``w_ref`` = 0 or the
trained row and the bias not penalized. All pairs of a block are solved together by an L-BFGS whose
history, step sizes, line searches and stopping are kept per pair, so the batch is exactly a set of
independent solvers (:mod:`hf_cft.engine.logistic`, which em shares). Every solution is warm-started from the
trained row. A gathered block whose categories have few known rows (at most ``REDUCE_AT · d``) is solved in the span
of its rows (:class:`RowSpanView`): the same problem in L ≤ d coordinates, the usual case of sparse labels
such as Open Images. The λ grid is the trajectory that the selection rule judges.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..logistic import Solver, example_weights, solve_in_row_span
from ..registry import BlockTask, Variant, register_variant

__all__ = ["RefitOptions", "RefitToward", "run_refit"]

RefitToward = Literal["zero", "trained"]


@dataclass
class RefitOptions:
    """CFT-refit's options (``CFTConfig`` keywords)."""

    refit_l2: list[float] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
        metadata={"help": "refit: grid of L2 strengths λ (objective: mean weighted BCE + λ/2·||w − w_ref||²), the "
                  "trajectory the selection rule chooses from. Wide by default: the right λ scales with the "
                  "features' squared norm."},
    )
    refit_toward: RefitToward = field(
        default="zero",
        metadata={"help": "refit: regularize toward 'zero' (a logistic regression on the known labels alone; "
                  "strong λ gives the robust difference-of-means direction) or 'trained' (the trained row)."},
    )
    refit_balanced: bool = field(default=False, metadata={"help": "refit: weight positives and negatives equally."})
    refit_max_iter: int = field(default=200, metadata={"help": "refit: L-BFGS iterations at most."})
    refit_tol: float = field(default=1e-6, metadata={"help": "refit: stop when the largest gradient entry is below."})

    def __post_init__(self) -> None:
        if self.refit_toward not in typing.get_args(RefitToward):
            raise ValueError(f"`refit_toward` must be 'trained' or 'zero', got {self.refit_toward!r}")
        self.refit_l2 = [float(v) for v in self.refit_l2]
        if not self.refit_l2 or not all(math.isfinite(v) and v >= 0 for v in self.refit_l2):
            raise ValueError(f"`refit_l2` must be a non-empty list of finite strengths >= 0, got {self.refit_l2}")
        if self.refit_max_iter < 1 or not self.refit_tol >= 0:
            raise ValueError(f"`refit_max_iter` must be >= 1 and `refit_tol` >= 0, got {self.refit_max_iter} and "
                             f"{self.refit_tol}")


def run_refit(task: BlockTask) -> None:
    """Solve every (category, λ) pair of the block; the λ grid is the trajectory the judge tracks (step p: λ_p)."""
    weight, bias, fit, config = task.weight, task.bias, task.fit, task.options
    n_cat = weight.shape[0]
    dtype = weight.dtype
    lam = torch.tensor(config.refit_l2, dtype=dtype, device=weight.device).view(1, -1)
    n_lam = lam.shape[1]
    b0 = bias.unsqueeze(1).expand(n_cat, n_lam).contiguous()
    sw = example_weights(fit, config.refit_balanced)
    solver = Solver(max_iter=config.refit_max_iter, tol=config.refit_tol)
    # started at the penalty's centre (the trained row, or zero), so the row-span form applies
    centre = weight.unsqueeze(1) if config.refit_toward == "trained" else torch.zeros_like(weight.unsqueeze(1))
    w, b, iters = solve_in_row_span(fit, centre, b0, lam, sw, solver)
    scores = task.judge(w, b)  # B × n_lam
    for p in range(n_lam):
        task.tracker.update(p + 1, w[:, p], b[:, p], scores[:, p])
    task.tracker.steps_run = iters.max(1).values
    task.report(int(iters.max()))


register_variant(Variant(
    name="refit", runner=run_refit, options=RefitOptions,
    population=lambda o: len(o.refit_l2), max_steps=lambda o: len(o.refit_l2),
    grid=True, detail=lambda o, step: f"l2={o.refit_l2[step - 1]:g}",
    summary="L2 logistic regression solved to convergence, λ chosen on the selection split",
))
