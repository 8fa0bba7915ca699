"""Image and mask files written in benchmarks' real layouts, for the evaluation tests (imported by name: tests/helpers
is on pytest's python path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (240, 220, 30), (150, 40, 200), (30, 200, 210)]


def image(path: Path, index: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[index % len(COLOURS)]).save(path)
    return path


def write_voc(root: Path, names, masks) -> Path:
    """A VOC-style split: JPEGImages, SegmentationClass (palette PNG), ImageSets/Segmentation/val.txt."""
    for name, mask in zip(names, masks):
        image(root / "JPEGImages" / f"{name}.jpg", len(name), size=mask.shape[::-1])
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        png = Image.fromarray(mask.astype(np.uint8), mode="P")
        png.putpalette([i % 256 for i in range(768)])
        png.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root
