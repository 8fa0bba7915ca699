"""ShareGPT4V json -> records: the long caption is the first GPT turn, the short one its first sentence."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from ..data.captions import first_sentence
from .records import Record

SHAREGPT4V_FILES = (
    "share-captioner_coco_lcs_sam_1246k_1107.json",   # 1.2M captions by Share-Captioner (the thesis's training set)
    "sharegpt4v_instruct_gpt4-vision_cap100k.json",   # 100k GPT-4V captions
)


def long_caption(entry: Dict[str, Any]) -> str:
    """The first ``gpt`` turn of an entry's conversation ('' if there is none)."""
    for turn in entry.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") == "gpt":
            return str(turn.get("value", "")).strip()
    return ""


def read_sharegpt4v(path: Path) -> List[Record]:
    """All entries of a ShareGPT4V json, in file order; keys are the zero-padded entry indices.

    Raises:
        ValueError: the file is not a list of entries with ``image`` and ``conversations``.
    """
    with open(path, "r", encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list) or (entries and not isinstance(entries[0], dict)):
        raise ValueError(f"{path}: expected a json list of {{'image', 'conversations'}} entries (ShareGPT4V layout)")
    records = []
    for index, entry in enumerate(entries):
        if "image" not in entry or "conversations" not in entry:
            raise ValueError(f"{path}: entry {index} lacks 'image' or 'conversations' (keys: {sorted(entry)})")
        text = long_caption(entry)
        records.append(Record(key=f"{index:09d}", image=str(entry["image"]), long=text, short=first_sentence(text)))
    return records
