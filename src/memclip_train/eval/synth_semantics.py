"""Metrics that fit the synthetic world, read from its scene graphs (``retrieval/scenes.jsonl``).

A short caption names one object ("a large red star on a grey background"), so many images satisfy it and exact-image
recall is capped by ambiguity. **Semantic retrieval** counts a short-caption query as a hit at k when one of the top
k images satisfies every attribute the caption states (an object of that size, fill, colour and shape, on that
background). The scene graphs also give the labels of the zero-shot datasets ``synth-shapes``, ``synth-colours``
and ``synth-sizes`` (:mod:`.zeroshot_sets.synth`), whose prompts come from :func:`prompt_grid`.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from memclip.errors import InputError

from ..retrieval_metrics import worst_for_nan
from ..synth.captions import short_phrase
from .retrieval_sets.base import LayoutError, read_jsonl

SCENES_FILE = "scenes.jsonl"
PROMPT_ATTRIBUTES = ("size", "fill", "colour", "shape", "background")
SCENES_LAYOUT = """    <world>/world.json (vocabularies), <world>/retrieval/scenes.jsonl (one scene graph per image, in order),
    written by python -m memclip_train.synth (format version 2 or later)"""


SALIENCE_GROUPS = ("alone", "largest", "tied")
"""How visible the salient object is: the only object; strictly the largest; or as large as another object, so the
generator's tie-break (solid over striped over outline, then the cell nearest the middle) names it (only in a world
written with ``--salience tie-break``)."""


def salience_group(scene: Mapping[str, Any]) -> str:
    """The :data:`SALIENCE_GROUPS` entry of one scene graph."""
    objects = scene["objects"]
    if len(objects) == 1:
        return "alone"
    size = objects[scene["salient"]]["size"]
    return "tied" if sum(obj["size"] == size for obj in objects) > 1 else "largest"


@dataclass(frozen=True)
class SynthScenes:
    """The retrieval images' scene graphs and the world's vocabularies.

    Attributes:
        scenes: one dict per retrieval image, in index order: background, texture, objects, salient.
        vocabularies: the world's attribute values (``shapes``, ``colours``, ``sizes``, ``fills``, ``backgrounds``).
    """

    scenes: List[Dict[str, Any]]
    vocabularies: Dict[str, Any]

    def salient(self, index: int) -> Dict[str, Any]:
        scene = self.scenes[index]
        return scene["objects"][scene["salient"]]

    def salience(self, index: int) -> str:
        """How an image shows which object its short caption names (one of :data:`SALIENCE_GROUPS`)."""
        return salience_group(self.scenes[index])

    def values(self, attribute: str) -> List[str]:
        """The vocabulary of one prompt attribute, in the world's order."""
        table = {"size": "sizes", "fill": "fills", "colour": "colours", "shape": "shapes",
                 "background": "backgrounds"}[attribute]
        return list(self.vocabularies[table])


OBJECT_KEYS = ("size", "fill", "colour", "shape")


def _scene_problem(row: Any, count: int) -> str:
    """Why a scenes.jsonl row is not a scene graph of a ``count``-image split ('' when it is one)."""
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not a scene graph"
    if not isinstance(row.get("index"), int) or not 0 <= row["index"] < count:
        return f"has index {row.get('index')!r}, not an image index 0 ... {count - 1}"
    objects = row.get("objects")
    if not isinstance(objects, list) or not objects:
        return "has no objects"
    if not all(isinstance(obj, dict) and all(isinstance(obj.get(key), str) for key in OBJECT_KEYS) for obj in objects):
        return f"has an object without one of {OBJECT_KEYS}"
    if not isinstance(row.get("salient"), int) or not 0 <= row["salient"] < len(objects):
        return f"has salient {row.get('salient')!r}, not an object index 0 ... {len(objects) - 1}"
    if not isinstance(row.get("background"), str):
        return "has no background"
    return ""


