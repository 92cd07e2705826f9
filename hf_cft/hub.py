"""Saving, pushing and card merging of a calibrated :class:`~hf_cft.head.CFTHead`.

``save_pretrained`` writes the model in its native format (``problem_type="multi_label_classification"``,
the label names) and, with an applied result, ``cft_config.json``, ``cft_report.json``, the gains plot and
the model card, all into ``<folder>.tmp``, then moves each file into the folder: the folder's other files and
subfolders are kept, and a kill is finished or cleaned up by :func:`recover_model_dir`.
``push_to_hub`` uploads that folder in one commit and merges an existing card instead of replacing it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

from torch import nn

from .atomic import write_atomic
from .constants import CFT_CONFIG_NAME, CFT_REPORT_NAME, GAINS_PLOT_NAME, MODEL_CARD_NAME
from .model_card import CardData

logger = logging.getLogger(__name__)

__all__ = ["CARD_END", "CARD_START", "interrupted_save", "merge_cards", "move_in", "push_to_hub",
           "recover_model_dir", "save_pretrained", "save_timm_model", "swap_in"]

_OLD, _TMP = ".old", ".tmp"  # beside a model folder while it is replaced (see swap_in, save_pretrained)
_COMPLETE = ".hf_cft_complete.json"  # in a temporary model folder: written last, lists its files
_SINGLE, _SHARD_INDEX = "model.safetensors", "model.safetensors.index.json"


def save_pretrained(head, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                    extra_files: dict[str, str | bytes] | None = None, card_data: CardData | None = None) -> str:
    """Save ``head``'s model (and, with ``card_data.result``, its calibration and card); the path.

    Only the files hf_cft writes are replaced: every other file and subfolder of ``directory`` stays. They are
    first written completely to ``<directory>.tmp``, then each is moved in with ``os.replace`` (see
    :func:`move_in`); a kill leaves that folder, which :func:`recover_model_dir` finishes moving or removes.
    A stale ``cft_config.json`` / ``cft_report.json`` / ``cft_gains.png`` of an earlier calibration, and weights
    that would shadow the new ones (a single-file checkpoint beside new shards, shards no longer listed), are
    removed.

    Args:
        head: a :class:`~hf_cft.head.CFTHead`.
        category_names: label names to save (default: the model's own); as many as the model's labels, unique.
        extra_files: file name → contents (text or bytes) written beside the model.
        card_data: what the card says (default: ``head.card_data``).
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory} exists and is not a folder; cannot save a model into it")
    names = _checked_names(head, category_names)
    card_data = head.card_data if card_data is None else card_data
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    recover_model_dir(directory)  # what an earlier, interrupted save left beside it
    tmp = directory + _TMP
    os.makedirs(tmp)
    try:
        _save_model(head, tmp, names)
        for name, content in (extra_files or {}).items():
            if os.path.isabs(name) or os.path.normpath(name).startswith(os.pardir):
                raise ValueError(f"extra file name {name!r} must be relative, inside the model folder")
            os.makedirs(os.path.dirname(os.path.join(tmp, name)) or tmp, exist_ok=True)
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(os.path.join(tmp, name), mode) as f:
                f.write(content)
        if card_data.result is not None:
            _save_calibration(tmp, card_data, os.path.basename(directory))
        _mark_complete(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    move_in(tmp, directory)
    return directory


def _checked_names(head, category_names: Sequence[str] | None) -> list[str] | None:
    """The label names to save: ``category_names`` checked against the model (count, uniqueness), or its own."""
    if category_names is None:
        return head.label_names()
    names = [str(n) for n in category_names]
    if len(names) != head.num_labels:
        raise ValueError(f"category_names has {len(names)} names but the model has {head.num_labels} labels; "
                         "give one name per label, in the order of the model's outputs")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"category_names must be unique (label2id maps a name to one output); repeated: {dupes}")
    return names


def _save_model(head, folder: str, names: list[str] | None) -> None:
    """The model in its library's format, as a multi-label classifier with ``names`` as its labels.

    The in-memory model's config is left as it was: a copy is edited and saved.
    """
    if head.library == "timm":
        save_timm_model(head.model, folder, names)
        return
    original = head.model.config
    cfg = copy.deepcopy(original)
    cfg.problem_type = "multi_label_classification"
    if names is not None:
        cfg.id2label = dict(enumerate(names))
        cfg.label2id = {n: i for i, n in enumerate(names)}
    head.model.config = cfg
    try:
        head.model.save_pretrained(folder, safe_serialization=True)
    finally:
        head.model.config = original
    if head.image_processor is not None:
        head.image_processor.save_pretrained(folder)  # the pipeline needs it beside the weights


