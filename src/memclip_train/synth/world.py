"""The synthetic world's vocabularies (`WorldConfig`) and scenes (`SceneObject`, `Scene`, `sample_scene`).

A scene is a background (a named colour and a light texture) and 1-6 objects, each alone in one cell of a 3x3 grid,
so objects never overlap and "left of" / "above" are unambiguous. An object has a shape, a colour, a size, a
position (its cell), an orientation (only for shapes that point somewhere) and a fill. The *salient* object is the
one a short caption names: in a ``strict`` world (the default) it is always strictly the largest, so the image itself
shows which object the caption means; in a ``tie-break`` world (the generator before salience was strict) another
object may be as large, and a fixed rule picks among them. In a world with markings (``WorldConfig.markings.count``
> 0) the salient object of every scene is large and carries one named marking.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from memclip.errors import InputError

from .markings import MarkingConfig
from .shapes import DRAWABLE_SHAPES, FILL_NAMES, TEXTURE_NAMES
from .validation import check_int, check_number

RGB = Tuple[int, int, int]

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "ring", "arrow", "chevron")
ORIENTED_SHAPES = ("triangle", "arrow", "chevron")
ORIENTATIONS = ("up", "down", "left", "right")
COLOURS: Dict[str, RGB] = {
    "red": (220, 30, 35),
    "orange": (245, 130, 20),
    "yellow": (250, 220, 30),
    "green": (40, 170, 60),
    "cyan": (30, 200, 220),
    "blue": (30, 70, 210),
    "purple": (130, 45, 180),
    "pink": (245, 120, 185),
    "brown": (130, 80, 35),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUNDS: Dict[str, RGB] = {
    "grey": (128, 128, 128),
    "light grey": (200, 200, 200),
    "dark grey": (60, 60, 60),
    "beige": (225, 210, 175),
    "navy": (25, 35, 80),
}
TEXTURES = ("plain", "speckled", "gradient")
SIZES: Dict[str, float] = {"small": 0.5, "medium": 0.72, "large": 0.92}
FILLS = ("solid", "striped", "outline")
# Grid cells, row-major: (name, row, column). Row 0 is the top, column 0 the left.
POSITIONS: Tuple[Tuple[str, int, int], ...] = (
    ("top-left", 0, 0), ("top", 0, 1), ("top-right", 0, 2),
    ("left", 1, 0), ("middle", 1, 1), ("right", 1, 2),
    ("bottom-left", 2, 0), ("bottom", 2, 1), ("bottom-right", 2, 2),
)
GRID = 3
SALIENCE = ("strict", "tie-break")


def _unique_names(config_name: str, names: Sequence[str]) -> None:
    if not names and config_name != "oriented_shapes":
        raise InputError(f"WorldConfig.{config_name}: must not be empty")
    if len(set(names)) != len(names):
        raise InputError(f"WorldConfig.{config_name}={list(names)}: names must be unique")


def colour_distance(a: RGB, b: RGB) -> float:
    """Euclidean distance between two RGB colours (0..441)."""
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


@dataclass(frozen=True)
class WorldConfig:
    """The attribute vocabularies and scene statistics of the world (validated when built).

    Attributes:
        shapes: shape names; they are also the segmentation classes, in this order.
        oriented_shapes: the shapes that point somewhere (they get an orientation; others get None).
        orientations: orientation names; the first is the shape's drawn direction, the others turn it.
        colours: object colour name -> RGB.
        backgrounds: background colour name -> RGB.
        textures: background textures ("plain", "speckled", "gradient").
        sizes: size name -> object extent as a fraction of its grid cell, ascending.
        fills: fill names ("solid", "striped", "outline").
        min_objects, max_objects: objects per scene (uniform), at most 9 (one per cell).
        min_contrast: smallest RGB distance between an object's colour and the background's.
        markings: the named markings painted on salient objects (none by default).
        salience: ``strict`` (the salient object is strictly larger than every other object of its scene: a sampled
            scene shrinks the objects that tie with it by one size, or grows it when they all share the smallest
            size) or ``tie-break`` (sizes are left as drawn; ties go to the rule of `salient_object`).
    """

    shapes: Tuple[str, ...] = SHAPES
    oriented_shapes: Tuple[str, ...] = ORIENTED_SHAPES
    orientations: Tuple[str, ...] = ORIENTATIONS
    colours: Mapping[str, RGB] = field(default_factory=lambda: dict(COLOURS))
    backgrounds: Mapping[str, RGB] = field(default_factory=lambda: dict(BACKGROUNDS))
    textures: Tuple[str, ...] = TEXTURES
    sizes: Mapping[str, float] = field(default_factory=lambda: dict(SIZES))
    fills: Tuple[str, ...] = FILLS
    min_objects: int = 1
    max_objects: int = 6
    min_contrast: float = 90.0
    markings: MarkingConfig = field(default_factory=MarkingConfig)
    salience: str = "strict"

    def __post_init__(self) -> None:
        for name in ("shapes", "oriented_shapes", "orientations", "textures", "fills"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            _unique_names(name, getattr(self, name))
        object.__setattr__(self, "colours", {k: tuple(v) for k, v in self.colours.items()})
        object.__setattr__(self, "backgrounds", {k: tuple(v) for k, v in self.backgrounds.items()})
        object.__setattr__(self, "sizes", dict(self.sizes))
        unknown = sorted(set(self.shapes) - set(DRAWABLE_SHAPES))
        if unknown:
            raise InputError(f"WorldConfig.shapes: no drawing for {unknown}; known shapes: {list(DRAWABLE_SHAPES)}")
        stray = sorted(set(self.oriented_shapes) - set(self.shapes))
        if stray:
            raise InputError(f"WorldConfig.oriented_shapes: {stray} are not in shapes")
        if self.orientations != ORIENTATIONS[: len(self.orientations)]:
            raise InputError(f"WorldConfig.orientations={list(self.orientations)}: must be a prefix of "
                             f"{list(ORIENTATIONS)}")
        if self.oriented_shapes and len(self.orientations) < 2:
            raise InputError("WorldConfig.orientations: oriented shapes need at least two orientations")
        if sorted(set(self.textures) - set(TEXTURE_NAMES)):
            raise InputError(f"WorldConfig.textures={list(self.textures)}: known textures are {list(TEXTURE_NAMES)}")
        if sorted(set(self.fills) - set(FILL_NAMES)):
            raise InputError(f"WorldConfig.fills={list(self.fills)}: known fills are {list(FILL_NAMES)}")
        for table in ("colours", "backgrounds"):
            values = getattr(self, table)
            if not values:
                raise InputError(f"WorldConfig.{table}: must not be empty")
            for name, rgb in values.items():
                if len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
                    raise InputError(f"WorldConfig.{table}[{name!r}]={rgb!r}: must be three integers in 0..255")
        fractions = list(self.sizes.values())
        if not fractions or any(not 0.2 <= f <= 1.0 for f in fractions) or fractions != sorted(set(fractions)):
            raise InputError(f"WorldConfig.sizes={self.sizes}: fractions must be in [0.2, 1] and strictly ascending")
        check_int(self, "min_objects", 1, GRID * GRID)
        check_int(self, "max_objects", 1, GRID * GRID)
        check_number(self, "min_contrast", 0.0, 441.0)
        if self.salience not in SALIENCE:
            raise InputError(f"WorldConfig.salience={self.salience!r}: must be one of {list(SALIENCE)}")
        if self.salience == "strict" and len(self.sizes) < 2 and self.max_objects > 1:
            raise InputError("WorldConfig.salience='strict' needs at least two sizes when a scene can hold more than "
                             "one object; use salience='tie-break'")
        if self.min_objects > self.max_objects:
            raise InputError(f"WorldConfig: need 1 <= min_objects ({self.min_objects}) <= max_objects "
                             f"({self.max_objects}) <= {GRID * GRID}")
        for background in self.backgrounds:
            if len(self.colours_on(background)) < 2:
                raise InputError(f"WorldConfig: fewer than two colours reach min_contrast={self.min_contrast} "
                                 f"on the {background} background")

    def colours_on(self, background: str) -> Tuple[str, ...]:
        """The object colours that contrast enough with ``background``, in vocabulary order."""
        bg = self.backgrounds[background]
        return tuple(n for n, rgb in self.colours.items() if colour_distance(rgb, bg) >= self.min_contrast)

    def vocabularies(self) -> Dict[str, Any]:
        """Every vocabulary as plain JSON-ready data (for world.json); markings only when the world has them, and
        ``salience`` only when it is strict, so a tie-break world without markings records exactly what the
        generator wrote before either existed (a world.json without ``salience`` is a tie-break world)."""
        data = dataclasses.asdict(self)
        del data["markings"]
        if self.salience != "strict":
            del data["salience"]
        if self.markings.enabled:
            data["markings"] = self.markings.vocabulary()
        data["colours"] = {k: list(v) for k, v in self.colours.items()}
        data["backgrounds"] = {k: list(v) for k, v in self.backgrounds.items()}
        data["positions"] = [{"name": n, "row": r, "column": c} for n, r, c in POSITIONS]
        return data


@dataclass(frozen=True)
class SceneObject:
    """One object; ``position`` is a grid cell name, ``orientation`` is None for shapes that point nowhere, and
    ``marking`` the name of the marking painted on it (None: unmarked)."""

    shape: str
    colour: str
    size: str
    position: str
    orientation: Optional[str]
    fill: str
    marking: Optional[str] = None

    @property
    def cell(self) -> Tuple[int, int]:
        """(row, column) of the object's grid cell."""
        return CELL_OF[self.position]

    def replace(self, **changes: Any) -> "SceneObject":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """The attributes as a dict; ``marking`` only when the object carries one."""
        data = dataclasses.asdict(self)
        if self.marking is None:
            del data["marking"]
        return data


