"""Preemption: SIGTERM to the trainer alone or to its whole process group (SLURM's scancel and preemption signal
every process of the step, DataLoader workers included) saves epoch_latest.pt and exits with code 3."""
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
@pytest.mark.parametrize("target", ["pid", "group"])
def test_sigterm_saves_and_exits_for_requeue(micro_world, tmp_path, subprocess_environment, target):
    # Long enough that it cannot finish before the signal; the signal stops it within a step.
    args = train_args(micro_world, tmp_path, "term", "--batch-size", "4", "--epochs", "50", "--workers", "2",
                      "--save-every-n-steps", "1000", "--log-every-n-steps", "1")
    process = subprocess.Popen([PYTHON, "-m", "memclip_train.main", *args], env=subprocess_environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_training(process, tmp_path / "term" / "metrics.jsonl")
        if target == "group":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 3, stderr[-3000:]
    assert "received SIGTERM" in stderr and "rerun with --resume latest" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "term" / "checkpoints" / "epoch_latest.pt")
    assert checkpoint["step"] >= 1 and not (tmp_path / "term" / "final").exists()
