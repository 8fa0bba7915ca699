"""COCO and Flickr30k: Karpathy splits (five captions per image), COCO val2017 and generic COCO-captions json."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

from memclip.errors import InputError

from ...dataset_files import BadItem, LayoutError, read_json
from .base import RetrievalSet, grouped, text_problem
from .flair_annotations import FLICKR30K_KARPATHY_VAL, check_split_size, load_flickr30k_flair_val

COCO_LAYOUT = """    <root>/dataset_coco.json            Karpathy splits (images[].filepath, filename, split, sentences[].raw)
    <root>/val2014/COCO_val2014_*.jpg   the images (filepath/filename in the json)
  or, with --variant val2017:
    <root>/annotations/captions_val2017.json
    <root>/val2017/000000xxxxxx.jpg     (or <root>/images/val2017/, FLAIR's layout)"""
FLICKR_LAYOUT = """    <root>/dataset_flickr30k.json       Karpathy splits (test, val, train)
    <root>/flickr30k-images/NNNN.jpg
  or, for karpathy-val, FLAIR's file:
    <root>/flickr30k_val.json           [{"image": "flickr30k-images/N.jpg", "caption": [5 captions]}]
                                        images relative to <root>'s parent (<root> = flickr30k-images/) or <root>"""
FLAIR_FLICKR_VAL = "flickr30k_val.json"
CAPTIONS_JSON_LAYOUT = """    <file>.json   COCO captions format: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}
                  file_name relative to the image folder (by default the json's folder)"""


def read_karpathy(dataset: str, root: Path, json_name: str, image_folder: str, split: str, layout: str,
                  split_name: str) -> RetrievalSet:
    """Images of ``split`` ('test', or 'all') from a Karpathy-style json, with every one of their sentences.

    Bad items: an entry without a filename or a split, an image listed twice, a sentence whose ``raw`` is missing,
    null, not a string or empty. An image with no usable sentence is uncaptioned (see :class:`RetrievalSet`).
    """
    path_of_json = root / json_name
    data = read_json(dataset, path_of_json, layout)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LayoutError(dataset, path_of_json, layout, "no 'images' list in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    bad: List[BadItem] = []
    for number, entry in enumerate(data["images"]):
        item = f"images[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not entry["filename"]:
            bad.append(BadItem(str(path_of_json), item, "has no 'filename'"))
            continue
        item = f"images[{number}] ({entry['filename']})"
        if split != "all" and "split" not in entry:
            bad.append(BadItem(str(path_of_json), item, f"has no 'split': cannot tell whether it is in '{split}'"))
            continue
        if split != "all" and entry["split"] != split:
            continue
        path = root / str(entry.get("filepath", image_folder)) / entry["filename"]
        if path in by_image:
            bad.append(BadItem(str(path_of_json), item, "lists an image listed before: it would be counted twice"))
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            bad.append(BadItem(str(path_of_json), item, "has no 'sentences' list: its image has no caption"))
            continue
        by_image[path] = []
        for index, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else sentence
            problem = text_problem(raw)
            if problem:
                bad.append(BadItem(str(path_of_json), f"{item} sentences[{index}]", f"'raw' {problem}"))
            else:
                by_image[path].append(raw.strip())
    return grouped(dataset, by_image, {"split": split_name, "captions_per_image": "all (usually 5)",
                                       "caption_preprocessing": "raw sentences, stripped"}, bad, path_of_json, layout)


def read_captions_json(dataset: str, json_path: Path, image_dir: Path, meta: Dict) -> RetrievalSet:
    """A COCO-captions file: every image with all its captions, in the json's image order.

    Every listed image belongs to the gallery: one without an annotation is uncaptioned (an error unless skipped and
    counted), never quietly dropped. Bad items: an image entry without an id or file name, an id or file listed twice,
    an annotation without an image id or with a caption that is null, not a string or empty, and a caption for an
    image id the file does not list.
    """
    data = read_json(dataset, json_path, CAPTIONS_JSON_LAYOUT)
    if (not isinstance(data, dict) or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)):
        raise LayoutError(dataset, json_path, CAPTIONS_JSON_LAYOUT, "no 'images'/'annotations' lists in")
    source = str(json_path)
    bad: List[BadItem] = []
    files: Dict[object, str] = OrderedDict()
    for number, image in enumerate(data["images"]):
        if (not isinstance(image, dict) or not isinstance(image.get("id"), (int, str))
                or not isinstance(image.get("file_name"), str) or not image["file_name"]):
            bad.append(BadItem(source, f"images[{number}]", "has no 'id' or 'file_name'"))
        elif image["id"] in files:
            bad.append(BadItem(source, f"images[{number}] (id {image['id']})",
                               "repeats an image id listed before (its captions would go to the first)"))
        elif image["file_name"] in files.values():
            bad.append(BadItem(source, f"images[{number}] ({image['file_name']})",
                               "lists an image file listed before: it would be counted twice"))
        else:
            files[image["id"]] = image["file_name"]
    by_id: Dict[object, List[str]] = OrderedDict((image_id, []) for image_id in files)
    for number, annotation in enumerate(data["annotations"]):
        item = f"annotations[{number}]"
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not isinstance(image_id, (int, str)) or image_id not in by_id:
            bad.append(BadItem(source, item, f"is a caption for image id {image_id!r}, which 'images' does not list"))
            continue
        problem = text_problem(annotation.get("caption"))
        if problem:
            bad.append(BadItem(source, f"{item} (image id {image_id})", f"'caption' {problem}"))
            continue
        by_id[image_id].append(annotation["caption"].strip())
    by_image = OrderedDict((image_dir / files[i], texts) for i, texts in by_id.items())
    return grouped(dataset, by_image, dict(meta, caption_preprocessing="raw captions, stripped"), bad, json_path,
                   CAPTIONS_JSON_LAYOUT)


def load_coco(root: Path, variant: str = "karpathy") -> RetrievalSet:
    if variant == "val2017":
        images = root / "val2017"
        if not images.is_dir() and (root / "images" / "val2017").is_dir():
            images = root / "images" / "val2017"  # FLAIR's layout (and the thesis's code)
        return read_captions_json("coco", root / "annotations" / "captions_val2017.json", images,
                                  {"split": "val2017 (5,000 images; Long-CLIP's, FLAIR's and the thesis's choice)"})
    if variant != "karpathy":
        raise InputError(f"coco --variant {variant!r}: karpathy or val2017")
    return read_karpathy("coco", root, "dataset_coco.json", "val2014", "test", COCO_LAYOUT, "Karpathy 5k test")


def load_flickr30k(root: Path, variant: str = "karpathy") -> RetrievalSet:
    """``karpathy``: Karpathy's 1k test split; ``karpathy-val``: his 1,014-image validation split (the thesis's,
    from ``dataset_flickr30k.json`` or FLAIR's ``flickr30k_val.json``; its size is checked); ``full``: all 31,783."""
    if variant not in ("karpathy", "karpathy-val", "full"):
        raise InputError(f"flickr30k --variant {variant!r}: karpathy, karpathy-val or full")
    if variant == "karpathy-val":
        source = root / "dataset_flickr30k.json"
        if not source.exists() and (root / FLAIR_FLICKR_VAL).exists():
            source = root / FLAIR_FLICKR_VAL
            loaded = load_flickr30k_flair_val(root, source, FLICKR_LAYOUT)
        else:
            loaded = read_karpathy("flickr30k", root, source.name, "flickr30k-images", "val", FLICKR_LAYOUT,
                                   "Karpathy val (1,014 images; the thesis's)")
        check_split_size("flickr30k@karpathy-val", source, loaded, FLICKR30K_KARPATHY_VAL)
        return loaded
    split = "test" if variant == "karpathy" else "all"
    name = "Karpathy 1k test" if variant == "karpathy" else "full set (31,783 images; Long-CLIP's choice)"
    return read_karpathy("flickr30k", root, "dataset_flickr30k.json", "flickr30k-images", split, FLICKR_LAYOUT, name)
