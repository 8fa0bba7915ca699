"""memory_layers tests. The kernel tests (ops/, tools/) run the Triton kernels in the Triton interpreter on the CPU (small
shapes only).

``triton.jit`` chooses interpreter or compiler when a function is *decorated*, and that includes triton's own
library (``tl.sort`` is decorated when triton is imported). ``tests/conftest.py`` imports memclip, which imports
triton through torch._dynamo, so the root conftest sets ``TRITON_INTERPRET=1`` first; it is set here again for
runs that use another root conftest. ``memory_layers`` imports its triton modules lazily, on first use.

The variable stays set for the whole pytest process; the CUDA test runs its checks in a fresh subprocess without
it. Tests that need the interpreter take the ``triton_interpreter`` fixture: it skips cleanly when triton is not
installed (``pytest.importorskip``) or was imported before the variable was set.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from memory_layers import ops  # noqa: E402
from memory_layers.ops import dispatch  # noqa: E402
from memory_layers.ops import runtime as ops_runtime  # noqa: E402


def _interpreter_ready() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return ops_runtime.interpreter_enabled() and isinstance(tl.sort, InterpretedFunction)


@pytest.fixture
def triton_interpreter():
    """Skip unless triton is installed and running in interpreter mode (set before triton was imported)."""
    pytest.importorskip("triton")
    if not _interpreter_ready():
        pytest.skip("triton was imported without TRITON_INTERPRET=1; the interpreter kernel tests cannot run")


@pytest.fixture(autouse=True)
def _clean_dispatch_state(monkeypatch):
    """No backend / bag-path override from the caller's environment, and no measured choice carried over."""
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    monkeypatch.delenv(dispatch.BAG_PATH_ENV, raising=False)
    ops.clear_path_caches()
    yield
    ops.clear_path_caches()
