"""The variant registry: the one place that lists the ways a row is re-fitted.

Each :class:`Variant` names its runner, its options (a dataclass whose fields are :class:`~hf_cft.engine.CFTConfig`
keywords, checked by the dataclass itself), how many candidates per category it holds at once (block memory) and
its number of steps. The engine, the config, the model card and the recipe's ``--variant`` choices and flags all
read :data:`VARIANTS`. ``auto`` is not a variant: it runs several and keeps per category the best (see
:func:`~hf_cft.engine.choose_per_category`).

A runner fits one block of B categories and feeds its trajectory to the tracker; it is given one
:class:`BlockTask`::

    runner(task) -> None

This module imports no variant: each variant module (``hf_cft/engine/variants/<name>.py``) imports it and calls
:func:`register_variant` (``docs/architecture.md`` shows a worked example, tested in
``tests/test_architecture.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only
    import torch

    from .selection import BestTracker, Judge

__all__ = ["AUTO", "SHARED_NAMES", "VARIANTS", "BlockTask", "LiveChoices", "NoOptions", "Runner", "Variant",
           "check_fraction", "check_minimum", "get_variant", "option_owner", "register_variant", "variant_choices"]

AUTO = "auto"  # the per-category choice among several variants (CFTConfig.auto_variants)


@dataclass
class BlockTask:
    """What a runner is given for one block of B categories.

    Attributes:
        weight, bias: the trained rows (B×d, B) on the engine's device and dtype; never modify them.
        fit: the block's view of the fit split (``fit.scores(w, b)`` for candidates ``w`` B×P×d, ``b`` B×P;
            ``fit.labels``, ``fit.mask``).
        judge: ``judge(w, b)`` scores candidate rows on the selection split (B×d → B, B×P×d → B×P).
        tracker: ``tracker.update(step, w, b, scores)`` records step ``step`` (1, 2, …); False once every row
            has stopped.
        options: the variant's options (its own dataclass, from the CFTConfig).
        config: the whole :class:`~hf_cft.engine.CFTConfig` (the shared settings: ``metric``, ``seed``,
            ``patience``).
        seed: this block's seed: use it for any randomness, so that sharded runs equal one run.
        progress: ``progress(step)`` reports progress.
        categories: the block's category indices.
        notes: the runner's words about a category's fit (category index → text), copied into its report
            (``CategoryReport.note``; em: the unknowns used and the estimated prior).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    fit: Any
    judge: Judge
    tracker: BestTracker
    options: Any
    config: Any
    seed: int = 0
    progress: Callable[[int], None] | None = None
    categories: Sequence[int] = ()
    notes: dict[int, str] = field(default_factory=dict)

    def report(self, step: int) -> None:
        """``progress(step)`` when a progress callback was given."""
        if self.progress is not None:
            self.progress(step)


Runner = Callable[[BlockTask], None]


@dataclass
class NoOptions:
    """The options of a variant that has none."""


@dataclass(frozen=True)
class Variant:
    """One way of re-fitting a block of rows.

    Attributes:
        name: what ``CFTConfig.variant`` and the report call it.
        runner: fits a block (``runner(task: BlockTask) -> None``).
        population: candidates per category it holds at once, of its options, for the block memory budget.
        max_steps: its steps at most (epochs, generations, grid points), of its options.
        options: its options dataclass; each field is a CFTConfig keyword and a recipe flag (with ``help``
            metadata), checked in the dataclass's ``__post_init__``.
        card_fields: the options the model card lists as its hyperparameters (default: all of them).
        grid: True when its steps are a grid of alternatives rather than a trajectory (refit's λ): no early
            stop, and the crossfit rule considers every step.
        detail: the words the report adds to a kept step (refit: ``"l2=0.001"``), of its options and the step.
        fit_view: the block's view of the fit split, of the split's view factory and the block (default: the
            factory's own view).
        summary: one line for ``--help`` and the docs.
    """

    name: str
    runner: Runner
    population: Callable[[Any], int]
    max_steps: Callable[[Any], int]
    options: type = NoOptions
    card_fields: tuple[str, ...] | None = None
    grid: bool = False
    detail: Callable[[Any, int], str] | None = None
    fit_view: Callable[[Any, list[int]], Any] | None = None
    summary: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """The CFTConfig keywords of its options."""
        return tuple(f.name for f in dataclasses.fields(self.options))

    def hyperparameters(self) -> tuple[str, ...]:
        """The options the model card lists for this variant."""
        return self.fields if self.card_fields is None else self.card_fields

    def patience(self, patience: int | None) -> int | None:
        """The early-stop patience of a row given the config's (None: never stops early)."""
        return None if self.grid else patience

    def describe(self, options: Any, step: int) -> str | None:
        """The report's detail of a kept step (None for step 0, the trained row)."""
        return self.detail(options, step) if self.detail is not None and step > 0 else None


VARIANTS: dict[str, Variant] = {}
SHARED_NAMES: set[str] = set()
"""The CFTConfig settings every variant shares (filled by :mod:`hf_cft.engine.config`): no option may reuse one."""


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to the registry (the engine, the config, the card and the recipe then know it)."""
    if variant.name == AUTO or not variant.name.isidentifier():
        raise ValueError(f"a variant needs a name that is an identifier and not {AUTO!r}, got {variant.name!r}")
    if not dataclasses.is_dataclass(variant.options):
        raise ValueError(f"variant {variant.name!r}: `options` must be a dataclass, got {variant.options!r}")
    unknown = [f for f in variant.hyperparameters() if f not in variant.fields]
    if unknown:
        raise ValueError(f"variant {variant.name!r} lists card fields that its options do not have: {unknown}")
    taken = {f: owner.name for owner in VARIANTS.values() if owner.name != variant.name for f in owner.fields}
    taken.update({f: "CFTConfig" for f in SHARED_NAMES})
    clash = {f: taken[f] for f in variant.fields if f in taken}
    if clash:
        raise ValueError(f"variant {variant.name!r} has options named like settings of others: {clash}")
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


class LiveChoices:
    """The names a registry holds now, as argparse ``choices`` (``in``, iteration): a field's ``metadata={"choices":
    LiveChoices(...)}`` makes ``--help`` list them and the parser refuse any other value, and names registered after
    the dataclass was defined (a variant, a dataset builder of yours) are accepted too."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names

    def __contains__(self, value: object) -> bool:
        return value in tuple(self._names())

    def __iter__(self):
        return iter(tuple(self._names()))

    def __len__(self) -> int:
        return len(tuple(self._names()))

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


def option_owner(name: str) -> Variant | None:
    """The registered variant whose options have a field ``name``, or None."""
    return next((v for v in VARIANTS.values() if name in v.fields), None)


def check_minimum(options: Any, name: str, minimum: float) -> None:
    """Raise a ValueError naming ``name`` when the option is below ``minimum``."""
    if getattr(options, name) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {getattr(options, name)}")


def check_fraction(options: Any, *names: str) -> None:
    """Raise a ValueError naming the first of ``names`` whose option is outside [0, 1]."""
    for name in names:
        if not 0.0 <= getattr(options, name) <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {getattr(options, name)}")
