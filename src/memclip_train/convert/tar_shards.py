"""Write records as webdataset tar shards in parallel, resumably: a finished shard is never rewritten."""
from __future__ import annotations

import logging
import tarfile
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from tqdm import tqdm

from memclip.atomic_io import atomic_write_json

from ..data.shard_writer import SIZES_FILE, write_shard
from .conversion_log import ConversionLog
from .records import BadImage, ImageOptions, Record, encode_image, find_image

logger = logging.getLogger(__name__)


@dataclass
class ShardJob:
    """One shard to write: its file and its records (in order)."""

    path: Path
    records: List[Record]
    image_roots: Tuple[Path, ...]
    options: ImageOptions
    source_name: str


def _samples(job: ShardJob, skipped: Counter, lacking: Counter) -> Iterator[Tuple[str, Dict[str, object]]]:
    """The samples of a job's records; skipped records are counted in ``skipped`` by reason, written samples that
    lack a caption in ``lacking``."""
    for record in job.records:
        if not record.long and not record.short:
            skipped["no_caption"] += 1
            continue
        try:
            jpeg, (width, height) = encode_image(find_image(record.image, job.image_roots), job.options)
        except BadImage as error:
            skipped[error.reason] += 1
            logger.debug("%s", error)
            continue
        about = {"short": record.short or record.long, "source": job.source_name, "image": record.image,
                 "width": width, "height": height}
        if record.long:
            about["long"] = record.long
        else:  # never the short caption in its place: the trainer counts (or refuses) a missing long caption
            lacking["long_caption"] += 1
        yield record.key, {"jpg": jpeg, "txt": record.short or record.long, "json": about}


def _run_job(job: ShardJob) -> Tuple[str, int, Counter, Counter]:
    skipped: Counter = Counter()
    lacking: Counter = Counter()
    written = write_shard(job.path, _samples(job, skipped, lacking))
    return job.path.name, written, skipped, lacking


def _count_samples(path: Path) -> int:
    with tarfile.open(path) as tar:
        return len({member.name.split(".", 1)[0] for member in tar.getmembers() if member.isfile()})


def write_split(
    records: Sequence[Record],
    folder: Path,
    image_roots: Sequence[Path],
    options: ImageOptions,
    source_name: str,
    log: ConversionLog,
    samples_per_shard: int = 1000,
    workers: int = 1,
    progress: bool = True,
) -> Dict[str, object]:
    """Write ``records`` as ``folder/000000.tar ...`` plus ``sizes.json``; shards that exist are kept as they are.

    Record ``i`` always goes to shard ``i // samples_per_shard``, so a resumed run writes exactly the missing shards.
    Each finished shard is recorded in ``log`` at once; returns the split's totals over every run.
    """
    split = folder.name
    folder.mkdir(parents=True, exist_ok=True)
    jobs: List[ShardJob] = []
    done = log.shards(split)
    starts = range(0, len(records), samples_per_shard)
    for number, start in enumerate(starts):
        path = folder / f"{number:06d}.tar"
        if path.exists():
            if path.name not in done:  # finished by a run killed before it could record the shard
                log.record(split, path.name, _count_samples(path), {})
            continue
        done.pop(path.name, None)
        jobs.append(ShardJob(path, list(records[start:start + samples_per_shard]), tuple(image_roots), options,
                             source_name))
    log.start_split(split, len(starts), len(starts) - len(jobs))
    bar = tqdm(total=sum(len(j.records) for j in jobs), unit="sample", desc=split, disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            _record(pool.imap_unordered(_run_job, jobs), jobs, bar, log, split)
    else:
        _record(map(_run_job, jobs), jobs, bar, log, split)
    bar.close()
    sizes = {name: shard["written"] for name, shard in log.shards(split).items()}
    atomic_write_json(folder / SIZES_FILE, dict(sorted(sizes.items())))
    return log.totals(split)


def _record(results: Iterator, jobs: Sequence[ShardJob], bar: tqdm, log: ConversionLog, split: str) -> None:
    lengths = {job.path.name: len(job.records) for job in jobs}
    for name, written, skipped, lacking in results:
        log.record(split, name, written, skipped, lacking)
        bar.update(lengths[name])
