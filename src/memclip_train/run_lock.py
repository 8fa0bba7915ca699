"""`RunLock`: one process at a time trains a run folder.

Two trainers in one folder (a second ``--resume latest`` while the first still runs, a SLURM requeue while the old
job lives) would interleave ``metrics.jsonl`` and overwrite each other's checkpoints. The first process takes
``<run>/.lock``: an exclusive ``flock`` on that file, which the kernel releases when the process dies however it
dies, and the file's content, which names the holder (host, process id, start time, command).

- a lock held by a live process is refused, naming it;
- a lock left by a dead process of this host (``kill -9``, a crash) is broken with a warning naming that process;
- a lock written from another host is refused naming that host, since this host cannot tell whether the holder still
  runs there; the message says which file to delete once it does not.

A process that ends normally (an error and a signal included) deletes the file.

    with RunLock(run_dir):
        train()
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .error_reporting import UserError

logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class RunLocked(UserError):
    """The run folder is being trained by another process (or was, from another host); the message names it."""


def _describe(holder: Dict[str, Any]) -> str:
    since = holder.get("started")
    return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
            + (f" (since {since})" if since else "") + (f": {holder['command']}" if holder.get("command") else ""))


class RunLock:
    """The lock of one run folder (see the module docstring).

    Args:
        folder: the run folder (it must exist).
        host: this host's name (tests pass another).
    """

    def __init__(self, folder: Path, host: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.host = host or socket.gethostname()
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunLocked: a live process holds it, or a process on another host wrote it.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLocked(f"run folder {self.folder} is in use by {_describe(self._read())}: wait for it to "
                                "finish, or stop it first") from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the holder deleted the file between our open and our lock: take the new one
        holder = self._read()
        if holder and holder.get("host") != self.host:
            os.close(fd)
            raise RunLocked(f"run folder {self.folder} is locked by {_describe(holder)}. This host cannot tell whether "
                            f"it still runs there: if it does not, delete {self.path} and run again")
        if holder:
            logger.warning("breaking the stale lock of %s: it no longer runs (killed, or crashed)", _describe(holder))
        record = {"host": self.host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _read(self) -> Dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return {}
        try:
            holder = json.loads(text) if text.strip() else {}
        except ValueError:
            return {"host": "?", "pid": "?", "command": f"an unreadable lock file ({text[:40]!r})"}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Delete the lock file and let go of it (nothing happens when it is not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
