"""Saving, pushing and card merging of a calibrated :class:`~hf_cft.head.CFTHead`.

``save_pretrained`` writes the model in its native format (``problem_type="multi_label_classification"``,
the label names) and, with an applied result, ``cft_config.json``, ``cft_report.json``, the gains plot and
the model card, all into a temporary folder swapped into place (a model is on disk at every instant).
``push_to_hub`` uploads that folder in one commit and merges an existing card instead of replacing it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence

from torch import nn

from .constants import CFT_REPORT_NAME, GAINS_PLOT_NAME, MODEL_CARD_NAME
from .model_card import CardData

logger = logging.getLogger(__name__)

__all__ = ["CARD_END", "CARD_START", "merge_cards", "push_to_hub", "recover_model_dir", "save_pretrained",
           "save_timm_model", "swap_in"]

_OLD, _TMP = ".old", ".tmp"  # beside a model folder while it is replaced (see swap_in)


def save_pretrained(head, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                    extra_files: dict[str, str | bytes] | None = None, card_data: CardData | None = None) -> str:
    """Save ``head``'s model (and, with ``card_data.result``, its calibration and card) atomically; the path.

    Args:
        head: a :class:`~hf_cft.head.CFTHead`.
        category_names: label names to save (default: the model's own).
        extra_files: file name → contents (text or bytes) written beside the model.
        card_data: what the card says (default: ``head.card_data``).
    """
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    card_data = head.card_data if card_data is None else card_data
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
    try:
        names = [str(n) for n in category_names] if category_names is not None else head.label_names()
        _save_model(head, tmp, names)
        for name, content in (extra_files or {}).items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(os.path.join(tmp, name), mode) as f:
                f.write(content)
        if card_data.result is not None:
            _save_calibration(tmp, card_data, os.path.basename(directory))
        swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _save_model(head, folder: str, names: list[str] | None) -> None:
    """The model in its library's format, as a multi-label classifier with ``names`` as its labels."""
    if head.library == "timm":
        save_timm_model(head.model, folder, names)
        return
    cfg = head.model.config
    cfg.problem_type = "multi_label_classification"
    if names is not None:
        cfg.id2label = dict(enumerate(names))
        cfg.label2id = {n: i for i, n in enumerate(names)}
    head.model.save_pretrained(folder, safe_serialization=True)
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
    """Repair what an interrupted save (:func:`swap_in`) left beside ``directory``; True when a model was restored.

    ``<directory>.old`` without ``<directory>`` (killed between the two renames): the old model is moved back,
    the last one that was completely in place. ``<directory>.old`` beside ``<directory>`` (killed while deleting
    it) and a ``<directory>.tmp`` (killed while writing it, or before it was moved in) are removed.
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
        shutil.rmtree(tmp, ignore_errors=True)
    return restored


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
    if names is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": names}
    save_for_hf(model, directory, model_config={"label_names": names} if names else None, safe_serialization=True)
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