@dataclass(frozen=True)
class Scene:
    """A background and its objects (in reading order of their cells).

    ``texture_seed`` drives the background texture, so two scenes that share it (a blind pair) have the same
    background pixel for pixel.
    """

    background: str
    texture: str
    texture_seed: int
    objects: Tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.objects, key=lambda o: POSITION_INDEX[o.position]))
        object.__setattr__(self, "objects", ordered)
        cells = [o.position for o in ordered]
        if len(set(cells)) != len(cells):
            raise InputError(f"Scene: two objects share a cell ({cells})")

    def free_positions(self) -> Tuple[str, ...]:
        taken = {o.position for o in self.objects}
        return tuple(name for name, _, _ in POSITIONS if name not in taken)

    def with_objects(self, objects: Sequence[SceneObject]) -> "Scene":
        return dataclasses.replace(self, objects=tuple(objects))


CELL_OF: Dict[str, Tuple[int, int]] = {name: (row, column) for name, row, column in POSITIONS}
POSITION_INDEX: Dict[str, int] = {name: i for i, (name, _, _) in enumerate(POSITIONS)}


def sample_object(rng: random.Random, world: WorldConfig, background: str, position: str,
                  shape: Optional[str] = None) -> SceneObject:
    """A random object at ``position`` (with ``shape`` if given) whose colour contrasts with ``background``."""
    shape = shape if shape is not None else rng.choice(world.shapes)
    orientation = rng.choice(world.orientations) if shape in world.oriented_shapes else None
    return SceneObject(
        shape=shape,
        colour=rng.choice(world.colours_on(background)),
        size=rng.choice(tuple(world.sizes)),
        position=position,
        orientation=orientation,
        fill=rng.choice(world.fills),
    )


