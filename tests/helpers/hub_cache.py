"""A Hugging Face Hub cache written by hand, laid out as huggingface_hub lays out a downloaded repo (imported by name).

    <cache>/models--ORG--REPO/blobs/<sha256 of the file>
    <cache>/models--ORG--REPO/snapshots/<commit>/<file>  -> ../../blobs/<sha256>
    <cache>/models--ORG--REPO/refs/<branch or tag>        the commit
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Sequence


def lay_out_repo(cache: Path, repo_id: str, folder: Path, commit: str, refs: Sequence[str] = ("main",)) -> Path:
    """Put every file of ``folder`` into ``cache`` as the snapshot ``commit`` of ``repo_id``, pointed to by ``refs``.
    Returns the snapshot folder."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(Path(folder).iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot
