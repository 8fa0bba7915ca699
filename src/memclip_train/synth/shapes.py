"""Shape geometry: silhouettes of every drawable shape as boolean pixel arrays.

Each shape is defined in unit coordinates (x right, y down), pointing up when it has an orientation, and is scaled
so that its larger side spans the requested extent, centred in the canvas. Orientations turn it clockwise in quarter
turns (up, right, down, left).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from memclip.errors import InputError

Point = Tuple[float, float]

TEXTURE_NAMES = ("plain", "speckled", "gradient")
FILL_NAMES = ("solid", "striped", "outline")
RING_HOLE = 0.5           # radius of the ring's hole relative to its outer radius
QUARTER_TURNS = {"up": 0, "right": 1, "down": 2, "left": 3}


def _star(points: int = 5, inner: float = 0.42) -> List[Point]:
    corners = []
    for i in range(2 * points):
        radius = 1.0 if i % 2 == 0 else inner
        angle = math.pi * i / points
        corners.append((radius * math.sin(angle), -radius * math.cos(angle)))
    return corners


def _circle(radius: float = 1.0, steps: int = 72) -> List[Point]:
    return [(radius * math.cos(2 * math.pi * i / steps), radius * math.sin(2 * math.pi * i / steps))
            for i in range(steps)]


def _heart(steps: int = 48) -> List[Point]:
    corners = []
    for i in range(steps):
        t = 2 * math.pi * i / steps
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        corners.append((x, y))
    return corners


def _normalised(points: List[Point]) -> List[Point]:
    """Centre the polygon's bounding box on the origin and scale its larger side to 2 (from -1 to 1)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half = max(max(xs) - min(xs), max(ys) - min(ys)) / 2
    return [((x - cx) / half, (y - cy) / half) for x, y in points]


POLYGONS: Dict[str, List[Point]] = {
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "diamond": [(0, -1), (0.68, 0), (0, 1), (-0.68, 0)],
    "heart": _heart(),
    "arrow": [(0, -1), (0.8, -0.1), (0.3, -0.1), (0.3, 1), (-0.3, 1), (-0.3, -0.1), (-0.8, -0.1)],
    "chevron": [(-1, 0.3), (0, -0.7), (1, 0.3), (1, 0.9), (0, -0.1), (-1, 0.9)],
}
# Each shape: polygons drawn in order with their fill (255 = inside, 0 = cut out).
POLYGON_LAYERS: Dict[str, Tuple[Tuple[List[Point], int], ...]] = {
    **{name: ((_normalised(points), 255),) for name, points in POLYGONS.items()},
    "circle": ((_circle(), 255),),
    "ring": ((_circle(), 255), (_circle(RING_HOLE), 0)),
}
DRAWABLE_SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "ring", "arrow", "chevron")


def _turn(point: Point, quarter_turns: int) -> Point:
    x, y = point
    for _ in range(quarter_turns % 4):
        x, y = -y, x
    return x, y


def silhouette(shape: str, orientation: Optional[str], canvas: int, extent: float) -> np.ndarray:
    """The shape's filled silhouette: (canvas, canvas) bool, the shape centred, its larger side ``extent`` px."""
    if shape not in POLYGON_LAYERS:
        raise InputError(f"unknown shape {shape!r}; known shapes: {list(DRAWABLE_SHAPES)}")
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    # Everything is a polygon (circles have 72 corners): PIL fills polygons by sampling pixel centres, so
    # with the centre at canvas / 2 the raster stays symmetric under flips and quarter turns.
    centre, half = canvas / 2, extent / 2
    turns = QUARTER_TURNS[orientation] if orientation is not None else 0
    for corners, fill in POLYGON_LAYERS[shape]:
        draw.polygon([(centre + x * half, centre + y * half) for x, y in (_turn(p, turns) for p in corners)],
                     fill=fill)
    return np.asarray(image) > 127


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion by a 3x3 cross ``steps`` times: (H, W) bool -> (H, W) bool (outside counts as empty)."""
    result = mask.copy()
    for _ in range(steps):
        shrunk = result.copy()
        shrunk[1:, :] &= result[:-1, :]
        shrunk[:-1, :] &= result[1:, :]
        shrunk[:, 1:] &= result[:, :-1]
        shrunk[:, :-1] &= result[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        result = shrunk
    return result


def stripes(height: int, width: int, band: int) -> np.ndarray:
    """Diagonal stripes: (height, width) bool, alternating bands ``band`` px wide."""
    return (np.add.outer(np.arange(height), np.arange(width)) // max(band, 1)) % 2 == 0
