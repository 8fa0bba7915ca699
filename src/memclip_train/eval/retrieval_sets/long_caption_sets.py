"""Long-caption benchmarks: Urban-1k, DOCCI, IIW, DCI and ShareGPT4V-1k/10k (one long caption per image)."""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from memclip.errors import InputError

from ...convert.exclusion import image_identity
from ...data.captions import first_sentence
from ...dataset_files import BadItem, LayoutError, read_json, read_jsonl, require
from .base import RetrievalSet, add_captions, grouped, text_problem
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


def _add_description(by_image: Dict[Path, List[str]], bad: List[BadItem], source: Path, item: str, image: Path,
                     field: str, description: object, captions: Callable[[str], List[str]]) -> None:
    """One row's description of ``image``: its ``captions`` (of the stripped text) go into ``by_image``, or the row is
    a bad item when the description is null, not a string or empty, or the image was described before (it would be
    counted twice)."""
    problem = text_problem(description)
    if problem:
        bad.append(BadItem(str(source), item, f"'{field}' {problem}"))
    elif image in by_image:
        bad.append(BadItem(str(source), item, "describes an image described before: it would be counted twice"))
    else:
        add_captions(by_image, image, captions(description.strip()))


def load_urban1k(root: Path) -> RetrievalSet:
    """Either Urban-1k layout (Long-CLIP's, or FLAIR's in one of its two forms). Bad items: a FLAIR row without an
    image or with a caption that is null, not a string or empty, or that repeats a row (it would be counted twice); a
    caption file that is empty or not UTF-8. Images in ``image/`` without a caption file are uncaptioned."""
    if (root / "annotations" / "annotations.json").exists():  # FLAIR's layout, as FLAIR ships it
        return load_flair_set("urban1k", root / "annotations" / "annotations.json", root / "images", URBAN1K_LAYOUT,
                              {"layout": "FLAIR annotations/annotations.json + images/",
                               "caption_preprocessing": "stripped"})
    flair = root / "annotations.json"
    if flair.exists():
        data = read_json("urban1k", flair, URBAN1K_LAYOUT)
        rows = data.get("annotations") if isinstance(data, dict) else None
        if not rows or not isinstance(rows, list):
            raise LayoutError("urban1k", flair, URBAN1K_LAYOUT, "no 'annotations' list in")
        by_image: Dict[Path, List[str]] = OrderedDict()
        bad: List[BadItem] = []
        for number, row in enumerate(rows):
            item = f"annotations[{number}]"
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
                bad.append(BadItem(str(flair), item, "has no 'image'"))
                continue
            problem = text_problem(row.get("caption"))
            caption = None if problem else row["caption"].strip()
            if problem:
                bad.append(BadItem(str(flair), f"{item} ({row['image']})", f"'caption' {problem}"))
            elif caption in by_image.get(root / row["image"], []):
                bad.append(BadItem(str(flair), f"{item} ({row['image']})", "repeats a row: it would be counted twice"))
            else:
                add_captions(by_image, root / row["image"], [caption])
        return grouped("urban1k", by_image, {"layout": "FLAIR annotations.json", "caption_preprocessing": "stripped"},
                       bad, flair, URBAN1K_LAYOUT)
    images = require("urban1k", root / "image", URBAN1K_LAYOUT)
    captions = require("urban1k", root / "caption", URBAN1K_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad = []
    left_out = set()  # images whose caption file is a bad item (counted there, not again as uncaptioned)
    caption_files = sorted(captions.glob("*.txt"), key=lambda p: (len(p.stem), p.stem))
    if not caption_files:
        raise LayoutError("urban1k", captions, URBAN1K_LAYOUT, "no N.txt captions in")
    for caption_file in caption_files:
        image = _image_file(images, caption_file.stem)
        try:
            lines = caption_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            bad.append(BadItem(str(caption_file), "caption",
                               f"is not UTF-8 ({error.reason}), so its image has no caption"))
            left_out.add(image)
            continue
        if not lines or not lines[0].strip():
            bad.append(BadItem(str(caption_file), "line 1", "is empty: its image would be scored on an empty caption"))
            left_out.add(image)
            continue
        by_image[image] = [lines[0].strip()]
    dataset = grouped("urban1k", by_image, {"layout": "Long-CLIP image/ + caption/",
                                            "caption_preprocessing": "first line of each caption file, stripped"},
                      bad, captions, URBAN1K_LAYOUT)
    dataset.uncaptioned = sorted((p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                                  and p not in by_image and p not in left_out), key=lambda p: (len(p.stem), p.stem))
    return dataset


def load_docci(root: Path, split: str = "test", granularity: str = "full") -> RetrievalSet:
    """DOCCI's test split; ``granularity`` ``sentence`` makes each sentence of a description a caption of its image
    (as ``iiw:sentence``), so image-to-text retrieval hits when any sentence ranks in the top k.

    Bad items: a row without a split or an image file, a description that is null, not a string or empty, and a
    second row for one image (it would be counted twice)."""
    if granularity not in ("full", "sentence"):
        raise InputError(f"docci granularity {granularity!r}: full or sentence")
    if granularity == "sentence" and split == "test" and (root / DOCCI_FLAIR_FILE).exists():
        loaded = load_flair_set("docci", root / DOCCI_FLAIR_FILE, root / "images", DOCCI_LAYOUT, {
            "split": split, "granularity": granularity, "caption_preprocessing": "FLAIR's sentences, as in its file"})
        check_split_size("docci@sentence", root / DOCCI_FLAIR_FILE, loaded,
                         SplitSize(DOCCI_TEST_IMAGES, None, "DOCCI's test split"))
        return loaded
    source = root / "docci_descriptions.jsonlines"
    rows = read_jsonl("docci", source, DOCCI_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad: List[BadItem] = []
    for number, row in enumerate(rows, 1):
        item = f"line {number}"
        if not isinstance(row, dict) or "split" not in row:
            bad.append(BadItem(str(source), item, f"has no 'split': cannot tell whether it is in '{split}'"))
            continue
        if row["split"] != split:
            continue
        if not isinstance(row.get("image_file"), str) or not row["image_file"]:
            bad.append(BadItem(str(source), item, "has no 'image_file'"))
            continue
        _add_description(by_image, bad, source, f"{item} ({row['image_file']})", root / "images" / row["image_file"],
                         "description", row.get("description"),
                         split_sentences if granularity == "sentence" else lambda text: [text])
    if not by_image and not bad:
        raise LayoutError("docci", source, DOCCI_LAYOUT, f"no '{split}' rows in")
    preprocessing = ("one caption per sentence (memclip's splitter; FLAIR's sentences are used when its "
                     "annotations/test_annotations.json is present)" if granularity == "sentence"
                     else "full description, stripped")
    return grouped("docci", by_image, {"split": split, "granularity": granularity,
                                       "caption_preprocessing": preprocessing}, bad, source, DOCCI_LAYOUT)


def load_iiw(root: Path, subset: str = "iiw400", granularity: str = "full") -> RetrievalSet:
    """One IIW subset, or ``all`` three together (612 images, checked). ``all:sentence`` reads FLAIR's fine-grained
    file (its 6,204 sentences, checked) when it is in ``root``, else splits the release's descriptions with
    memclip's splitter; the result's meta says which."""
    if subset not in IIW_SUBSETS and subset != IIW_ALL:
        raise InputError(f"iiw --variant {subset!r}: one of {sorted(IIW_SUBSETS) + [IIW_ALL]}")
    if granularity not in ("full", "sentence"):
        raise InputError(f"iiw granularity {granularity!r}: full or sentence")
    if subset == IIW_ALL:
        return _load_iiw_all(root, granularity)
    folder, key = IIW_SUBSETS[subset]
    source, images = _iiw_subset_paths(root, folder)
    rows = read_jsonl("iiw", source, IIW_LAYOUT)
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad: List[BadItem] = []
    for number, row in enumerate(rows, 1):
        item = f"line {number}"
        if not isinstance(row, dict) or not isinstance(row.get(key), str) or not row[key]:
            bad.append(BadItem(str(source), item, f"has no '{key}'"))
            continue
        _add_description(by_image, bad, source, f"{item} ({row[key]})", _image_file(images, row[key]), "IIW",
                         row.get("IIW"),
                         split_sentences if granularity == "sentence" else lambda text: [" ".join(text.split())])
    return grouped("iiw", by_image, {"subset": folder, "granularity": granularity,
                                     "caption_preprocessing": "whitespace collapsed" + (
                                         ", one caption per sentence" if granularity == "sentence" else "")},
                   bad, source, IIW_LAYOUT)


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
                                     "subset_images": sizes, "caption_preprocessing": preprocessing},
                   [item for part in parts for item in part.bad_items], root, IIW_LAYOUT)


