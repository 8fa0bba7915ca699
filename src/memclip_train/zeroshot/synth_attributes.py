"""The synthetic world's zero-shot datasets: ``synth-shapes``, ``synth-colours`` and ``synth-sizes``.

Each classifies the most salient object (the one a short caption names) of every retrieval image. A class's prompts
are the short captions that state it, over every value of the other attributes (size, fill, colour, shape and
background; 495 prompts per shape, for example), so the classifier reads exactly like the captions the model was
trained on and knows nothing about the image but the attribute asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..dataset_files import LayoutError
from .synth_scenes import SCENES_LAYOUT, load_scenes, prompt_grid
from .dataset import ZeroShotSet

ATTRIBUTE_OF = {"synth-shapes": "shape", "synth-colours": "colour", "synth-sizes": "size"}


def load_synth_attribute(name: str, root: Path) -> ZeroShotSet:
    """The salient objects' ``ATTRIBUTE_OF[name]`` over the world's retrieval images (``root`` = the world)."""
    attribute = ATTRIBUTE_OF[name]
    scenes = load_scenes(root)
    images = [root / "retrieval" / "image" / f"{scene['index']}.jpg" for scene in scenes.scenes]
    missing = [path for path in images if not path.is_file()]
    if missing:
        raise LayoutError(name, missing[0], SCENES_LAYOUT, f"{len(missing)} retrieval images are missing, e.g.")
    classes = scenes.values(attribute)
    unknown = [i for i in range(len(images)) if scenes.salient(i)[attribute] not in classes]
    if unknown:
        raise LayoutError(name, root / "retrieval" / "scenes.jsonl", SCENES_LAYOUT,
                          f"image {unknown[0]}'s salient {attribute} {scenes.salient(unknown[0])[attribute]!r} is not "
                          f"in world.json's vocabulary {classes} ({len(unknown)} images in all), in")
    labels = [classes.index(scenes.salient(i)[attribute]) for i in range(len(images))]
    prompts, stated = prompt_grid(scenes)
    class_prompts = [[p for p, s in zip(prompts, stated) if s[attribute] == value] for value in classes]
    return ZeroShotSet(name, images, labels, classes, class_prompts=class_prompts,
                       prompts_name=f"short-caption prompts over the other attributes ({len(class_prompts[0])} per "
                                    "class)",
                       meta={"split": "retrieval", "object": "most salient (the one the short caption names)",
                             "attribute": attribute})


def loader(name: str):
    def load(root: Path, variant: Optional[str]) -> ZeroShotSet:
        return load_synth_attribute(name, root)
    return load
