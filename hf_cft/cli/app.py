"""``hf-cft app MODEL`` and ``hf-cft space MODEL SPACE``: the page of a calibrated model, served here or pushed as
a Gradio Space (the ``app`` extra: ``pip install 'hf_cft[app]'``).

The options are :mod:`hf_cft.app.command`'s (the same as ``python -m hf_cft.app``); the leading words are the
model (and the Space), not a configuration file, unless they name a ``.yaml`` / ``.json`` file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..app.command import AppArguments, SpaceArguments, run_app, run_space
from .command import OUTPUT, Command

__all__ = ["APP", "SPACE", "PositionalCommand", "serve", "space"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class PositionalCommand(Command):
    """A command whose leading words fill ``positional`` options in order (``hf-cft app outputs/run`` is
    ``hf-cft app --model_name_or_path outputs/run``); a configuration file still goes first when it is one."""

    positional: tuple[str, ...] = ()
    usage: str = ""  # the leading words, as ``--help`` shows them

    def parser(self, add_help: bool = True):
        parser = super().parser(add_help)
        parser.usage = f"%(prog)s {self.usage} [--option value ...]"
        return parser

    def parse(self, argv: Sequence[str]) -> tuple:
        argv = list(argv)
        if "-h" in argv or "--help" in argv:  # before the required options are looked for
            self.parser().parse_args(["--help"])
        head = argv[:1] if argv and argv[0].endswith(CONFIG_SUFFIXES) else []
        rest = argv[len(head):]
        words: list[str] = []
        while rest and len(words) < len(self.positional) and not rest[0].startswith("-"):
            words.append(rest.pop(0))
        flags = [part for name, word in zip(self.positional, words) for part in (f"--{name}", word)]
        return super().parse(head + flags + rest)


def serve(args: AppArguments) -> int:
    """Serve the page until interrupted (:func:`hf_cft.app.run_app`)."""
    OUTPUT.info("the page of %s: stop it with Ctrl+C", args.model_name_or_path)
    return run_app(args)


def space(args: SpaceArguments) -> str:
    """Write or push the Space (:func:`hf_cft.app.run_space`) and say where it is."""
    where = run_space(args)
    OUTPUT.info("Space %s: %s", "written" if args.output_dir else "pushed", where)
    return where


APP = PositionalCommand(
    name="app", summary="the page of a calibrated model: images before / after CFT, the run's report",
    description="Serve the page of a calibrated model (a folder or a Hub id) at http://127.0.0.1:7860: upload "
                "images to see every category's probability before and after CFT and the yes / no answer at the "
                "saved thresholds; the run's table, plots and per-category evidence. Needs the app extra: "
                "pip install 'hf_cft[app]'.",
    dataclasses=(AppArguments,), run=serve, positional=("model_name_or_path",), usage="MODEL")

SPACE = PositionalCommand(
    name="space", summary="the same page as a Gradio Space on the Hub (or its files in a folder)",
    description="Create or update a Gradio Space (owner/name) that serves the page of a calibrated model pushed to "
                "the Hub (owner/name), or write the Space's files into --output_dir.",
    dataclasses=(SpaceArguments,), run=space, positional=("model_id", "space_id"), usage="MODEL [SPACE]")
