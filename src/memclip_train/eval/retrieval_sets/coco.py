"""COCO and Flickr30k: Karpathy splits (five captions per image), COCO val2017 and generic COCO-captions json."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

from .base import LayoutError, RetrievalSet, grouped, read_json
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
    """Images of ``split`` ('test', or 'all') from a Karpathy-style json, with every one of their sentences."""
    data = read_json(dataset, root / json_name, layout)
    if "images" not in data:
        raise LayoutError(dataset, root / json_name, layout, "no 'images' list in")
    by_image: Dict[Path, List[str]] = OrderedDict()
    for entry in data["images"]:
        if split != "all" and entry.get("split") != split:
            continue
        folder = entry.get("filepath", image_folder)
        path = root / folder / entry["filename"]
        by_image[path] = [s["raw"].strip() for s in entry["sentences"]]
    return grouped(dataset, by_image, {"split": split_name, "captions_per_image": "all (usually 5)",
                                       "caption_preprocessing": "raw sentences, stripped"})


def read_captions_json(dataset: str, json_path: Path, image_dir: Path, meta: Dict) -> RetrievalSet:
    """A COCO-captions file: every image with all its captions, in the json's image order."""
    data = read_json(dataset, json_path, CAPTIONS_JSON_LAYOUT)
    if "images" not in data or "annotations" not in data:
        raise LayoutError(dataset, json_path, CAPTIONS_JSON_LAYOUT, "no 'images'/'annotations' in")
    files = {image["id"]: image["file_name"] for image in data["images"]}
    by_id: Dict[int, List[str]] = OrderedDict((image_id, []) for image_id in files)
    for annotation in data["annotations"]:
        if annotation["image_id"] not in by_id:
            raise LayoutError(dataset, json_path, CAPTIONS_JSON_LAYOUT,
                              f"caption for unknown image id {annotation['image_id']} in")
        by_id[annotation["image_id"]].append(annotation["caption"].strip())
    by_image = OrderedDict((image_dir / files[i], texts) for i, texts in by_id.items() if texts)
    return grouped(dataset, by_image, dict(meta, caption_preprocessing="raw captions, stripped"))


def load_coco(root: Path, variant: str = "karpathy") -> RetrievalSet:
    if variant == "val2017":
        images = root / "val2017"
        if not images.is_dir() and (root / "images" / "val2017").is_dir():
            images = root / "images" / "val2017"  # FLAIR's layout (and the thesis's code)
        return read_captions_json("coco", root / "annotations" / "captions_val2017.json", images,
                                  {"split": "val2017 (5,000 images; Long-CLIP's, FLAIR's and the thesis's choice)"})
    if variant != "karpathy":
        raise ValueError(f"coco --variant {variant!r}: karpathy or val2017")
    return read_karpathy("coco", root, "dataset_coco.json", "val2014", "test", COCO_LAYOUT, "Karpathy 5k test")


def load_flickr30k(root: Path, variant: str = "karpathy") -> RetrievalSet:
    """``karpathy``: Karpathy's 1k test split; ``karpathy-val``: his 1,014-image validation split (the thesis's,
    from ``dataset_flickr30k.json`` or FLAIR's ``flickr30k_val.json``; its size is checked); ``full``: all 31,783."""
    if variant not in ("karpathy", "karpathy-val", "full"):
        raise ValueError(f"flickr30k --variant {variant!r}: karpathy, karpathy-val or full")
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
