"""CFT-GA: the paper's genetic algorithm, evaluated for a whole block of categories at once.

An individual is a row's d+1 parameters (weight and bias both evolve). Per generation and block: one
batched product scores the B×K children on the fit split, one batched sort turns the scores into
fitness (AP or AUROC on known labels), and the elite of each category is scored on the selection split
(:data:`JUDGE_EVERY` generations' elites in one call).

Reference settings (MS-COCO / OpenImages): population 50, all initialized to the trained row; the best
individual kept (elitism 1); parents by roulette wheel (probability ∝ fitness); uniform crossover taking
each gene from the first parent with probability 0.2; each child mutated with probability 0.5 by adding
U(−0.001, 0.001) to every gene.

Speed (``docs/engine.md``, "The GA at its matmul floor"): all random draws of a block and generation are
made in bulk (three calls), the yes/no draws (crossover genes, mutated children) from single random bytes
with the exact probability asked for, children are written into a preallocated population buffer (two
buffers alternate), and the children's fitness comes from one sort per block. There is no Python loop over
categories or individuals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from ...metrics.ranking import METRICS
from ..registry import BlockTask, Variant, check_fraction, check_minimum, register_variant

__all__ = ["GAOptions", "run_ga"]


@dataclass
class GAOptions:
    """CFT-GA's options (``CFTConfig`` keywords)."""

    generations: int = field(default=5000, metadata={"help": "ga: maximum generations."})
    population_size: int = field(default=50, metadata={"help": "ga: individuals per category (all start as the "
                                                                 "trained row)."})
    elitism: int = field(default=1, metadata={"help": "ga: best individuals copied unchanged to the next "
                                                      "generation."})
    crossover_rate: float = field(
        default=0.2,
        metadata={"help": "ga: uniform crossover; each gene of a child comes from its first parent with this "
                  "probability, else from the second."},
    )
    mutation_probability: float = field(default=0.5, metadata={"help": "ga: chance that a child is mutated."})
    mutation_range: float = field(
        default=0.001, metadata={"help": "ga: a mutated child gets U(-r, r) added to every gene."}
    )

    def __post_init__(self) -> None:
        check_minimum(self, "generations", 0)
        check_minimum(self, "population_size", 2)
        if not 0 <= self.elitism < self.population_size:
            raise ValueError(f"`elitism` must be in [0, population_size), got {self.elitism}")
        check_fraction(self, "crossover_rate", "mutation_probability")

JUDGE_EVERY = 8
"""Generations whose elites are scored on the selection split in one batched call (handed to the tracker one
by one, in order: each row still stops at its own generation)."""


def _base256_digits(p: float) -> list[int]:
    """The base-256 digits of ``p`` in (0, 1), exactly (a double's expansion is finite)."""
    frac, digits = Fraction(p), []
    while frac:
        frac *= 256
        digit = int(frac)
        digits.append(digit)
        frac -= digit
    return digits


