"""Atomic file writes: every file goes to a temporary name beside its target and is renamed over it when complete.

A reader never sees a half-written file: a crash leaves the old file (or none) and a stray temporary file, named
``.<name>.<random>.tmp`` (:func:`stray_temporaries` finds them). Used for model weights, training checkpoints,
tar shards, JSON indexes and results, so each of those is either whole or absent. A new file gets the mode a plain
``open`` would give it (``0o666`` less the umask), and a replaced file keeps its mode, so files written for others on
a shared cluster stay readable by them.

    >>> atomic_write_json("runs/x/result.json", {"R@1": 41.2})
    >>> atomic_write("runs/x/model.pt", lambda temporary: torch.save(state, temporary))
    >>> with AtomicFile("data/000000.tar") as file:   # a binary file object, renamed into place on success
    ...     file.write(tar_bytes)
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Optional, Union

PathLike = Union[str, Path]
TEMPORARY_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only where /proc is missing)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: an existing file's own, else ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _temporary_beside(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` in ``path``'s folder (created with the folder if missing), with
    the mode the target will have (``mkstemp`` alone makes it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))
    finally:
        os.close(fd)
    return Path(temporary)


def stray_temporaries(path: PathLike) -> List[Path]:
    """The temporary files an interrupted atomic write of ``path`` left beside it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMPORARY_SUFFIX}"))


def stray_temporaries_in(folder: PathLike) -> List[Path]:
    """The temporary files interrupted atomic writes left in ``folder`` (not in its subfolders)."""
    return sorted(p for p in Path(folder).glob(f".*{TEMPORARY_SUFFIX}") if p.is_file())


class AtomicFile:
    """A binary file written under a temporary name beside ``path``, renamed over ``path`` by :meth:`commit`.

    For writers that stream into a file across many calls (tar shards). As a context manager it yields the file
    object, commits when the block succeeds and discards when it raises.

    Args:
        path: the target file.
        fsync: flush the file to disk before the rename.
    """

    def __init__(self, path: PathLike, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.temporary = _temporary_beside(self.path)
        self.file: BinaryIO = open(self.temporary, "wb")

    def commit(self) -> None:
        """Finish the file and rename it over the target."""
        self.file.flush()
        if self.fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        """Drop what was written; the target is left as it was."""
        self.file.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path: PathLike, write: Callable[[str], Any], fsync: bool = True) -> None:
    """Call ``write(temporary_path)`` for a writer that takes a file name (``torch.save``, safetensors); when it
    returns the file is flushed to disk (``fsync``) and renamed over ``path``, when it raises it is removed."""
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        write(str(temporary))
        if fsync:
            with open(temporary, "rb") as file:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str, fsync: bool = True) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    with AtomicFile(path, fsync) as file:
        file.write(text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, indent: Optional[int] = 2, fsync: bool = True) -> None:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept as is, a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n", fsync)
