"""The synthetic world's retrieval split, read through the real readers (Urban-1k layout, COCO captions json)."""
from __future__ import annotations

from pathlib import Path

from .base import RetrievalSet
from .coco import read_captions_json
from .long_caption_sets import load_urban1k


def load_synth(root: Path, captions: str) -> RetrievalSet:
    """``root`` is the world folder (or its retrieval/ folder); ``captions`` is 'long' or 'short'."""
    folder = root / "retrieval" if (root / "retrieval").is_dir() else root
    if captions == "long":
        dataset = load_urban1k(folder)
        dataset.name, dataset.meta["layout"] = "synth-long", "synthetic world, Urban-1k layout"
        return dataset
    dataset = read_captions_json("synth-short", folder / "captions_short.json", folder,
                                 {"split": "synthetic retrieval split, several short paraphrases per image"})
    return dataset
