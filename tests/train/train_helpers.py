"""Helpers shared by the training tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
PYTHON = sys.executable


def train_args(world: Path, logs: Path, name: str, *extra: str) -> list:
    """Command-line arguments for a quick CPU run on the micro world."""
    return ["--model", "Test-Micro", "--train-data", str(world / "train" / "{000000..000001}.tar"),
            "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--warmup", "2", "--precision", "fp32",
            "--workers", "0", "--logs", str(logs), "--name", name, "--log-every-n-steps", "2", "--no-progress",
            *extra]
