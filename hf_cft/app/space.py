"""The page as a Hugging Face Space: a folder with ``app.py`` (the page of a model on the Hub, by its id),
``requirements.txt`` and a ``README.md`` with the Space's metadata (``sdk: gradio``, ``app_file: app.py``), and
pushing it (:func:`push_space`).

The Space reads the model from the Hub when it starts (a private model: give the Space an ``HF_TOKEN`` secret).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass

from huggingface_hub import HfApi, SpaceCard, SpaceCardData

from .. import __version__
from ..constants import MODEL_CARD_NAME
from ..io import write_folder, write_plain

logger = logging.getLogger(__name__)

__all__ = ["APP_FILE", "DEFAULT_REQUIREMENT", "SpaceOptions", "push_space", "space_files", "write_space"]

APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
DEFAULT_REQUIREMENT = f"hf_cft[app]>={__version__}"
SPACE_PORT = 7860  # where a Space's app must listen

_APP = '''"""The page of the calibrated model {model_id}: per-category probabilities before and after CFT (hf_cft)."""

from hf_cft.app import build_app, launch

MODEL_ID = {model_id!r}
REVISION = {revision!r}

demo = build_app(MODEL_ID, revision=REVISION)  # a private model: set the Space secret HF_TOKEN

if __name__ == "__main__":
    launch(demo, host="0.0.0.0", port={port})
'''


@dataclass
class SpaceOptions:
    """What :func:`write_space` writes besides the model id.

    Attributes:
        revision: the model's revision the Space reads (a branch, tag or commit; None: main).
        requirement: how the Space installs hf_cft (``requirements.txt``), e.g.
            ``"hf_cft[app] @ git+https://github.com/<owner>/hf_cft"`` where hf_cft is not on PyPI.
        title: the Space's title (default: "CFT: <model name>").
        sdk_version: the Gradio version the Space runs (default: the installed one, when there is one).
    """

    revision: str | None = None
    requirement: str = DEFAULT_REQUIREMENT
    title: str | None = None
    sdk_version: str | None = None


def _gradio_version() -> str | None:
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        return None


def space_files(model_id: str, options: SpaceOptions | None = None) -> dict[str, str]:
    """The Space's files by name: ``app.py``, ``requirements.txt`` and ``README.md`` (metadata and a short text)."""
    options = options or SpaceOptions()
    if not model_id or os.path.isdir(model_id):
        raise ValueError(f"a Space loads its model from the Hub: give the model's Hub id (owner/name), not "
                         f"{model_id!r}; push the folder first (CFTHead.push_to_hub or --push_to_hub)")
    title = options.title or f"CFT: {model_id.split('/')[-1]}"
    data = SpaceCardData(title=title, emoji="🏷️", colorFrom="indigo", colorTo="gray", sdk="gradio",
                         sdk_version=options.sdk_version or _gradio_version(), app_file=APP_FILE, pinned=False,
                         models=[model_id], tags=["hf_cft", "multi-label-classification", "image-classification"],
                         short_description="Per-category probabilities before and after CFT")
    card = SpaceCard(
        f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n"
        f"The calibrated model [{model_id}](https://huggingface.co/{model_id}): upload images and see, per category, "
        "the probability before category-wise fine-tuning (the trained rows) and after it, and the yes / no answer "
        "at the saved thresholds; the second tab shows the run's report. Made with hf_cft "
        "(`python -m hf_cft.app space MODEL SPACE`).\n"
    )
    return {APP_FILE: _APP.format(model_id=model_id, revision=options.revision, port=SPACE_PORT),
            REQUIREMENTS_FILE: f"{options.requirement}\n", MODEL_CARD_NAME: str(card)}


def write_space(model_id: str, folder: str | os.PathLike, options: SpaceOptions | None = None) -> str:
    """Write the Space of the Hub model ``model_id`` into ``folder`` (atomically; other files there stay); the
    folder's path."""
    files = space_files(model_id, options)

    def fill(tmp: str) -> None:
        for name, text in files.items():
            write_plain(os.path.join(tmp, name), text)

    return write_folder(folder, fill)


def push_space(model_id: str, repo_id: str, token: str | None = None, private: bool | None = None,
               options: SpaceOptions | None = None) -> str:
    """Create (or update) the Gradio Space ``repo_id`` showing the Hub model ``model_id``, in one commit; returns
    the commit's URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_space(model_id, os.path.join(tmp, "space"), options)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="space",
                                 commit_message=f"hf_cft: the page of {model_id}")
    return info.commit_url
