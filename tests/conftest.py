"""Shared fixtures: micro model configs written to a temporary folder and registered, as open_clip's tests do."""
from __future__ import annotations

import os

# The kernel tests (tests/memory_layers/ops) run the Triton kernels in the Triton interpreter. triton.jit picks interpreter or
# compiler when a function is decorated, triton's own library (tl.sort, ...) included, and `import memclip` below
# imports triton (through torch._dynamo): the variable must be set before that. Export TRITON_INTERPRET=0 to opt out.
os.environ.setdefault("TRITON_INTERPRET", "1")

import json  # noqa: E402
import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import memclip  # noqa: E402

MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
MICRO_MEMORY = {"layers": [1, 2], "n_keys": 8, "heads": 2, "knn": 4, "k_dim": 16, "v_dim": 24,
                "share_values": True, "value_lr": 0.01, "mode": "replace"}


@pytest.fixture(scope="session", autouse=True)
def micro_configs(tmp_path_factory):
    """Register ``Test-Micro`` (no memory) and ``Test-Micro-mem`` (memory in blocks 1 and 2)."""
    folder = tmp_path_factory.mktemp("model_configs")
    (folder / "Test-Micro.json").write_text(json.dumps(MICRO))
    (folder / "Test-Micro-mem.json").write_text(json.dumps({"teacher": "Test-Micro", **MICRO, "memory": MICRO_MEMORY}))
    memclip.add_model_config(folder)
    logging.getLogger("memclip").setLevel(logging.ERROR)
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Programs run in-process (``study capacity --threads 1``) set torch's thread count for the process; put it back,
    so that a later test's sums run in the same order as a fresh process's."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
