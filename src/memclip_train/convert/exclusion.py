"""Images to keep out of a training split: an evaluation set's images, read from its json or a list file."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Set, Tuple

from memclip.errors import InputError

from .records import Record


def normalise_image_path(path: str) -> str:
    """The form two files use for the same image: forward slashes, no leading './'."""
    path = path.replace("\\", "/")
    return path[2:] if path.startswith("./") else path


SA1B_IMAGE = re.compile(r"sa_\d+\.jpg")
"""SA-1B's file names: an image id unique over the whole dataset, whatever folder a copy keeps it in."""


def image_identity(path: str) -> str:
    """What names the same image in two files: an SA-1B image by its file name (copies keep SA-1B's images in
    ``sam/images/``, ``sa_000000/images/``, ...), any other by its normalised path."""
    path = normalise_image_path(path)
    name = path.rsplit("/", 1)[-1]
    return name if SA1B_IMAGE.fullmatch(name) else path


def read_image_list(path: Path) -> Set[str]:
    """Image identities (:func:`image_identity`) from a ShareGPT4V-style json (a list of entries with ``image``) or
    a text file, one path per line.

    Raises:
        ValueError: the file is missing, or a json that is not a list of entries with ``image``.
    """
    if not path.is_file():
        raise InputError(f"--exclude-images {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--exclude-images {path}: not valid JSON ({error})") from error
        if not isinstance(entries, list) or any(not isinstance(e, dict) or "image" not in e for e in entries):
            raise InputError(f"--exclude-images {path}: expected a json list of entries with 'image' (ShareGPT4V "
                             "layout), or a text file with one image path per line")
        return {image_identity(str(e["image"])) for e in entries}
    return {image_identity(line.strip()) for line in text.splitlines() if line.strip()}


def exclude_images(records: List[Record], images: Set[str]) -> Tuple[List[Record], int]:
    """The records whose image is not in ``images`` (identities), and how many were dropped."""
    kept = [r for r in records if image_identity(r.image) not in images]
    return kept, len(records) - len(kept)
