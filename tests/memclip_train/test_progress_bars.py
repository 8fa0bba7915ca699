"""Progress bars are drawn on a terminal only: with stderr to a file (a SLURM log), synth, train, eval and convert
write no carriage-return frames; under a pseudo-terminal training draws its bar."""
import logging
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

import repo_paths

from memclip_train.convert.__main__ import main as convert_main
from memclip_train.eval.__main__ import main as eval_main
from memclip_train.main import main as train_main
from memclip_train.synth.__main__ import main as synth_main

SRC = str(repo_paths.SRC)


def run_logged(args, log: Path, environment) -> str:
    """Run ``python -m args...`` with stderr (and stdout) to ``log``, as sbatch does; returns the log's text."""
    with open(log, "w") as file:
        done = subprocess.run([sys.executable, "-m", *args], stdout=file, stderr=subprocess.STDOUT, env=environment,
                              timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return text


def run_on_a_terminal(args, environment) -> str:
    """Run ``python -m args...`` with stderr on a pseudo-terminal; returns what it drew there."""
    controller, terminal = pty.openpty()
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=terminal,
                              env=environment, timeout=600)
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    text = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, text[-3000:]
    return text


def train_argv(world: Path, logs: Path, name: str) -> list:
    return ["--model", "Test-Micro", "--train-data", str(world / "train"), "--batch-size", "8", "--epochs", "1",
            "--lr", "1e-3", "--warmup", "1", "--precision", "fp32", "--workers", "0", "--logs", str(logs),
            "--name", name, "--log-every-n-steps", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress") / "world"
    assert synth_main(["--out", str(folder), "--train", "48", "--val", "0", "--retrieval", "12", "--segmentation",
                       "0", "--pairs-per-pattern", "0", "--image-size", "32", "--samples-per-shard", "24",
                       "--no-progress"]) == 0
    return folder


@pytest.mark.slow
def test_no_program_draws_a_bar_when_stderr_is_not_a_terminal(world, tmp_path, capsys, caplog):
    """pytest's captured stderr is not a terminal, as a SLURM log file is not: no --no-progress is given."""
    caplog.set_level(logging.INFO, logger="memclip_train")
    assert synth_main(["--out", str(tmp_path / "w"), "--train", "8", "--val", "0", "--retrieval", "0",
                       "--segmentation", "0", "--pairs-per-pattern", "0", "--image-size", "32"]) == 0
    assert train_main(train_argv(world, tmp_path / "runs", "run")) == 0
    assert eval_main(["retrieval", "--model", "Test-Micro", "--pretrained", str(tmp_path / "runs" / "run" / "final"),
                      "--dataset", "synth-short", "--data-root", str(world), "--out", str(tmp_path / "eval")]) == 0
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.jpg")
    (tmp_path / "pairs.csv").write_text("filepath,caption\nred.jpg,a red patch\n")
    assert convert_main(["csv", "--csv", str(tmp_path / "pairs.csv"), "--image-root", str(tmp_path), "--out",
                         str(tmp_path / "shards")]) == 0
    assert "epoch 0 step 6/6" in caplog.text  # the log line is the progress
    assert "\r" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_slurm_log_has_no_bar_and_a_terminal_has_one(world, tmp_path, micro_configs):
    environment = dict(os.environ, PYTHONPATH=SRC, MEMCLIP_MODEL_CONFIGS=str(micro_configs))
    logged = run_logged(["memclip_train.main", *train_argv(world, tmp_path, "logged")], tmp_path / "slurm.out",
                        environment)
    assert "epoch 0 step 6/6" in logged and "\r" not in logged
    drawn = run_on_a_terminal(["memclip_train.main", *train_argv(world, tmp_path, "terminal")], environment)
    assert "\r" in drawn and "epoch 0" in drawn
