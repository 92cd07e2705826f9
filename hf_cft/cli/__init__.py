"""The ``hf-cft`` command (``[project.scripts]``; also ``python -m hf_cft.cli`` and, for several processes,
``accelerate launch -m hf_cft.cli``):

    hf-cft cft [CONFIG] [--option value ...]        calibrate a classifier (hf_cft.recipe), print before / after
    hf-cft train [CONFIG] [--option value ...]      train a baseline on partial labels (hf_cft.training)
    hf-cft evaluate --model_name_or_path M ...      score a model on a dataset split, without fitting
    hf-cft predict --model_name_or_path M --images IMAGES...   one JSON line per image

``CONFIG`` (or ``--config``) is a YAML / JSON file or the name of a shipped one (``hf_cft/configs/<command>/``);
the flags given after it override its values. ``hf-cft <command> --help`` lists every option with the values it
accepts.
"""

from __future__ import annotations

from .command import Command
from .configs import resolve_config, shipped_configs
from .main import COMMANDS, main, run_command

__all__ = ["COMMANDS", "Command", "main", "resolve_config", "run_command", "shipped_configs"]
