"""The dataset builders by name: what :func:`~hf_cft.data.load.load_partial_dataset` can build.

A builder module registers its class with ``@register_builder("name")``; this module imports none of them
(``hf_cft.data`` imports the shipped builders, which registers them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .builder import PartialBuilder

logger = logging.getLogger(__name__)

__all__ = ["BUILDERS", "get_builder", "register_builder"]

BUILDERS: dict[str, type[PartialBuilder]] = {}


def register_builder(name: str) -> Callable[[type[PartialBuilder]], type[PartialBuilder]]:
    """Class decorator: make a :class:`PartialBuilder` subclass buildable as ``load_partial_dataset(name)``."""

    def register(cls: type[PartialBuilder]) -> type[PartialBuilder]:
        if not (isinstance(cls, type) and issubclass(cls, PartialBuilder)):
            raise TypeError(f"register_builder({name!r}) takes a PartialBuilder subclass, got {cls!r}")
        if name in BUILDERS and BUILDERS[name] is not cls:
            raise ValueError(f"a dataset builder named {name!r} is already registered ({BUILDERS[name].__name__})")
        BUILDERS[name] = cls
        return cls

    return register


def get_builder(name: str) -> type[PartialBuilder]:
    """The builder registered as ``name``; an unknown name is an error listing the known ones."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name]
