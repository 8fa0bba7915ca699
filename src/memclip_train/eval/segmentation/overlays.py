"""Overlay pictures: image | ground truth | prediction, with a fixed colour per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IGNORE_COLOUR = (255, 255, 255)


def palette(num_classes: int) -> np.ndarray:
    """A deterministic, well-spread colour per class (num_classes, 3) uint8."""
    rng = np.random.default_rng(7)
    colours = rng.integers(40, 240, size=(num_classes, 3))
    return colours.astype(np.uint8)


def colourise(labels: np.ndarray, colours: np.ndarray) -> Image.Image:
    rgb = np.zeros(labels.shape + (3,), dtype=np.uint8)
    known = labels != 255
    rgb[known] = colours[np.clip(labels[known], 0, len(colours) - 1)]
    rgb[~known] = IGNORE_COLOUR
    return Image.fromarray(rgb)


def save_overlay(path: Path, image: Image.Image, target: np.ndarray, prediction: np.ndarray, num_classes: int,
                 title: str = "") -> None:
    """Write a PNG with the image, the ground truth and the prediction side by side (ignored pixels white)."""
    colours = palette(num_classes)
    size = image.size
    panels = [image.convert("RGB"), colourise(target, colours).resize(size, Image.NEAREST),
              colourise(prediction, colours).resize(size, Image.NEAREST)]
    scale = max(1, 192 // max(size))
    panels = [p.resize((size[0] * scale, size[1] * scale), Image.NEAREST) for p in panels]
    width, height = panels[0].size
    canvas = Image.new("RGB", (3 * width + 20, height + 18), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (panel, label) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
        canvas.paste(panel, (index * (width + 10), 18))
        draw.text((index * (width + 10) + 2, 2), f"{label} {title if index == 2 else ''}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
