"""Helpers shared by the training tests (imported by name: tests/helpers is on pytest's python path)."""
from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path

import torch

import repo_paths

from memclip_train.data.shard_stream import StreamPosition

SRC = str(repo_paths.SRC)
PYTHON = sys.executable


def train_args(world: Path, logs: Path, name: str, *extra: str) -> list:
    """Command-line arguments for a quick CPU run on the micro world."""
    return ["--model", "Test-Micro", "--train-data", str(world / "train" / "{000000..000001}.tar"),
            "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--warmup", "2", "--precision", "fp32",
            "--workers", "0", "--logs", str(logs), "--name", name, "--log-every-n-steps", "2", "--no-progress",
            *extra]


class Overran(BaseException):
    """Raised by :func:`deadline`; a BaseException, so that no ``except Exception`` handler of the code under test
    (webdataset's skip handlers, for one) can swallow it."""


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Fail with :class:`Overran` instead of hanging when the block runs longer than ``seconds`` (main thread only).

    The alarm repeats every second until the block is left, in case the first one lands where it cannot escape.
    """
    def expire(signum, frame):
        raise Overran(f"{what} did not finish within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_resumes_exactly(make, epoch: int, full: list, cut: int) -> None:
    """A stream rebuilt by ``make()`` (-> (loader, stream)) and set to ``epoch`` at the position reached after the
    batches ``full[:cut]`` yields exactly ``full[cut:]`` (the position goes through JSON, as in a checkpoint)."""
    position = StreamPosition()
    for batch in full[:cut]:
        position.update(batch["_worker"], batch["_consumed"])
    loader, stream = make()
    stream.set_epoch(epoch, StreamPosition.from_dict(json.loads(json.dumps(position.to_dict()))))
    rest = list(loader)
    assert len(rest) == len(full) - cut
    for a, b in zip(full[cut:], rest):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])
