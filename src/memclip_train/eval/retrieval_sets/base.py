"""`RetrievalSet`: images, captions and which image each caption describes; plus layout errors."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

PathLike = Union[str, Path]


class LayoutError(FileNotFoundError):
    """A dataset folder that does not have the expected layout; the message names the path and the layout."""

    def __init__(self, dataset: str, path: PathLike, expected: str, detail: str = "") -> None:
        message = f"{dataset}: {detail or 'missing'} {path}\n  expected layout under --data-root:\n{expected}"
        super().__init__(message)


@dataclass
class RetrievalSet:
    """A retrieval benchmark loaded from disk.

    Attributes:
        name: dataset name as given on the command line (``urban1k``, ``coco``, ...).
        images: image files, one per image.
        captions: every caption.
        text_to_image: for each caption, the index of its image.
        meta: how the set was built (split, definition, caption preprocessing), recorded with every result.
        uncaptioned: images of the dataset's folder that have no caption (an error unless skipped and counted).
    """

    name: str
    images: List[Path]
    captions: List[str]
    text_to_image: List[int]
    meta: Dict[str, Any] = field(default_factory=dict)
    uncaptioned: List[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.text_to_image):
            raise ValueError(f"{self.name}: {len(self.captions)} captions but {len(self.text_to_image)} owners")
        if not self.images:
            raise ValueError(f"{self.name}: no images")

    def subset(self, keep_images: Sequence[int]) -> "RetrievalSet":
        """Only the listed images (and their captions), re-indexed."""
        remap = {old: new for new, old in enumerate(keep_images)}
        pairs = [(c, remap[o]) for c, o in zip(self.captions, self.text_to_image) if o in remap]
        return RetrievalSet(self.name, [self.images[i] for i in keep_images], [c for c, _ in pairs],
                            [o for _, o in pairs], dict(self.meta), list(self.uncaptioned))


def require(dataset: str, path: Path, expected: str) -> Path:
    if not path.exists():
        raise LayoutError(dataset, path, expected)
    return path


def read_json(dataset: str, path: Path, expected: str) -> Any:
    require(dataset, path, expected)
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise LayoutError(dataset, path, expected, f"not valid json ({error}):") from error


def read_jsonl(dataset: str, path: Path, expected: str) -> List[Dict[str, Any]]:
    require(dataset, path, expected)
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise LayoutError(dataset, path, expected, f"line {number} is not json ({error}):") from error
    return rows


def add_captions(by_image: Dict[Path, List[str]], image: Path, captions: List[str]) -> None:
    """Record captions for an image; an image listed again keeps all of its captions."""
    by_image.setdefault(image, []).extend(captions)


def grouped(dataset: str, name_to_captions: Dict[Path, List[str]], meta: Dict[str, Any]) -> RetrievalSet:
    """Build a set from {image path: [captions]} in insertion order."""
    images, captions, owners = [], [], []
    for index, (image, texts) in enumerate(name_to_captions.items()):
        images.append(image)
        captions.extend(texts)
        owners.extend([index] * len(texts))
    return RetrievalSet(dataset, images, captions, owners, meta)
