"""`ShardWriter`: deterministic webdataset tar shards with open_clip's ``sizes.json``.

(A shard here is a tar file of samples; the value-table shards of values parallelism are column slices of a
memory's table, :mod:`memory_layers.values_parallel`.)

Given the same samples in the same order, the shards are byte-identical: every tar member carries fixed metadata
(mtime, uid, gid, user and group names, mode), a sample's fields are written in sorted extension order, and no
timestamp or host detail enters the files. Each shard is written to a hidden temporary file in the output folder
and renamed into place only when complete (:class:`memclip.atomic_io.AtomicFile`), so a reader never sees a
half-written ``000003.tar``.

    >>> with ShardWriter("data/train", samples_per_shard=1000) as writer:
    ...     writer.write("000000000", {"jpg": jpeg_bytes, "txt": "a red star", "json": {"long": "..."}})
    >>> # data/train/000000.tar and data/train/sizes.json ({"000000.tar": 1})
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from memclip.atomic_io import AtomicFile, atomic_write_json
from memclip.errors import InputError

logger = logging.getLogger(__name__)

SIZES_FILE = "sizes.json"
FieldValue = Union[bytes, str, Mapping[str, Any], list]


def encode_field(value: FieldValue) -> bytes:
    """A sample field as bytes: bytes as they are, str as UTF-8, dicts and lists as compact UTF-8 JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raise TypeError(f"cannot write a field of type {type(value).__name__}: give bytes, str, a dict or a list")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    """Append one member with fixed metadata, so equal inputs give byte-identical tars."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _check_sample(key: str, fields: Mapping[str, FieldValue], seen: set) -> Dict[str, bytes]:
    """Validate a sample and encode its fields in sorted order (fails before anything is written)."""
    if not key or "." in key or key.startswith("/") or key in seen:
        why = "is repeated" if key in seen else "must be non-empty, relative and without '.'"
        raise InputError(f"sample key {key!r} {why}")
    if not fields:
        raise InputError(f"sample {key!r} has no fields")
    for ext in fields:
        if not ext or ext.startswith(".") or "/" in ext:
            raise InputError(f"sample {key!r}: bad field name {ext!r}")
    return {ext: encode_field(fields[ext]) for ext in sorted(fields)}


def write_shard(
    path: Union[str, Path],
    samples: Iterable[Tuple[str, Mapping[str, FieldValue]]],
    mtime: int = 0,
    fsync: bool = True,
) -> int:
    """Write one complete shard atomically (temporary file, then rename); returns the number of samples.

    For writers that produce whole shards independently (parallel converters): a shard that exists is complete.
    """
    seen: set = set()
    with AtomicFile(path, fsync) as file:
        with tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, fields in samples:
                for ext, data in _check_sample(key, fields, seen).items():
                    _add_member(tar, f"{key}.{ext}", data, mtime)
                seen.add(key)
    return len(seen)


class ShardWriter:
    """Write samples into ``folder/000000.tar, 000001.tar, ...`` with ``samples_per_shard`` samples each.

    Args:
        folder: output folder (created if missing). Existing shards with the same names are replaced.
        samples_per_shard: samples per shard; the last shard holds the remainder.
        name_format: shard file name for a shard number (``"{:06d}.tar"`` gives ``000000.tar``).
        mtime: the modification time stamped on every member (seconds since the epoch).
        fsync: flush each finished shard to disk before renaming it into place.

    Use it as a context manager, or call :meth:`close`, which finishes the last shard and writes ``sizes.json``
    (``{"000000.tar": n0, ...}``, open_clip's format). When the ``with`` block raises, the unfinished shard is
    removed and ``sizes.json`` is not written.
    """

    def __init__(
        self,
        folder: Union[str, Path],
        samples_per_shard: int = 1000,
        name_format: str = "{:06d}.tar",
        mtime: int = 0,
        fsync: bool = True,
    ) -> None:
        if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int) or samples_per_shard < 1:
            raise InputError(f"samples_per_shard={samples_per_shard!r}: must be a positive integer")
        if name_format.format(0) == name_format.format(1) or not name_format.format(0).endswith(".tar"):
            raise InputError(f"name_format={name_format!r}: must number the shards and end in .tar")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.samples_per_shard = samples_per_shard
        self.name_format = name_format
        self.mtime = int(mtime)
        self.fsync = fsync
        self.sizes: Dict[str, int] = {}
        self._keys: set = set()
        self._tar: Optional[tarfile.TarFile] = None
        self._file: Optional[AtomicFile] = None
        self._shard_name = ""
        self._in_shard = 0
        self._closed = False

    @property
    def num_samples(self) -> int:
        """Samples written so far, the unfinished shard included."""
        return len(self._keys)

    def write(self, key: str, fields: Mapping[str, FieldValue]) -> None:
        """Add one sample: ``key`` becomes ``__key__``; each field ``ext -> value`` becomes member ``key.ext``.

        Keys must be unique within the writer and contain no ``.`` (webdataset splits names at the first dot).
        """
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        encoded = _check_sample(key, fields, self._keys)
        if self._tar is None:
            self._open_shard()
        for ext, data in encoded.items():
            _add_member(self._tar, f"{key}.{ext}", data, self.mtime)
        self._keys.add(key)
        self._in_shard += 1
        if self._in_shard == self.samples_per_shard:
            self._finish_shard()

    def close(self) -> Dict[str, int]:
        """Finish the last shard, write ``sizes.json`` and return the shard sizes ``{name: samples}``."""
        if not self._closed:
            if self._tar is not None:
                self._finish_shard()
            atomic_write_json(self.folder / SIZES_FILE, self.sizes)
            self._closed = True
        return dict(self.sizes)

    def abort(self) -> None:
        """Drop the unfinished shard (finished shards stay) and close without writing ``sizes.json``."""
        if self._tar is not None:
            self._tar.close()
            self._file.discard()
            self._tar = None
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_shard(self) -> None:
        self._shard_name = self.name_format.format(len(self.sizes))
        self._file = AtomicFile(self.folder / self._shard_name, self.fsync)
        self._tar = tarfile.open(fileobj=self._file.file, mode="w", format=tarfile.PAX_FORMAT)
        self._in_shard = 0

    def _finish_shard(self) -> None:
        self._tar.close()
        self._file.commit()
        self.sizes[self._shard_name] = self._in_shard
        logger.debug("wrote %s (%d samples)", self.folder / self._shard_name, self._in_shard)
        self._tar = None
        self._file = None
