"""The GPU check program (python -m memory_layers.gpu_check): its tiny mode on the CPU, and the real run on CUDA."""
import os
import subprocess
import sys

import pytest
import torch

from memory_layers import gpu_check
from memory_layers.ops import dispatch

pytest.importorskip("triton")


@pytest.mark.slow
def test_tiny_mode_runs_every_check_on_the_cpu(triton_interpreter, capsys):
    assert gpu_check.main(["--tiny", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    statuses = [line.split()[0] for line in lines[1:-1]]
    assert set(statuses) <= {"PASS", "INFO"} and statuses.count("PASS") >= 10
    names = " ".join(lines)
    for check in ("top-k tiny", "bag tiny", "crossover bfloat16 table", "crossover float32 table, amp_bf16",
                  "layer accuracy", "layer speed", "goal: auto fwd+bwd"):
        assert check in names
    assert lines[-1].startswith("all checks passed")


def test_a_wrong_kernel_result_is_a_fail_line(triton_interpreter, monkeypatch, capsys):
    from memory_layers.ops import triton_topk

    shape = gpu_check.TINY.shapes[0]
    monkeypatch.setattr(triton_topk, "select_topk_triton",
                        lambda halves, knn: (halves[..., 0, :knn], halves[..., 0, :knn].argsort(-1)))
    report = gpu_check.Report()
    report.run("top-k tiny", lambda: gpu_check.check_topk(shape, torch.device("cpu"), gpu_check.TINY))
    line = capsys.readouterr().out
    assert report.failures == 1 and line.startswith("FAIL  top-k tiny: AssertionError")


def test_cpu_without_tiny_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu"])
    assert "--tiny" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_check_passes_on_cuda():
    """A fresh process without TRITON_INTERPRET (this one has it set, which would interpret the kernels)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", dispatch.BACKEND_ENV,
                                                             dispatch.BAG_PATH_ENV)}
    result = subprocess.run([sys.executable, "-m", "memory_layers.gpu_check"], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "all checks passed" in result.stdout
