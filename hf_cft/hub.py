"""Pushing a model folder to the Hugging Face Hub, merging the card the repo already has.

Loading from the Hub (a repo id instead of a folder) is :mod:`hf_cft.modeling.load`'s job; this module only
uploads: :func:`push_folder` creates the repo if needed, has the folder written into a temporary folder, merges
our card into an existing one (:func:`hf_cft.card.merge_cards`) and uploads everything in one commit.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable

from huggingface_hub import HfApi
from huggingface_hub.utils import EntryNotFoundError, RevisionNotFoundError

from .card import merge_cards
from .constants import MODEL_CARD_NAME
from .io import write_plain

logger = logging.getLogger(__name__)

__all__ = ["base_model_license", "DEFAULT_COMMIT_MESSAGE", "existing_card", "push_folder"]

DEFAULT_COMMIT_MESSAGE = "Calibrated with hf_cft (category-wise fine-tuning)"


def push_folder(repo_id: str, write: Callable[[str], str], private: bool | None = None, token: str | None = None,
                commit_message: str = DEFAULT_COMMIT_MESSAGE, revision: str | None = None,
                create_pr: bool = False) -> str:
    """Create ``repo_id`` if needed and upload the folder ``write(path)`` writes, in one commit; the commit URL
    (with ``create_pr``, the pull request's URL).

    ``write`` is given a path inside a temporary folder and returns the folder it wrote (e.g. a model's
    ``save_pretrained``). An existing model card is merged, not destroyed: its text is kept, the hf_cft section
    (between ``<!-- hf_cft:start -->`` and ``<!-- hf_cft:end -->``) is added or replaced, and the metadata are
    merged (tags united, the rest updated).

    ``revision``: the branch to commit to (default: main); ``create_pr``: open a pull request with the commit
    instead of committing to the branch, for a reviewer to merge (both as ``HfApi.upload_folder`` takes them).
    The card merged is the one at ``revision``.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(os.path.join(tmp, "model"))
        readme = os.path.join(folder, MODEL_CARD_NAME)
        if os.path.exists(readme):
            existing = existing_card(api, repo_id, revision)
            if existing is not None:
                with open(readme, encoding="utf-8") as f:
                    ours = f.read()
                write_plain(readme, merge_cards(existing, ours))  # a temporary folder, uploaded once complete
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 repo_type="model", revision=revision, create_pr=create_pr)
    pr_url = getattr(info, "pr_url", None)
    return str(pr_url or getattr(info, "commit_url", info))


def existing_card(api: HfApi, repo_id: str, revision: str | None = None) -> str | None:
    """The text of ``repo_id``'s model card at ``revision`` (default: main), or None when it has none."""
    try:
        path = api.hf_hub_download(repo_id, MODEL_CARD_NAME, repo_type="model", revision=revision)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def base_model_license(name_or_path: str | None) -> str | None:
    """The ``license`` of a base model's card: its folder's ``README.md``, or its Hub card when the Hub can be
    reached; None when there is no card, no license in it, or no connection. A local folder without a card, or
    ``HF_HUB_OFFLINE=1``, never asks the Hub."""
    if not name_or_path:
        return None
    from huggingface_hub import ModelCard, constants

    local = os.path.join(name_or_path, MODEL_CARD_NAME)
    has_card = os.path.isfile(local)
    if not has_card and (os.path.isdir(name_or_path) or constants.HF_HUB_OFFLINE):
        return None
    try:
        card = ModelCard.load(local if has_card else name_or_path)
    except Exception as err:  # no card, offline, private: the card then says nothing about the license
        logger.debug("no base model card for %s: %s", name_or_path, err)
        return None
    return getattr(card.data, "license", None)
