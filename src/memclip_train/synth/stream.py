"""`SceneStream`: an endless, deterministic stream of fresh training scenes, for pretraining on the world itself.

A written world (``python -m memclip_train.synth``) is a fixed, small set: a model trained on it for many epochs
memorises it. The stream instead draws a new scene for every sample, as web-scale pretraining never sees an image
twice. Scene ``i`` of epoch ``e`` is a pure function of (seed, epoch, i), so a resumed run sees exactly what an
uninterrupted one would.

Samples come in *families* of ``family_size`` scenes: the first is random, each next one changes one attribute of
the salient object (its shape most often, else its colour, size or fill), so its short caption differs in exactly
that word. Families stay together in a batch, which gives contrastive training the hard negatives that a random
batch lacks (in a random batch of 128, colour, size and background alone tell most short captions apart).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .captions import CaptionConfig, long_caption, short_caption
from .render import RenderConfig
from .validation import check_int
from .world import Scene, WorldConfig, is_strictly_salient, salient_object, sample_scene

# How often each attribute of the salient object is the one that changes within a family.
CHANGE_WEIGHTS: Tuple[Tuple[str, int], ...] = (("shape", 4), ("colour", 1), ("size", 1), ("fill", 1))
# Stream settings that belong to the world, and those that are text rather than integers.
WORLD_SETTINGS = ("min_objects", "max_objects", "salience")
TEXT_SETTINGS = ("salience",)


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the scene stream (validated when built).

    Attributes:
        family_size: scenes per family (1: independent scenes, no hard negatives).
        world, render, captions: the world's vocabularies, drawing and captions (the written world's defaults).
    """

    family_size: int = 4
    world: WorldConfig = field(default_factory=WorldConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)

    def __post_init__(self) -> None:
        check_int(self, "family_size", 1, 64)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str]) -> "StreamConfig":
        """Build from ``KEY=VALUE`` strings: ``family_size``, the world's ``min_objects``/``max_objects`` (integers)
        and its ``salience`` (``strict`` or ``tie-break``).

        Raises:
            ValueError: an unknown key, an integer setting that is not an integer, or an invalid world.
        """
        known = ("family_size",) + WORLD_SETTINGS
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"synth stream: unknown settings {unknown}; known: {list(known)}")
        values: Dict[str, Any] = {}
        for key, text in overrides.items():
            try:
                values[key] = text if key in TEXT_SETTINGS else int(text)
            except ValueError as error:
                raise ValueError(f"synth stream: {key}={text!r} is not an integer") from error
        world = {k: values.pop(k) for k in WORLD_SETTINGS if k in values}
        return cls(world=WorldConfig(**world), **values)


def change_salient(rng: random.Random, scene: Scene, world: WorldConfig) -> Optional[Scene]:
    """``scene`` with one attribute of its salient object changed, or None when the change would make another
    object the salient one (the short caption would then name a different object) or, in a strict world, would
    leave it no longer strictly the largest."""
    target = salient_object(scene, world)
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
    if salient_object(variant, world) != changed:
        return None
    if world.salience == "strict" and not is_strictly_salient(variant, world):
        return None
    return variant


def family(rng: random.Random, world: WorldConfig, size: int, attempts: int = 8) -> List[Scene]:
    """A random scene and ``size - 1`` variants, each one attribute of the salient object away from the last."""
    scenes = [sample_scene(rng, world)]
    while len(scenes) < size:
        variant = None
        for _ in range(attempts):
            variant = change_salient(rng, scenes[-1], world)
            if variant is not None:
                break
        scenes.append(variant if variant is not None else sample_scene(rng, world))
    return scenes


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
        for member, scene in enumerate(family(rng, self.config.world, self.config.family_size)):
            short = short_caption(scene, self.config.world)
            long = long_caption(scene, self.config.world, self.config.captions, rng)
            samples.append({"__key__": f"{epoch:04d}-{index:09d}-{member:02d}", "__url__": self.url, "scene": scene,
                            "txt": short, "json": {"long": long, "short": short}})
        return samples
