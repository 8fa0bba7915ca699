"""ShareGPT4V json -> records: the long caption is the first GPT turn, the short one its first sentence.

An entry without a GPT turn (or with a null one) becomes a record without captions, which the writer skips and counts
as ``no_caption``; a field of the wrong type (an image that is not a path, a turn whose value is not text) is an error
naming the file and the entry, never a caption made of ``str(value)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from memclip.errors import InputError

from ..data.captions import first_sentence
from .records import Record

SHAREGPT4V_FILES = (
    "share-captioner_coco_lcs_sam_1246k_1107.json",   # 1.2M captions by Share-Captioner (the thesis's training set)
    "sharegpt4v_instruct_gpt4-vision_cap100k.json",   # 100k GPT-4V captions
)


def long_caption(entry: Dict[str, Any]) -> str:
    """The first ``gpt`` turn of an entry's conversation ('' if there is none, or its value is null).

    Raises:
        TypeError: the conversation is not a list, or the turn's value is not text.
    """
    conversations = entry.get("conversations") or []
    if not isinstance(conversations, list):
        raise TypeError(f"'conversations' is a {type(conversations).__name__}, not a list of turns")
    for turn in conversations:
        if isinstance(turn, dict) and turn.get("from") == "gpt":
            value = turn.get("value")
            if value is not None and not isinstance(value, str):
                raise TypeError(f"the gpt turn's value is a {type(value).__name__}, not text")
            return (value or "").strip()
    return ""


def read_sharegpt4v(path: Path) -> List[Record]:
    """All entries of a ShareGPT4V json, in file order; keys are the zero-padded entry indices.

    Raises:
        ValueError: the file is not a list of entries with ``image`` and ``conversations``.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            entries = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(entries, list) or (entries and not isinstance(entries[0], dict)):
        raise InputError(f"{path}: expected a json list of {{'image', 'conversations'}} entries (ShareGPT4V layout)")
    records = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "conversations" not in entry:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise InputError(f"{path}: entry {index} lacks 'image' or 'conversations' (it holds {keys})")
        if not isinstance(entry["image"], str):
            raise InputError(f"{path}: entry {index}: 'image' is a {type(entry['image']).__name__}, not a path")
        try:
            text = long_caption(entry)
        except TypeError as error:
            raise InputError(f"{path}: entry {index}: {error}") from error
        records.append(Record(key=f"{index:09d}", image=entry["image"], long=text, short=first_sentence(text)))
    return records
