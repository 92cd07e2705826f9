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

import numpy as np
import torch

from .config import CFTConfig
from .selection import BestTracker, Judge

__all__ = ["run_ga"]


class _Random:
    """Uniform draws from one seeded stream: numpy's PCG64 on the CPU (about twice torch's speed), torch's
    generator on an accelerator."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        if device.type == "cpu":
            self.np = np.random.default_rng(seed)
        else:
            self.np = None
            self.torch = torch.Generator(device=device).manual_seed(seed)

    def uniform(self, *shape: int) -> torch.Tensor:
        if self.np is not None:
            return torch.from_numpy(self.np.random(shape, dtype=np.float32)).to(self.dtype)
        return torch.rand(*shape, generator=self.torch, device=self.device, dtype=self.dtype)

    def roulette(self, fitness: torch.Tensor, k: int) -> torch.Tensor:
        """``k`` indices per row drawn with probability ∝ fitness (uniform where all fitnesses are 0)."""
        probs = fitness.nan_to_num(0.0).clamp(min=0).double() + 1e-12
        cum = probs.cumsum(-1)
        u = self.uniform(fitness.shape[0], k).double() * cum[:, -1:]
        return torch.searchsorted(cum, u, right=True).clamp(max=fitness.shape[1] - 1)


def _breed(pw: torch.Tensor, pb: torch.Tensor, n_cat: int, n_child: int, rng: _Random,
           config: CFTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Children from parent pairs: ``pw`` (B·2·K)×d and ``pb`` (B·2·K), per category K first then K second parents.

    Uniform crossover takes each gene from the first parent with probability ``crossover_rate``; a child is
    mutated with probability ``mutation_probability`` by adding U(−r, r) to every gene. Returns (B·K)×d, B·K.
    """
    d = pw.shape[1]
    half = n_cat * n_child
    first_w, second_w = pw.view(n_cat, 2, n_child, d)[:, 0].reshape(half, d), pw.view(n_cat, 2, n_child, d)[:, 1]
    first_b, second_b = pb.view(n_cat, 2, n_child)[:, 0].reshape(half), pb.view(n_cat, 2, n_child)[:, 1]
    take_first = rng.uniform(half, d + 1) < config.crossover_rate
    child_w = torch.where(take_first[:, :d], first_w, second_w.reshape(half, d))
    child_b = torch.where(take_first[:, d], first_b, second_b.reshape(half))
    mutants = (rng.uniform(half) < config.mutation_probability).nonzero().squeeze(1)
    if mutants.numel():
        r = config.mutation_range
        noise = rng.uniform(mutants.numel(), d + 1).mul_(2 * r).sub_(r)
        child_w.index_add_(0, mutants, noise[:, :d])
        child_b.index_add_(0, mutants, noise[:, d])
    return child_w, child_b


def run_ga(weight: torch.Tensor, bias: torch.Tensor, fit, judge: Judge, tracker: BestTracker, config: CFTConfig,
           seed: int = 0, progress=None, categories: list[int] | None = None) -> None:
    """Evolve a block of rows (``weight`` B×d, ``bias`` B); ``tracker`` keeps each row's elite."""
    metric = judge.metric
    n_cat, d = weight.shape
    pop_size, n_elite = config.population_size, config.elitism
    n_child = pop_size - n_elite
    device, dtype = weight.device, weight.dtype
    rng = _Random(seed, device, dtype)
    pop_w = weight.unsqueeze(1).repeat(1, pop_size, 1)  # B × P × d
    pop_b = bias.unsqueeze(1).repeat(1, pop_size)  # B × P
    fitness = metric(fit.scores(pop_w, pop_b), fit.labels, fit.mask)  # B × P
    offset = (torch.arange(n_cat, device=device) * pop_size).unsqueeze(1)
    cat_idx = torch.arange(n_cat, device=device)

    for gen in range(1, config.generations + 1):
        parents = (rng.roulette(fitness, 2 * n_child) + offset).reshape(-1)  # flat indices into B·P
        flat_w, flat_b = pop_w.reshape(-1, d), pop_b.reshape(-1)
        child_w, child_b = _breed(flat_w.index_select(0, parents), flat_b.index_select(0, parents), n_cat, n_child,
                                  rng, config)
        child_w, child_b = child_w.view(n_cat, n_child, d), child_b.view(n_cat, n_child)
        child_fit = metric(fit.scores(child_w, child_b), fit.labels, fit.mask)
        if n_elite:
            elite = fitness.nan_to_num(-1.0).topk(n_elite, dim=1).indices
            keep = (elite + offset).reshape(-1)
            pop_w = torch.cat([flat_w.index_select(0, keep).view(n_cat, n_elite, d), child_w], dim=1)
            pop_b = torch.cat([flat_b.index_select(0, keep).view(n_cat, n_elite), child_b], dim=1)
            fitness = torch.cat([fitness.gather(1, elite), child_fit], dim=1)
        else:
            pop_w, pop_b, fitness = child_w, child_b, child_fit
        best = fitness.nan_to_num(-1.0).argmax(dim=1)
        champ_w, champ_b = pop_w[cat_idx, best], pop_b[cat_idx, best]  # B × d, B
        running = tracker.update(gen, champ_w, champ_b, judge(champ_w, champ_b))
        if progress is not None:
            progress(gen)
        if not running:
            break
