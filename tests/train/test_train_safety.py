"""Nothing is lost: NaN stops keep the last good checkpoint, and a killed run resumes to the same weights."""
import signal
import subprocess
import time

import torch
from train_helpers import PYTHON, train_args

import memclip
from memclip_train.checkpoints import load_checkpoint
from memclip_train.main import main
from memclip_train.tasks.contrastive import ContrastiveTask


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(micro_world, tmp_path, monkeypatch, caplog):
    original = ContrastiveTask.loss
    calls = {"n": 0}

    def poisoned(self, features, batch):
        calls["n"] += 1
        total, terms = original(self, features, batch)
        if calls["n"] >= 5:
            total = total * float("nan")
            terms = {"total": total, "contrastive": total}
        return total, terms

    monkeypatch.setattr(ContrastiveTask, "loss", poisoned)
    args = train_args(micro_world, tmp_path, "nan", "--save-every-n-steps", "2", "--log-every-n-steps", "3")
    assert main(args) == 2
    assert "the loss became non-finite at step 5 (total=nan, contrastive=nan)" in caplog.text
    latest = load_checkpoint(tmp_path / "nan" / "checkpoints" / "epoch_latest.pt")
    assert latest["step"] == 4
    assert all(torch.isfinite(v).all() for v in latest["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "final").exists()


def final_weights(run_dir):
    return memclip.create_model(str(run_dir / "final")).state_dict()


def test_killed_run_resumes_to_the_same_weights(micro_world, tmp_path, subprocess_environment):
    args = train_args(micro_world, tmp_path, "straight", "--batch-size", "4", "--epochs", "3",
                      "--save-every-n-steps", "3", "--log-every-n-steps", "8", "--workers", "1")
    command = [PYTHON, "-m", "memclip_train.main"]
    subprocess.run(command + args, env=subprocess_environment, check=True, capture_output=True)

    resumable = [a if a != "straight" else "killed" for a in args]
    latest = tmp_path / "killed" / "checkpoints" / "epoch_latest.pt"
    process = subprocess.Popen(command + resumable, env=subprocess_environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load_checkpoint(latest)
    assert killed_at["batch_in_epoch"] > 0 and killed_at["epoch"] == 0, "the kill should land mid-epoch"
    assert not (tmp_path / "killed" / "final").exists()

    resumed = subprocess.run(command + resumable + ["--resume", "latest"], env=subprocess_environment,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    expected, got = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    for key, value in expected.items():
        assert torch.equal(value, got[key]), f"{key} differs after kill and resume"


def test_sigusr1_saves_and_exits_for_requeue(micro_world, tmp_path, subprocess_environment):
    args = train_args(micro_world, tmp_path, "preempt", "--batch-size", "4", "--epochs", "3",
                      "--save-every-n-steps", "1000", "--log-every-n-steps", "1")
    command = [PYTHON, "-m", "memclip_train.main"]
    process = subprocess.Popen(command + args, env=subprocess_environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "preempt" / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or not metrics.read_text().strip()) and process.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr[-2000:]
    assert "received SIGUSR1" in stderr and "rerun with --resume latest" in stderr
    checkpoint = load_checkpoint(tmp_path / "preempt" / "checkpoints" / "epoch_latest.pt")
    assert checkpoint["step"] >= 1 and not (tmp_path / "preempt" / "final").exists()
    resumed = subprocess.run(command + args + ["--resume", "latest"], env=subprocess_environment,
                             capture_output=True, text=True)
    assert resumed.returncode == 0 and (tmp_path / "preempt" / "final").exists()