class _Random:
    """Draws from one seeded stream: numpy's PCG64 on the CPU, torch's generator on an accelerator.

    The stream of a CPU block (pinned by ``tests/test_engine.py::test_ga_random_stream_is_pinned``):

    * :meth:`uniform`: ``Generator.random(shape, dtype=float32)`` (24-bit uniforms in [0, 1));
    * :meth:`bernoulli`: one byte per draw from ``bit_generator.random_raw`` (little-endian bytes of the
      64-bit outputs), compared with the base-256 digits of ``p``: a byte below the first digit is a yes, above
      it a no, and equal to it (probability 1/256) decided by further bytes against the next digits. The
      probability of a yes is therefore exactly ``p`` (the double), at a quarter of the random bits of a
      float32 uniform per draw.
    """

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        if device.type == "cpu":
            self.np = np.random.default_rng(seed)
        else:
            self.np = None
            self.torch = torch.Generator(device=device).manual_seed(seed)

    def uniform(self, *shape: int, out: np.ndarray | None = None) -> torch.Tensor:
        """Uniforms in [0, 1) of ``shape`` (on the CPU into ``out[:shape[0]]`` when given: the same numbers)."""
        if self.np is not None:
            if out is not None:
                return torch.from_numpy(self.np.random(shape, dtype=np.float32, out=out[:shape[0]])).to(self.dtype)
            return torch.from_numpy(self.np.random(shape, dtype=np.float32)).to(self.dtype)
        return torch.rand(*shape, generator=self.torch, device=self.device, dtype=self.dtype)

    def _bytes(self, n: int) -> np.ndarray:
        raw = self.np.bit_generator.random_raw((n + 7) // 8)
        return raw.astype("<u8", copy=False).view(np.uint8)[:n]

    def bernoulli(self, *shape: int, p: float) -> torch.Tensor:
        """Booleans of ``shape``, each True with probability ``p`` (exactly, on the CPU)."""
        if self.np is None:
            return torch.rand(*shape, generator=self.torch, device=self.device) < p
        n = int(np.prod(shape))
        if p <= 0 or p >= 1:
            return torch.full(shape, p >= 1, dtype=torch.bool)
        digits = _base256_digits(float(p))
        u = self._bytes(n)
        out = u < digits[0]
        open_ = np.flatnonzero(u == digits[0])
        for digit in digits[1:]:
            if not open_.size:
                break
            v = self._bytes(open_.size)
            out[open_[v < digit]] = True
            open_ = open_[v == digit]
        # still equal after the last digit: the draw is >= p (p's expansion has ended), a no
        return torch.from_numpy(out.reshape(shape))

    def roulette(self, fitness: torch.Tensor, k: int) -> torch.Tensor:
        """``k`` indices per row drawn with probability ∝ fitness (uniform where all fitnesses are 0)."""
        probs = fitness.nan_to_num(0.0).clamp(min=0).double() + 1e-12
        cum = probs.cumsum(-1)
        u = self.uniform(fitness.shape[0], k).double() * cum[:, -1:]
        return torch.searchsorted(cum, u, right=True).clamp(max=fitness.shape[1] - 1)


def _breed(pw: torch.Tensor, pb: torch.Tensor, n_cat: int, n_child: int, rng: _Random,
           config: GAOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Children from parent pairs: ``pw`` (B·2·K)×d and ``pb`` (B·2·K), per category K first then K second parents.

    Uniform crossover takes each gene from the first parent with probability ``crossover_rate``; a child is
    mutated with probability ``mutation_probability`` by adding U(−r, r) to every gene. Returns (B·K)×d, B·K.
    The plain form of what :func:`run_ga` does in its buffers, drawing the same numbers in the same order.
    """
    d = pw.shape[1]
    half = n_cat * n_child
    first_w, second_w = pw.view(n_cat, 2, n_child, d)[:, 0].reshape(half, d), pw.view(n_cat, 2, n_child, d)[:, 1]
    first_b, second_b = pb.view(n_cat, 2, n_child)[:, 0].reshape(half), pb.view(n_cat, 2, n_child)[:, 1]
    take_first = rng.bernoulli(half, d + 1, p=config.crossover_rate).to(pw.device)
    child_w = torch.where(take_first[:, :d], first_w, second_w.reshape(half, d))
    child_b = torch.where(take_first[:, d], first_b, second_b.reshape(half))
    mutants = rng.bernoulli(half, p=config.mutation_probability).to(pw.device).nonzero().squeeze(1)
    if mutants.numel():
        r = config.mutation_range
        noise = rng.uniform(mutants.numel(), d + 1).mul_(2 * r).sub_(r)
        child_w.index_add_(0, mutants, noise[:, :d])
        child_b.index_add_(0, mutants, noise[:, d])
    return child_w, child_b


@dataclass
class _Buffers:
    """A block's population (``[elite…, children…]``, B×P×d and B×P) and the memory each generation writes into,
    allocated once (fresh memory costs a page fault per page on first touch): the next population (``spare``;
    the two alternate), the parents' gathers and the mutation noise (on the CPU)."""

    pop_w: torch.Tensor
    pop_b: torch.Tensor
    spare_w: torch.Tensor
    spare_b: torch.Tensor
    first_w: torch.Tensor
    second_w: torch.Tensor
    child_slot: torch.Tensor  # child j of the block → its row in B·P
    n_elite: int
    noise_buf: np.ndarray | None

    @classmethod
    def allocate(cls, weight: torch.Tensor, bias: torch.Tensor, pop_size: int, n_elite: int) -> _Buffers:
        n_cat, d = weight.shape
        n_child = pop_size - n_elite
        half = n_cat * n_child
        device, dtype = weight.device, weight.dtype
        pop_w = weight.unsqueeze(1).repeat(1, pop_size, 1)  # B × P × d
        pop_b = bias.unsqueeze(1).repeat(1, pop_size)  # B × P
        spare_w, spare_b = torch.empty_like(pop_w), torch.empty_like(pop_b)
        first_w = torch.empty(half, d, device=device, dtype=dtype)
        second_w = torch.empty(half, d, device=device, dtype=dtype)
        child_slot = (torch.arange(n_cat, device=device) * pop_size).repeat_interleave(n_child) + n_elite + \
            torch.arange(n_child, device=device).repeat(n_cat)
        noise_buf = np.empty((half, d + 1), np.float32) if device.type == "cpu" else None
        return cls(pop_w, pop_b, spare_w, spare_b, first_w, second_w, child_slot, n_elite, noise_buf)

    def swap(self) -> None:
        """The next population becomes the current one."""
        self.pop_w, self.spare_w, self.pop_b, self.spare_b = self.spare_w, self.pop_w, self.spare_b, self.pop_b


def run_ga(task: BlockTask) -> None:
    """Evolve a block of rows (``weight`` B×d, ``bias`` B); the task's tracker keeps each row's elite.

    The population of a category is ``[elite…, children…]`` (B×P×d); two such buffers alternate, so a
    generation allocates no population-sized memory besides the two parent gathers.
    """
    weight, bias, fit, config = task.weight, task.bias, task.fit, task.options
    metric = METRICS[task.config.metric]  # the fitness; the judge selects by `config.judged_by`
    n_cat, d = weight.shape
    pop_size, n_elite = config.population_size, config.elitism
    n_child = pop_size - n_elite
    device, dtype = weight.device, weight.dtype
    rng = _Random(task.seed, device, dtype)
    buf = _Buffers.allocate(weight, bias, pop_size, n_elite)
    # every individual starts as the trained row: one row scored stands for all of them
    fitness = metric(fit.scores(weight.unsqueeze(1), bias.unsqueeze(1)), fit.labels, fit.mask).expand(-1, pop_size)
    offset = (torch.arange(n_cat, device=device) * pop_size).unsqueeze(1)
    cat_idx = torch.arange(n_cat, device=device)
    champ_w = torch.empty(n_cat, JUDGE_EVERY, d, device=device, dtype=dtype)  # the elites awaiting their score
    champ_b = torch.empty(n_cat, JUDGE_EVERY, device=device, dtype=dtype)
    child_scores = torch.empty(n_cat, n_child, fit.length, device=device, dtype=dtype)  # reused every generation

    for gen in range(1, config.generations + 1):
        parents = rng.roulette(fitness, 2 * n_child) + offset  # B × 2K flat indices: K first, K second parents
        flat_w, flat_b = buf.pop_w.view(-1, d), buf.pop_b.view(-1)
        _breed_into(buf, parents, rng, config)
        children_w, children_b = buf.spare_w[:, n_elite:], buf.spare_b[:, n_elite:]  # views into the next population
        child_fit = metric(fit.scores(children_w, children_b, out=child_scores), fit.labels, fit.mask)
        if n_elite:
            elite = fitness.nan_to_num(-1.0).topk(n_elite, dim=1).indices
            keep = (elite + offset).reshape(-1)
            buf.spare_w[:, :n_elite] = flat_w.index_select(0, keep).view(n_cat, n_elite, d)
            buf.spare_b[:, :n_elite] = flat_b.index_select(0, keep).view(n_cat, n_elite)
            fitness = torch.cat([fitness.gather(1, elite), child_fit], dim=1)
        else:
            fitness = child_fit
        buf.swap()
        best = fitness.nan_to_num(-1.0).argmax(dim=1)
        j = (gen - 1) % JUDGE_EVERY
        champ_w[:, j], champ_b[:, j] = buf.pop_w[cat_idx, best], buf.pop_b[cat_idx, best]
        if j == JUDGE_EVERY - 1 or gen == config.generations:
            if not _judge_span(gen - j, j + 1, champ_w, champ_b, task):
                break


def _breed_into(buf: _Buffers, parents: torch.Tensor, rng: _Random, config: GAOptions) -> None:
    """:func:`_breed` written into the children's places of the next population (``buf.spare_w[:, n_elite:]``):
    the parents gathered into ``buf.first_w`` / ``second_w``, one ``where`` for the crossover, the mutants' noise
    added in place."""
    n_cat, _, d = buf.pop_w.shape
    n_elite, spare_w, spare_b = buf.n_elite, buf.spare_w, buf.spare_b
    n_child = parents.shape[1] // 2
    flat_w, flat_b = buf.pop_w.view(-1, d), buf.pop_b.view(-1)
    first, second = parents[:, :n_child].reshape(-1), parents[:, n_child:].reshape(-1)
    first_w, second_w = buf.first_w, buf.second_w
    torch.index_select(flat_w, 0, first, out=first_w)
    torch.index_select(flat_w, 0, second, out=second_w)
    take_first = rng.bernoulli(n_cat * n_child, d + 1, p=config.crossover_rate).to(buf.pop_w.device)
    take_first = take_first.view(n_cat, n_child, d + 1)
    torch.where(take_first[..., :d], first_w.view(n_cat, n_child, d), second_w.view(n_cat, n_child, d),
                out=spare_w[:, n_elite:])
    spare_b[:, n_elite:] = torch.where(take_first[..., d], flat_b[first].view(n_cat, n_child),
                                       flat_b[second].view(n_cat, n_child))
    mutants = rng.bernoulli(n_cat * n_child, p=config.mutation_probability).to(buf.pop_w.device).nonzero().squeeze(1)
    if mutants.numel():
        r = config.mutation_range
        noise = rng.uniform(mutants.numel(), d + 1, out=buf.noise_buf).mul_(2 * r).sub_(r)
        rows = buf.child_slot[mutants]
        spare_w.view(-1, d).index_add_(0, rows, noise[:, :d])
        spare_b.view(-1).index_add_(0, rows, noise[:, d])


def _judge_span(first: int, span: int, champ_w: torch.Tensor, champ_b: torch.Tensor, task: BlockTask) -> bool:
    """Score ``span`` generations' elites on the selection split in one call, then hand them to the tracker in
    order; False once every row has stopped (later generations, computed ahead, are then discarded)."""
    scores = task.judge(champ_w[:, :span], champ_b[:, :span])  # B × span
    for j in range(span):
        running = task.tracker.update(first + j, champ_w[:, j], champ_b[:, j], scores[:, j])
        task.report(first + j)
        if not running:
            return False
    return True


register_variant(Variant(
    name="ga", runner=run_ga, options=GAOptions,
    population=lambda o: o.population_size, max_steps=lambda o: o.generations,
    summary="batched genetic algorithm maximizing the metric on the fit labels (paper §III-D)",
))
