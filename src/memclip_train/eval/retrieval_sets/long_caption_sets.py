"""Long-caption benchmarks: Urban-1k, DOCCI, IIW, DCI and ShareGPT4V-1k/10k (one long caption per image)."""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

from ...convert.exclusion import image_identity
from ...data.captions import first_sentence
from .base import LayoutError, RetrievalSet, add_captions, grouped, read_json, read_jsonl, require
from .flair_annotations import (DOCCI_TEST_IMAGES, IIW_FLAIR_FOLDERS, IIW_SUBSET_IMAGES, SplitSize, check_split_size,
                                load_flair_set, load_iiw_finegrained)

URBAN1K_LAYOUT = """    <root>/image/N.jpg and <root>/caption/N.txt   (Long-CLIP's Urban1k; the caption is the file's first line)
  or FLAIR's annotation file:
    <root>/annotations/annotations.json   {"annotations": [{"image_id", "image", "caption"}]}
    <root>/images/N.jpg
  or
    <root>/annotations.json   {"annotations": [{"image_id", "image", "caption"}]} with images under <root>/"""
DOCCI_LAYOUT = """    <root>/docci_descriptions.jsonlines   {"example_id", "split", "image_file", "description"}
    <root>/images/test_NNNNN.jpg
  and, for docci@sentence, FLAIR's sentences if present (else memclip's sentence splitter):
    <root>/annotations/test_annotations.json   {"annotations": [{"image_id", "image", "caption"}]}
    (one row per sentence; FLAIR's datasets/docci/annotations/)"""
IIW_LAYOUT = """    <root>/datasets/IIW-400/data.jsonl     ("image/key", "IIW")   images: <root>/images/IIW-400/<key>.jpg
    <root>/datasets/DCI_Test/data.jsonl    ("image", "IIW")       images: <root>/images/DCI_Test/<image>
    <root>/datasets/DOCCI_Test/data.jsonl  ("image", "IIW")       images: <root>/images/DOCCI_Test/<image>.jpg
  (the google/imageinwords release; put each subset's images in the folder shown)
  or FLAIR's layout (<root> = imageinwords/):
    <root>/test_annotations.json           the fine-grained set (iiw@all:sentence): 612 images, 6,204 sentences
    <root>/IIW-400/data.jsonl, <root>/DCI_Test/data.jsonl, <root>/DOCCI_Test/data.jsonl
    images: <root>/docci_aar/ (IIW-400), <root>/dci/ (DCI_Test), <root>/docci/ (DOCCI_Test)"""
DCI_LAYOUT = """    <root>/densely_captioned_images/splits.json          {"train": [...], "valid": [...], "test": [...]}
    <root>/densely_captioned_images/annotations/<name>.json   {"image", "short_caption", "extra_caption", ...}
    <root>/densely_captioned_images/photos/<image>"""
SHAREGPT4V_LAYOUT = """    <root>/share-captioner_coco_lcs_sam_1246k_1107.json   definition 'longclip' (Long-CLIP, TULIP)
    <root>/share4v_sam_10k.json                           definition 'sam10k' (LoTLIP, FLAIR)
    images under <root>/ by each entry's 'image' path (coco/..., sam/..., llava/...)"""
logger = logging.getLogger(__name__)
LONGCLIP_HELD_OUT = 1000
"""Entries at the head of the Share-Captioner json that Long-CLIP (and memclip's converter) keep out of training."""
IIW_SUBSETS = {"iiw400": ("IIW-400", "image/key"), "dci": ("DCI_Test", "image"), "docci": ("DOCCI_Test", "image")}
IIW_ALL = "all"
"""The combined subset: IIW-400 + DCI_Test + DOCCI_Test (``iiw@all:sentence`` is FLAIR's fine-grained IIW, the
thesis's "IIW")."""
IIW_FLAIR_FILES = ("test_annotations.json", "finegrained_annotations.json")
"""FLAIR's fine-grained IIW file: its code reads the first name, its data guide says the second."""
DOCCI_FLAIR_FILE = Path("annotations") / "test_annotations.json"
SHAREGPT4V_FILES = {"longclip": "share-captioner_coco_lcs_sam_1246k_1107.json", "sam10k": "share4v_sam_10k.json"}


