"""What a run reports to: --report-to (tensorboard, wandb, all, none), W&B run ids across resumes (wandb in offline
mode), params.txt, and checkpoints/results.jsonl in open_clip_train's names."""
import json
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import PYTHON, train_args

import memclip
from memclip_train.checkpoints import load_checkpoint
from memclip_train.main import main
from memclip_train.params import parse_args


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("given, expected", [("all", ("tensorboard", "wandb")), ("none", ()),
                                             ("wandb,tensorboard", ("wandb", "tensorboard")), ("wandb", ("wandb",))])
def test_report_to_takes_open_clip_trains_values(given, expected, tmp_path):
    config = parse_args(["--train-data", "x.tar", "--report-to", given, "--logs", str(tmp_path)])
    assert config.logging.report_to == expected


def test_an_unknown_logger_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--train-data", "x.tar", "--report-to", "mlflow"])
    assert "choose from ('tensorboard', 'wandb', 'all', 'none')" in capsys.readouterr().err


def test_a_logger_that_is_not_installed_stops_the_run_before_it_starts(micro_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where wandb is not installed
    assert main(train_args(micro_world, tmp_path, "no-wandb", "--report-to", "all")) == 2
    error = capsys.readouterr().err
    assert "--report-to wandb: wandb is not installed: pip install 'memclip[wandb]' (or pip install wandb)" in error
    assert not (tmp_path / "no-wandb").exists()


@pytest.mark.slow
def test_results_jsonl_in_open_clip_trains_names_survives_a_resume(micro_world, tmp_path):
    val = ["--val-data", str(micro_world / "val" / "000000.tar")]
    assert main(train_args(micro_world, tmp_path, "run", *val)) == 0
    run = tmp_path / "run"
    results = records(run / "checkpoints" / "results.jsonl")
    ours = [r for r in records(run / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["epoch"] for r in results] == [1, 2]
    for theirs, mine in zip(results, ours):
        for k in (1, 5, 10):
            assert theirs[f"text_to_image_R@{k}"] == pytest.approx(mine[f"val_t2i_R@{k}"] / 100)
            assert theirs[f"image_to_text_R@{k}"] == pytest.approx(mine[f"val_i2t_R@{k}"] / 100)
        assert theirs["image_to_text_mean_rank"] == mine["val_i2t_mean_rank"] >= 1
        assert theirs["num_samples"] == 32
    params = (run / "params.txt").read_text()
    assert f"software.memclip: {memclip.__version__}\n" in params and "software.git_commit: " in params
    assert "command: python -m memclip_train.main --model Test-Micro --train-data" in params
    software = load_checkpoint(run / "checkpoints" / "epoch_2.pt")["software"]
    assert software["memclip"] == memclip.__version__ and software["torch"] == torch.__version__
    # Epoch 2 again from the epoch-1 checkpoint: its line is replaced, not repeated.
    again = train_args(micro_world, tmp_path, "run", *val, "--resume", str(run / "checkpoints" / "epoch_1.pt"))
    assert main(again) == 0
    assert [r["epoch"] for r in records(run / "checkpoints" / "results.jsonl")] == [1, 2]


@pytest.mark.slow
def test_a_run_and_its_resume_log_to_one_wandb_run(micro_world, tmp_path, subprocess_environment):
    """wandb in offline mode, as installed: the run and its --resume latest continuation open one run id (the run
    folder's name) under the run folder, each with params.txt; --report-to all also writes TensorBoard events."""
    environment = dict(subprocess_environment, WANDB_MODE="offline", WANDB_SILENT="true")
    base = train_args(micro_world, tmp_path, "requeued", "--report-to", "all")
    for extra in (["--epochs", "1"], ["--epochs", "2", "--resume", "latest"]):
        done = subprocess.run([PYTHON, "-m", "memclip_train.main", *base, *extra], env=environment,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "requeued"
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    for folder in offline:
        assert folder.name.endswith("-requeued") and (folder / "run-requeued.wandb").is_file()
        assert "optim.lr: 0.001" in (folder / "files" / "params.txt").read_text()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [r["step"] for r in records(run / "metrics.jsonl") if r["kind"] == "train"][-1] == 12
    assert os.path.getsize(run / "params.txt") > 0
