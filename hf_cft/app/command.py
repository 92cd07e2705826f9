"""The page and the Space from the command line: ``python -m hf_cft.app MODEL`` and
``python -m hf_cft.app space MODEL SPACE``; ``hf-cft app`` / ``hf-cft space`` (:mod:`hf_cft.cli.app`) parse the
same dataclasses and run the same functions.

:class:`AppArguments` / :class:`SpaceArguments` are the options as dataclasses (fields with help texts, for a
parser built from them); :func:`run_app` / :func:`run_space` run them; :func:`main` / :func:`space_main` parse a
command line first.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from .page import DEFAULT_HOST, build_app, launch
from .space import DEFAULT_REQUIREMENT, SpaceOptions, push_space, write_space

logger = logging.getLogger(__name__)

__all__ = ["AppArguments", "SpaceArguments", "main", "run_app", "run_space", "space_main"]


@dataclass
class AppArguments:
    """``hf-cft app MODEL``: the page of a calibrated model."""

    model_name_or_path: str = field(metadata={"help": "A calibrated model: a folder or a Hub id."})
    host: str = field(default=DEFAULT_HOST, metadata={"help": "Address to bind (0.0.0.0: every interface)."})
    port: int | None = field(default=None, metadata={"help": "Port (default: 7860 or the next free one)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision of the model (default: main)."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login)."})


@dataclass
class SpaceArguments:
    """``hf-cft space MODEL SPACE``: the page as a Gradio Space on the Hub (or a folder, ``--output_dir``)."""

    model_id: str = field(metadata={"help": "The calibrated model's Hub id (owner/name)."})
    space_id: str | None = field(default=None, metadata={"help": "The Space to create or update (owner/name)."})
    output_dir: str | None = field(default=None, metadata={"help": "Write the Space's files here instead."})
    revision: str | None = field(default=None, metadata={"help": "The model's revision the Space reads."})
    requirement: str = field(default=DEFAULT_REQUIREMENT, metadata={"help": "How the Space installs hf_cft."})
    private: bool | None = field(default=None, metadata={"help": "Create the Space private."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login)."})


def run_app(args: AppArguments) -> int:
    """Serve the page until interrupted; 0."""
    demo = build_app(args.model_name_or_path, revision=args.revision, token=args.token)
    launch(demo, host=args.host, port=args.port)
    return 0


def run_space(args: SpaceArguments) -> str:
    """Write the Space's folder (``output_dir``) or push it (``space_id``); the folder or the commit URL."""
    options = SpaceOptions(revision=args.revision, requirement=args.requirement)
    if args.output_dir is not None:
        return write_space(args.model_id, args.output_dir, options)
    if args.space_id is None:
        raise ValueError("give the Space's id (owner/name) to push to, or --output_dir to write its files")
    return push_space(args.model_id, args.space_id, token=args.token, private=args.private, options=options)


def _parser(cls, prog: str, positional: Sequence[str]) -> argparse.ArgumentParser:
    """An argparse parser of a dataclass's fields: ``positional`` ones first, the others as ``--name``."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
    for f in fields(cls):  # types are strings here (postponed annotations)
        if f.name in positional:
            parser.add_argument(f.name, nargs="?" if f.default is None else None, help=f.metadata["help"])
        elif str(f.type).startswith("bool"):
            parser.add_argument(f"--{f.name}", action="store_true", default=f.default, help=f.metadata["help"])
        else:
            kind = int if str(f.type).startswith("int") else str
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=f.metadata["help"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_cft.app MODEL [--host H] [--port P] [--revision R] [--token T]``; ``space ...`` runs
    :func:`space_main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_cft").setLevel(logging.INFO)
    if argv[:1] == ["space"]:
        logger.info("Space written: %s", space_main(argv[1:]))
        return 0
    args = _parser(AppArguments, "python -m hf_cft.app", ("model_name_or_path",)).parse_args(argv)
    return run_app(AppArguments(**vars(args)))


def space_main(argv: Sequence[str] | None = None) -> str:
    """``python -m hf_cft.app space MODEL [SPACE] [--output_dir D] [--revision R] [--requirement REQ] [--private]
    [--token T]``: the folder written or the commit URL."""
    args = _parser(SpaceArguments, "python -m hf_cft.app space", ("model_id", "space_id")).parse_args(argv)
    return run_space(SpaceArguments(**vars(args)))