def load_scenes(world: Path) -> SynthScenes:
    """Read ``world.json`` and ``retrieval/scenes.jsonl`` of a written world.

    Raises:
        LayoutError: a file is missing (worlds written before format version 2 lack scenes.jsonl: regenerate), is not
            valid JSON, or a scene graph is malformed, listed twice or missing (the message names the line).
    """
    world = Path(world)
    root = world.parent if world.name == "retrieval" else world
    world_json = root / "world.json"
    if not world_json.is_file():
        raise LayoutError("synth", world_json, SCENES_LAYOUT)
    try:
        vocabularies = json.loads(world_json.read_text())["vocabularies"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise LayoutError("synth", world_json, SCENES_LAYOUT, f"no vocabularies ({type(error).__name__}: {error}) in"
                          ) from error
    scenes_file = root / "retrieval" / SCENES_FILE
    rows = read_jsonl("synth", scenes_file, SCENES_LAYOUT)
    if not rows:
        raise LayoutError("synth", scenes_file, SCENES_LAYOUT, "no scene graphs in")
    seen = set()
    for number, row in enumerate(rows, 1):
        problem = _scene_problem(row, len(rows))
        if not problem and row["index"] in seen:
            problem = f"repeats index {row['index']}"
        if problem:
            raise LayoutError("synth", scenes_file, SCENES_LAYOUT, f"line {number} {problem}, in")
        seen.add(row["index"])
    return SynthScenes(sorted(rows, key=lambda row: row["index"]), vocabularies)


def short_claims(scene: Mapping[str, Any]) -> Dict[str, str]:
    """What a scene's short caption states: the salient object's size, fill, colour and shape, and the background."""
    obj = scene["objects"][scene["salient"]]
    return {"size": obj["size"], "fill": obj["fill"], "colour": obj["colour"], "shape": obj["shape"],
            "background": scene["background"]}


def satisfies(scene: Mapping[str, Any], claims: Mapping[str, str]) -> bool:
    """Whether ``scene`` has ``claims["background"]`` and one object with every other claimed attribute."""
    if scene["background"] != claims["background"]:
        return False
    wanted = {k: v for k, v in claims.items() if k != "background"}
    return any(all(obj[k] == v for k, v in wanted.items()) for obj in scene["objects"])


def semantic_hits(similarity: torch.Tensor, scenes: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 5)
                  ) -> Dict[int, List[bool]]:
    """For each short-caption query (row i describes image i), whether a top-k image satisfies it.

    Args:
        similarity: (Q, N) text-image similarities, query i being image i's short caption.
        scenes: the N images' scene graphs.
    Returns:
        {k: [hit of query 0, hit of query 1, ...]}; a NaN similarity is the worst score.
    """
    top = worst_for_nan(similarity).topk(max(ks), dim=1).indices.tolist()
    hits: Dict[int, List[bool]] = {k: [] for k in ks}
    for query, ranked in enumerate(top):
        claims = short_claims(scenes[query])
        good = [satisfies(scenes[j], claims) for j in ranked]
        for k in ks:
            hits[k].append(any(good[:k]))
    return hits


def prompt_grid(scenes: SynthScenes) -> Tuple[List[str], List[Dict[str, str]]]:
    """Every short-caption prompt of the world's vocabularies and the attributes each states."""
    prompts, attributes = [], []
    for values in itertools.product(*(scenes.values(a) for a in PROMPT_ATTRIBUTES)):
        stated = dict(zip(PROMPT_ATTRIBUTES, values))
        prompts.append(short_phrase(**stated))
        attributes.append(stated)
    return prompts, attributes


def synth_semantic_results(image_features: torch.Tensor, short_features: torch.Tensor, scenes: SynthScenes
                           ) -> Dict[str, Any]:
    """Semantic short-caption T2I R@1/5, with per-query hits for bootstrap intervals.

    Args:
        image_features: (N, D) normalised features of the N retrieval images.
        short_features: (N, D) normalised features of each image's own short caption.
    """
    if len(image_features) != len(scenes.scenes):
        raise InputError(f"{len(image_features)} image features for {len(scenes.scenes)} scene graphs")
    hits = semantic_hits(short_features @ image_features.T, scenes.scenes)
    return {"metrics": {f"semantic_t2i_R@{k}": 100.0 * sum(v) / len(v) for k, v in hits.items()},
            "num_images": len(scenes.scenes), "hits": {f"semantic_t2i_R@{k}": v for k, v in hits.items()}}


def evaluate_synth_semantics(encode_texts: Callable[[Sequence[str]], torch.Tensor], image_features: torch.Tensor,
                             short_captions: Sequence[str], scenes: SynthScenes) -> Dict[str, Any]:
    """:func:`synth_semantic_results` for a model whose ``encode_texts`` maps texts to (len, D) normalised features.

    Args:
        image_features: (N, D) normalised features of the retrieval images, in index order.
        short_captions: each image's own short caption, in index order.
    """
    return synth_semantic_results(image_features, encode_texts(short_captions), scenes)


def zeroshot_breakdown(result: Mapping[str, Any], scenes: SynthScenes, attribute: str, top: int = 3
                       ) -> Dict[str, Any]:
    """Where a zero-shot result on the salient objects' ``attribute`` succeeds and fails.

    Args:
        result: :func:`..zeroshot.evaluate_zeroshot`'s output on ``synth-{attribute}s``: ``ranks`` (and
            ``predictions``, absent from results written before they were stored), one per retrieval image.
        scenes: the world's scene graphs, in the same order.
        top: how many confusions to return.
    Returns:
        {"by_salience": {group: {"top1": %, "images": n}} over the groups present (:data:`SALIENCE_GROUPS`),
         "confusions": [[true value, predicted value, images], ...] most frequent first (empty without
         predictions)}.
    Raises:
        ValueError: the result does not hold one rank per scene (images were skipped).
    """
    ranks = result["ranks"]
    if len(ranks) != len(scenes.scenes):
        raise InputError(f"{len(ranks)} zero-shot ranks for {len(scenes.scenes)} scene graphs (skipped images?)")
    hits: Dict[str, List[bool]] = {group: [] for group in SALIENCE_GROUPS}
    for index, rank in enumerate(ranks):
        hits[scenes.salience(index)].append(rank == 0)
    by_salience = {group: {"top1": 100.0 * sum(h) / len(h), "images": len(h)} for group, h in hits.items() if h}
    counts: Dict[Tuple[str, str], int] = {}
    classes = scenes.values(attribute)
    for index, predicted in enumerate(result.get("predictions", [])):
        truth = scenes.salient(index)[attribute]
        if classes[predicted] != truth:
            pair = (truth, classes[predicted])
            counts[pair] = counts.get(pair, 0) + 1
    confusions = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {"by_salience": by_salience, "confusions": [[t, p, n] for (t, p), n in confusions]}
