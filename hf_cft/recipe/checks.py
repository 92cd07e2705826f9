"""The recipe's checks before any compute: writable folders, a Hub token, every variant's engine options."""

from __future__ import annotations

import logging
import os
import tempfile

from ..engine import CFTConfig
from .arguments import RecipeArguments, decision_config, engine_settings, requested_variants

logger = logging.getLogger(__name__)

__all__ = ["preflight"]


def _writable_folder(path: str, what: str) -> None:
    """Raise before any compute when ``path`` (or the folder that would hold it) cannot be written."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ValueError(f"{what} {path!r}: {probe!r} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hf_cft-write-test-", dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise ValueError(f"{what} {path!r} cannot be written ({probe!r}: {err.strerror}); choose a writable "
                         "folder (nothing was computed)") from err


def preflight(recipe: RecipeArguments, engine_args=None) -> None:
    """Everything that would fail after hours of compute, checked first: writable outputs, a Hub token, the
    engine options (``engine_args``) of every variant."""
    if engine_args is not None:
        base = engine_settings(engine_args)
        decision_config(engine_args)  # a wrong threshold objective or prior fails here too
        for variant in requested_variants(recipe, engine_args):
            CFTConfig(variant=variant, **base)  # raises, naming the option, before anything is computed
    _writable_folder(recipe.output_dir, "--output_dir")
    _writable_folder(recipe.cache_dir, "--cache_dir")
    if recipe.model_name_or_path is None:
        _writable_folder(recipe.baseline_dir, "--baseline_dir")
    if recipe.push_to_hub:
        from huggingface_hub import get_token

        if not get_token():
            raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN "
                             "(nothing was computed)")
