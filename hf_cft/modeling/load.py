"""Loading a classifier for CFT: transformers or timm, from the Hub or a folder, refusing a random head.

Also reads what a calibrated folder says about itself (``cft_config.json``, ``cft_report.json``). From the Hub,
every file is read at the ``revision`` and with the ``token`` given (a private or pinned repo loads whole).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..constants import CFT_CONFIG_NAME, CFT_REPORT_NAME
from ..io import interrupted_save, read_json, recover_model_dir
from .heads import find_head

logger = logging.getLogger(__name__)

__all__ = ["library_of", "load_classifier", "model_file", "read_calibration"]


def load_classifier(name_or_path: str, library: str | None = None, revision: str | None = None,
                    token: str | None = None, **kwargs) -> nn.Module:
    """The classifier at ``name_or_path`` (``library``: "transformers" or "timm"; default: detected).

    From the Hub, every file is read at ``revision`` (a branch, tag, commit or ``refs/pr/<n>``; default: main)
    with ``token``. Refuses a model whose head was (re)initialized at load time; a truncated or corrupt
    ``.safetensors`` file raises an ``OSError`` that names it. A folder whose save was interrupted is repaired
    first.
    """
    if interrupted_save(name_or_path):
        recover_model_dir(name_or_path)  # a save was killed half-way: restore or finish it
    detected = library is None
    library = library or library_of(name_or_path, revision, token)
    try:
        if library == "timm":
            return _load_timm(name_or_path, revision, token, **kwargs)
        try:
            return _load_transformers(name_or_path, **_hub_kwargs(revision, token), **kwargs)
        except (TypeError, ValueError, KeyError, AttributeError, ImportError) as err:
            cfg = _config_of(name_or_path, revision, token) if detected else None
            if cfg is None or "architecture" not in cfg:
                raise
            raise ValueError(
                f"transformers could not load {name_or_path} ({type(err).__name__}: {err}); its config.json names "
                f"the timm architecture {cfg['architecture']!r}: load it with timm instead, "
                f'CFTHead.from_pretrained({name_or_path!r}, library="timm")'
            ) from err
    except SafetensorError as err:
        raise _corrupt_weights_error(name_or_path, err, revision) from err


def read_calibration(name_or_path: str, revision: str | None = None,
                     token: str | None = None) -> tuple[dict | None, dict | None]:
    """The saved ``cft_config.json`` and ``cft_report.json`` of a calibrated model (None for a missing file).

    A local folder is read directly; a Hub repo through the Hub cache, at ``revision`` with ``token`` (a repo
    without them gives None).
    """
    return (_read_json(name_or_path, CFT_CONFIG_NAME, revision, token),
            _read_json(name_or_path, CFT_REPORT_NAME, revision, token))


def _hub_kwargs(revision: str | None, token: str | None) -> dict[str, str]:
    """``revision`` / ``token`` as keywords of a Hub download, the ones given only."""
    return {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}


def model_file(name_or_path: str, filename: str, revision: str | None = None,
               token: str | None = None) -> str | None:
    """The local path of ``filename`` in a model folder, or in a Hub repo through the Hub cache (at ``revision``,
    with ``token``); None when the folder or repo lacks it (or the Hub cannot be reached, or it is not a repo id)."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError

    try:
        return hf_hub_download(name_or_path, filename, **_hub_kwargs(revision, token))
    except (OSError, ValueError, HfHubHTTPError):  # not in the repo, offline, or not a repo id
        return None


def _read_json(name_or_path: str, filename: str, revision: str | None = None,
               token: str | None = None) -> dict | None:
    path = model_file(name_or_path, filename, revision, token)
    return None if path is None else read_json(path)


def _head_refused(name_or_path: str, details: str) -> ValueError:
    return ValueError(
        f"the classifier head of {name_or_path} was initialized at random when loading ({details}); CFT re-fits "
        "trained rows: load the model as its classifier was trained (no new num_labels / num_classes, no "
        "ignore_mismatched_sizes, a checkpoint that holds the head)"
    )


def _load_transformers(name_or_path: str, **kwargs) -> nn.Module:
    from transformers import AutoModelForImageClassification

    model, info = AutoModelForImageClassification.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    spec = find_head(model)
    touched = [k for k in (*info.get("missing_keys", []), *(m[0] if isinstance(m, tuple) else m
                                                              for m in info.get("mismatched_keys", [])))
               if any(k.startswith(p + ".") or k == p for p in spec.paths)]
    if touched:
        raise _head_refused(name_or_path, f"{', '.join(sorted(touched))} missing or resized, e.g. by "
                                          "ignore_mismatched_sizes or a new num_labels")
    return model


