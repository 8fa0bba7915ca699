"""Items of each split, as pure functions of (config, split, index): what a worker process computes.

An item is a plain dict of bytes and strings, ready for the split's writer (see ``writers.py``):
    train/val:     {"key", "jpg", "txt", "json"}         one webdataset sample
    retrieval:     {"index", "jpg", "long", "short", "scene"}  "short" lists the paraphrases, the short caption first
    segmentation:  {"id", "jpg", "png"}                   image and palette class mask
    pairs:         {"id", "pattern", "differs", "a", "b"} each side {"jpg", "caption", "short", "scene"}

In a world with marking families (``MarkingConfig.family`` > 1), train and val samples come in runs of that many: one
scene, one caption sentence order, a different marking for each member.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .captions import long_caption, paraphrases, short_caption
from .config import SynthConfig
from .encoding import encode_jpeg, encode_palette_png
from .pairs import make_pair
from .render import Rendering, render_scene
from .seeding import item_rng
from .world import Scene, WorldConfig, mark_salient, salient_object, sample_scene

Item = Dict[str, Any]
FAMILY_SPLITS = ("train", "val")


def scene_record(scene: Scene, rendering: Rendering) -> Dict[str, Any]:
    """The scene as JSON-ready data: background, texture, and objects with their pixel boxes."""
    objects = [dict(obj.to_dict(), bbox=list(box)) for obj, box in zip(scene.objects, rendering.bboxes)]
    return {"background": scene.background, "texture": scene.texture, "objects": objects}


def annotated_scene_record(scene: Scene, rendering: Rendering, world: WorldConfig) -> Dict[str, Any]:
    """:func:`scene_record` plus ``salient``, the index of the object the short caption names."""
    return dict(scene_record(scene, rendering), salient=scene.objects.index(salient_object(scene, world)))


def scene_index(config: SynthConfig, split: str, index: int) -> int:
    """The index whose randomness item ``index`` draws its scene and captions from: its family's, in the splits
    that have marking families, else its own."""
    family = config.world.markings.family
    return index // family if split in FAMILY_SPLITS else index


def scene_for(config: SynthConfig, split: str, index: int) -> Scene:
    """The scene of item ``index`` of a scene split (train, val, retrieval, segmentation)."""
    source = scene_index(config, split, index)
    scene = sample_scene(item_rng(config.seed, split, source, "scene"), config.world)
    markings = config.world.markings
    if markings.family == 1 or split not in FAMILY_SPLITS:
        return scene
    rng = item_rng(config.seed, split, source, "family")
    chosen = rng.sample(range(markings.count), markings.family)[index % markings.family]
    return mark_salient(rng, scene, config.world, markings.names()[chosen])


def shard_item(config: SynthConfig, split: str, index: int) -> Item:
    scene = scene_for(config, split, index)
    rendering = render_scene(scene, config.world, config.render)
    short = short_caption(scene, config.world)
    caption_rng = item_rng(config.seed, split, scene_index(config, split, index), "caption")
    long = long_caption(scene, config.world, config.captions, caption_rng)
    record = scene_record(scene, rendering)
    return {
        "key": f"{index:09d}",
        "jpg": encode_jpeg(rendering.image, config.jpeg_quality),
        "txt": short,
        "json": {"long": long, "short": short, **record},
    }


def retrieval_item(config: SynthConfig, split: str, index: int) -> Item:
    scene = scene_for(config, split, index)
    rendering = render_scene(scene, config.world, config.render)
    caption_rng = item_rng(config.seed, split, index, "caption")
    return {
        "index": index,
        "jpg": encode_jpeg(rendering.image, config.jpeg_quality),
        "long": long_caption(scene, config.world, config.captions, caption_rng),
        "short": paraphrases(scene, config.world, config.captions, caption_rng),
        "scene": annotated_scene_record(scene, rendering, config.world),
    }


def segmentation_item(config: SynthConfig, split: str, index: int) -> Item:
    scene = scene_for(config, split, index)
    rendering = render_scene(scene, config.world, config.render)
    return {
        "id": f"{index:06d}",
        "jpg": encode_jpeg(rendering.image, config.jpeg_quality),
        "png": encode_palette_png(rendering.class_mask(scene, config.world)),
    }


def pair_item(config: SynthConfig, split: str, index: int) -> Item:
    """Pair ``index`` has pattern ``patterns[index % len(patterns)]``, so any prefix covers every pattern."""
    patterns = config.patterns
    pair = make_pair(item_rng(config.seed, split, index, "scene"), config.world, patterns[index % len(patterns)])
    item: Item = {"id": f"{index:06d}", "pattern": pair.pattern, "differs": pair.differs}
    for side, scene in (("a", pair.a), ("b", pair.b)):
        rendering = render_scene(scene, config.world, config.render)
        # Both sides draw their sentences from the same stream, so their long captions vary alike.
        caption_rng = item_rng(config.seed, split, index, "caption")
        item[side] = {
            "jpg": encode_jpeg(rendering.image, config.jpeg_quality),
            "caption": long_caption(scene, config.world, config.captions, caption_rng),
            "short": short_caption(scene, config.world),
            "scene": scene_record(scene, rendering),
        }
    return item


ITEM_MAKERS = {
    "train": shard_item,
    "val": shard_item,
    "retrieval": retrieval_item,
    "segmentation": segmentation_item,
    "pairs": pair_item,
}


def make_items(task: Tuple[SynthConfig, str, int, int]) -> List[Item]:
    """Items ``start..stop-1`` of a split: the unit of work sent to a worker process."""
    config, split, start, stop = task
    maker = ITEM_MAKERS[split]
    return [maker(config, split, index) for index in range(start, stop)]