def load_dci(root: Path) -> RetrievalSet:
    """All of DCI's images. Bad items: a name listed twice in splits.json (it would be counted twice), an annotation
    that is missing or not valid JSON, without an image, or whose ``short_caption`` is null, not a string or empty, or
    whose ``extra_caption`` is missing, null or not a string (the short caption would stand in for the whole one; an
    empty ``extra_caption`` is DCI's own and is kept)."""
    base = root / "densely_captioned_images"
    splits_file = base / "splits.json"
    splits = read_json("dci", splits_file, DCI_LAYOUT)
    if not isinstance(splits, dict):
        raise LayoutError("dci", splits_file, DCI_LAYOUT, "no train/valid/test lists in")
    names = [name for split in ("train", "valid", "test") for name in splits.get(split, [])]
    if not names:
        raise LayoutError("dci", splits_file, DCI_LAYOUT, "no annotation names in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad: List[BadItem] = []
    seen = set()
    for name in names:
        if name in seen:
            bad.append(BadItem(str(splits_file), str(name), "is listed twice: it would be counted twice"))
            continue
        seen.add(name)
        path = base / "annotations" / str(name)
        try:
            annotation = read_json("dci", path, DCI_LAYOUT)
        except LayoutError as error:
            bad.append(BadItem(str(path), "annotation", f"is missing or not valid JSON ({str(error).splitlines()[0]})"))
            continue
        if not isinstance(annotation, dict) or not isinstance(annotation.get("image"), str):
            bad.append(BadItem(str(path), "annotation", "has no 'image'"))
            continue
        short_problem = text_problem(annotation.get("short_caption"))
        extra = annotation.get("extra_caption")
        if short_problem:
            bad.append(BadItem(str(path), "short_caption", short_problem))
        elif not isinstance(extra, str):
            bad.append(BadItem(str(path), "extra_caption", "is missing" if extra is None else
                               f"is a {type(extra).__name__}, not a string"))
        else:
            text = f"{annotation['short_caption']} {extra}"
            add_captions(by_image, base / "photos" / annotation["image"], [" ".join(split_sentences(text))])
    return grouped("dci", by_image, {"split": f"all {len(by_image)} images (train+valid+test)",
                                     "caption_preprocessing": "short_caption + extra_caption, sentence-split and "
                                                              "rejoined"}, bad, splits_file, DCI_LAYOUT)


def load_sharegpt4v(root: Path, size: int, definition: str) -> RetrievalSet:
    if definition not in SHAREGPT4V_FILES:
        raise InputError(f"sharegpt4v definition {definition!r}: one of {sorted(SHAREGPT4V_FILES)}")
    path = root / SHAREGPT4V_FILES[definition]
    entries = read_json("sharegpt4v", path, SHAREGPT4V_LAYOUT)
    if not isinstance(entries, list) or len(entries) < size:
        found = f"{len(entries)} entries" if isinstance(entries, list) else f"a {type(entries).__name__}"
        raise LayoutError("sharegpt4v", path, SHAREGPT4V_LAYOUT,
                          f"expected a list of at least {size} entries, got {found} in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad: List[BadItem] = []
    listed_again = 0
    for number, entry in enumerate(entries[:size]):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            bad.append(BadItem(str(path), f"entry {number}", "has no 'image'"))
            continue
        turns = entry.get("conversations") if isinstance(entry.get("conversations"), list) else []
        gpt = [turn.get("value") for turn in turns if isinstance(turn, dict) and turn.get("from") == "gpt"]
        problem = "has no gpt turn" if not gpt else None
        if gpt and text_problem(gpt[0]):
            problem = f"the value of its first gpt turn {text_problem(gpt[0])}"
        if problem:
            bad.append(BadItem(str(path), f"entry {number} ({entry['image']})", problem))
            continue
        listed_again += root / entry["image"] in by_image
        add_captions(by_image, root / entry["image"], [gpt[0].strip()])
    if listed_again:
        logger.warning("sharegpt4v-%dk@%s: %d of the first %d entries repeat an image listed before; each such image "
                       "keeps all its captions (a hit on any counts for image-to-text), so the set has %d images",
                       size // 1000, definition, listed_again, size, len(by_image))
    overlap, count = training_overlap(root, definition, size,
                                      [e["image"] for e in entries[:size] if isinstance(e, dict) and "image" in e])
    if overlap:
        logger.warning("sharegpt4v-%dk@%s: %s", size // 1000, definition, overlap)
    return grouped(f"sharegpt4v-{size // 1000}k", by_image,
                   {"definition": f"{definition}: first {size} entries of {path.name}",
                    "caption_preprocessing": "first gpt turn, stripped", "train_overlap": overlap,
                    "train_overlap_images": count, "entries_repeating_an_image": listed_again},
                   bad, path, SHAREGPT4V_LAYOUT)


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
