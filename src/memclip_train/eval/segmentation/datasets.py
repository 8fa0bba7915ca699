"""Segmentation benchmarks in their official layouts (mmseg's, as SCLIP evaluates them) and the synthetic world."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..retrieval_sets.base import LayoutError, require
from ...synth.captions import short_phrase
from .classnames import ADE20K, COCO_STUFF, VOC20

IGNORE = 255
LAYOUTS = {
    "voc20": """    <root>/JPEGImages/<id>.jpg, <root>/SegmentationClass/<id>.png, <root>/ImageSets/Segmentation/val.txt
    (<root> = VOCdevkit/VOC2012; background 0 is ignored, labels shift down by one)""",
    "ade20k": """    <root>/images/validation/ADE_val_*.jpg, <root>/annotations/validation/ADE_val_*.png
    (<root> = ADEChallengeData2016; label 0 is ignored, labels shift down by one)""",
    "cocostuff164k": """    <root>/images/val2017/*.jpg, <root>/annotations/val2017/*_labelTrainIds.png (171 classes, 255 ignored)""",
    "cocostuff10k": """    <root>/images/test2014/*.jpg, <root>/annotations/test2014/*_labelTrainIds.png (label 0 ignored)""",
    "synth": """    <world>/segmentation/JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/val.txt,
    classes.txt (one class per line; 0 = background, ignored)""",
}


@dataclass
class SegmentationSet:
    """Images with label maps.

    Attributes:
        name: the dataset name.
        items: (image, mask) file pairs.
        class_names: one entry per class, synonyms joined by ', '.
        reduce_zero_label: label 0 is ignored and every other label shifts down by one (VOC20, ADE20K, Stuff10k).
        short_side_ratio: the protocol's short side over its 224 window: 336/224 = 1.5, or 448/224 = 2 (Stuff164k);
            1 for the synthetic world, whose images are segmented at the model's own resolution in one window.
        templates: prompt templates with one ``{}`` for the class name (None: OpenAI's 80 ImageNet templates).
    """

    name: str
    items: List[Tuple[Path, Path]]
    class_names: Sequence[str]
    reduce_zero_label: bool
    short_side_ratio: float = 1.5
    templates: Optional[Sequence[str]] = None

    def load_mask(self, index: int) -> np.ndarray:
        """The label map (H, W) int64 with 255 for ignored pixels, after the dataset's label reduction."""
        mask = np.asarray(Image.open(self.items[index][1]), dtype=np.int64)
        if self.reduce_zero_label:
            mask = np.where(mask == 0, IGNORE, mask - 1)
            mask[mask == IGNORE - 1] = IGNORE
        return mask


def _pairs(name: str, images: Path, masks: Path, ids: Sequence[str], image_suffix: str,
           mask_suffix: str) -> List[Tuple[Path, Path]]:
    pairs = [(images / f"{i}{image_suffix}", masks / f"{i}{mask_suffix}") for i in ids]
    missing = [p for pair in pairs for p in pair if not p.exists()]
    if missing:
        raise LayoutError(name, missing[0], LAYOUTS[name], f"{len(missing)} files are missing, e.g.")
    return pairs


def _folder_pairs(name: str, root: Path, images: str, masks: str, mask_suffix: str) -> List[Tuple[Path, Path]]:
    image_dir = require(name, root / images, LAYOUTS[name])
    mask_dir = require(name, root / masks, LAYOUTS[name])
    ids = sorted(p.stem for p in image_dir.glob("*.jpg"))
    if not ids:
        raise LayoutError(name, image_dir, LAYOUTS[name], "no .jpg images in")
    return _pairs(name, image_dir, mask_dir, ids, ".jpg", mask_suffix)


def _voc_like(name: str, root: Path, split: str = "val") -> List[Tuple[Path, Path]]:
    listing = require(name, root / "ImageSets" / "Segmentation" / f"{split}.txt", LAYOUTS[name])
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return _pairs(name, require(name, root / "JPEGImages", LAYOUTS[name]),
                  require(name, root / "SegmentationClass", LAYOUTS[name]), ids, ".jpg", ".png")


def synth_templates(world: Path) -> Optional[List[str]]:
    """The world's short-caption prompts with ``{}`` for the shape, over every size, fill, colour and background
    (None when the world's vocabularies are unknown: no world.json)."""
    world_json = Path(world) / "world.json"
    if not world_json.is_file():
        return None
    vocab = json.loads(world_json.read_text())["vocabularies"]
    return [short_phrase(size, fill, colour, "{}", background) for size, fill, colour, background in
            itertools.product(vocab["sizes"], vocab["fills"], vocab["colours"], vocab["backgrounds"])]


SPLITS = ("val", "train")
"""Splits a set can be read from: ``val`` (what every benchmark evaluates on) and ``train`` (e.g. to fit a linear
probe): VOC's ``ImageSets/Segmentation/train.txt``, ADE20K's ``images/training``, COCO-Stuff's ``train2017`` (164k)
or ``train2014`` (10k)."""
_FOLDERS = {  # dataset -> split -> (images, annotations)
    "ade20k": {"val": ("images/validation", "annotations/validation"),
               "train": ("images/training", "annotations/training")},
    "cocostuff164k": {"val": ("images/val2017", "annotations/val2017"),
                      "train": ("images/train2017", "annotations/train2017")},
    "cocostuff10k": {"val": ("images/test2014", "annotations/test2014"),
                     "train": ("images/train2014", "annotations/train2014")},
}


def load_segmentation_set(name: str, root: Path, split: str = "val") -> SegmentationSet:
    """Load a benchmark by name and split (:data:`SPLITS`). Raises ValueError for an unknown name or split and
    LayoutError for a wrong layout."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown segmentation split {split!r}; choose from {list(SPLITS)}")
    if name == "voc20":
        root = root / "VOCdevkit" / "VOC2012" if (root / "VOCdevkit").is_dir() else root
        return SegmentationSet(name, _voc_like(name, root, split), VOC20, reduce_zero_label=True)
    if name == "ade20k":
        root = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        items = _folder_pairs(name, root, *_FOLDERS[name][split], ".png")
        return SegmentationSet(name, items, ADE20K, reduce_zero_label=True)
    if name == "cocostuff164k":
        items = _folder_pairs(name, root, *_FOLDERS[name][split], "_labelTrainIds.png")
        return SegmentationSet(name, items, COCO_STUFF, reduce_zero_label=False, short_side_ratio=2.0)
    if name == "cocostuff10k":
        items = _folder_pairs(name, root, *_FOLDERS[name][split], "_labelTrainIds.png")
        return SegmentationSet(name, items, COCO_STUFF, reduce_zero_label=True)
    if name == "synth":
        root = root / "segmentation" if (root / "segmentation").is_dir() else root
        classes = require(name, root / "classes.txt", LAYOUTS[name]).read_text().split("\n")
        return SegmentationSet(name, _voc_like(name, root, split), [c for c in classes if c.strip()],
                               reduce_zero_label=True, short_side_ratio=1.0, templates=synth_templates(root.parent))
    raise ValueError(f"unknown segmentation dataset {name!r}; choose from {sorted(LAYOUTS)}")
