"""Resolving ``--train-data`` into shard lists and sample counts (brace expansion, ``::`` for several sources, and
shard folders whose ``sizes.json`` lists their shards)."""
from __future__ import annotations

import json
import logging
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import braceexpand
import pandas as pd

from memclip.errors import InputError

SIZES_FILE = "sizes.json"
logger = logging.getLogger(__name__)


def read_sizes(folder: str) -> Optional[Dict[str, int]]:
    """A folder's ``sizes.json`` (``{shard file name: samples}``), or None when it has none.

    Names are confined to the folder: a name with a path separator, ``..`` or an absolute path would make a reader
    train on shards elsewhere.

    Raises:
        ValueError: the file is not a json object of shard names in this folder and sample counts >= 0; the message
            names the file and the entry.
    """
    path = Path(folder) / SIZES_FILE
    if not path.is_file():
        return None
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise InputError(f"{path}: not a readable json file ({error})") from error
    if not isinstance(sizes, dict):
        raise InputError(f"{path}: expected a json object {{shard file name: samples}}, got a {type(sizes).__name__}")
    for name, count in sizes.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
            raise InputError(f"{path}: the shard name {name!r} is not a file in {folder} (names in {SIZES_FILE} "
                             "are file names in its folder)")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError(f"{path}: {name}: the sample count {count!r} is not an integer >= 0")
    return sizes


def folder_shards(folder: str) -> List[str]:
    """The shards a folder's ``sizes.json`` lists (what the converter and the synthetic world write), sorted.

    Raises:
        FileNotFoundError: the folder has no sizes.json.
        ValueError: the sizes.json is malformed or names a file outside the folder (:func:`read_sizes`).
    """
    sizes = read_sizes(folder)
    if sizes is None:
        raise FileNotFoundError(f"{folder} is a folder without {SIZES_FILE}: give its shards as a brace pattern, e.g. "
                                f"'{folder.rstrip('/')}/{{000000..000009}}.tar'")
    return [os.path.join(folder, name) for name in sorted(sizes)]


def _expand_part(part: str) -> List[str]:
    part = part.strip()
    return folder_shards(part) if part and os.path.isdir(part) else list(braceexpand.braceexpand(part))


def expand_urls(spec: str) -> List[str]:
    """``a/{000..009}.tar::b/{000..003}.tar`` -> the 14 shard paths, in order; a folder stands for the shards its
    sizes.json lists (``/data/shards/sharegpt4v/train``)."""
    urls: List[str] = []
    for part in spec.split("::"):
        urls.extend(_expand_part(part))
    return [u for u in urls if u]


def shard_weights(spec: str, factors: str) -> List[float]:
    """Each shard's sampling weight: the ``::``-separated factor of its source (open_clip's
    ``--train-data-upsampling-factors``), so a source's share is its factor times its shard count."""
    weights: List[float] = []
    for part, factor in zip(spec.split("::"), factors.split("::")):
        weights.extend(float(factor) for url in _expand_part(part) if url)
    return weights


def is_csv(spec: str) -> bool:
    return spec.endswith((".csv", ".tsv")) and os.path.isfile(spec)


def listed_sizes(urls: List[str]) -> Dict[str, int]:
    """``{url: samples}`` for the shards that their folder's ``sizes.json`` lists (others are left out)."""
    sizes: Dict[str, int] = {}
    folders: Dict[str, Optional[Dict[str, int]]] = {}
    for url in urls:
        folder = os.path.dirname(url)
        if folder not in folders:
            folders[folder] = read_sizes(folder) if "://" not in url and not url.startswith("pipe:") else None
        listed = folders[folder] or {}
        name = os.path.basename(url)
        if name in listed:
            sizes[url] = int(listed[name])
    return sizes


def count_samples(urls: List[str]) -> Optional[int]:
    """Total samples of the listed shards from each folder's ``sizes.json``; None if any shard is not listed."""
    sizes = listed_sizes(urls)
    return sum(sizes[url] for url in urls) if all(url in sizes for url in urls) else None


