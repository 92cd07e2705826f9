"""``hf-cft <command> [CONFIG] [--option value ...]``: the top-level parser and the dispatch to a subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..launch import entrypoint
from .app import APP, SPACE
from .command import Command, show_output
from .evaluate import EVALUATE
from .predict import PREDICT
from .recipes import CFT, TRAIN

logger = logging.getLogger(__name__)

__all__ = ["COMMANDS", "main", "run_command"]

COMMANDS: dict[str, Command] = {c.name: c for c in (TRAIN, CFT, EVALUATE, PREDICT, APP, SPACE)}

EPILOG = """examples:
  hf-cft cft                                      the offline demo: a baseline on digits_mosaic, CFT, the report
  hf-cft cft --config coco --variant refit auto   a shipped configuration, flags over it
  hf-cft cft my_run.yaml --seed 3                 a configuration file of yours, flags over it
  accelerate launch -m hf_cft.cli cft ...         several processes (categories sharded, features data parallel)
  hf-cft train --method ll_r --epochs 20
  hf-cft evaluate --model_name_or_path outputs/cft-digits-mosaic
  hf-cft predict --model_name_or_path outputs/cft-digits-mosaic --images photos/
  hf-cft app outputs/cft-digits-mosaic            the page: images before / after, the report (extra: app)
  hf-cft space you/model-cft you/model-cft-demo   the same page as a Gradio Space

`hf-cft <command> --help` lists a command's options and the values each accepts."""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-cft", description="Category-wise Fine-Tuning (CFT) of multi-label "
                                     "image classifiers trained on partially labeled data.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub.add_parser(command.name, help=command.summary, add_help=False)
    return parser


def _logging(command: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_cft").setLevel(logging.WARNING if command == "predict" else logging.INFO)
    show_output()


def run_command(argv: Sequence[str]):
    """Run ``hf-cft`` on ``argv`` (without the program name); returns what the command returns."""
    argv = list(argv)
    _top_parser().parse_known_args(argv[:1])  # --help, no command or an unknown one: the list of commands, exit
    command = COMMANDS[argv[0]]
    _logging(command.name)
    arguments = command.parse(argv[1:])
    return entrypoint(command.run)(*arguments)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``hf-cft`` console script: run the command line (or ``argv``). Returns None, so that the script's
    ``sys.exit(main())`` exits 0 after a command that succeeded (a failure raises)."""
    run_command(sys.argv[1:] if argv is None else argv)