def _load_timm(name_or_path: str, revision: str | None = None, token: str | None = None, **kwargs) -> nn.Module:
    import timm

    if not os.path.isdir(name_or_path) and (revision is not None or token is not None):
        name_or_path = _hub_snapshot(name_or_path, revision, token)  # timm's hf-hub: takes neither
    local = os.path.isdir(name_or_path)
    src = f"local-dir:{name_or_path}" if local else f"hf-hub:{name_or_path}"
    try:
        model = timm.create_model(src, pretrained=True, **kwargs)
    except RuntimeError as err:  # strict loading of a checkpoint that lacks weights of the model
        line = next((ln for ln in str(err).splitlines() if "Missing key(s)" in ln), None)
        if line is None:
            raise
        missing = ", ".join(re.findall(r'"([^"]+)"', line))
        raise ValueError(
            f"the checkpoint of {name_or_path} lacks weights of the model (missing: {missing}); a classifier head "
            "missing from the checkpoint would be random and CFT re-fits trained rows: load the model with the "
            "architecture and arguments it was saved with, from a checkpoint that holds its head"
        ) from err
    spec = find_head(model)
    problems = []
    saved = model.pretrained_cfg.get("num_classes")
    if saved is not None and model.num_classes != saved:
        problems.append(f"num_classes={model.num_classes} differs from the checkpoint's {saved}")
    weights = _timm_weights_file(name_or_path)
    if weights is None:
        logger.warning("could not find the weights file of %s to check that its head was loaded", name_or_path)
    else:
        params = {f"{p}.{n}": t for p in spec.paths for n, t in model.get_submodule(p).named_parameters(recurse=False)}
        saved_tensors = _checkpoint_tensors(weights, list(params))
        offset = int(model.pretrained_cfg.get("label_offset") or 0)
        for key, param in params.items():
            t = saved_tensors.get(key)
            if t is None:
                problems.append(f"{key} missing from {os.path.basename(weights)}")
                continue
            if offset and t.ndim and t.shape[0] == param.shape[0] + offset:
                t = t[offset:]
            if t.numel() != param.numel():
                problems.append(f"{key} resized from {tuple(t.shape)} to {tuple(param.shape)}")
    if problems:
        raise _head_refused(name_or_path, "; ".join(problems))
    return model


def _hub_snapshot(repo_id: str, revision: str | None, token: str | None) -> str:
    """The folder (in the Hub cache) of Hub repo ``repo_id``'s ``config.json`` and weights at ``revision``,
    downloaded with ``token``; the weights at the same commit as the config."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    config = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
    commit = os.path.basename(os.path.dirname(config))  # snapshots/<commit>/config.json
    for name in ("model.safetensors", "pytorch_model.bin"):
        try:
            hf_hub_download(repo_id, name, revision=commit, token=token)
            break
        except EntryNotFoundError:
            continue
    return os.path.dirname(config)


def _timm_weights_file(name_or_path: str) -> str | None:
    """The checkpoint file timm loads a local folder or Hub repo from (its order of preference), or None."""
    names = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")
    if os.path.isdir(name_or_path):
        for name in names:
            if os.path.isfile(os.path.join(name_or_path, name)):
                return os.path.join(name_or_path, name)
        for ext in (".safetensors", ".pth", ".pth.tar", ".bin"):
            found = sorted(f for f in os.listdir(name_or_path) if f.endswith(ext))
            if found:
                return os.path.join(name_or_path, found[0])
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError

    for name in names[:2]:
        try:
            return hf_hub_download(name_or_path, name)  # timm has just fetched it: from the cache
        except (OSError, ValueError, HfHubHTTPError):
            continue
    return None


def _checkpoint_tensors(path: str, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of a checkpoint file that has them (safetensors: only those are read)."""
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as f:
            have = set(f.keys())
            return {k: f.get_tensor(k) for k in keys if k in have}
    from timm.models import load_state_dict

    state = load_state_dict(path)
    return {k: state[k] for k in keys if k in state}


def _safetensors_files(name_or_path: str, revision: str | None = None) -> list[str]:
    if os.path.isdir(name_or_path):
        return sorted(os.path.join(name_or_path, f) for f in os.listdir(name_or_path) if f.endswith(".safetensors"))
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name_or_path, "model.safetensors", revision=revision)
    return [found] if isinstance(found, str) else []


def _readable_safetensors(path: str) -> bool:
    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError):
        return False
    return True


def _corrupt_weights_error(name_or_path: str, err: Exception, revision: str | None = None) -> OSError:
    files = _safetensors_files(name_or_path, revision)
    bad = [f for f in files if not _readable_safetensors(f)] or files
    which = ", ".join(bad) if bad else f"the .safetensors weights of {name_or_path}"
    if os.path.isdir(name_or_path):
        fix = ("Re-save it from the original model (model.save_pretrained(<folder>) or "
               "CFTHead.save_pretrained(<folder>)) or download it again (`hf download <repo id> --force-download "
               f"--local-dir {name_or_path}`)")
    else:
        fix = (f"Re-download it (`hf download {name_or_path} --force-download`, or delete it from the Hugging Face "
               "cache and load again) or re-save it from the original model (model.save_pretrained(<folder>))")
    return OSError(f"{which} is truncated or corrupt and cannot be read ({err}). {fix}")


def library_of(name_or_path: str, revision: str | None = None, token: str | None = None) -> str:
    """"timm" for a model saved by timm (``save_for_hf``: ``architecture``, no ``model_type``), else "transformers".

    A local folder's ``config.json`` is read directly, a Hub repo's through the Hub cache (at ``revision``, with
    ``token``).
    """
    cfg = _config_of(name_or_path, revision, token)
    if cfg is not None and "architecture" in cfg and "model_type" not in cfg:
        return "timm"
    return "transformers"


def _config_of(name_or_path: str, revision: str | None = None, token: str | None = None) -> dict | None:
    """The ``config.json`` of a folder or Hub repo as a dict, or None (missing, unreadable, offline)."""
    try:
        cfg = _read_json(name_or_path, "config.json", revision, token)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None