def resolve_webdataset(spec: str, num_samples: Optional[int], flag: str) -> Tuple[List[str], int]:
    """Shard paths and the samples per epoch.

    Raises:
        FileNotFoundError: a local shard is missing.
        ValueError: the count is unknown (no sizes.json entry and no ``--train-num-samples``).
    """
    urls = expand_urls(spec)
    if not urls:
        raise InputError(f"{flag} {spec!r} expands to no shards")
    local_missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.isfile(u)]
    if local_missing:
        raise FileNotFoundError(f"{flag}: {len(local_missing)} shards do not exist, e.g. {local_missing[0]}")
    repeated = sorted(url for url, times in Counter(urls).items() if times > 1)
    if repeated:
        logger.warning("%s lists %d shard%s more than once (e.g. %s): each listing is read, and counted in the "
                       "samples per epoch", flag, len(repeated), "s" if len(repeated) > 1 else "", repeated[0])
    if num_samples is None:
        num_samples = count_samples(urls)
    if num_samples is None:
        raise InputError(f"{flag} {spec!r}: cannot tell how many samples an epoch holds: no sizes.json lists these "
                         f"shards; pass {flag.replace('data', 'num-samples')} N")
    if num_samples == 0:
        raise InputError(f"{flag} {spec!r}: the sizes.json of these shards lists no sample")
    return urls, num_samples


def read_table(path: str, separator: str, rows: Optional[int] = None) -> pd.DataFrame:
    """A CSV/TSV file as strings (the first ``rows`` rows, or all).

    Raises:
        ValueError: the file is not a table with this separator; the message names the file and, from the parser,
            the line.
    """
    try:
        return pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, nrows=rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = next(iter(str(error).strip().splitlines()), type(error).__name__)
        raise InputError(f"{path}: not a table separated by {separator!r} ({reason})") from error


def peek_samples(urls: List[str], count: int = 16) -> Tuple[Optional[str], List[Dict[str, bytes]]]:
    """The text fields (``txt``, ``json``, ...; images are left unread) of the first ``count`` samples of the first
    local shard that can be read, and that shard; (None, []) when no local shard can be read (remote shards are not
    peeked; the stream reports unreadable ones)."""
    for url in urls:
        if "://" in url or url.startswith("pipe:") or not os.path.isfile(url):
            continue
        samples: Dict[str, Dict[str, bytes]] = {}
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, name = member.name.rpartition("/")
                    key, dot, extension = name.partition(".")
                    if not dot:
                        continue
                    key = f"{folder}/{key}" if folder else key
                    if key not in samples and len(samples) == count:
                        break
                    fields = samples.setdefault(key, {})
                    text = extension.rsplit(".", 1)[-1] in ("txt", "json")
                    fields[extension] = tar.extractfile(member).read() if text else b""
        except (tarfile.TarError, OSError):
            continue
        if samples:
            return url, list(samples.values())
    return None, []


def held_keys(sample: Dict[str, bytes]) -> List[str]:
    """The caption keys a raw sample holds, as ``--caption-key`` names them: its fields (``txt``, ``jpg``) and the
    non-null keys of its json (``json.long``)."""
    keys = []
    for extension, data in sample.items():
        keys.append(extension)
        if extension.rsplit(".", 1)[-1] == "json":
            try:
                record = json.loads(data)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                keys.extend(f"{extension}.{name}" for name, value in record.items() if value is not None)
    return keys


def has_captions(spec: str, dataset_type: str = "auto", csv_caption_key: str = "title", separator: str = "\t",
                 flag: str = "--val-data") -> bool:
    """Whether the first sample of a source carries a caption (``txt`` or ``json``), without decoding images."""
    if (dataset_type == "csv") or (dataset_type == "auto" and is_csv(spec)):
        return csv_caption_key in read_table(spec, separator, rows=1).columns
    first = expand_urls(spec)[0]
    if "://" in first or first.startswith("pipe:") or not os.path.isfile(first):
        return True
    try:
        with tarfile.open(first) as tar:
            for index, member in enumerate(tar):
                if member.name.endswith((".txt", ".json")):
                    return True
                if index > 20:
                    break
    except tarfile.TarError as error:
        raise InputError(f"{flag} {first}: not a readable tar file ({str(error).splitlines()[0]})") from error
    return False
