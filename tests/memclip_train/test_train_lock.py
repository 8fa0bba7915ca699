"""The run folder's lock (memclip_train.run_lock): one process trains a folder; a dead holder's lock on this host is
broken with a message, another host's is refused naming that host."""
import json
import logging
import os
import subprocess

import pytest
from train_helpers import PYTHON, train_args

from memclip_train.main import main
from memclip_train.tasks.contrastive import ContrastiveTask
from memclip_train.run_lock import LOCK_FILE, RunLock, RunLocked


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path, host="here"):
        with pytest.raises(RunLocked, match=f"in use by process {os.getpid()} on host here"):
            RunLock(tmp_path, host="here").acquire()
    assert not (tmp_path / LOCK_FILE).exists(), "a released lock leaves no file"
    with RunLock(tmp_path, host="here"):
        pass


def test_the_lock_of_a_dead_process_on_this_host_is_broken_with_a_message(tmp_path, caplog):
    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "here", "pid": pid, "started": "2026-12-06 10:00:00"}))
    with caplog.at_level(logging.WARNING), RunLock(tmp_path, host="here"):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert f"breaking the stale lock of process {pid} on host here (since 2026-12-06 10:00:00)" in caplog.text
    assert holder["pid"] == os.getpid() and holder["host"] == "here"


def test_a_lock_written_from_another_host_is_refused_naming_it(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "node-17", "pid": 4242}))
    with pytest.raises(RunLocked, match=f"locked by process 4242 on host node-17.*delete {tmp_path / LOCK_FILE}"):
        RunLock(tmp_path, host="here").acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["host"] == "node-17", "a refused lock is left as it was"


HOLD = """
import sys, time
from pathlib import Path
from memclip_train.run_lock import RunLock
Path(sys.argv[1]).mkdir(parents=True)
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(300)
"""


@pytest.mark.slow
def test_the_trainer_is_refused_while_a_live_process_holds_its_run_and_breaks_the_lock_once_it_died(
        micro_world, tmp_path, subprocess_environment, capsys, caplog, monkeypatch):
    run_dir = tmp_path / "busy"
    holder = subprocess.Popen([PYTHON, "-c", HOLD, str(run_dir)], env=subprocess_environment, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = train_args(micro_world, tmp_path, "busy", "--epochs", "1")
        assert main(args + ["--resume", "latest"]) == 2
        err = capsys.readouterr().err
        assert f"run folder {run_dir} is in use by process {holder.pid} on host" in err, err[-2000:]
        assert not (run_dir / "metrics.jsonl").exists() and (run_dir / LOCK_FILE).exists()
    finally:
        holder.kill()  # kill -9: its lock file stays behind
        holder.wait()
    leftover = run_dir / "checkpoints" / ".epoch_latest.pt.k1ll3d.tmp"
    leftover.parent.mkdir()
    leftover.write_bytes(b"\0" * 1000)
    seen = []
    original = ContrastiveTask.loss

    def loss(self, features, batch):
        seen.append(json.loads((run_dir / LOCK_FILE).read_text()))
        return original(self, features, batch)

    monkeypatch.setattr(ContrastiveTask, "loss", loss)
    with caplog.at_level(logging.INFO):
        assert main(args + ["--resume", "latest"]) == 0
    assert f"breaking the stale lock of process {holder.pid} on host" in caplog.text
    assert "removed 1 temporary file (0.0 MB) left by interrupted writes: checkpoints/.epoch_latest.pt.k1ll3d.tmp" \
        in caplog.text
    assert seen[0]["pid"] == os.getpid(), "the trainer holds the lock while it trains"
    assert not leftover.exists() and not (run_dir / LOCK_FILE).exists()