def _save_calibration(folder: str, card_data: CardData, model_name: str) -> None:
    """``cft_config.json``, ``cft_report.json``, the gains plot and the model card of the applied result."""
    from .model_card import gains_plot_png, render_card

    result = card_data.result
    result.config.save_pretrained(folder)  # writes cft_config.json
    result.to_json(os.path.join(folder, CFT_REPORT_NAME))
    after, before = card_data.per_category_scores()
    with open(os.path.join(folder, GAINS_PLOT_NAME), "wb") as f:
        f.write(gains_plot_png(result, after, before))
    render_card(card_data, model_name).save(os.path.join(folder, MODEL_CARD_NAME))


def push_to_hub(head, repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Calibrated with hf_cft (category-wise fine-tuning)",
                category_names: Sequence[str] | None = None, extra_files: dict[str, str | bytes] | None = None,
                card_data: CardData | None = None) -> str:
    """Create the repo if needed and upload the calibrated model in one commit; returns the commit URL.

    An existing model card is merged, not destroyed: its text is kept, the hf_cft section (between
    ``<!-- hf_cft:start -->`` and ``<!-- hf_cft:end -->``) is added or replaced, and the metadata are
    merged (tags united, the rest updated).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    card_data = (head.card_data if card_data is None else card_data).updated(repo_id=repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(head, os.path.join(tmp, "model"), category_names, extra_files, card_data)
        readme = os.path.join(folder, MODEL_CARD_NAME)
        if os.path.exists(readme):
            existing = _existing_card(api, repo_id)
            if existing is not None:
                with open(readme, encoding="utf-8") as f:
                    ours = f.read()
                with open(readme, "w", encoding="utf-8") as f:
                    f.write(merge_cards(existing, ours))
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 repo_type="model")
    return str(getattr(info, "commit_url", info))


# -- replacing a model folder ------------------------------------------------------------------------------------
def swap_in(new: str, directory: str) -> None:
    """Replace ``directory`` by the complete folder ``new`` so that a model is on disk at every instant.

    The old folder is moved aside to ``<directory>.old``, ``new`` is moved in, then the old one is deleted.
    A crash between the two renames leaves ``<directory>.old``: :func:`recover_model_dir` moves it back.
    """
    old = directory + _OLD
    if os.path.isdir(old):  # left by an interrupted swap
        if os.path.exists(directory):
            shutil.rmtree(old)
        else:
            os.replace(old, directory)  # the last complete model goes back in place first
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover_model_dir(directory: str | os.PathLike) -> bool:
    """Repair what an interrupted save left beside ``directory``; True when a model was restored or completed.

    ``<directory>.old`` without ``<directory>`` (:func:`swap_in` killed between its two renames): the old model
    is moved back, the last one that was completely in place. ``<directory>.old`` beside ``<directory>`` (killed
    while deleting it) is removed. A ``<directory>.tmp`` marked complete (:func:`save_pretrained` killed while
    moving its files in) is moved in; one not marked complete (killed while writing it) is removed, and so are
    the ``.tmp-<name>-*`` folders of earlier hf_cft versions.
    """
    directory = os.fspath(directory)
    old, tmp = directory + _OLD, directory + _TMP
    restored = False
    if os.path.isdir(old):
        if os.path.exists(directory):
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(old, directory)
                restored = True
                logger.warning("a save of %s was interrupted: restored the previous model from %s", directory, old)
            except OSError:
                if not os.path.isdir(directory):  # else another process restored it first
                    raise
    if os.path.isdir(tmp):
        if _complete_files(tmp) is not None:
            move_in(tmp, directory)
            restored = True
            logger.warning("a save of %s was interrupted while moving its files in: finished it from %s",
                           directory, tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    parent, name = os.path.split(os.path.abspath(directory))
    legacy = re.compile(re.escape(f".tmp-{name}-") + r"[A-Za-z0-9_]{8}")  # tempfile.mkdtemp's names
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        if legacy.fullmatch(entry) and os.path.isdir(os.path.join(parent, entry)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    return restored


def interrupted_save(directory: str | os.PathLike) -> bool:
    """Whether :func:`recover_model_dir` has a model to restore or finish at ``directory``."""
    directory = os.fspath(directory)
    return ((os.path.isdir(directory + _OLD) and not os.path.isdir(directory))
            or _complete_files(directory + _TMP) is not None)


def _mark_complete(folder: str) -> None:
    """Record the files of a completely written ``folder`` (written last: its presence means complete)."""
    files = sorted(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                   for root, _, fs in os.walk(folder) for f in fs)
    write_atomic(os.path.join(folder, _COMPLETE), json.dumps({"files": files}))


def _complete_files(folder: str) -> list[str] | None:
    """The files ``folder`` was completed with (:func:`_mark_complete`), or None when it is not complete."""
    try:
        with open(os.path.join(folder, _COMPLETE), encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(f) for f in files] if isinstance(files, list) else None


def move_in(new: str, directory: str) -> None:
    """Move each file of the complete folder ``new`` into ``directory`` (``os.replace``), then remove ``new``.

    Files of ``directory`` that ``new`` does not hold stay, except hf_cft's calibration files and weights
    files that would make it load other weights than the new ones (see :func:`save_pretrained`).
    ``config.json`` goes in last. Safe to repeat after a kill, and beside another process doing the same.
    """
    files = _complete_files(new)
    if files is None:
        raise ValueError(f"{new} is not a completely written model folder")
    os.makedirs(directory, exist_ok=True)
    for rel in sorted(files, key=lambda f: (f == "config.json", f)):
        src, dst = os.path.join(new, rel), os.path.join(directory, rel)
        if not os.path.exists(src):
            continue  # already moved (an earlier, interrupted attempt, or a concurrent recovery)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            continue
    _remove_stale(directory, set(files))
    shutil.rmtree(new, ignore_errors=True)


_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _remove_stale(directory: str, written: set[str]) -> None:
    """Remove what an earlier save of hf_cft left that would misdescribe the model just written.

    Calibration files (config, report, gains plot) not written now, safetensors shards and their index not written
    now, and a single ``model.safetensors`` beside new shards (transformers would load it instead).
    """
    stale = [n for n in (CFT_CONFIG_NAME, CFT_REPORT_NAME, GAINS_PLOT_NAME) if n not in written]
    stale += [n for n in os.listdir(directory) if _SHARD.fullmatch(n) and n not in written]
    if _SHARD_INDEX not in written:
        stale.append(_SHARD_INDEX)
    elif _SINGLE not in written:
        stale.append(_SINGLE)
    for name in stale:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            os.remove(path)


def save_timm_model(model: nn.Module, directory: str, label_names: Sequence[str] | None = None,
                    preprocessing: tuple[int, Sequence[float], Sequence[float]] | None = None) -> None:
    """Save a timm model (``timm.models.save_for_hf``) so that timm and transformers both load it.

    ``timm.create_model("local-dir:<dir>", pretrained=True)`` and
    ``transformers.AutoModelForImageClassification.from_pretrained(<dir>)`` (``TimmWrapper…``) both work:
    ``num_classes`` is dropped from ``model_args`` (transformers passes it itself and failed with "got multiple
    values for keyword argument 'num_classes'"); it stays at the top level. ``problem_type`` is
    ``multi_label_classification`` and the label names become transformers' ``id2label``. ``preprocessing``
    ``(size, mean, std)`` records a squash resize to ``size``×``size`` with that normalization (the trainer's
    evaluation transform) in the data config, so that timm's ``resolve_data_config`` gives it back.
    """
    from timm.models import save_for_hf

    names = [str(n) for n in label_names] if label_names is not None else None
    original = model.pretrained_cfg
    if names is not None:  # only for the save: the in-memory model is left as it was
        model.pretrained_cfg = {**original, "label_names": names}
    try:
        save_for_hf(model, directory, model_config={"label_names": names} if names else None,
                    safe_serialization=True)
    finally:
        model.pretrained_cfg = original
    path = os.path.join(directory, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if isinstance(cfg.get("model_args"), dict):
        cfg["model_args"].pop("num_classes", None)
    cfg["problem_type"] = "multi_label_classification"
    if preprocessing is not None:
        size, mean, std = preprocessing
        data = cfg.setdefault("pretrained_cfg", {})
        if list(data.get("input_size", [3])[1:]) != [size, size]:
            data["pool_size"] = None
        data.update(input_size=[data.get("input_size", [3])[0], size, size], mean=[float(v) for v in mean],
                    std=[float(v) for v in std], crop_pct=1.0, crop_mode="squash", interpolation="bilinear")
        for key in ("test_input_size", "test_crop_pct"):
            data.pop(key, None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)


# -- model cards on the Hub ---------------------------------------------------------------------------------------
CARD_START, CARD_END = "<!-- hf_cft:start -->", "<!-- hf_cft:end -->"


def _existing_card(api, repo_id: str) -> str | None:
    from huggingface_hub.utils import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, MODEL_CARD_NAME, repo_type="model")
    except EntryNotFoundError:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def merge_cards(existing: str, ours: str) -> str:
    """Merge our card into an existing one: their text kept, our section added or replaced, metadata merged."""
    from huggingface_hub import ModelCard

    old, new = ModelCard(existing), ModelCard(ours)
    data = old.data.to_dict()
    mine = new.data.to_dict()
    tags = list(dict.fromkeys([*(data.get("tags") or []), *(mine.get("tags") or [])]))
    data.update({k: v for k, v in mine.items() if v is not None})
    data["tags"] = tags
    section = f"{CARD_START}\n{new.text.strip()}\n{CARD_END}"
    text = old.text
    if CARD_START in text and CARD_END in text:
        head_, _, rest = text.partition(CARD_START)
        _, _, tail = rest.partition(CARD_END)
        text = f"{head_}{section}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}\n"
    import yaml

    return f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n{text}"
