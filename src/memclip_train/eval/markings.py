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
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from memclip.atomic_io import atomic_write
from memclip.errors import InputError

from ..dataset_files import BadItem, LayoutError, read_jsonl, refuse_or_count
from ..features import encode_images, encode_texts
from ..retrieval_metrics import query_ranks, worst_for_nan
from .models import LoadedModel
from .retrieval_sets.long_caption_sets import load_urban1k

logger = logging.getLogger(__name__)

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
        bad_items: retrieval images left out (``skip_bad``) because they cannot make a marking query.
    """

    images: List[Path]
    texts: List[str]
    names: List[List[str]]
    markings: int
    bad_items: List[BadItem] = field(default_factory=list)

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
        raise InputError(f"marking name {old!r} occurs {count} times in the caption {caption!r}; expected once")
    return swapped


def _true_marking(scene: Any, names: List[str]) -> str:
    """The marking a scene graph's one marked object carries. Raises ValueError saying what is wrong."""
    objects = scene.get("objects") if isinstance(scene, dict) else None
    marked = [obj["marking"] for obj in objects or [] if isinstance(obj, dict) and obj.get("marking") is not None]
    if len(marked) != 1:
        raise InputError(f"its scene graph has {len(marked)} marked objects, not one")
    if marked[0] not in names:
        raise InputError(f"its marking {marked[0]!r} is not one of world.json's names")
    return marked[0]


def load_marking_queries(world: Path, candidates: int = DEFAULT_CANDIDATES, skip_bad: bool = False
                         ) -> MarkingQueries:
    """Read a world's retrieval split and build ``min(candidates, K)`` candidate captions per image.

    Every retrieval image must make a query: an image without a scene graph or caption, a scene without exactly one
    marked object, or a caption that does not name the marking exactly once would leave an image out (an easier
    task), so it is an error naming the file and the image, unless ``skip_bad`` (then it is left out and counted).

    Raises:
        LayoutError: a file is missing or not valid JSON, or the world has fewer than two markings.
        BadItemError: an image that cannot make a query, unless ``skip_bad``.
        ValueError: ``candidates`` < 2.
    """
    if candidates < 2:
        raise InputError(f"candidates={candidates}: need the true caption and at least one other")
    world = Path(world)
    world_json = world / "world.json"
    if not world_json.is_file():
        raise LayoutError("markings", world_json, MARKINGS_LAYOUT)
    try:
        names = json.loads(world_json.read_text())["vocabularies"].get("markings", {}).get("names", [])
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as error:
        raise LayoutError("markings", world_json, MARKINGS_LAYOUT, f"no vocabularies ({type(error).__name__}: "
                                                                  f"{error}) in") from error
    if not isinstance(names, list) or len(names) < 2:
        raise LayoutError("markings", world_json, MARKINGS_LAYOUT, detail="a world with fewer than two markings:")
    dataset = load_urban1k(world / "retrieval")
    dataset.check(skip_bad)
    scenes_file = world / "retrieval" / "scenes.jsonl"
    scenes = {row.get("index"): row for row in read_jsonl("markings", scenes_file, MARKINGS_LAYOUT)
              if isinstance(row, dict)}
    count = min(candidates, len(names))
    images, texts, chosen, bad = [], [], [], list(dataset.bad_items)
    first_caption = {}
    for caption, owner in zip(dataset.captions, dataset.text_to_image):
        first_caption.setdefault(owner, caption)
    for position, image in enumerate(dataset.images):
        index = int(image.stem) if image.stem.isdigit() else None
        try:
            if index not in scenes:
                raise InputError(f"it has no scene graph in {scenes_file.name}")
            true = _true_marking(scenes[index], names)
            caption = first_caption[position]
            swapped = [swap_name(caption, true, true)]
        except ValueError as error:
            bad.append(BadItem(str(image), "retrieval image", f"cannot make a marking query ({error})"))
            continue
        others = random.Random(f"memclip-marking-queries/{index}").sample(
            [name for name in names if name != true], count - 1)
        chosen.append([true] + others)
        texts.extend(swapped + [swap_name(caption, true, name) for name in others])
        images.append(image)
    refuse_or_count("markings", bad[len(dataset.bad_items):], skip_bad)
    if not images:
        raise LayoutError("markings", world / "retrieval", MARKINGS_LAYOUT, "no image that makes a marking query in")
    return MarkingQueries(images, texts, chosen, len(names), bad)


def marking_ranks(image_features: torch.Tensor, text_features: torch.Tensor, candidates: int) -> torch.Tensor:
    """1-based rank of the true caption (the first of each image's candidates) among its image's candidates.

    Args:
        image_features: (N, D) normalised image features.
        text_features: (N * C, D) normalised candidate captions, C per image, the true one first.
    Returns:
        (N,) int64 ranks; ties count against the true caption, and NaN is the worst score.
    """
    scores = torch.einsum("nd,ncd->nc", image_features, text_features.view(len(image_features), candidates, -1))
    scores = worst_for_nan(scores)
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


def _read_cached_features(path: Path, texts: List[str]) -> Optional[Dict[str, Any]]:
    """The cached ``{"features", "cut"}`` in ``path``, or None (with a warning) when it cannot be used: a file that
    does not load in ``torch.load``'s safe mode (damaged, or holding anything but tensors and numbers), or that does
    not hold one finite feature row per text. Such a file is set aside as ``<name>.bad`` (never overwritten), so the
    features are recomputed and the evidence kept."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        features = stored["features"]
        if not (isinstance(features, torch.Tensor) and features.dim() == 2 and len(features) == len(texts)
                and torch.isfinite(features).all() and isinstance(stored["cut"], int)):
            raise InputError(f"it does not hold {len(texts)} finite feature rows and a count of cut captions")
        return {"features": features.float(), "cut": stored["cut"]}
    except Exception as error:  # damaged files fail in many ways inside torch.load
        aside = path.with_name(path.name + ".bad")
        number = 1
        while aside.exists():
            number += 1
            aside = path.with_name(f"{path.name}.bad{number}")
        os.replace(path, aside)
        logger.warning("the cached marking text features %s cannot be used (%s: %s): set aside as %s, recomputing",
                       path, type(error).__name__, next(iter(str(error).splitlines()), ""), aside.name)
        return None


def cached_text_features(loaded: LoadedModel, texts: List[str], device: torch.device, autocast: Callable,
                         cache_dir: Optional[Path], progress: bool) -> Dict[str, Any]:
    """``{"features": (T, D), "cut": captions cut}``, from ``cache_dir`` when this text tower encoded these texts
    (a cache file that cannot be used is set aside and the features recomputed); ``cache_dir`` None: no cache."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{text_tower_digest(loaded.model)}-{key}.pt"
        if path.is_file():
            stored = _read_cached_features(path, texts)
            if stored is not None:
                return stored
    features, cut = encode_texts(loaded.model, loaded.tokenizer, texts, device, autocast, progress=progress,
                                 desc="marking captions", model_name=loaded.ref.label)
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
         "num_images", "candidates", "markings", "captions_cut", "context_length", "bad_items", "skipped"}
    """
    images = encode_images(loaded.model, loaded.preprocess, queries.images, device, autocast, batch_size,
                           progress=progress, desc="marking images", model_name=loaded.ref.label)
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
        "bad_items": [str(item) for item in queries.bad_items],
        "skipped": {"images": len(queries.bad_items), "total": len(queries.bad_items)},
    }
