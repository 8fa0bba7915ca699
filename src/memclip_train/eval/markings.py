"""Marking recall: does a model know the name of the marking painted on an object?

In a world with K named markings (``python -m memclip_train.synth --markings K``) the salient object of every
retrieval image carries one, and only its long caption names it. For each image the candidates are that long caption
with the name swapped for each of C names: the true one and C - 1 others of the world, drawn at random with a seed
that is the image's index (so every model faces the same candidates). The image ranks the C captions; marking R@1
counts the images whose true caption comes first (a tie counts against it). Only the name differs between the
candidates, so nothing but the marking can tell them apart, and chance is 1 / C whatever K is.

The same true captions give long-caption T2I R@1 over the images (a secondary check that the rest of the caption is
still read). Text features are cached by the text tower's weights: models fine-tuned with a frozen text tower from one
teacher share them.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from memclip.atomic_io import atomic_write

from ..retrieval_metrics import query_ranks
from .features import encode_images, encode_texts
from .models import LoadedModel
from .retrieval_sets.base import LayoutError, read_jsonl
from .retrieval_sets.long_caption_sets import load_urban1k

DEFAULT_CANDIDATES = 8
MARKINGS_LAYOUT = """    <world>/world.json (vocabularies.markings.names), <world>/retrieval/scenes.jsonl and
    <world>/retrieval/caption/N.txt, written by python -m memclip_train.synth --markings K (K >= 2)"""


@dataclass(frozen=True)
class MarkingQueries:
    """The marking queries of a world's retrieval split.

    Attributes:
        images: one image per query, in index order.
        texts: ``candidates`` captions per image, flattened (image i's are ``texts[i * C:(i + 1) * C]``), the true
            caption first.
        names: the candidate marking names per image, the true one first.
        markings: K, the number of markings in the world.
    """

    images: List[Path]
    texts: List[str]
    names: List[List[str]]
    markings: int

    @property
    def candidates(self) -> int:
        return len(self.names[0])


def swap_name(caption: str, old: str, new: str) -> str:
    """``caption`` with the word ``old`` replaced by ``new``.

    Raises:
        ValueError: ``old`` is not exactly once in ``caption`` as a whole word.
    """
    pattern = re.compile(rf"\b{re.escape(old)}\b")
    swapped, count = pattern.subn(new, caption)
    if count != 1:
        raise ValueError(f"marking name {old!r} occurs {count} times in the caption {caption!r}; expected once")
    return swapped


def load_marking_queries(world: Path, candidates: int = DEFAULT_CANDIDATES) -> MarkingQueries:
    """Read a world's retrieval split and build ``min(candidates, K)`` candidate captions per image.

    Raises:
        LayoutError: a file is missing, or the world has fewer than two markings.
        ValueError: ``candidates`` < 2.
    """
    if candidates < 2:
        raise ValueError(f"candidates={candidates}: need the true caption and at least one other")
    world = Path(world)
    world_json = world / "world.json"
    if not world_json.is_file():
        raise LayoutError("markings", world_json, MARKINGS_LAYOUT)
    markings = json.loads(world_json.read_text())["vocabularies"].get("markings", {})
    names = markings.get("names", [])
    if len(names) < 2:
        raise LayoutError("markings", world_json, MARKINGS_LAYOUT, detail="a world with fewer than two markings:")
    dataset = load_urban1k(world / "retrieval")
    scenes = sorted(read_jsonl("markings", world / "retrieval" / "scenes.jsonl", MARKINGS_LAYOUT),
                    key=lambda row: row["index"])
    if len(scenes) != len(dataset.images):
        raise LayoutError("markings", world / "retrieval" / "scenes.jsonl", MARKINGS_LAYOUT,
                          detail=f"{len(scenes)} scene graphs for {len(dataset.images)} images in")
    count = min(candidates, len(names))
    texts, chosen = [], []
    for scene, caption in zip(scenes, dataset.captions):
        true = next(obj["marking"] for obj in scene["objects"] if "marking" in obj)
        others = random.Random(f"memclip-marking-queries/{scene['index']}").sample(
            [name for name in names if name != true], count - 1)
        chosen.append([true] + others)
        texts.extend(swap_name(caption, true, name) for name in chosen[-1])
    return MarkingQueries(list(dataset.images), texts, chosen, len(names))


def marking_ranks(image_features: torch.Tensor, text_features: torch.Tensor, candidates: int) -> torch.Tensor:
    """1-based rank of the true caption (the first of each image's candidates) among its image's candidates.

    Args:
        image_features: (N, D) normalised image features.
        text_features: (N * C, D) normalised candidate captions, C per image, the true one first.
    Returns:
        (N,) int64 ranks; ties count against the true caption.
    """
    scores = torch.einsum("nd,ncd->nc", image_features, text_features.view(len(image_features), candidates, -1))
    return (scores[:, 1:] >= scores[:, :1]).sum(dim=1) + 1


def text_tower_digest(model: torch.nn.Module) -> str:
    """A digest of every weight outside the image tower and the logit scale: equal for models that share a frozen
    text tower."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("visual.") or name.startswith("logit_"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_text_features(loaded: LoadedModel, texts: List[str], device: torch.device, autocast: Callable,
                         cache_dir: Optional[Path], progress: bool) -> Dict[str, Any]:
    """``{"features": (T, D), "cut": captions cut}``, from ``cache_dir`` when this text tower encoded these texts."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{text_tower_digest(loaded.model)}-{key}.pt"
        if path.is_file():
            return torch.load(path)
    features, cut = encode_texts(loaded.model, loaded.tokenizer, texts, device, autocast, progress=progress,
                                 desc="marking captions")
    stored = {"features": features, "cut": cut}
    if path is not None:
        atomic_write(path, lambda temporary: torch.save(stored, temporary))
    return stored


def evaluate_markings(loaded: LoadedModel, queries: MarkingQueries, device: torch.device, autocast: Callable,
                      batch_size: int = 64, progress: bool = True, cache_dir: Optional[Path] = None
                      ) -> Dict[str, Any]:
    """Marking R@1 and long-caption T2I R@1 of one model, with per-query ranks (for bootstrap intervals).

    Returns:
        {"metrics": {"marking_R@1", "chance", "long_t2i_R@1"}, "ranks": {"marking": [...], "long_t2i": [...]},
         "num_images", "candidates", "markings", "captions_cut", "context_length"}
    """
    images = encode_images(loaded.model, loaded.preprocess, queries.images, device, autocast, batch_size,
                           progress=progress, desc="marking images")
    texts = cached_text_features(loaded, queries.texts, device, autocast, cache_dir, progress)
    candidates = queries.candidates
    ranks = marking_ranks(images.features, texts["features"], candidates)
    true = texts["features"][::candidates]
    long_t2i = query_ranks(images.features, true, torch.arange(len(true)))["t2i"]
    return {
        "metrics": {"marking_R@1": 100.0 * (ranks == 1).float().mean().item(), "chance": 100.0 / candidates,
                    "long_t2i_R@1": 100.0 * (long_t2i == 1).float().mean().item()},
        "ranks": {"marking": ranks.tolist(), "long_t2i": long_t2i.tolist()},
        "num_images": len(queries.images),
        "candidates": candidates,
        "markings": queries.markings,
        "captions_cut": texts["cut"],
        "context_length": loaded.tokenizer.context_length,
    }
