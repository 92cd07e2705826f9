"""The built-in variants, one module each, registered on import: ``bp``, ``ga``, ``pygad``, ``refit``,
``em``.

A variant module holds its options dataclass, its runner and its :func:`~hf_cft.engine.registry.register_variant`
call; adding a variant is adding such a module (and importing it here, or from user code). The registry's names
are re-exported for convenience (``from hf_cft.engine.variants import Variant, register_variant``).
"""

from ..config import COMMON_FIELDS
from ..registry import (
    AUTO,
    VARIANTS,
    BlockTask,
    NoOptions,
    Runner,
    Variant,
    get_variant,
    register_variant,
    variant_choices,
)
from . import bp, ga, pygad, refit  # noqa: F401 - registers them, in this order

# isort: split
from . import em  # noqa: F401 - after refit (registration order is the order --help lists them)

__all__ = ["AUTO", "COMMON_FIELDS", "VARIANTS", "BlockTask", "NoOptions", "Runner", "Variant", "get_variant",
           "register_variant", "variant_choices"]
