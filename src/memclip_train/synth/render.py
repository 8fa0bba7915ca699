"""`render_scene`: a scene as an RGB image plus an exact instance mask, drawn with supersampled anti-aliasing.

Each object is drawn ``supersample`` times larger, alone in its grid cell, and box-filtered down. A pixel's colour is
the background blended with the object colour by the painted coverage; a pixel belongs to an object when at least
half of it lies inside the object's silhouette. Outlined objects own only their stroke: the hollow inside is marked
``IGNORE`` (255), as VOC marks ambiguous pixels. A marking (see ``markings.py``) is painted over its object's centre
and changes no mask: its pixels keep the label they had. Per-object coverages are cached, so a scene costs a few array
ops.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from memclip.errors import InputError

from .markings import INK, PAPER, MarkingConfig, badge_coverage
from .shapes import erode, silhouette, stripes
from .validation import check_int, check_number
from .world import GRID, Scene, WorldConfig

IGNORE = 255
BBox = Tuple[int, int, int, int]


@dataclass(frozen=True)
class RenderConfig:
    """How scenes become pixels (validated when built).

    Attributes:
        image_size: side of the square image in pixels (at least 24: 8 px per grid cell).
        supersample: drawing scale for anti-aliasing (1 = aliased, 4 = 16 sub-pixels per pixel).
        stripe_width: width of a stripe (and of the gap between stripes) of striped objects, in pixels.
        outline_width: stroke width of outlined objects as a fraction of the object's extent.
        min_outline_px: the thinnest stroke in pixels, so small outlines stay visible.
        speckle: amplitude of the "speckled" background's per-pixel brightness noise (0..255 scale).
        gradient: brightness difference across the "gradient" background (0..255 scale).
    """

    image_size: int = 64
    supersample: int = 4
    stripe_width: float = 1.5
    outline_width: float = 0.14
    min_outline_px: float = 1.25
    speckle: int = 10
    gradient: int = 30

    def __post_init__(self) -> None:
        check_int(self, "image_size", 8 * GRID)
        check_int(self, "supersample", 1, 8)
        check_number(self, "stripe_width", 0.5, 16)
        check_number(self, "min_outline_px", 0.5, 16)
        check_number(self, "outline_width", 0.02, 0.4)
        check_int(self, "speckle", 0, 128)
        check_int(self, "gradient", 0, 128)


@dataclass(frozen=True)
class Rendering:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        instances: (H, W) uint8; 0 = background, i + 1 = the scene's object i, 255 = ignore (inside an outline).
        bboxes: one (x0, y0, x1, y1) box per object, in pixels, x1 and y1 exclusive: the pixels it owns or
            (for outlines) encloses.
    """

    image: np.ndarray
    instances: np.ndarray
    bboxes: Tuple[BBox, ...]

    def class_mask(self, scene: Scene, world: WorldConfig) -> np.ndarray:
        """(H, W) uint8 class labels: 0 = background, k + 1 = ``world.shapes[k]``, 255 = ignore."""
        table = np.zeros(256, dtype=np.uint8)
        table[IGNORE] = IGNORE
        for i, obj in enumerate(scene.objects):
            table[i + 1] = world.shapes.index(obj.shape) + 1
        return table[self.instances]


def cell_edges(image_size: int) -> Tuple[int, ...]:
    """Pixel edges of the grid cells along one axis: (GRID + 1,) ints from 0 to ``image_size``."""
    return tuple(round(i * image_size / GRID) for i in range(GRID + 1))


