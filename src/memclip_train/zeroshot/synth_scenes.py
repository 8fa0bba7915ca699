"""The synthetic world's scene graphs (``retrieval/scenes.jsonl``) and vocabularies, as the zero-shot sets
``synth-shapes``, ``synth-colours`` and ``synth-sizes`` (:mod:`.synth_attributes`) and the eval program's semantic
retrieval read them; :func:`prompt_grid` writes every short caption the world's vocabularies allow."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from ..dataset_files import LayoutError, read_jsonl
from ..synth.captions import short_phrase

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


def prompt_grid(scenes: SynthScenes) -> Tuple[List[str], List[Dict[str, str]]]:
    """Every short-caption prompt of the world's vocabularies and the attributes each states."""
    prompts, attributes = [], []
    for values in itertools.product(*(scenes.values(a) for a in PROMPT_ATTRIBUTES)):
        stated = dict(zip(PROMPT_ATTRIBUTES, values))
        prompts.append(short_phrase(**stated))
        attributes.append(stated)
    return prompts, attributes
