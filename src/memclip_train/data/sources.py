"""Resolving ``--train-data`` into shard lists and sample counts (brace expansion, ``::`` for several sources, and
shard folders whose ``sizes.json`` lists their shards)."""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import braceexpand
import pandas as pd

SIZES_FILE = "sizes.json"


def folder_shards(folder: str) -> List[str]:
    """The shards a folder's ``sizes.json`` lists (what the converter and the synthetic world write), sorted.

    Raises:
        FileNotFoundError: the folder has no sizes.json.
    """
    path = Path(folder) / SIZES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is a folder without {SIZES_FILE}: give its shards as a brace pattern, e.g. "
                                f"'{folder.rstrip('/')}/{{000000..000009}}.tar'")
    return [os.path.join(folder, name) for name in sorted(json.loads(path.read_text()))]


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
            path = Path(folder) / SIZES_FILE
            folders[folder] = json.loads(path.read_text()) if path.is_file() else None
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
        raise ValueError(f"{flag} {spec!r} expands to no shards")
    local_missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.isfile(u)]
    if local_missing:
        raise FileNotFoundError(f"{flag}: {len(local_missing)} shards do not exist, e.g. {local_missing[0]}")
    if num_samples is None:
        num_samples = count_samples(urls)
    if num_samples is None:
        raise ValueError(f"{flag} {spec!r}: cannot tell how many samples an epoch holds: no sizes.json lists these "
                         f"shards; pass {flag.replace('data', 'num-samples')} N")
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
        raise ValueError(f"{path}: not a table separated by {separator!r} ({reason})") from error


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
        raise ValueError(f"{flag} {first}: not a readable tar file ({str(error).splitlines()[0]})") from error
    return False
