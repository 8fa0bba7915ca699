"""Preemption: SIGTERM or SIGUSR1 to the trainer alone, or SIGTERM to its whole process group (SLURM's scancel and
preemption signal every process of the step, DataLoader workers included), saves epoch_latest.pt and exits with code
3; the requeued run resumes from it and finishes."""
import os
import signal
import subprocess
import time

import pytest
from train_helpers import PYTHON, train_args

from memclip_train.checkpoints import load_checkpoint


def wait_for_training(process, metrics, seconds=300):
    """Until the run has logged a training step (its handlers are installed and its workers are running)."""
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the run did not log a training step within {seconds} s (exit code {process.poll()}): "
                         f"{process.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("name, target", [("SIGTERM", "pid"), ("SIGTERM", "group"), ("SIGUSR1", "pid")])
def test_a_preemption_signal_saves_exits_for_requeue_and_the_run_resumes(micro_world, tmp_path, subprocess_environment,
                                                                       name, target):
    # 96 steps: long enough that it cannot finish before the signal, which stops it within a step.
    args = train_args(micro_world, tmp_path, "preempt", "--batch-size", "4", "--epochs", "4", "--workers", "2",
                      "--save-every-n-steps", "1000", "--log-every-n-steps", "1")
    command = [PYTHON, "-m", "memclip_train.main", *args]
    process = subprocess.Popen(command, env=subprocess_environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        wait_for_training(process, tmp_path / "preempt" / "metrics.jsonl")
        if target == "group":
            os.killpg(process.pid, getattr(signal, name))
        else:
            process.send_signal(getattr(signal, name))
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 3, stderr[-3000:]
    assert f"received {name}" in stderr and "rerun with --resume latest" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "preempt" / "checkpoints" / "epoch_latest.pt")
    assert checkpoint["step"] >= 1 and not (tmp_path / "preempt" / "final").exists()

    resumed = subprocess.run(command + ["--resume", "latest"], env=subprocess_environment, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and (tmp_path / "preempt" / "final").exists()
