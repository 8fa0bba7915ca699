"""`RetrievalSet`: images, captions and which image each caption describes.

Every reader of the eval program answers five questions about its input, and none of the answers is "silently":
what it drops, what it would count twice, what it does with an empty set, with a null or wrong-typed field, and what
would stand in for something missing. A missing file or a wrong layout is a :class:`..dataset_files.LayoutError`; an
item that would change the task (a row without a caption, an image listed twice, an empty caption, a caption for an
unknown image, an image without any caption, ...) is collected as a :class:`..dataset_files.BadItem` and goes through
:func:`..dataset_files.refuse_or_count`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from memclip.errors import InputError

from ...dataset_files import BadItem, LayoutError, refuse_or_count


def text_problem(value: Any) -> Optional[str]:
    """Why a caption field cannot be a caption (None when it can): null, not a string, or empty."""
    if value is None:
        return "is null"
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if not value.strip():
        return "is empty"
    return None


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
        bad_items: items the reader left out because they would change the task (an error unless skipped and
            counted, see :func:`refuse_or_count`).
    """

    name: str
    images: List[Path]
    captions: List[str]
    text_to_image: List[int]
    meta: Dict[str, Any] = field(default_factory=dict)
    uncaptioned: List[Path] = field(default_factory=list)
    bad_items: List[BadItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.text_to_image):
            raise InputError(f"{self.name}: {len(self.captions)} captions but {len(self.text_to_image)} owners")
        if not self.images:
            raise InputError(f"{self.name}: no images")

    def subset(self, keep_images: Sequence[int]) -> "RetrievalSet":
        """Only the listed images (and their captions), re-indexed."""
        remap = {old: new for new, old in enumerate(keep_images)}
        pairs = [(c, remap[o]) for c, o in zip(self.captions, self.text_to_image) if o in remap]
        return RetrievalSet(self.name, [self.images[i] for i in keep_images], [c for c, _ in pairs],
                            [o for _, o in pairs], dict(self.meta), list(self.uncaptioned), list(self.bad_items))

    def check(self, skip_bad: bool) -> None:
        """Stop on the first image without a caption or bad item, unless ``skip_bad`` (then they are counted).

        Raises:
            BadItemError: there are some and ``skip_bad`` is off.
        """
        uncaptioned = [BadItem(str(image), "image", "has no caption: leaving it out would make the gallery "
                                                    "smaller and the task easier") for image in self.uncaptioned]
        refuse_or_count(self.name, uncaptioned + list(self.bad_items), skip_bad)


def add_captions(by_image: Dict[Path, List[str]], image: Path, captions: List[str]) -> None:
    """Record captions for an image; an image listed again keeps all of its captions."""
    by_image.setdefault(image, []).extend(captions)


def grouped(dataset: str, name_to_captions: Dict[Path, List[str]], meta: Dict[str, Any],
            bad_items: Sequence[BadItem] = (), source: Optional[Path] = None, layout: str = "") -> RetrievalSet:
    """Build a set from {image path: [captions]} in insertion order; an image with no caption goes to
    ``uncaptioned``. ``source`` (the annotation file) and ``layout`` are named when no image has a caption.

    Raises:
        LayoutError: no image has a caption (the message names ``source`` and the first bad item).
    """
    images, captions, owners, uncaptioned = [], [], [], []
    for image, texts in name_to_captions.items():
        if not texts:
            uncaptioned.append(image)
            continue
        captions.extend(texts)
        owners.extend([len(images)] * len(texts))
        images.append(image)
    if not images:
        detail = f"no image with a usable caption{f' (e.g. {bad_items[0]})' if bad_items else ''} in"
        raise LayoutError(dataset, source or "the data root", layout or "    (see docs/datasets.md)", detail)
    return RetrievalSet(dataset, images, captions, owners, meta, uncaptioned, list(bad_items))