def sample_scene(rng: random.Random, world: WorldConfig, num_objects: Optional[int] = None) -> Scene:
    """A random scene: background, texture, and ``num_objects`` objects (uniform in the world's range if None)."""
    if num_objects is None:
        num_objects = rng.randint(world.min_objects, world.max_objects)
    if not 1 <= num_objects <= GRID * GRID:
        raise InputError(f"num_objects={num_objects}: must be in 1..{GRID * GRID}")
    background = rng.choice(tuple(world.backgrounds))
    texture = rng.choice(world.textures)
    texture_seed = rng.getrandbits(32)
    positions = rng.sample([name for name, _, _ in POSITIONS], num_objects)
    objects = [sample_object(rng, world, background, position) for position in positions]
    scene = Scene(background=background, texture=texture, texture_seed=texture_seed, objects=tuple(objects))
    if world.salience == "strict":
        scene = make_salience_strict(scene, world)
    return mark_salient(rng, scene, world) if world.markings.enabled else scene


def is_strictly_salient(scene: Scene, world: WorldConfig) -> bool:
    """True when the salient object is larger than every other object of ``scene`` (or alone in it)."""
    target = salient_object(scene, world)
    return all(o.size != target.size for o in scene.objects if o is not target)


def make_salience_strict(scene: Scene, world: WorldConfig) -> Scene:
    """``scene`` with its salient object strictly the largest: every other object of the salient object's size
    shrinks by one size; when that size is the smallest, the salient object grows by one size instead. The salient
    object stays the same object, and nothing else changes."""
    if is_strictly_salient(scene, world):
        return scene
    sizes = tuple(world.sizes)
    target = salient_object(scene, world)
    rank = sizes.index(target.size)
    if rank == 0:
        objects = [o.replace(size=sizes[1]) if o is target else o for o in scene.objects]
    else:
        objects = [o.replace(size=sizes[rank - 1]) if o is not target and o.size == target.size else o
                   for o in scene.objects]
    return scene.with_objects(objects)


