"""Retrieval benchmarks in their official on-disk layouts; :func:`load_retrieval_set` picks one by name."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from memclip.errors import InputError

from ...dataset_files import BadItem, BadItemError, LayoutError
from .base import RetrievalSet
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


def check_retrieval_name(name: str, variant: Optional[str] = None) -> Optional[str]:
    """The variant ``name`` is read with (``variant`` or the default).

    Raises:
        ValueError: an unknown name, or a variant the dataset does not have (a dataset without variants takes none).
    """
    if name not in DATASETS:
        raise InputError(f"unknown retrieval dataset {name!r}; choose from {sorted(DATASETS)}")
    _, default, variants = DATASETS[name]
    if variant is not None and variant not in variants:
        raise InputError(f"{name}: unknown variant {variant!r}; "
                         f"{f'choose from {variants}' if variants else 'it has no variants'}")
    return variant or default


def load_retrieval_set(name: str, root: Path, variant: Optional[str] = None, skip_bad: bool = False
                       ) -> RetrievalSet:
    """Load a benchmark by name from ``root``.

    Raises:
        ValueError: unknown name or variant.
        LayoutError: the folder does not have the dataset's layout (the message shows the expected one);
            :class:`SplitSizeError` (a LayoutError) when a split defined by its size (``flickr30k@karpathy-val``,
            ``iiw@all:sentence`` from FLAIR's file) has other counts.
        BadItemError: an image without a caption or an item that would change the task (see
            :func:`.base.refuse_or_count`), unless ``skip_bad``: then they are left out and counted in the set.
    """
    variant = check_retrieval_name(name, variant)
    dataset = DATASETS[name][0](Path(root), variant)
    dataset.check(skip_bad)
    if variant:
        dataset.meta.setdefault("variant", variant)
    return dataset


__all__ = ["DATASETS", "BadItem", "BadItemError", "LayoutError", "RetrievalSet", "SplitSizeError",
           "check_retrieval_name", "load_retrieval_set"]