@lru_cache(maxsize=2048)
def object_coverage(shape: str, orientation: Optional[str], fill: str, side: int, fraction: float,
                    config: RenderConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage of one object centred in a ``side`` x ``side`` pixel square, its larger side ``fraction * side``.

    Returns:
        (silhouette, painted): two (side, side) float32 arrays in [0, 1]: the share of each pixel inside the
        shape, and the share painted in the object's colour (the silhouette, its stripes or its stroke).
        Cached and read-only.
    """
    scale = config.supersample
    canvas = side * scale
    extent = fraction * canvas
    inside = silhouette(shape, orientation, canvas, extent)
    if fill == "solid":
        painted = inside
    elif fill == "striped":
        band = max(1, round(config.stripe_width * scale))
        painted = inside & stripes(canvas, canvas, band)
    elif fill == "outline":
        steps = max(1, round(max(config.min_outline_px * scale, config.outline_width * extent)))
        painted = inside & ~erode(inside, steps)
    else:
        raise InputError(f"unknown fill {fill!r}")
    result = []
    for array in (inside, painted):
        pooled = array.reshape(side, scale, side, scale).mean(axis=(1, 3), dtype=np.float32)
        pooled.flags.writeable = False
        result.append(pooled)
    return result[0], result[1]


def background(scene: Scene, world: WorldConfig, config: RenderConfig) -> np.ndarray:
    """The scene's background: (H, W, 3) float32 on the 0..255 scale, its texture driven by ``texture_seed``."""
    size = config.image_size
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = np.asarray(world.backgrounds[scene.background], dtype=np.float32)
    if scene.texture == "speckled" and config.speckle:
        rng = np.random.default_rng(scene.texture_seed)
        image += rng.integers(-config.speckle, config.speckle + 1, size=(size, size, 1)).astype(np.float32)
    elif scene.texture == "gradient" and config.gradient:
        ramp = np.linspace(config.gradient / 2, -config.gradient / 2, size, dtype=np.float32)
        direction = scene.texture_seed % 4   # lighter towards the top, right, bottom or left
        ramp = ramp if direction in (0, 3) else ramp[::-1]
        image += ramp[:, None, None] if direction in (0, 2) else ramp[None, :, None]
    elif scene.texture not in ("plain", "speckled", "gradient"):
        raise InputError(f"unknown texture {scene.texture!r}")
    return np.clip(image, 0, 255, out=image)


def paint_marking(region: np.ndarray, name: str, markings: MarkingConfig, config: RenderConfig) -> None:
    """Paint the badge of the marking called ``name`` over the centre of ``region`` ((side, side, 3) float32, in
    place)."""
    glyph = markings.glyphs()[markings.index(name)]
    ink, paper = badge_coverage(glyph.astype(np.uint8).tobytes(), markings.grid, region.shape[0], markings.badge,
                                config.supersample)
    region *= (1.0 - ink - paper)[..., None]
    region += ink[..., None] * np.asarray(INK, dtype=np.float32) + paper[..., None] * np.asarray(PAPER, np.float32)


def render_scene(scene: Scene, world: WorldConfig, config: RenderConfig) -> Rendering:
    """Draw ``scene``: every object centred in its own grid cell, sized by its size's fraction of the cell."""
    image = background(scene, world, config)
    instances = np.zeros((config.image_size, config.image_size), dtype=np.uint8)
    edges = cell_edges(config.image_size)
    bboxes = []
    for index, obj in enumerate(scene.objects):
        row, column = obj.cell
        x0, x1, y0, y1 = edges[column], edges[column + 1], edges[row], edges[row + 1]
        side = min(x1 - x0, y1 - y0)
        left, top = x0 + (x1 - x0 - side) // 2, y0 + (y1 - y0 - side) // 2
        inside, painted = object_coverage(obj.shape, obj.orientation, obj.fill, side, world.sizes[obj.size], config)
        colour = np.asarray(world.colours[obj.colour], dtype=np.float32)
        region = image[top:top + side, left:left + side]
        alpha = painted[..., None]
        region *= 1.0 - alpha
        region += alpha * colour
        if obj.marking is not None:
            paint_marking(region, obj.marking, world.markings, config)
        owned = inside >= 0.5
        labels = instances[top:top + side, left:left + side]
        if obj.fill == "outline":
            stroke = painted >= 0.5
            labels[owned & stroke] = index + 1
            labels[owned & ~stroke] = IGNORE
        else:
            labels[owned] = index + 1
        rows, columns = np.nonzero(owned)
        bboxes.append((left + int(columns.min()), top + int(rows.min()),
                       left + int(columns.max()) + 1, top + int(rows.max()) + 1))
    pixels = np.rint(image).astype(np.uint8)
    return Rendering(image=pixels, instances=instances, bboxes=tuple(bboxes))