def split_sentences(text: str) -> List[str]:
    """Sentences of a description, each stripped (uses the same rules as the first-sentence splitter)."""
    sentences, rest = [], " ".join(text.split())
    while rest:
        sentence = first_sentence(rest)
        if not sentence:
            break
        sentences.append(sentence)
        rest = rest[rest.find(sentence) + len(sentence):].strip()
    return sentences


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_file(folder: Path, name: str) -> Path:
    if Path(name).suffix:
        return folder / name
    for suffix in (".jpg", ".jpeg", ".png", ".JPG"):
        if (folder / f"{name}{suffix}").exists():
            return folder / f"{name}{suffix}"
    return folder / f"{name}.jpg"


def load_urban1k(root: Path) -> RetrievalSet:
    if (root / "annotations" / "annotations.json").exists():  # FLAIR's layout, as FLAIR ships it
        return load_flair_set("urban1k", root / "annotations" / "annotations.json", root / "images", URBAN1K_LAYOUT,
                              {"layout": "FLAIR annotations/annotations.json + images/",
                               "caption_preprocessing": "stripped"})
    flair = root / "annotations.json"
    if flair.exists():
        data = read_json("urban1k", flair, URBAN1K_LAYOUT)
        rows = data.get("annotations") if isinstance(data, dict) else None
        if not rows:
            raise LayoutError("urban1k", flair, URBAN1K_LAYOUT, "no 'annotations' list in")
        by_image: Dict[Path, List[str]] = OrderedDict()
        for row in rows:
            add_captions(by_image, root / row["image"], [row["caption"].strip()])
        return grouped("urban1k", by_image, {"layout": "FLAIR annotations.json", "caption_preprocessing": "stripped"})
    images = require("urban1k", root / "image", URBAN1K_LAYOUT)
    captions = require("urban1k", root / "caption", URBAN1K_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    for caption_file in sorted(captions.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        image = _image_file(images, caption_file.stem)
        lines = caption_file.read_text(encoding="utf-8").splitlines()
        by_image[image] = [lines[0].strip() if lines else ""]
    if not by_image:
        raise LayoutError("urban1k", captions, URBAN1K_LAYOUT, "no N.txt captions in")
    dataset = grouped("urban1k", by_image, {"layout": "Long-CLIP image/ + caption/",
                                            "caption_preprocessing": "first line of each caption file, stripped"})
    dataset.uncaptioned = sorted((p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                                  and p not in by_image), key=lambda p: (len(p.stem), p.stem))
    return dataset


def load_docci(root: Path, split: str = "test", granularity: str = "full") -> RetrievalSet:
    """DOCCI's test split; ``granularity`` ``sentence`` makes each sentence of a description a caption of its image
    (as ``iiw:sentence``), so image-to-text retrieval hits when any sentence ranks in the top k."""
    if granularity not in ("full", "sentence"):
        raise ValueError(f"docci granularity {granularity!r}: full or sentence")
    if granularity == "sentence" and split == "test" and (root / DOCCI_FLAIR_FILE).exists():
        loaded = load_flair_set("docci", root / DOCCI_FLAIR_FILE, root / "images", DOCCI_LAYOUT, {
            "split": split, "granularity": granularity, "caption_preprocessing": "FLAIR's sentences, as in its file"})
        check_split_size("docci@sentence", root / DOCCI_FLAIR_FILE, loaded,
                         SplitSize(DOCCI_TEST_IMAGES, None, "DOCCI's test split"))
        return loaded
    rows = read_jsonl("docci", root / "docci_descriptions.jsonlines", DOCCI_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    for row in rows:
        if row.get("split") == split:
            text = row["description"].strip()
            add_captions(by_image, root / "images" / row["image_file"],
                         split_sentences(text) if granularity == "sentence" else [text])
    if not by_image:
        raise LayoutError("docci", root / "docci_descriptions.jsonlines", DOCCI_LAYOUT, f"no '{split}' rows in")
    preprocessing = ("one caption per sentence (memclip's splitter; FLAIR's sentences are used when its "
                     "annotations/test_annotations.json is present)" if granularity == "sentence"
                     else "full description, stripped")
    return grouped("docci", by_image, {"split": split, "granularity": granularity,
                                       "caption_preprocessing": preprocessing})


def load_iiw(root: Path, subset: str = "iiw400", granularity: str = "full") -> RetrievalSet:
    """One IIW subset, or ``all`` three together (612 images, checked). ``all:sentence`` reads FLAIR's fine-grained
    file (its 6,204 sentences, checked) when it is in ``root``, else splits the release's descriptions with
    memclip's splitter; the result's meta says which."""
    if subset not in IIW_SUBSETS and subset != IIW_ALL:
        raise ValueError(f"iiw --variant {subset!r}: one of {sorted(IIW_SUBSETS) + [IIW_ALL]}")
    if granularity not in ("full", "sentence"):
        raise ValueError(f"iiw granularity {granularity!r}: full or sentence")
    if subset == IIW_ALL:
        return _load_iiw_all(root, granularity)
    folder, key = IIW_SUBSETS[subset]
    annotations, images = _iiw_subset_paths(root, folder)
    rows = read_jsonl("iiw", annotations, IIW_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    for row in rows:
        if key not in row or "IIW" not in row:
            raise LayoutError("iiw", annotations, IIW_LAYOUT, f"a row lacks '{key}' or 'IIW' in")
        text = row["IIW"].strip()
        add_captions(by_image, _image_file(images, row[key]),
                     split_sentences(text) if granularity == "sentence" else [" ".join(text.split())])
    return grouped("iiw", by_image, {"subset": folder, "granularity": granularity,
                                     "caption_preprocessing": "whitespace collapsed" + (
                                         ", one caption per sentence" if granularity == "sentence" else "")})


def _iiw_subset_paths(root: Path, folder: str) -> Tuple[Path, Path]:
    """(data.jsonl, image folder) of a subset: the release's layout, or FLAIR's when only that one is there."""
    release = root / "datasets" / folder / "data.jsonl"
    flair = root / folder / "data.jsonl"
    if not release.exists() and flair.exists():
        return flair, root / next(name for name, subset in IIW_FLAIR_FOLDERS.items() if subset == folder)
    return release, root / "images" / folder


def _load_iiw_all(root: Path, granularity: str) -> RetrievalSet:
    if granularity == "sentence":
        flair = next((root / name for name in IIW_FLAIR_FILES if (root / name).exists()), None)
        if flair is not None:
            return load_iiw_finegrained(root, flair, IIW_LAYOUT)
    parts = [load_iiw(root, subset, granularity) for subset in IIW_SUBSETS]
    by_image: Dict[Path, List[str]] = OrderedDict()
    for part in parts:
        for index, image in enumerate(part.images):
            add_captions(by_image, image, [c for c, o in zip(part.captions, part.text_to_image) if o == index])
    sizes = {part.meta["subset"]: len(part.images) for part in parts}
    if sizes != IIW_SUBSET_IMAGES:
        raise LayoutError("iiw", root, IIW_LAYOUT, f"iiw@all needs the three subsets whole: images {sizes}, expected "
                                                   f"{IIW_SUBSET_IMAGES}, under")
    preprocessing = ("one caption per sentence (memclip's splitter; put FLAIR's test_annotations.json in the folder "
                     "for FLAIR's 6,204 sentences)" if granularity == "sentence" else "whitespace collapsed")
    return grouped("iiw", by_image, {"subset": "IIW-400 + DCI_Test + DOCCI_Test", "granularity": granularity,
                                     "subset_images": sizes, "caption_preprocessing": preprocessing})


def load_dci(root: Path) -> RetrievalSet:
    base = root / "densely_captioned_images"
    splits = read_json("dci", base / "splits.json", DCI_LAYOUT)
    names = [name for split in ("train", "valid", "test") for name in splits.get(split, [])]
    if not names:
        raise LayoutError("dci", base / "splits.json", DCI_LAYOUT, "no annotation names in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    for name in names:
        annotation = read_json("dci", base / "annotations" / name, DCI_LAYOUT)
        text = f"{annotation.get('short_caption', '')} {annotation.get('extra_caption', '')}"
        add_captions(by_image, base / "photos" / annotation["image"], [" ".join(split_sentences(text))])
    return grouped("dci", by_image, {"split": f"all {len(by_image)} images (train+valid+test)",
                                     "caption_preprocessing": "short_caption + extra_caption, sentence-split and "
                                                              "rejoined"})


def load_sharegpt4v(root: Path, size: int, definition: str) -> RetrievalSet:
    if definition not in SHAREGPT4V_FILES:
        raise ValueError(f"sharegpt4v definition {definition!r}: one of {sorted(SHAREGPT4V_FILES)}")
    path = root / SHAREGPT4V_FILES[definition]
    entries = read_json("sharegpt4v", path, SHAREGPT4V_LAYOUT)
    if not isinstance(entries, list) or len(entries) < size:
        raise LayoutError("sharegpt4v", path, SHAREGPT4V_LAYOUT,
                          f"expected a list of at least {size} entries, got {len(entries)} in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    for entry in entries[:size]:
        gpt = [t["value"] for t in entry.get("conversations", []) if t.get("from") == "gpt"]
        if not gpt:
            raise LayoutError("sharegpt4v", path, SHAREGPT4V_LAYOUT, f"entry for {entry.get('image')} has no gpt "
                                                                     "turn in")
        add_captions(by_image, root / entry["image"], [gpt[0].strip()])
    overlap, count = training_overlap(root, definition, size, [e["image"] for e in entries[:size]])
    if overlap:
        logger.warning("sharegpt4v-%dk@%s: %s", size // 1000, definition, overlap)
    return grouped(f"sharegpt4v-{size // 1000}k", by_image,
                   {"definition": f"{definition}: first {size} entries of {path.name}",
                    "caption_preprocessing": "first gpt turn, stripped", "train_overlap": overlap,
                    "train_overlap_images": count})


def training_overlap(root: Path, definition: str, size: int, images: List[str]) -> Tuple[str, object]:
    """Whether this evaluation set shares images with the usual training set (the Share-Captioner json without its
    first 1,000 entries), as (a sentence for the results, the count of shared images or None when unknown).

    ``longclip`` beyond 1,000 entries takes its extra entries from the training part itself; ``sam10k``'s SAM images
    can also be in the Share-Captioner json's ``sam/`` part, counted when that json lies beside it.
    """
    train_file = root / SHAREGPT4V_FILES["longclip"]
    if definition == "longclip":
        if size <= LONGCLIP_HELD_OUT:
            return "", 0
        shared = size - LONGCLIP_HELD_OUT
        return (f"entries {LONGCLIP_HELD_OUT}-{size - 1} of {train_file.name} are training samples unless the "
                f"converter held them out (--val-size {size}) or excluded them (--exclude-images)"), shared
    if not train_file.is_file():
        return (f"its SAM images may also be in {train_file.name} (put that json beside it to count them); keep them "
                f"out of training with python -m memclip_train.convert ... --exclude-images "
                f"{SHAREGPT4V_FILES[definition]}"), None
    logger.info("counting the images %s shares with %s ...", SHAREGPT4V_FILES[definition], train_file.name)
    training = {image_identity(e["image"]) for e in read_json("sharegpt4v", train_file, SHAREGPT4V_LAYOUT)
                [LONGCLIP_HELD_OUT:] if isinstance(e, dict) and "image" in e}
    shared = len({image_identity(image) for image in images} & training)
    if not shared:
        return "", 0
    return (f"{shared} of its images are in the training part of {train_file.name}; keep them out of training with "
            f"python -m memclip_train.convert ... --exclude-images {SHAREGPT4V_FILES[definition]}"), shared
