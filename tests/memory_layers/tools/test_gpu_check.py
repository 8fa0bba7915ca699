"""The GPU check program (python -m memory_layers.gpu_check): its tiny mode on the CPU, its checks failing when they
should, and the real run on CUDA."""
import os
import re
import subprocess
import sys

import pytest
import torch

import repo_paths

from memory_layers.tools import gpu_check
from memory_layers.ops import dispatch

pytest.importorskip("triton")
CPU = torch.device("cpu")

CHECKS = ("top-k tiny", "top-k tiny, knn < n_keys", "bag tiny float32", "bag tiny, v_dim 12 bfloat16",
          "bag tiny fp32 table under amp_bf16", "crossover bfloat16 table, bf16", "crossover float32 table, amp_bf16",
          "layer accuracy tiny, amp_bf16", "determinism tiny", "gradient checkpointing tiny",
          "5 layers sharing one table, tiny", "layer speed tiny", "goal: auto fwd+bwd")


@pytest.mark.slow
def test_tiny_mode_runs_every_check_on_the_cpu_and_prints_one_table(triton_interpreter, capsys):
    assert gpu_check.main(["--tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    checks = [line for line in lines if re.match(r"(PASS|FAIL|INFO)  \S.* \(\d+\.\d s\): ", line)]
    assert {line.split()[0] for line in checks} <= {"PASS", "INFO"} and len(checks) >= 18
    for name in CHECKS:
        assert any(name in line for line in checks), name
    # the closing table: one row per check with its status and seconds, then the counts
    table = lines[lines.index(next(line for line in lines if line.startswith("check "))):]
    assert len([line for line in table if re.search(r"  (PASS|INFO) +\d+\.\d$", line)]) == len(checks)
    assert re.search(r"\d+ checks: \d+ PASS, 0 FAIL, \d+ INFO", out)
    assert lines[-1].startswith("all checks passed")
    # tolerances are stated: fp32 and bf16 scales, the gradient through atomics, the slot agreement share
    topk = next(line for line in checks if line.startswith("PASS  top-k tiny ("))
    assert "half-score gradient" in topk and "tol 1e-06" in topk and "(bf16, tol 2e-02)" in topk
    assert "sparse value gradient == dense" in out
    assert "(token, head) pairs choose the fp32 slots (at least 50%)" in out
    assert "all 4 rows" in out, "the fp32 comparison reads every row at the AMP slots, none dropped"


def test_a_wrong_kernel_result_is_a_fail_line(triton_interpreter, monkeypatch, capsys):
    from memory_layers.ops import triton_topk

    shape = gpu_check.TINY.topk_shapes[0]
    monkeypatch.setattr(triton_topk, "select_topk_triton",
                        lambda halves, knn: (halves[..., 0, :knn], halves[..., 0, :knn].argsort(-1)))
    report = gpu_check.Report()
    report.run("top-k tiny", lambda: gpu_check.check_topk(shape, CPU, gpu_check.TINY))
    line = capsys.readouterr().out
    assert report.failures == 1 and line.startswith("FAIL  top-k tiny (") and "AssertionError" in line


def test_a_comparison_of_nothing_fails():
    """The AMP-against-fp32 comparison used to keep only rows whose slots agreed; with none left the relative error
    of two empty tensors was 0 and the check passed."""
    with pytest.raises(AssertionError, match="nothing to compare"):
        gpu_check.relative_error(torch.zeros(0, 8), torch.zeros(0, 8))
    with pytest.raises(AssertionError, match="shapes differ"):
        gpu_check.relative_error(torch.zeros(3), torch.zeros(4))


def test_too_few_rows_with_the_fp32_slots_is_a_failure(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "MIN_SLOT_AGREEMENT", 1.01)
    report = gpu_check.Report()
    report.run("layer accuracy", lambda: gpu_check.check_layer_accuracy(gpu_check.TINY.layer, CPU))
    assert report.failures == 1 and "read the fp32 slots under AMP" in capsys.readouterr().out


def test_a_nondeterministic_value_gradient_fails_the_determinism_check(triton_interpreter, monkeypatch, capsys):
    from memory_layers.ops import triton_bag

    grad_values = triton_bag._bag_grad_values
    monkeypatch.setattr(triton_bag, "_bag_grad_values",
                        lambda *args, **kwargs: grad_values(*args, **kwargs) * (1 + 1e-6 * torch.rand(()).item()))
    report = gpu_check.Report()
    report.run("determinism", lambda: gpu_check.check_determinism(gpu_check.TINY.small_layer, CPU))
    assert report.failures == 1 and "differ" in capsys.readouterr().out


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


@pytest.mark.parametrize("check_status", [0, 1])
def test_the_prepared_script_runs_the_check_then_the_benchmarks_into_one_file(tmp_path, check_status):
    script = repo_paths.REPO / "scripts" / "gpu_check.sh"
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ran $* TRITON_INTERPRET=${TRITON_INTERPRET:-unset}\"\n"
                    f"case \"$*\" in *gpu_check*) exit {check_status};; esac\n")
    fake.chmod(0o755)
    out = tmp_path / "result.txt"
    env = dict(os.environ, PYTHON=str(fake), OUT=str(out), TRITON_INTERPRET="1")
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == check_status, result.stderr
    text = out.read_text()
    ran = [line for line in text.splitlines() if line.startswith("ran ")]
    assert [line.split()[2] for line in ran] == ["memory_layers.gpu_check", "memory_layers.bench",
                                                 "memory_layers.bench"]
    assert "n_keys=1024" in ran[2] and all(line.endswith("TRITON_INTERPRET=unset") for line in ran)
    assert f"(exit {check_status})" in text and f"output written to {out}" in result.stdout
