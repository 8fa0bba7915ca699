"""Retrieval benchmarks in their official on-disk layouts; :func:`load_retrieval_set` picks one by name."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from .base import LayoutError, RetrievalSet
from .coco import load_coco, load_flickr30k
from .flair_annotations import SplitSizeError
from .long_caption_sets import load_dci, load_docci, load_iiw, load_sharegpt4v, load_urban1k
from .synth import load_synth

# name -> (loader(root, variant), default variant, variants)
DATASETS: Dict[str, tuple] = {
    "coco": (lambda root, v: load_coco(root, v), "karpathy", ("karpathy", "val2017")),
    "flickr30k": (lambda root, v: load_flickr30k(root, v), "karpathy", ("karpathy", "karpathy-val", "full")),
    "urban1k": (lambda root, v: load_urban1k(root), None, ()),
    "docci": (lambda root, v: load_docci(root, granularity=v), "full", ("full", "sentence")),
    "iiw": (lambda root, v: load_iiw(root, *(v or "iiw400:full").split(":")), "iiw400:full",
            ("iiw400:full", "iiw400:sentence", "dci:full", "dci:sentence", "docci:full", "docci:sentence",
             "all:full", "all:sentence")),
    "dci": (lambda root, v: load_dci(root), None, ()),
    "sharegpt4v-1k": (lambda root, v: load_sharegpt4v(root, 1000, v), "longclip", ("longclip", "sam10k")),
    "sharegpt4v-10k": (lambda root, v: load_sharegpt4v(root, 10000, v), "sam10k", ("sam10k", "longclip")),
    "synth-long": (lambda root, v: load_synth(root, "long"), None, ()),
    "synth-short": (lambda root, v: load_synth(root, "short"), None, ()),
}


def load_retrieval_set(name: str, root: Path, variant: Optional[str] = None) -> RetrievalSet:
    """Load a benchmark by name from ``root``.

    Raises:
        ValueError: unknown name or variant.
        LayoutError: the folder does not have the dataset's layout (the message shows the expected one);
            :class:`SplitSizeError` (a LayoutError) when a split defined by its size (``flickr30k@karpathy-val``,
            ``iiw@all:sentence`` from FLAIR's file) has other counts.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown retrieval dataset {name!r}; choose from {sorted(DATASETS)}")
    loader, default, variants = DATASETS[name]
    variant = variant or default
    if variants and variant not in variants:
        raise ValueError(f"{name}: unknown variant {variant!r}; choose from {variants}")
    dataset = loader(Path(root), variant)
    if variant:
        dataset.meta.setdefault("variant", variant)
    return dataset


__all__ = ["DATASETS", "LayoutError", "RetrievalSet", "SplitSizeError", "load_retrieval_set"]
