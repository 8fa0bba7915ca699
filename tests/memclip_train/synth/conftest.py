"""Fixtures for the synthetic-world tests: one tiny world generated per session."""
from __future__ import annotations

from pathlib import Path

import pytest
from synth_helpers import tiny_config

from memclip_train.synth import generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A world generated once, in this process (workers=1), with seed 0."""
    folder = tmp_path_factory.mktemp("world") / "w"
    generate_world(tiny_config(), folder, workers=1, progress=False)
    return folder
