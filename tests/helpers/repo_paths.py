"""Where the repository's folders are, for tests at any depth of tests/ (imported by name: tests/helpers is on pytest's
python path)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
