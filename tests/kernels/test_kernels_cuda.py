"""The compiled Triton kernels on CUDA (skipped cleanly without CUDA)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memory_layers.ops import dispatch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_kernels_on_cuda_match_the_references():
    """Runs cuda_check.py in a fresh process: this one has TRITON_INTERPRET=1, which would interpret the kernels."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", dispatch.BACKEND_ENV,
                                                             dispatch.BAG_PATH_ENV)}
    script = Path(__file__).with_name("cuda_check.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert "cuda checks passed" in result.stdout
