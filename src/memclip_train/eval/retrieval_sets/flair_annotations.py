"""FLAIR's retrieval annotation files, read as they are, and the evaluation splits whose size is part of their name.

FLAIR (ExplainableML/flair, its ``datasets/`` folder; the thesis's evaluation code reads the same files) ships one
file per benchmark in one format, ``{"annotations": [{"image_id", "image", "caption"[, "caption_id"]}]}``: one row per
caption, rows sharing an ``image_id`` describing one image, ``image`` relative to a folder fixed per benchmark:

- ``imageinwords/test_annotations.json``: the fine-grained IIW set, IIW-400 + DCI_Test + DOCCI_Test split into
  sentences (612 images, 6,204 sentences); images under the file's folder (``docci_aar/``, ``dci/``, ``docci/``);
- ``docci/annotations/test_annotations.json``: DOCCI's test split, one caption per sentence; images under
  ``docci/images/``;
- ``Urban1k/annotations/annotations.json``: Urban-1k, one long caption per image; images under ``Urban1k/images/``;
- ``flickr30k-images/flickr30k_val.json`` (another format: a list of ``{"image", "caption": [five]}``): Karpathy's
  validation split of Flickr30k (1,014 images), images relative to the folder above the file's.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...dataset_files import LayoutError, read_json
from .base import RetrievalSet, grouped

logger = logging.getLogger(__name__)

FLAIR_ANNOTATIONS_FORMAT = '{"annotations": [{"image_id", "image", "caption"}, ...]} (one row per caption)'


@dataclass(frozen=True)
class SplitSize:
    """The size that defines an evaluation split: a file with other counts is another split.

    Attributes:
        images: images of the split.
        captions: captions (sentences) of the split, or None where they depend on how the text was split.
        source: where the figures come from (shown when a loaded set differs).
    """

    images: int
    captions: Optional[int]
    source: str


FLICKR30K_KARPATHY_VAL = SplitSize(1014, 5070, "Karpathy's dataset_flickr30k.json, split 'val'; FLAIR's "
                                                "flickr30k_val.json")
IIW_FINEGRAINED = SplitSize(612, 6204, "FLAIR's imageinwords/test_annotations.json: IIW-400 + DCI_Test + DOCCI_Test")
IIW_SUBSET_IMAGES = {"IIW-400": 400, "DCI_Test": 112, "DOCCI_Test": 100}
"""Images of each IIW subset (google/imageinwords, datasets/*/data.jsonl); together the 612 of the combined set."""
IIW_FLAIR_FOLDERS = {"docci_aar": "IIW-400", "dci": "DCI_Test", "docci": "DOCCI_Test"}
"""FLAIR's image folder of each IIW subset (under imageinwords/): IIW-400's images are DOCCI's AAR images."""
DOCCI_TEST_IMAGES = 5000


class SplitSizeError(LayoutError):
    """A loaded split whose image or caption count is not the split's: another version of the file, or part of it."""

    def __init__(self, dataset: str, path: Path, expected: SplitSize, images: int, captions: int) -> None:
        wanted = f"{expected.images:,} images" + (f" / {expected.captions:,} captions" if expected.captions else "")
        FileNotFoundError.__init__(self, f"{dataset}: {path} holds {images:,} images / {captions:,} captions, but the split "
                                  f"has {wanted} ({expected.source}); an edited, partial or other version of the "
                                  "file would not give comparable numbers")


def check_split_size(dataset: str, path: Path, loaded: RetrievalSet, expected: SplitSize) -> None:
    """Raise :class:`SplitSizeError` unless ``loaded`` has the split's counts."""
    if len(loaded.images) != expected.images or (
            expected.captions is not None and len(loaded.captions) != expected.captions):
        raise SplitSizeError(dataset, path, expected, len(loaded.images), len(loaded.captions))


def read_flair_annotations(dataset: str, path: Path, image_dir: Path, layout: str) -> Tuple[
        "OrderedDict[Path, List[str]]", int]:
    """{image path: its captions in file order} from a FLAIR annotation file, and how many captions are empty
    (kept, as FLAIR keeps them: Urban-1k's file has one).

    Raises:
        LayoutError: not the format, a row without its keys, or an ``image_id`` naming two images (or an image
            under two ids).
    """
    data = read_json(dataset, path, layout)
    rows = data.get("annotations") if isinstance(data, Mapping) else None
    if not isinstance(rows, list) or not rows:
        raise LayoutError(dataset, path, layout, f"no 'annotations' list ({FLAIR_ANNOTATIONS_FORMAT}) in")
    by_image: "OrderedDict[Path, List[str]]" = OrderedDict()
    image_of: Dict[Any, Path] = {}
    id_of: Dict[Path, Any] = {}
    empty = 0
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping) or not {"image_id", "image", "caption"} <= set(row):
            raise LayoutError(dataset, path, layout, f"row {number} lacks 'image_id', 'image' or 'caption' in")
        image = image_dir / str(row["image"])
        if image_of.setdefault(row["image_id"], image) != image or id_of.setdefault(image, row["image_id"]) != \
                row["image_id"]:
            raise LayoutError(dataset, path, layout, f"row {number}: image_id {row['image_id']!r} and image "
                                                     f"{row['image']!r} disagree with an earlier row in")
        caption = str(row["caption"]).strip()
        empty += not caption
        by_image.setdefault(image, []).append(caption)
    if empty:
        logger.warning("%s: %d empty caption%s in %s (kept, as FLAIR keeps them)", dataset, empty,
                       "s" if empty > 1 else "", path)
    return by_image, empty


def load_flair_set(dataset: str, path: Path, image_dir: Path, layout: str, meta: Dict[str, Any]) -> RetrievalSet:
    """A retrieval set from one FLAIR annotation file; ``meta`` gains the file and its empty-caption count."""
    by_image, empty = read_flair_annotations(dataset, path, image_dir, layout)
    return grouped(dataset, by_image, dict(meta, annotations=f"FLAIR {path.name}", empty_captions=empty))


def load_iiw_finegrained(root: Path, path: Path, layout: str) -> RetrievalSet:
    """FLAIR's fine-grained IIW: 612 images of three subsets, 6,204 sentences (both counts checked, and each
    subset's images)."""
    loaded = load_flair_set("iiw", path, root, layout, {
        "subset": "IIW-400 + DCI_Test + DOCCI_Test (FLAIR's fine-grained IIW)", "granularity": "sentence",
        "caption_preprocessing": "FLAIR's sentences, as in its file"})
    check_split_size("iiw@all:sentence", path, loaded, IIW_FINEGRAINED)
    subsets = {name: 0 for name in IIW_SUBSET_IMAGES}
    for image in loaded.images:
        folder = image.relative_to(root).parts[0]
        if folder not in IIW_FLAIR_FOLDERS:
            raise LayoutError("iiw", path, layout, f"image {image} is in none of the subset folders "
                                                   f"{sorted(IIW_FLAIR_FOLDERS)} in")
        subsets[IIW_FLAIR_FOLDERS[folder]] += 1
    if subsets != IIW_SUBSET_IMAGES:
        raise LayoutError("iiw", path, layout, f"subset images {subsets}, expected {IIW_SUBSET_IMAGES}, in")
    loaded.meta["subset_images"] = subsets
    return loaded


def load_flickr30k_flair_val(root: Path, path: Path, layout: str) -> RetrievalSet:
    """FLAIR's ``flickr30k_val.json``: a list of ``{"image": "flickr30k-images/N.jpg", "caption": [...]}``, the
    image relative to the folder above ``root`` (FLAIR's root is the image folder itself) or to ``root``."""
    entries = read_json("flickr30k", path, layout)
    if not isinstance(entries, list) or not entries:
        raise LayoutError("flickr30k", path, layout, "expected a list of {'image', 'caption': [...]} in")
    by_image: "OrderedDict[Path, List[str]]" = OrderedDict()
    for number, entry in enumerate(entries):
        captions = entry.get("caption") if isinstance(entry, Mapping) else None
        if not isinstance(captions, list) or "image" not in entry:
            raise LayoutError("flickr30k", path, layout, f"entry {number} lacks 'image' or a 'caption' list in")
        first = Path(entry["image"]).parts[0]
        base = root if (root / first).is_dir() else root.parent
        by_image.setdefault(base / entry["image"], []).extend(str(c).strip() for c in captions)
    return grouped("flickr30k", by_image, {"split": "Karpathy val (1,014 images; the thesis's)",
                                           "annotations": f"FLAIR {path.name}", "captions_per_image": "5",
                                           "caption_preprocessing": "raw captions, stripped"})
