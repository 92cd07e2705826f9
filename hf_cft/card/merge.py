"""Merging our model card into one that a Hub repo already has: their text kept, our section added or replaced."""

from __future__ import annotations

import logging

import yaml
from huggingface_hub import ModelCard

logger = logging.getLogger(__name__)

__all__ = ["CARD_END", "CARD_START", "merge_cards"]

CARD_START, CARD_END = "<!-- hf_cft:start -->", "<!-- hf_cft:end -->"


def merge_cards(existing: str, ours: str) -> str:
    """Merge our card into an existing one: their text kept, our section added or replaced, metadata merged.

    The hf_cft section sits between ``<!-- hf_cft:start -->`` and ``<!-- hf_cft:end -->``; tags are united, the
    other metadata updated with ours.
    """
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
    return f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n{text}"
