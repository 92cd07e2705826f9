"""CFT-GA: the paper's genetic algorithm, evaluated for a whole block of categories at once.

An individual is a row's d+1 parameters (weight and bias both evolve). Per generation and block: one
batched product scores the B×P candidates on the fit split, one batched sort turns the scores into
fitness (AP or AUROC on known labels), and the elite of each category is scored on the selection split.

Reference settings (MS-COCO / OpenImages): population 50, all initialized to the trained row; the best
individual kept (elitism 1); parents by roulette wheel (probability ∝ fitness); uniform crossover taking
each gene from the first parent with probability 0.2; each child mutated with probability 0.5 by adding
U(−0.001, 0.001) to every gene.
"""

from __future__ import annotations

import torch

from .config import CFTConfig
from .selection import BestTracker, BlockOutcome

__all__ = ["run_ga"]


def run_ga(
    weight: torch.Tensor,
    bias: torch.Tensor,
    fit,
    sel,
    original_score: torch.Tensor,
    metric,
    config: CFTConfig,
    generator: torch.Generator,
    progress=None,
) -> BlockOutcome:
    """Evolve a block of rows (``weight`` B×d, ``bias`` B); keep each row's best elite on ``sel``."""
    n_cat, d = weight.shape
    pop_size, n_elite = config.population_size, config.elitism
    n_child = pop_size - n_elite
    device, dtype = weight.device, weight.dtype
    genes = torch.cat([weight, bias.unsqueeze(1)], dim=1)  # B × G
    pop = genes.unsqueeze(1).repeat(1, pop_size, 1)  # B × P × G
    fitness = metric(fit.scores(pop[..., :d], pop[..., d]), fit.labels, fit.mask)  # B × P
    tracker = BestTracker(weight, bias, original_score, config.patience)
    rows = torch.arange(n_cat, device=device).unsqueeze(1)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=device, dtype=dtype)

    for gen in range(1, config.generations + 1):
        # roulette wheel: parents drawn with probability ∝ fitness (uniform where all fitnesses are 0)
        probs = fitness.nan_to_num(0.0).clamp(min=0) + 1e-12
        parents = torch.multinomial(probs, 2 * n_child, replacement=True, generator=generator)  # B × 2K
        first = pop[rows, parents[:, :n_child]]  # B × K × G
        second = pop[rows, parents[:, n_child:]]
        u = rand(n_cat, n_child, first.shape[-1])
        take_first = u < config.crossover_rate
        children = torch.where(take_first, first, second)
        mutate = (rand(n_cat, n_child, 1) < config.mutation_probability).to(dtype)
        if 0.0 < config.crossover_rate < 1.0:
            # one draw serves both: given either branch of the crossover test, u rescaled is U(0, 1) and
            # independent of the parents, so the mutation noise has exactly its intended distribution
            c = config.crossover_rate
            unit = torch.where(take_first, u / c, (u - c) / (1 - c))
        else:
            unit = rand(n_cat, n_child, first.shape[-1])
        noise = (unit * 2 - 1).mul_(config.mutation_range)
        children = torch.addcmul(children, noise, mutate)
        if n_elite:
            elite_idx = fitness.nan_to_num(-1.0).topk(n_elite, dim=1).indices
            pop = torch.cat([pop[rows, elite_idx], children], dim=1)
            fitness_elite = fitness.gather(1, elite_idx)
            fitness = torch.cat([fitness_elite, metric(fit.scores(children[..., :d], children[..., d]),
                                                       fit.labels, fit.mask)], dim=1)
        else:
            pop = children
            fitness = metric(fit.scores(pop[..., :d], pop[..., d]), fit.labels, fit.mask)
        best = fitness.nan_to_num(-1.0).argmax(dim=1)
        champion = pop[torch.arange(n_cat, device=device), best]  # B × G
        score = metric(sel.scores(champion[:, None, :d], champion[:, None, d]), sel.labels, sel.mask).squeeze(1)
        running = tracker.update(gen, champion[:, :d], champion[:, d], score)
        if progress is not None:
            progress(gen)
        if not running:
            break
    return tracker.outcome()
