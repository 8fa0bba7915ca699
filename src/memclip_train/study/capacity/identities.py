"""Identities and their names: the facts of the capacity experiment (docs/capacity.md).

An identity is one object the teacher already sees, drawn alone: its background, colour, shape, orientation, fill,
size and grid cell, all from the synthetic world's vocabularies (76,950 combinations in the default world). Its renders
differ only in the nuisance, the background texture and its seed, so a model that tells identities apart must read
the object and the background colour, not the pixels of one render. Each identity gets a random name: a random unit
vector in the joint embedding space (an ideal text tower whose names are fixed and well separated), so nothing in the
picture predicts the name and K identities are K facts. The names are :func:`memclip.names_text.random_names`,
the vectors of the ``names`` text tower, so the end-to-end run through the trainer reads the same text side.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from memclip.errors import InputError

from ...synth.seeding import item_rng
from ...synth.world import POSITIONS, Scene, SceneObject, WorldConfig

Nuisance = Tuple[str, int]   # (texture, texture seed)


@dataclass(frozen=True)
class Identity:
    """One visible combination: a single object on a background."""

    background: str
    colour: str
    shape: str
    orientation: str
    fill: str
    size: str
    position: str

    def scene(self, nuisance: Nuisance) -> Scene:
        """The identity drawn with one nuisance (texture, texture seed)."""
        texture, texture_seed = nuisance
        obj = SceneObject(shape=self.shape, colour=self.colour, size=self.size, position=self.position,
                          orientation=self.orientation or None, fill=self.fill)
        return Scene(background=self.background, texture=texture, texture_seed=texture_seed, objects=(obj,))


def all_identities(world: WorldConfig) -> List[Identity]:
    """Every identity of ``world`` in vocabulary order (colours limited to those that contrast with the background)."""
    out = []
    for background in world.backgrounds:
        for colour in world.colours_on(background):
            for shape in world.shapes:
                orientations = world.orientations if shape in world.oriented_shapes else ("",)
                for orientation in orientations:
                    for fill in world.fills:
                        for size in world.sizes:
                            out.extend(Identity(background, colour, shape, orientation, fill, size, position)
                                       for position, _, _ in POSITIONS)
    return out


def identity_order(world: WorldConfig, seed: int) -> List[Identity]:
    """Every identity in a seeded random order: the K identities of an experiment are the first K, so a smaller K's
    identities are a subset of a larger K's (and share their renders)."""
    identities = all_identities(world)
    random.Random(f"memclip-capacity/identities/{seed}").shuffle(identities)
    return identities


def _distinct_key(nuisance: Nuisance) -> Tuple[str, int]:
    """What a nuisance draws: every plain render is the same image, a gradient has four directions."""
    texture, texture_seed = nuisance
    if texture == "plain":
        return texture, 0
    if texture == "gradient":
        return texture, texture_seed % 4
    return texture, texture_seed


def nuisances(world: WorldConfig, seed: int, index: int, count: int) -> List[Nuisance]:
    """``count`` nuisances of identity ``index`` that draw ``count`` different images (so a held-out render is never
    a training render pixel for pixel): textures uniform over the world's, seeds random, repeats redrawn.

    Raises:
        ValueError: the world's textures cannot make ``count`` different images.
    """
    if "speckled" not in world.textures and count > ("plain" in world.textures) + 4 * ("gradient" in world.textures):
        raise InputError(f"capacity: textures {list(world.textures)} cannot draw {count} different renders")
    rng = item_rng(seed, "capacity", index, "nuisance")
    out: List[Nuisance] = []
    seen = set()
    while len(out) < count:
        nuisance = (rng.choice(world.textures), rng.getrandbits(32))
        if _distinct_key(nuisance) not in seen:
            seen.add(_distinct_key(nuisance))
            out.append(nuisance)
    return out


def render_scenes(world: WorldConfig, identities: Sequence[Identity], renders: int, seed: int) -> List[Scene]:
    """The scenes of every render of every identity, identity-major: scene ``i * renders + r`` is render ``r`` of
    identity ``i`` (renders depend on the identity's index, not on K)."""
    return [identity.scene(nuisance) for index, identity in enumerate(identities)
            for nuisance in nuisances(world, seed, index, renders)]


def name_separation(names: torch.Tensor, sample: int = 4096) -> dict:
    """Pairwise cosine of (up to ``sample``) names: mean, std and the largest off-diagonal value."""
    names = names[:sample]
    cos = names @ names.T
    off = cos[~torch.eye(len(names), dtype=torch.bool)]
    return {"mean": float(off.mean()), "std": float(off.std()), "max": float(off.max()), "names": len(names)}
