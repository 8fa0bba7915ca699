"""Images to keep out of a training split: an evaluation set's images, read from its json or a list file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Set, Tuple

from .records import Record


def normalise_image_path(path: str) -> str:
    """The form two files use for the same image: forward slashes, no leading './'."""
    path = path.replace("\\", "/")
    return path[2:] if path.startswith("./") else path


def read_image_list(path: Path) -> Set[str]:
    """Image paths from a ShareGPT4V-style json (a list of entries with ``image``) or a text file, one per line.

    Raises:
        ValueError: the file is missing, or a json that is not a list of entries with ``image``.
    """
    if not path.is_file():
        raise ValueError(f"--exclude-images {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        entries = json.loads(text)
        if not isinstance(entries, list) or any(not isinstance(e, dict) or "image" not in e for e in entries):
            raise ValueError(f"--exclude-images {path}: expected a json list of entries with 'image' (ShareGPT4V "
                             "layout), or a text file with one image path per line")
        return {normalise_image_path(str(e["image"])) for e in entries}
    return {normalise_image_path(line.strip()) for line in text.splitlines() if line.strip()}


def exclude_images(records: List[Record], images: Set[str]) -> Tuple[List[Record], int]:
    """The records whose image is not in ``images``, and how many were dropped."""
    kept = [r for r in records if normalise_image_path(r.image) not in images]
    return kept, len(records) - len(kept)
