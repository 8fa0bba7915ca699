"""MMVP-style blind pairs: two scenes that differ in exactly one attribute (Tong et al. 2024, "Eyes wide shut").

Patterns:
    colour, size, fill, orientation: one object changes that attribute;
    position: one object moves to an empty cell;
    count: one more copy of an existing object (same colour, size, fill, orientation) in an empty cell;
    presence: an object of a shape the other scene lacks, in an empty cell.
Both scenes share the background and its texture pixel for pixel. Which scene is ``a`` is random, so "more" or
"present" is not always ``b``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from memclip.errors import InputError

from .world import GRID, Scene, WorldConfig, sample_object, sample_scene

PATTERNS = ("colour", "count", "position", "orientation", "size", "presence", "fill")
CHANGED_ATTRIBUTE = {"colour": "colour", "size": "size", "fill": "fill", "orientation": "orientation",
                     "position": "position"}


@dataclass(frozen=True)
class BlindPair:
    """Two scenes and what tells them apart.

    ``differs`` = {"attribute": pattern, "a": value in a, "b": value in b, "object": the object concerned (as it is
    in ``a``, or the added object for count and presence)}. For count the values are the shape's counts, for
    presence booleans.
    """

    pattern: str
    a: Scene
    b: Scene
    differs: Dict[str, Any]


def available_patterns(world: WorldConfig) -> Tuple[str, ...]:
    """The patterns this world can produce (e.g. no orientation pairs without oriented shapes)."""
    possible = {
        "colour": all(len(world.colours_on(bg)) > 1 for bg in world.backgrounds),
        "count": world.min_objects < GRID * GRID,
        "position": world.min_objects < GRID * GRID,
        "orientation": bool(world.oriented_shapes) and len(world.orientations) > 1,
        "size": len(world.sizes) > 1,
        "presence": world.min_objects < GRID * GRID and len(world.shapes) > 1,
        "fill": len(world.fills) > 1,
    }
    return tuple(p for p in PATTERNS if possible[p])


def _base_scene(rng: random.Random, world: WorldConfig, pattern: str) -> Scene:
    """A scene with room for the pattern: an empty cell for count/position/presence, a free shape for presence,
    and for count/presence one object fewer than the world's maximum when its range allows."""
    high = world.max_objects
    if pattern in ("count", "position", "presence"):
        high = min(high, GRID * GRID - 1)
    if pattern in ("count", "presence") and high > world.min_objects:
        high -= 1
    if pattern == "presence":
        high = min(high, len(world.shapes) - 1)
    return sample_scene(rng, world, rng.randint(min(world.min_objects, high), high))


def make_pair(rng: random.Random, world: WorldConfig, pattern: str) -> BlindPair:
    """Two scenes differing only in ``pattern`` (see the module docstring)."""
    if pattern not in available_patterns(world):
        raise InputError(f"pattern {pattern!r} is not available in this world; available: {available_patterns(world)}")
    scene = _base_scene(rng, world, pattern)
    objects = list(scene.objects)
    target_index = rng.randrange(len(objects))
    target = objects[target_index]

    if pattern == "orientation" and target.shape not in world.oriented_shapes:
        shape = rng.choice(world.oriented_shapes)
        target = target.replace(shape=shape, orientation=rng.choice(world.orientations))
        objects[target_index] = target
        scene = scene.with_objects(objects)

    if pattern in CHANGED_ATTRIBUTE:
        attribute = CHANGED_ATTRIBUTE[pattern]
        choices = {
            "colour": world.colours_on(scene.background),
            "size": tuple(world.sizes),
            "fill": world.fills,
            "orientation": world.orientations,
            "position": scene.free_positions(),
        }[attribute]
        old = getattr(target, attribute)
        new = rng.choice([value for value in choices if value != old])
        changed = list(objects)
        changed[target_index] = target.replace(**{attribute: new})
        first, second = scene, scene.with_objects(changed)
        differs = {"attribute": pattern, "a": old, "b": new, "object": target.to_dict()}
    elif pattern == "count":
        count = sum(o.shape == target.shape for o in objects)
        added = target.replace(position=rng.choice(scene.free_positions()), marking=None)  # a marking is one object's
        first, second = scene, scene.with_objects(objects + [added])
        differs = {"attribute": "count", "a": count, "b": count + 1, "object": added.to_dict()}
    else:
        missing = [s for s in world.shapes if s not in {o.shape for o in objects}]
        added = sample_object(rng, world, scene.background, rng.choice(scene.free_positions()), rng.choice(missing))
        first, second = scene, scene.with_objects(objects + [added])
        differs = {"attribute": "presence", "a": False, "b": True, "object": added.to_dict()}

    if rng.random() < 0.5:
        first, second = second, first
        differs = {**differs, "a": differs["b"], "b": differs["a"]}
        if pattern in CHANGED_ATTRIBUTE:
            differs["object"] = {**differs["object"], CHANGED_ATTRIBUTE[pattern]: differs["a"]}
    return BlindPair(pattern=pattern, a=first, b=second, differs=differs)
