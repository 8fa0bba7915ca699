"""Where a saved model or a run came from: memclip's version, the git commit of the checkout it runs from, and the
versions of its main dependencies. Saved folders (``memclip_config.json``), training checkpoints, run folders
(``params.txt``) and model cards record them, so that two checkpoints of the same version can still be told apart.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional

import open_clip
import torch

from .version import __version__

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout memclip runs from when it is installed editable (``<root>/src/memclip``)."""


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the checkout memclip runs from, with ``-dirty`` when tracked files have uncommitted changes;
    None when memclip is not run from a git checkout of its own (an installed wheel, or git missing)."""
    if not ((SOURCE_ROOT / ".git").exists() and (SOURCE_ROOT / "setup.py").is_file()):
        return None
    try:
        sha = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
        changes = subprocess.run(["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if changes else sha


def software_versions() -> Dict[str, Optional[str]]:
    """``{"memclip", "git_commit", "python", "torch", "open_clip"}``: what a saved model or run was made with, as plain
    strings (``torch.__version__`` is a str subclass that ``torch.load(weights_only=True)`` refuses)."""
    return {"memclip": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "torch": str(torch.__version__), "open_clip": str(open_clip.__version__)}
