"""`SceneStream`: an endless, deterministic stream of fresh training scenes, for pretraining on the world itself.

A written world (``python -m memclip_train.synth``) is a fixed, small set: a model trained on it for many epochs
memorises it. The stream instead draws a new scene for every sample, as web-scale pretraining never sees an image
twice. Scene ``i`` of epoch ``e`` is a pure function of (seed, epoch, i), so a resumed run sees exactly what an
uninterrupted one would.

Samples come in *families* of ``family_size`` scenes: the first is random, each next one changes one attribute of
the salient object (its shape most often, else its colour, size or fill), so its short caption differs in exactly
that word. Families stay together in a batch, which gives contrastive training the hard negatives that a random
batch lacks (in a random batch of 128, colour, size and background alone tell most short captions apart).

A short caption names the salient object, as alt-text mostly names an image's main subject. With
``other_object_rate`` > 0, that fraction of families names another object of the scene instead (still one short
caption: "a small blue ring on a grey background"), and its variants change that object. Every object then gets
named some of the time, so the tower has a reason to see all of them, not only the largest (measured in docs/teacher.md,
"Segmentation and blind pairs: what else was tried": more of every object in the patches, less of the salient one in
the image embedding).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from memclip.errors import InputError

from .captions import CaptionConfig, long_caption, short_caption
from .render import RenderConfig
from .validation import check_int
from .world import Scene, SceneObject, WorldConfig, is_strictly_salient, salient_object, sample_scene

# How often each attribute of the named object is the one that changes within a family.
CHANGE_WEIGHTS: Tuple[Tuple[str, int], ...] = (("shape", 4), ("colour", 1), ("size", 1), ("fill", 1))
# Stream settings that belong to the world, and those that are text rather than integers.
WORLD_SETTINGS = ("min_objects", "max_objects", "salience")
TEXT_SETTINGS = ("salience",)
FLOAT_SETTINGS = ("other_object_rate",)


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the scene stream (validated when built).

    Attributes:
        family_size: scenes per family (1: independent scenes, no hard negatives).
        other_object_rate: fraction of families (of scenes with two or more objects) whose captions name a random
            non-salient object rather than the salient one (0: always the salient one).
        world, render, captions: the world's vocabularies, drawing and captions (the written world's defaults).
    """

    family_size: int = 4
    other_object_rate: float = 0.0
    world: WorldConfig = field(default_factory=WorldConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)

    def __post_init__(self) -> None:
        check_int(self, "family_size", 1, 64)
        if not 0.0 <= self.other_object_rate <= 1.0:
            raise InputError(f"StreamConfig.other_object_rate={self.other_object_rate}: must lie in [0, 1]")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str]) -> "StreamConfig":
        """Build from ``KEY=VALUE`` strings: ``family_size``, ``other_object_rate`` (a fraction), the world's
        ``min_objects``/``max_objects`` (integers) and its ``salience`` (``strict`` or ``tie-break``).

        Raises:
            ValueError: an unknown key, a number setting that is not a number, or an invalid setting or world.
        """
        known = ("family_size",) + FLOAT_SETTINGS + WORLD_SETTINGS
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InputError(f"synth stream: unknown settings {unknown}; known: {list(known)}")
        values: Dict[str, Any] = {}
        for key, text in overrides.items():
            kind = str if key in TEXT_SETTINGS else float if key in FLOAT_SETTINGS else int
            try:
                values[key] = kind(text)
            except ValueError as error:
                raise InputError(f"synth stream: {key}={text!r} is not {'a number' if kind is float else 'an integer'}"
                                 ) from error
        world = {k: values.pop(k) for k in WORLD_SETTINGS if k in values}
        return cls(world=WorldConfig(**world), **values)


def change_named(rng: random.Random, scene: Scene, world: WorldConfig, position: str) -> Optional[Scene]:
    """``scene`` with one attribute of the object at ``position`` (the one its caption names) changed, or None when
    the change would swap which object is the salient one (the salient object would stop being named, or another
    object would start to be), or, in a strict world, would leave no object strictly the largest."""
    salient = salient_object(scene, world)
    target = next(obj for obj in scene.objects if obj.position == position)
    names, weights = zip(*CHANGE_WEIGHTS)
    attribute = rng.choices(names, weights)[0]
    if attribute == "shape":
        shape = rng.choice([s for s in world.shapes if s != target.shape])
        orientation = rng.choice(world.orientations) if shape in world.oriented_shapes else None
        changed = target.replace(shape=shape, orientation=orientation)
    elif attribute == "colour":
        colours = [c for c in world.colours_on(scene.background) if c != target.colour]
        changed = target.replace(colour=rng.choice(colours))
    elif attribute == "size":
        changed = target.replace(size=rng.choice([s for s in world.sizes if s != target.size]))
    else:
        changed = target.replace(fill=rng.choice([f for f in world.fills if f != target.fill]))
    variant = scene.with_objects([changed if obj is target else obj for obj in scene.objects])
    if salient_object(variant, world).position != salient.position:
        return None
    if world.salience == "strict" and not is_strictly_salient(variant, world):
        return None
    return variant


def family(rng: random.Random, world: WorldConfig, size: int, other_object_rate: float = 0.0,
           attempts: int = 8) -> List[Tuple[Scene, SceneObject]]:
    """A random scene and ``size - 1`` variants, each one attribute of the named object away from the last, as
    ``(scene, named object)`` pairs. The named object is the salient one, or with probability ``other_object_rate``
    (scenes of two or more objects) another one; a fresh scene (when no variant is found) names its salient one."""
    scene = sample_scene(rng, world)
    position = salient_object(scene, world).position
    if other_object_rate and len(scene.objects) > 1 and rng.random() < other_object_rate:
        position = rng.choice([obj.position for obj in scene.objects if obj.position != position])
    members = [(scene, position)]
    while len(members) < size:
        variant = None
        for _ in range(attempts):
            variant = change_named(rng, members[-1][0], world, position)
            if variant is not None:
                break
        if variant is None:
            variant = sample_scene(rng, world)
            position = salient_object(variant, world).position
        members.append((variant, position))
    return [(scene, next(obj for obj in scene.objects if obj.position == position)) for scene, position in members]


class SceneStream:
    """Raw training samples (shard-style dicts) of fresh scenes, without pixels: rendering is left to the consumer,
    so skipping samples (resuming) costs almost nothing.

    Each sample: ``{"__key__", "__url__", "scene": Scene, "txt": short caption, "json": {"long", "short"}}``.
    """

    url = "synth-stream"

    def __init__(self, config: StreamConfig, seed: int) -> None:
        self.config = config
        self.seed = seed

    def families(self, epoch: int, first: int, step: int) -> Iterator[List[Dict[str, Any]]]:
        """Families ``first, first + step, ...`` of ``epoch``, forever (``step`` = number of parallel readers)."""
        index = first
        while True:
            yield self.family(epoch, index)
            index += step

    def family(self, epoch: int, index: int) -> List[Dict[str, Any]]:
        """The samples of family ``index`` of ``epoch``: a pure function of (seed, epoch, index)."""
        rng = random.Random(f"memclip-synth-stream/{self.seed}/{epoch}/{index}")
        samples = []
        members = family(rng, self.config.world, self.config.family_size, self.config.other_object_rate)
        for member, (scene, named) in enumerate(members):
            short = short_caption(scene, self.config.world, named)
            long = long_caption(scene, self.config.world, self.config.captions, rng)
            samples.append({"__key__": f"{epoch:04d}-{index:09d}-{member:02d}", "__url__": self.url, "scene": scene,
                            "txt": short, "json": {"long": long, "short": short}})
        return samples
