"""`WorldFiles`: every file and folder a generation writes, recorded before it is written, so that ``--overwrite``
removes exactly what the generator wrote and nothing else.

While a generation runs, the paths go to ``OUT/.world-files`` (one per line, flushed as they are recorded), so an
interrupted generation can be replaced too; a finished world lists them in ``world.json`` (``files``, ``folders``) and
the running list is removed.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Dict, List, Set, Tuple

from memclip.atomic_io import atomic_write_json, stray_temporaries
from memclip.errors import InputError

WORLD_FILE = "world.json"
PENDING_FILE = ".world-files"


class WorldFiles:
    """Records the files and folders of one generation under ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: List[str] = []
        self.folders: List[str] = []
        self._pending = open(out / PENDING_FILE, "a", encoding="utf-8")

    def _record(self, kind: str, path: Path) -> str:
        relative = path.relative_to(self.out).as_posix()
        self._pending.write(f"{kind} {relative}\n")
        self._pending.flush()
        return relative

    def folder(self, path: Path) -> Path:
        """Create ``path`` (and its missing parents), recording the folders this creates."""
        missing = [p for p in [path, *path.parents] if p != self.out and self.out in p.parents and not p.exists()]
        for folder in reversed(missing):
            self.folders.append(self._record("d", folder))
            folder.mkdir()
        return path

    def file(self, path: Path) -> Path:
        """Record ``path`` as about to be written; returns it."""
        self.files.append(self._record("f", path))
        return path

    def finish(self) -> Dict[str, List[str]]:
        """``{"files": [...], "folders": [...]}`` for world.json; call :meth:`discard_pending` once that is written."""
        self._pending.close()
        return {"files": sorted(set(self.files)), "folders": sorted(set(self.folders))}

    def discard_pending(self) -> None:
        (self.out / PENDING_FILE).unlink(missing_ok=True)


def _inside(out: Path, relative: str, source: Path) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise InputError(f"{source} lists {relative!r}, which is not inside {out}: refusing to remove it")
    return out.joinpath(*parts)


def _listed(out: Path) -> Tuple[Set[str], Set[str]]:
    """The files and folders that world.json and the running list name."""
    files: Set[str] = set()
    folders: Set[str] = set()
    world, pending = out / WORLD_FILE, out / PENDING_FILE
    if world.is_file():
        try:
            data = json.loads(world.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as error:
            raise FileExistsError(f"{world} is not readable json ({error}): remove {out} yourself, then generate "
                                  "again") from error
        if not isinstance(data, dict) or "files" not in data:
            raise FileExistsError(f"{world} does not list the files of its world (an older memclip wrote it): "
                                  f"remove {out} yourself, then generate again")
        for key in ("files", "folders"):  # a string here would be read as a list of one-letter names
            listed = data.get(key, [])
            if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
                raise FileExistsError(f"{world}: '{key}' is not a list of paths: remove {out} yourself, then "
                                      "generate again")
        files.update(data["files"])
        folders.update(data.get("folders", []))
    if pending.is_file():
        for line in pending.read_text(encoding="utf-8").splitlines():
            kind, _, relative = line.partition(" ")
            (folders if kind == "d" else files).add(relative)
    return files, folders


def remove_generated(out: Path) -> None:
    """Remove what a generation wrote in ``out`` (a finished world or an interrupted one), and nothing else.

    Raises:
        FileExistsError: ``out`` holds no world.json of the generator and no interrupted generation.
    """
    if not (out / WORLD_FILE).is_file() and not (out / PENDING_FILE).is_file():
        raise FileExistsError(f"--out {out} holds files but no {WORLD_FILE} of memclip_train.synth: --overwrite only "
                              "replaces a generated world; choose an empty or new folder")
    files, folders = _listed(out)
    source = out / WORLD_FILE
    for path in [_inside(out, relative, source) for relative in files]:
        path.unlink(missing_ok=True)
        for stray in stray_temporaries(path):  # what an interrupted atomic write leaves
            stray.unlink()
    for path in sorted((_inside(out, relative, source) for relative in folders), key=lambda p: len(p.parts),
                       reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    (out / WORLD_FILE).unlink(missing_ok=True)
    (out / PENDING_FILE).unlink(missing_ok=True)


def add_to_world(world_dir: Path, path: Path) -> None:
    """List ``path`` (written inside the world after generation, e.g. the preview) in world.json's files."""
    world = world_dir / WORLD_FILE
    if not world.is_file() or world_dir not in path.parents:
        return
    data = json.loads(world.read_text(encoding="utf-8"))
    data["files"] = sorted(set(data.get("files", [])) | {path.relative_to(world_dir).as_posix()})
    atomic_write_json(world, data)
