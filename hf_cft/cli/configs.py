"""Configuration files for ``hf-cft``: the shipped ones by name, a file's keys checked and turned into the
command's defaults, so that the flags given beside it win.

``hf-cft cft --config coco`` (a shipped name), ``hf-cft cft --config my_run.yaml`` or ``hf-cft cft my_run.yaml``
read the file (YAML, or JSON for ``.json``); every key must be an option of the command (an unknown key is an
error naming it and the valid ones); each value is converted and checked as the flag's would be; the flags on the
command line then override it.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
from collections.abc import Collection
from typing import Any

import yaml

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_SUFFIXES", "add_config_arguments", "config_defaults", "read_config", "resolve_config",
           "shipped_configs"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
CONFIG_DESTS = ("config_file", "config")  # the parser's own arguments, not options of the command


def shipped_configs(command: str) -> dict[str, str]:
    """Name → path of every configuration shipped for ``hf-cft <command>`` (package data:
    ``hf_cft/configs/<command>/<name>.yaml``)."""
    folder = importlib.resources.files("hf_cft").joinpath("configs").joinpath(command)
    if not folder.is_dir():
        return {}
    files = sorted((entry for entry in folder.iterdir() if entry.name.endswith(CONFIG_SUFFIXES)),
                   key=lambda entry: entry.name)
    return {os.path.splitext(entry.name)[0]: os.fspath(entry) for entry in files}


def resolve_config(command: str, value: str) -> str:
    """The file ``value`` names: an existing file, or a configuration shipped for ``command`` by its name."""
    if os.path.isfile(value):
        return os.path.abspath(value)
    shipped = shipped_configs(command)
    name = os.path.splitext(value)[0] if value.endswith(CONFIG_SUFFIXES) else value
    if name in shipped:
        return shipped[name]
    raise ValueError(f"--config {value!r}: no such file, and no configuration of that name is shipped for "
                     f"`hf-cft {command}` (shipped: {', '.join(shipped) or 'none'})")


def read_config(path: str) -> dict[str, Any]:
    """The ``key: value`` mapping of a YAML (or ``.json``) file; an empty file is an empty mapping."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a configuration holds `option: value` pairs (a mapping), got a "
                         f"{type(data).__name__}")
    return data


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The positional ``CONFIG`` and ``--config`` of a command, with the shipped names in their help."""
    names = ", ".join(shipped_configs(command)) or "none yet"
    parser.add_argument("config_file", nargs="?", metavar="CONFIG", default=None,
                        help=f"A YAML / JSON file of options, or the name of a shipped one ({names}); the flags "
                             "given after it override its values.")
    parser.add_argument("--config", default=None, help="The same as the positional CONFIG.")


def config_defaults(parser: argparse.ArgumentParser, path: str, command: str,
                    ignored: Collection[str] = ()) -> dict[str, Any]:
    """The file's values as the parser's defaults, each converted and checked as its flag would be.

    ``ignored``: keys accepted and not used (``hf-cft evaluate`` reads a ``cft`` configuration's data options and
    leaves its fitting options)."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # a boolean's --no_<name> shares its dest: the first action is the option
        if action.dest not in (argparse.SUPPRESS, "help", *CONFIG_DESTS):
            actions.setdefault(action.dest, action)
    data = read_config(path)
    unknown = sorted(k for k in data if k not in actions and k not in ignored)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}: not options of `hf-cft {command}`, "
                         f"whose options are: {', '.join(sorted(actions))}")
    skipped = sorted(k for k in data if k in ignored and k not in actions)
    if skipped:
        logger.info("%s: not used by `hf-cft %s`: %s", path, command, ", ".join(skipped))
    return {key: _convert(actions[key], value, f"{path}: {key}") for key, value in data.items() if key in actions}


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A file's value as the flag's: lists for options taking several values, strings converted, choices checked."""
    if value is None:
        return None
    if action.nargs in ("+", "*"):
        return [_one(action, v, where) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, (list, dict)):
        raise ValueError(f"{where}: takes one value, got {value!r}")
    return _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, str) and callable(action.type):
        try:
            value = action.type(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {value!r} is not a valid value ({err})") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where}: invalid choice: {value!r} (choose from "
                         f"{', '.join(repr(c) for c in action.choices)})")
    return value
