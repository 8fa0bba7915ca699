"""Segmentation benchmarks in their official layouts (mmseg's, as SCLIP evaluates them) and the synthetic world."""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from memclip.errors import InputError

from ...dataset_files import LayoutError, require
from ...synth.captions import short_phrase
from .classnames import ADE20K, COCO_STUFF, VOC20

logger = logging.getLogger(__name__)

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
    """The pairs a VOC-style listing names. Raises LayoutError for an empty listing or an id listed twice (it would
    be scored twice)."""
    listing = require(name, root / "ImageSets" / "Segmentation" / f"{split}.txt", LAYOUTS[name])
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise LayoutError(name, listing, LAYOUTS[name], "no image ids in")
    seen = set()
    for number, image_id in enumerate(ids, 1):
        if image_id in seen:
            raise LayoutError(name, listing, LAYOUTS[name], f"image id {image_id!r} is listed twice (again on line "
                                                            f"{number}; it would be scored twice) in")
        seen.add(image_id)
    return _pairs(name, require(name, root / "JPEGImages", LAYOUTS[name]),
                  require(name, root / "SegmentationClass", LAYOUTS[name]), ids, ".jpg", ".png")


def synth_templates(world: Path) -> Optional[List[str]]:
    """The world's short-caption prompts with ``{}`` for the shape, over every size, fill, colour and background
    (None, with a warning, when the world's vocabularies are unknown: no world.json; the 80 ImageNet templates are
    then used, and the result records it).

    Raises:
        LayoutError: world.json is not valid JSON or lacks the vocabularies.
    """
    world_json = Path(world) / "world.json"
    if not world_json.is_file():
        logger.warning("synth segmentation: no %s, so the world's caption prompts are unknown: using the 80 OpenAI "
                       "ImageNet templates instead (recorded in the result)", world_json)
        return None
    try:
        vocab = json.loads(world_json.read_text())["vocabularies"]
        grid = [vocab[key] for key in ("sizes", "fills", "colours", "backgrounds")]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise LayoutError("synth", world_json, LAYOUTS["synth"], f"no vocabularies ({type(error).__name__}: "
                                                                f"{error}) in") from error
    if not all(isinstance(values, (list, dict)) and values for values in grid):
        raise LayoutError("synth", world_json, LAYOUTS["synth"], "an empty vocabulary in")
    return [short_phrase(size, fill, colour, "{}", background) for size, fill, colour, background in
            itertools.product(*grid)]


def _class_names(name: str, path: Path) -> List[str]:
    """One class per non-blank line of a class list. Raises LayoutError for an empty list or a name listed twice
    (two classes by one name cannot be told apart)."""
    names = [line.strip() for line in require(name, path, LAYOUTS[name]).read_text().splitlines() if line.strip()]
    if not names:
        raise LayoutError(name, path, LAYOUTS[name], "no class names in")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LayoutError(name, path, LAYOUTS[name], f"the class {twice[0]!r} is listed twice in")
    return names


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
        raise InputError(f"unknown segmentation split {split!r}; choose from {list(SPLITS)}")
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
        return SegmentationSet(name, _voc_like(name, root, split), _class_names(name, root / "classes.txt"),
                               reduce_zero_label=True, short_side_ratio=1.0, templates=synth_templates(root.parent))
    raise InputError(f"unknown segmentation dataset {name!r}; choose from {sorted(LAYOUTS)}")
