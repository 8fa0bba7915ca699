"""Helpers shared by the synthetic-world tests (imported by name: tests/helpers is on pytest's python path)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict

from memclip_train.synth import SynthConfig


def tiny_config(seed: int = 0, **changes) -> SynthConfig:
    """~100 images in all: enough to cover every split, shard boundaries and every pair pattern."""
    settings = dict(seed=seed, train=40, val=8, retrieval=12, segmentation=8, pairs_per_pattern=2,
                    samples_per_shard=16)
    settings.update(changes)
    return SynthConfig(**settings)


def tree_digest(folder: Path) -> Dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
