"""`SynthConfig`: everything that determines a generated world (validated when built; recorded in world.json)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict

from .captions import CaptionConfig
from .pairs import available_patterns
from .render import RenderConfig
from .validation import check_int
from .world import WorldConfig

FORMAT_VERSION = 2  # 2: retrieval/scenes.jsonl
SPLITS = ("train", "val", "retrieval", "segmentation", "pairs")


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings. The output depends on these and on nothing else (not on the number of workers).

    Attributes:
        seed: the world's seed; each image's randomness derives from (seed, split, index).
        train, val: samples in the webdataset splits.
        retrieval: held-out images with long captions (Urban-1k layout) and short paraphrases (COCO json).
        segmentation: images with VOC-style class masks.
        pairs_per_pattern: blind pairs per pattern (colour, count, position, orientation, size, presence, fill).
        samples_per_shard: samples per webdataset shard.
        jpeg_quality: JPEG quality of every image (4:4:4, no chroma subsampling).
        world, render, captions: the vocabularies, the drawing and the caption settings.
    """

    seed: int = 0
    train: int = 2000
    val: int = 200
    retrieval: int = 1000
    segmentation: int = 500
    pairs_per_pattern: int = 50
    samples_per_shard: int = 1000
    jpeg_quality: int = 95
    world: WorldConfig = field(default_factory=WorldConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)

    def __post_init__(self) -> None:
        for name in ("seed", "train", "val", "retrieval", "segmentation", "pairs_per_pattern"):
            check_int(self, name, 0)
        check_int(self, "samples_per_shard", 1)
        check_int(self, "jpeg_quality", 1, 100)

    @property
    def patterns(self):
        """The blind-pair patterns this world produces, in order."""
        return available_patterns(self.world)

    def split_size(self, split: str) -> int:
        """Items in ``split`` (pairs for the pair split)."""
        if split == "pairs":
            return self.pairs_per_pattern * len(self.patterns)
        return getattr(self, split)

    def arguments(self) -> Dict[str, Any]:
        """The settings as JSON-ready data, without the vocabularies (see ``WorldConfig.vocabularies``).

        The captions' ``long_order`` is recorded only when it is not ``"shuffled"``, so a world with shuffled long
        captions records exactly what the generator wrote before the option existed."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "world"}
        data["render"] = dataclasses.asdict(self.render)
        data["captions"] = dataclasses.asdict(self.captions)
        if self.captions.long_order == "shuffled":
            del data["captions"]["long_order"]
        return data
