"""One ``hf-cft`` subcommand: its argument dataclasses, its parser, and parsing a command line with a
configuration file under it (the flags win)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import HfArgumentParser

from .configs import add_config_arguments, config_defaults, resolve_config

logger = logging.getLogger(__name__)

OUTPUT = logging.getLogger("hf_cft.cli.output")
"""What a command shows its user (the before / after table): plain lines on the standard output."""


def show_output() -> None:
    """Send :data:`OUTPUT` to the current standard output, message only, not through the root logger."""
    for handler in list(OUTPUT.handlers):
        OUTPUT.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    OUTPUT.addHandler(handler)
    OUTPUT.setLevel(logging.INFO)
    OUTPUT.propagate = False

__all__ = ["OUTPUT", "show_output", "Command"]

USAGE = "%(prog)s [CONFIG] [--option value ...]   (--help lists every option and the values it accepts)"


@dataclass(frozen=True)
class Command:
    """A subcommand: ``run(*arguments)`` gets one instance of each of ``dataclasses``, parsed and checked."""

    name: str
    summary: str  # one line for ``hf-cft --help``
    dataclasses: tuple[type, ...]
    run: Callable[..., Any]
    description: str = ""  # the command's ``--help`` text
    ignored_keys: frozenset[str] = frozenset()  # configuration keys accepted and not used
    configs: str | None = None  # whose shipped configurations it reads by name (default: its own)

    def parser(self, add_help: bool = True) -> HfArgumentParser:
        """The command's parser: every field of its dataclasses (choices listed), and ``CONFIG`` / ``--config``."""
        parser = HfArgumentParser(self.dataclasses, prog=f"hf-cft {self.name}", add_help=add_help, usage=USAGE,
                                  description=self.description or self.summary,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_config_arguments(parser, self.configs or self.name)
        return parser

    def parse(self, argv: Sequence[str]) -> tuple:
        """The command's dataclasses from ``argv``: a configuration file's values (``CONFIG`` or ``--config``)
        overridden by the flags given; a wrong value, an unknown key or a failed check exits with the parser's
        usage and the reason, before anything is loaded."""
        argv = list(argv)
        known, _ = self.parser(add_help=False).parse_known_args(argv)  # only to find the file; --help waits
        parser = self.parser()
        given = [v for v in (known.config_file, known.config) if v is not None]
        try:
            if len(given) > 1:
                raise ValueError(f"give one configuration, not {given[0]!r} and --config {given[1]!r}")
            if given:
                path = resolve_config(self.configs or self.name, given[0])
                parser.set_defaults(**config_defaults(parser, path, self.name, self.ignored_keys))
            parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
        except ValueError as err:  # an unknown key, a wrong value in the file, a dataclass's own check
            parser.error(str(err))
        return tuple(parsed[: len(self.dataclasses)])
