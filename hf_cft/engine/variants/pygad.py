"""CFT-GA through PyGAD, with the paper's CheXpert configuration as defaults.

30 individuals initialized to the trained row, 500 generations, roulette-wheel selection of 14 parents,
10 parents kept, 2-point crossover with probability 0.8, per-gene mutation probability 0.02 adding
U(−r, r). The fitness of a whole generation is computed in one batched product (``fitness_batch_size``).
PyGAD runs one category at a time; this backend exists for faithfulness to the paper and as a baseline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ...metrics.ranking import METRICS
from ..registry import BlockTask, Variant, check_fraction, check_minimum, register_variant

logger = logging.getLogger(__name__)

__all__ = ["PyGADOptions", "run_pygad"]


@dataclass
class PyGADOptions:
    """The PyGAD variant's options (``CFTConfig`` keywords): the paper's CheXpert configuration."""

    pygad_generations: int = field(default=500, metadata={"help": "pygad: number of generations."})
    pygad_population_size: int = field(default=30, metadata={"help": "pygad: individuals per category."})
    pygad_num_parents_mating: int = field(default=14, metadata={"help": "pygad: parents chosen by roulette."})
    pygad_keep_parents: int = field(default=10, metadata={"help": "pygad: parents kept in the next generation."})
    pygad_crossover_probability: float = field(default=0.8, metadata={"help": "pygad: 2-point crossover chance."})
    pygad_mutation_probability: float = field(default=0.02, metadata={"help": "pygad: per-gene mutation chance."})
    pygad_mutation_range: float = field(
        default=0.001, metadata={"help": "pygad: a mutated gene gets U(-r, r) added."}
    )

    def __post_init__(self) -> None:
        check_minimum(self, "pygad_generations", 0)
        check_fraction(self, "pygad_crossover_probability", "pygad_mutation_probability")
        if self.pygad_num_parents_mating < 2 or self.pygad_num_parents_mating > self.pygad_population_size:
            raise ValueError("`pygad_num_parents_mating` must be in [2, pygad_population_size]")
        if not -1 <= self.pygad_keep_parents <= self.pygad_num_parents_mating:
            raise ValueError(f"`pygad_keep_parents` must be in [-1, pygad_num_parents_mating] (-1: all of them), "
                             f"got {self.pygad_keep_parents}")


def _pygad():
    try:
        import pygad
    except ImportError as err:  # pragma: no cover - pygad is a dependency
        raise ImportError("variant='pygad' needs PyGAD: pip install pygad") from err
    return pygad


def run_pygad(task: BlockTask) -> None:
    """Run one PyGAD instance per category of the block, seeded by ``config.seed`` and the category's index alone
    (never by the block's seed): a category's row does not depend on how categories were grouped."""
    weight, bias, fit, judge, tracker = task.weight, task.bias, task.fit, task.judge, task.tracker
    config = task.options
    metric = METRICS[task.config.metric]  # the fitness; the judge selects by `config.judged_by`
    cats = list(task.categories) if task.categories else list(range(weight.shape[0]))
    seeds = [(int(task.config.seed) * 1_000_003 + int(c)) % (2**32) for c in cats]
    pygad = _pygad()
    n_cat, d = weight.shape
    device, dtype = weight.device, weight.dtype
    for i in range(n_cat):
        one = slice(i, i + 1)
        fit_scores, sel_scores = _row_scorer(fit, i), _row_scorer(judge.view, i)
        fit_labels, fit_mask = fit.labels[one], fit.mask[one]
        row = torch.cat([weight[i], bias[i:i + 1]]).cpu().double().numpy()

        def fitness(ga, solutions, _idx, fit_scores=fit_scores, fit_labels=fit_labels, fit_mask=fit_mask):
            sols = torch.as_tensor(np.atleast_2d(solutions), device=device, dtype=dtype)
            f = metric(fit_scores(sols), fit_labels, fit_mask).squeeze(0)
            # roulette selection fails when every fitness is 0; a tiny floor keeps it defined
            return (f.nan_to_num(0.0).clamp(min=0) + 1e-12).cpu().double().numpy()

        def on_generation(ga, i=i, sel_scores=sel_scores):
            sol, _, _ = ga.best_solution(pop_fitness=ga.last_generation_fitness)
            champ = torch.as_tensor(sol, device=device, dtype=dtype).unsqueeze(0)
            step = ga.generations_completed
            running = tracker.update_row(i, step, champ[0, :d], champ[0, d], judge.row(i, sel_scores(champ)))
            task.report(step)
            return None if running else "stop"

        ga = pygad.GA(
            num_generations=config.pygad_generations,
            num_parents_mating=config.pygad_num_parents_mating,
            fitness_func=fitness,
            fitness_batch_size=config.pygad_population_size,
            initial_population=np.tile(row, (config.pygad_population_size, 1)),
            gene_type=float,
            parent_selection_type="rws",
            keep_parents=config.pygad_keep_parents,
            keep_elitism=0,
            crossover_type="two_points",
            crossover_probability=config.pygad_crossover_probability,
            mutation_type="random",
            mutation_probability=config.pygad_mutation_probability,
            mutation_by_replacement=False,
            random_mutation_min_val=-config.pygad_mutation_range,
            random_mutation_max_val=config.pygad_mutation_range,
            on_generation=on_generation,
            random_seed=int(seeds[i]),
            suppress_warnings=True,
        )
        ga.run()
    tracker.active[:] = False


def _row_scorer(view, i: int):
    """Scores of P candidate rows (P × (d+1)) for category ``i`` of a view, as a (1, P, L) tensor."""
    d = view.x.shape[-1]
    if view.kind == "dense":
        x = view.x

        def score(sols: torch.Tensor) -> torch.Tensor:
            return (x @ sols[:, :d].T).T.unsqueeze(0) + sols[:, d].view(1, -1, 1)
    else:
        x = view.x[i]

        def score(sols: torch.Tensor) -> torch.Tensor:
            return (sols[:, :d] @ x.T).unsqueeze(0) + sols[:, d].view(1, -1, 1)
    return score


register_variant(Variant(
    name="pygad", runner=run_pygad, options=PyGADOptions,
    population=lambda o: o.pygad_population_size, max_steps=lambda o: o.pygad_generations,
    summary="the same GA problem through PyGAD, the paper's CheXpert setup",
))
