"""Write records as webdataset shards in parallel, resumably: a finished shard is never rewritten."""
from __future__ import annotations

import logging
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from tqdm import tqdm

from ..data.shard_writer import SIZES_FILE, write_json_atomic, write_shard
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


@dataclass
class SplitSummary:
    """Counts for one output split."""

    shards: int = 0
    shards_skipped: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)

    def to_dict(self) -> Dict[str, object]:
        return {"shards": self.shards, "shards_already_done": self.shards_skipped, "samples_written": self.written,
                "skipped": dict(sorted(self.skipped.items()))}


def _samples(job: ShardJob, skipped: Counter) -> Iterator[Tuple[str, Dict[str, object]]]:
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
        yield record.key, {
            "jpg": jpeg,
            "txt": record.short or record.long,
            "json": {"long": record.long or record.short, "short": record.short or record.long,
                     "source": job.source_name, "image": record.image, "width": width, "height": height},
        }


def _run_job(job: ShardJob) -> Tuple[str, int, Counter]:
    skipped: Counter = Counter()
    written = write_shard(job.path, _samples(job, skipped))
    return job.path.name, written, skipped


def _count_samples(path: Path) -> int:
    with tarfile.open(path) as tar:
        return len({member.name.split(".", 1)[0] for member in tar.getmembers() if member.isfile()})


def write_split(
    records: Sequence[Record],
    folder: Path,
    image_roots: Sequence[Path],
    options: ImageOptions,
    source_name: str,
    samples_per_shard: int = 1000,
    workers: int = 1,
    progress: bool = True,
) -> SplitSummary:
    """Write ``records`` as ``folder/000000.tar ...`` plus ``sizes.json``; shards that exist are kept as they are.

    Record ``i`` always goes to shard ``i // samples_per_shard``, so a resumed run writes exactly the missing shards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    summary = SplitSummary()
    jobs: List[ShardJob] = []
    sizes: Dict[str, int] = {}
    for number, start in enumerate(range(0, len(records), samples_per_shard)):
        path = folder / f"{number:06d}.tar"
        summary.shards += 1
        if path.exists():
            summary.shards_skipped += 1
            sizes[path.name] = _count_samples(path)
            continue
        jobs.append(ShardJob(path, list(records[start:start + samples_per_shard]), tuple(image_roots), options,
                             source_name))
    bar = tqdm(total=sum(len(j.records) for j in jobs), unit="sample", desc=folder.name, disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            results = list(_consume(pool.imap_unordered(_run_job, jobs), jobs, bar))
    else:
        results = list(_consume(map(_run_job, jobs), jobs, bar))
    bar.close()
    for name, written, skipped in results:
        sizes[name] = written
        summary.written += written
        summary.skipped.update(skipped)
    write_json_atomic(folder / SIZES_FILE, dict(sorted(sizes.items())))
    return summary


def _consume(results: Iterator, jobs: Sequence[ShardJob], bar: tqdm) -> Iterator:
    lengths = {job.path.name: len(job.records) for job in jobs}
    for result in results:
        bar.update(lengths[result[0]])
        yield result
