"""Gradient checkpointing with the automatic bag path: measuring the paths must not deadlock the recompute.

The non-reentrant checkpoint recomputes the forward when the backward unpacks a saved tensor. When the first
forward of a new shape measured the fused and dense bags (each a forward and a backward) under the checkpoint's
saved-tensor hooks, that backward triggered the recompute, which called the bag again while the measurement held
the dispatch lock: the first training step hung. The run happens in a subprocess with a timeout, so a regression
fails instead of hanging the suite.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from memory_layers.ops import dispatch

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from torch.utils.checkpoint import checkpoint
    from memory_layers import MemoryConfig, ProductKeyMemory
    from memory_layers.ops import dispatch

    torch.manual_seed(0)
    memory = ProductKeyMemory(16, 16, MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=8, v_dim=12))
    x = torch.randn(2, 3, 16, requires_grad=True)
    grads = {}
    for backend in ("torch", "triton"):
        os.environ[dispatch.BACKEND_ENV] = backend
        memory.zero_grad()
        x.grad = None
        checkpoint(memory, x, use_reentrant=False).square().sum().backward()
        grads[backend] = [x.grad.clone()] + [p.grad.clone() for p in memory.parameters()]
    for got, want in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(got, want)
    print("paths", sorted(dispatch.bag_path_cache().values()))
    """
)


@pytest.mark.slow
def test_checkpointed_memory_with_measured_bag_path_does_not_hang(triton_interpreter):
    env = {k: v for k, v in os.environ.items() if k not in (dispatch.BACKEND_ENV, dispatch.BAG_PATH_ENV)}
    try:
        result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the checkpointed backward with the measured bag path hung (deadlock in ops.dispatch)")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "paths ['" in result.stdout, "the first triton call must have measured the bag paths"
