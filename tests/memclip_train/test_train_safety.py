"""Nothing is lost: NaN stops keep the last good checkpoint, a killed run resumes to the same weights, and damaged
checkpoints are named and never overwritten."""
import json
import math
import re
import shlex
import signal
import subprocess
import time

import pytest
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
    err = caplog.text
    assert "the loss became non-finite at step 5 (total=nan, contrastive=nan)" in err
    # The loss of step 5 is the first computed on the weights saved after step 4: that checkpoint is not good.
    folder = tmp_path / "nan" / "checkpoints"
    assert f"the last good checkpoint, with finite weights and a finite loss, is {folder / 'epoch_latest.pt'} " \
           "(step 2)" in err and "set aside epoch_latest.pt.nonfinite" in err
    assert load_checkpoint(folder / "epoch_latest.pt")["step"] == 2
    assert load_checkpoint(folder / "epoch_latest.pt.nonfinite")["step"] == 4
    latest = load_checkpoint(folder / "epoch_latest.pt")
    assert all(torch.isfinite(v).all() for v in latest["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "final").exists()


def test_a_huge_learning_rate_leaves_only_checkpoints_whose_loss_was_finite(micro_world, tmp_path, caplog):
    args = train_args(micro_world, tmp_path, "blowup", "--lr", "1e3", "--warmup", "1", "--save-every-n-steps", "1",
                      "--log-every-n-steps", "1")
    assert main(args) == 2
    err = caplog.text
    first = int(re.search(r"became non-finite at step (\d+)", err).group(1))
    assert "--precision" not in err.split("Stopping")[1], "an fp32 run is not told to use fp32"
    assert "a lower --lr (now 1000)" in err and "--grad-clip-norm 1.0" in err
    metrics = [json.loads(line) for line in (tmp_path / "blowup" / "metrics.jsonl").read_text().splitlines()]
    finite_loss = {r["step"] for r in metrics if r["kind"] == "train" and math.isfinite(float(r["loss"]))}
    latest = tmp_path / "blowup" / "checkpoints" / "epoch_latest.pt"
    assert latest.exists() or "no checkpoint with finite weights and a finite loss" in err
    if latest.exists():
        kept = load_checkpoint(latest)
        # Its weights are finite, and the loss computed on them (at the next step) was finite.
        assert kept["step"] + 1 in finite_loss and kept["step"] < first
        assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


def final_weights(run_dir):
    return memclip.create_model(str(run_dir / "final")).state_dict()


@pytest.mark.slow
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


def test_a_lone_unreadable_latest_checkpoint_stops_the_resume_and_is_kept(micro_world, tmp_path, capsys):
    folder = tmp_path / "damaged" / "checkpoints"
    folder.mkdir(parents=True)
    damaged = b"PK\x03\x04 half of a checkpoint"
    (folder / "epoch_latest.pt").write_bytes(damaged)
    assert main(train_args(micro_world, tmp_path, "damaged", "--resume", "latest")) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "epoch_latest.pt" in err
    assert (folder / "epoch_latest.pt").read_bytes() == damaged, "a file it could not read must never be overwritten"
    assert not (tmp_path / "damaged" / "final").exists()


@pytest.mark.slow
def test_an_unreadable_latest_checkpoint_is_set_aside_and_an_older_one_used(micro_world, tmp_path, capsys):
    args = train_args(micro_world, tmp_path, "older")
    assert main(args) == 0
    folder = tmp_path / "older" / "checkpoints"
    damaged = (folder / "epoch_latest.pt").read_bytes()[:4000]
    (folder / "epoch_latest.pt").write_bytes(damaged)
    (folder / "epoch_2.pt").unlink()
    assert main(args + ["--resume", "latest"]) == 0
    assert (folder / "epoch_latest.pt.corrupt").read_bytes() == damaged
    assert load_checkpoint(folder / "epoch_latest.pt")["step"] == 12 and (folder / "epoch_2.pt").exists()
    assert f"resumed from {folder / 'epoch_1.pt'}" in (tmp_path / "older" / "out.log").read_text()


@pytest.mark.slow
def test_a_resumed_run_logs_each_step_once_and_checkpoints_hold_the_schedule(micro_world, tmp_path, monkeypatch):
    original = ContrastiveTask.loss
    calls = {"n": 0}

    def crash_at_the_fourth_step(self, features, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed after step 3 was logged, one step after the checkpoint of step 2
        return original(self, features, batch)

    args = train_args(micro_world, tmp_path, "again", "--save-every-n-steps", "2", "--log-every-n-steps", "1")
    with monkeypatch.context() as patch:
        patch.setattr(ContrastiveTask, "loss", crash_at_the_fourth_step)
        assert main(args) == 130  # Ctrl-C: one line naming the checkpoint to resume from
    assert load_checkpoint(tmp_path / "again" / "checkpoints" / "epoch_latest.pt")["step"] == 2
    assert main(args + ["--resume", "latest"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == list(range(1, 13)), "a step redone after the resume is logged once"
    checkpoint = load_checkpoint(tmp_path / "again" / "checkpoints" / "epoch_2.pt")
    assert checkpoint["scheduler"] == {"kind": "cosine", "warmup": 2, "total_steps": 12}


def fail_on_save(monkeypatch, number, error):
    """Make the ``number``-th checkpoint write raise ``error`` part-way (after the temporary file has some bytes)."""
    import memclip_train.checkpoints as checkpoints
    original, calls = checkpoints.torch.save, {"n": 0}

    def save(payload, path):
        calls["n"] += 1
        if calls["n"] == number:
            with open(path, "wb") as file:
                file.write(b"half a checkpoint")
            raise error
        return original(payload, path)

    monkeypatch.setattr(checkpoints.torch, "save", save)


@pytest.mark.slow
@pytest.mark.parametrize("error,code,said", [
    (OSError(28, "No space left on device"), 2, "(No space left on device)"),
    (OSError(30, "Read-only file system"), 2, "(Read-only file system)"),
    (KeyboardInterrupt(), 130, "interrupted (Ctrl-C) at step 4"),
])
def test_a_checkpoint_write_that_fails_ends_in_one_line_naming_the_good_checkpoint_and_the_resume(
        micro_world, tmp_path, monkeypatch, capsys, error, code, said):
    args = train_args(micro_world, tmp_path, "full", "--save-every-n-steps", "2", "--epochs", "1")
    with monkeypatch.context() as patch:
        fail_on_save(patch, 2, error)
        assert main(args) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    folder = tmp_path / "full" / "checkpoints"
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert said in lines[0] and f"the newest checkpoint, {folder / 'epoch_latest.pt'} (step 2), is whole" in lines[0]
    if code == 2:
        assert f"could not write {folder / 'epoch_latest.pt'}" in lines[0]
    resume = lines[0].split("resume with: ")[1]
    assert resume.startswith("python -m memclip_train.main ") and resume.endswith("--resume latest")
    assert load_checkpoint(folder / "epoch_latest.pt")["step"] == 2 and not list(folder.glob(".*.tmp"))
    assert main(shlex.split(resume)[3:]) == 0, "the printed command resumes the run"
    assert load_checkpoint(folder / "epoch_1.pt")["step"] == 6


def test_a_metrics_file_that_cannot_be_written_ends_in_one_line(micro_world, tmp_path, monkeypatch, capsys):
    from memclip_train import run_logger
    real_open = open

    def full_disk_open(path, *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and args[:1] == ("a",):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(run_logger, "open", full_disk_open, raising=False)
    assert main(train_args(micro_world, tmp_path, "nometrics", "--epochs", "1")) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"could not write {tmp_path / 'nometrics' / 'metrics.jsonl'}" in lines[0]
    assert "no checkpoint was written yet" in lines[0] and "rerun the command" in lines[0]
