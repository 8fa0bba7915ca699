"""The synthetic world a pipeline generates as its first stage (``python -m memclip_train.synth``): the demo's sizes,
the stage that writes a world, and the shard spec of its training split. The demo and the sweep share them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

from .stages import Stage

WorldSizes = Dict[str, Union[int, str]]

DEMO_WORLD: WorldSizes = {"train": 4000, "val": 200, "retrieval": 1000, "segmentation": 100, "pairs-per-pattern": 30,
                          "long-order": "salience"}
"""The demo's world: sizes, and long captions in salience order so that the thesis's 77 tokens read the main
objects (arguments of ``python -m memclip_train.synth``)."""
QUICK_WORLD: WorldSizes = {"train": 512, "val": 64, "retrieval": 64, "segmentation": 8, "pairs-per-pattern": 4,
                           "long-order": "salience"}
"""The same world at a toy size (``--quick``)."""


def world_stage(name: str, folder: Path, seed: int, sizes: WorldSizes, progress: bool = True) -> Stage:
    """The stage that writes a world of ``sizes`` with ``seed`` into ``folder``."""
    args = ["--out", str(folder), "--seed", str(seed), "--workers", "2", "--overwrite"]
    for key, value in sizes.items():
        args += [f"--{key}", str(value)]
    if not progress:
        args.append("--no-progress")
    return Stage(name, "memclip_train.synth", args, folder / "world.json", [folder])


def train_spec(world: Path, planned_train: int) -> str:
    """Brace spec of a world's training shards: the shards on disk, or the ones a world of ``planned_train`` images
    will have (1,000 per shard)."""
    sizes = world / "train" / "sizes.json"
    shards = len(json.loads(sizes.read_text())) if sizes.exists() else -(-planned_train // 1000)
    return str(world / "train" / ("{000000..%06d}.tar" % (max(1, shards) - 1)))


def val_shard(world: Path) -> str:
    """The world's validation shard."""
    return str(world / "val" / "000000.tar")

