"""The variant registry: the one place that lists the ways a row is re-fitted.

Each :class:`Variant` names its runner, how many candidates per category it holds at once (block memory),
its number of steps, the :class:`~hf_cft.engine.CFTConfig` fields it reads and those the model card shows.
The engine, the config's checks, the model card and the recipe's ``--variant`` choices all read
:data:`VARIANTS`. ``auto`` is not a variant: it runs several and keeps per category the best (see
:func:`~hf_cft.engine.choose_per_category`).

A runner fits one block of B categories and feeds its trajectory to the tracker; all share one signature::

    runner(weight, bias, fit, judge, tracker, config, seed, progress, categories) -> None

``weight`` (B×d) and ``bias`` (B) are the trained rows on the engine's device, ``fit`` the block's view of
the fit split, ``judge(w, b)`` scores candidate rows on the selection split, ``tracker.update(step, w, b,
score)`` records step ``step`` and returns False once every row has stopped, ``seed`` is the block's own
seed, ``progress(step)`` reports progress and ``categories`` are the block's category indices.

Adding a variant is one module with its runner and one :func:`register_variant` call (``docs/architecture.md``
shows a worked example, tested in ``tests/test_architecture.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .bp import run_bp
from .config import CFTConfig
from .ga import run_ga
from .pygad_backend import run_pygad
from .refit import run_refit

__all__ = ["AUTO", "COMMON_FIELDS", "VARIANTS", "Runner", "Variant", "get_variant", "register_variant",
           "variant_choices"]

Runner = Callable[..., None]  # (weight, bias, fit, judge, tracker, config, seed, progress, categories) -> None

AUTO = "auto"  # the per-category choice among several variants (CFTConfig.auto_variants)

# CFTConfig fields every run reads (not owned by a variant); the card shows the first group
COMMON_FIELDS = ("variant", "metric", "seed", "selection_fraction", "patience", "selection_rule", "selection_metric",
                 "selection_folds", "selection_alphas", "selection_bootstrap", "selection_confidence", "auto_variants",
                 "uncertain_policies", "device", "dense_threshold", "block_memory_mb", "show_progress")


@dataclass(frozen=True)
class Variant:
    """One way of re-fitting a block of rows.

    Attributes:
        name: what ``CFTConfig.variant`` and the report call it.
        runner: fits a block (the signature in this module's docstring).
        population: candidates per category it holds at once, for the block memory plan.
        max_steps: its steps at most (epochs, generations, grid points).
        fields: the CFTConfig fields it reads.
        card_fields: those the model card lists as its hyperparameters (default: ``fields``).
        grid: True when its steps are a grid of alternatives rather than a trajectory (refit's λ): no early
            stop, and the crossfit rule considers every step.
        detail: the words the report adds to a kept step (refit: ``"l2=0.001"``), or None.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    runner: Runner
    population: Callable[[CFTConfig], int]
    max_steps: Callable[[CFTConfig], int]
    fields: tuple[str, ...] = ()
    card_fields: tuple[str, ...] | None = None
    grid: bool = False
    detail: Callable[[CFTConfig, int], str] | None = None
    summary: str = ""

    def hyperparameters(self) -> tuple[str, ...]:
        """The CFTConfig fields the model card lists for this variant."""
        return self.fields if self.card_fields is None else self.card_fields

    def patience(self, config: CFTConfig) -> int | None:
        """The early-stop patience of a row (None: never stops early)."""
        return None if self.grid else config.patience

    def describe(self, config: CFTConfig, step: int) -> str | None:
        """The report's detail of a kept step (None for step 0, the trained row)."""
        return self.detail(config, step) if self.detail is not None and step > 0 else None


VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to the registry (the engine, the config checks, the card and the recipe then know it)."""
    if variant.name == AUTO or not variant.name.isidentifier():
        raise ValueError(f"a variant needs a name that is an identifier and not {AUTO!r}, got {variant.name!r}")
    known = {f for f in CFTConfig.__dataclass_fields__}
    unknown = [f for f in (*variant.fields, *variant.hyperparameters()) if f not in known]
    if unknown:
        raise ValueError(f"variant {variant.name!r} names fields that CFTConfig does not have: {unknown}")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(name: str) -> Variant:
    """The registered variant ``name``; a ValueError listing the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; registered: {tuple(VARIANTS)}") from None


def variant_choices() -> tuple[str, ...]:
    """Every registered variant and ``auto``: the values ``CFTConfig.variant`` accepts."""
    return (*VARIANTS, AUTO)


register_variant(Variant(
    name="bp", runner=run_bp,
    population=lambda c: 1, max_steps=lambda c: c.epochs,
    fields=("epochs", "lr", "bp_optimizer", "gamma_neg", "gamma_pos", "clip", "bp_loss", "wmw_gamma", "aucm_margin"),
    card_fields=("epochs", "lr", "bp_optimizer", "gamma_neg", "gamma_pos", "clip", "bp_loss"),
    summary="full-batch Adam on the masked asymmetric loss or an AUC surrogate (paper §III-C)",
))
register_variant(Variant(
    name="ga", runner=run_ga,
    population=lambda c: c.population_size, max_steps=lambda c: c.generations,
    fields=("generations", "population_size", "elitism", "crossover_rate", "mutation_probability",
            "mutation_range"),
    summary="batched genetic algorithm maximizing the metric on the fit labels (paper §III-D)",
))
register_variant(Variant(
    name="pygad", runner=run_pygad,
    population=lambda c: c.pygad_population_size, max_steps=lambda c: c.pygad_generations,
    fields=("pygad_generations", "pygad_population_size", "pygad_num_parents_mating", "pygad_keep_parents",
            "pygad_crossover_probability", "pygad_mutation_probability", "pygad_mutation_range"),
    summary="the same GA problem through PyGAD, the paper's CheXpert setup",
))
register_variant(Variant(
    name="refit", runner=run_refit,
    population=lambda c: len(c.refit_l2), max_steps=lambda c: len(c.refit_l2),
    fields=("refit_l2", "refit_toward", "refit_balanced", "refit_max_iter", "refit_tol"),
    grid=True, detail=lambda c, step: f"l2={c.refit_l2[step - 1]:g}",
    summary="L2 logistic regression solved to convergence, λ chosen on the selection split",
))