def mark_salient(rng: random.Random, scene: Scene, world: WorldConfig, marking: Optional[str] = None) -> Scene:
    """``scene`` with its salient object made large and carrying ``marking`` (a random one of the world's if None).

    Growing the salient object keeps it the largest. In a strict world the other large objects then shrink; in a
    tie-break world another large object may win the tie-break. Either way the marking goes to whichever object is
    salient in the end, so a short caption always names the marked object.
    """
    largest = tuple(world.sizes)[-1]
    target = salient_object(scene, world)
    scene = scene.with_objects([o.replace(size=largest) if o is target else o for o in scene.objects])
    if world.salience == "strict":
        scene = make_salience_strict(scene, world)
    target = salient_object(scene, world)
    if marking is None:
        marking = world.markings.names()[rng.randrange(world.markings.count)]
    return scene.with_objects([o.replace(marking=marking if o is target else None) for o in scene.objects])


def marked_object(scene: Scene) -> Optional[SceneObject]:
    """The object that carries a marking, or None in a world without markings."""
    return next((o for o in scene.objects if o.marking is not None), None)


def _salience_key(world: WorldConfig) -> Callable[[Tuple[int, SceneObject]], Tuple[Any, ...]]:
    """Sort key of ``(index, object)``, most salient first: the largest; ties go to solid over striped over outline,
    then to the cell nearest the middle, then to reading order."""
    size_rank = {name: i for i, name in enumerate(world.sizes)}
    fill_rank = {"solid": 0, "striped": 1, "outline": 2}

    def key(item: Tuple[int, SceneObject]) -> Tuple[Any, ...]:
        index, obj = item
        row, column = obj.cell
        return (-size_rank[obj.size], fill_rank.get(obj.fill, 3), abs(row - 1) + abs(column - 1), index)

    return key


def salience_order(scene: Scene, world: WorldConfig) -> List[SceneObject]:
    """The objects of ``scene``, most salient first (see :func:`_salience_key`)."""
    return [obj for _, obj in sorted(enumerate(scene.objects), key=_salience_key(world))]


def salient_object(scene: Scene, world: WorldConfig) -> SceneObject:
    """The object a short caption names: the first of :func:`salience_order`, found without sorting (it is asked
    for once or more per generated sample)."""
    return min(enumerate(scene.objects), key=_salience_key(world))[1]
