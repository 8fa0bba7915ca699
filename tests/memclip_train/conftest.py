"""Fixtures for the training tests: a micro synthetic world (32 px) and helpers to run training in-process."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from memclip_train.data.shard_writer import ShardWriter
from memclip_train.synth import SynthConfig, generate_world
from memclip_train.synth.render import RenderConfig
from train_helpers import SRC


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory) -> Path:
    """96 training and 32 validation samples at 32 px, in shards of 48."""
    folder = tmp_path_factory.mktemp("micro") / "world"
    config = SynthConfig(seed=1, train=96, val=32, retrieval=0, segmentation=0, pairs_per_pattern=0,
                         samples_per_shard=48, render=RenderConfig(image_size=32, supersample=2))
    generate_world(config, folder, workers=1, progress=False)
    return folder


@pytest.fixture(scope="session")
def image_only_shards(tmp_path_factory) -> Path:
    """Two shards of 20 images each with no captions at all (distillation needs none)."""
    folder = tmp_path_factory.mktemp("images")
    with ShardWriter(folder, samples_per_shard=20) as writer:
        for index in range(40):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), ((index * 37) % 255, (index * 91) % 255, 128)).save(buffer, "JPEG")
            writer.write(f"{index:06d}", {"jpg": buffer.getvalue()})
    return folder





@pytest.fixture
def subprocess_environment(micro_configs) -> dict:
    """Environment for training subprocesses: this checkout's src first, one thread, the micro configs."""
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                MEMCLIP_MODEL_CONFIGS=str(micro_configs))
