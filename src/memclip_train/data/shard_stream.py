"""`ShardStream`: a resumable webdataset pipeline that yields whole batches.

Per epoch and per (rank, worker) slot:
    shards shuffled with (seed, epoch) -> split by node and worker (or by sample when there are fewer shards than
    slots) -> tar members grouped into samples (corrupt members skipped and counted) -> sample shuffle buffer seeded
    with (seed, epoch, slot) -> skip the samples a resumed run already consumed -> decode -> batch.

The shard list cycles, so every slot yields exactly its share of batches and ranks never fall out of step. Each batch
records how many raw samples its worker has consumed so far; a checkpoint stores those counts, and a resumed run
skips exactly that many samples per worker *before decoding*, which reproduces the uninterrupted stream.

Nothing is skipped silently: every skipped sample is counted once per reason (however often the cycling stream reads
it again), a shard that holds fewer samples than its ``sizes.json`` lists is reported, and a stream that can never
yield a sample (every shard unreadable, every sample skipped) stops with :class:`NoSamplesError` instead of cycling.
"""
from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from torch.utils.data import IterableDataset, get_worker_info
from webdataset.filters import _shuffle
from webdataset.tariterators import tarfile_samples

from memclip.errors import InputError

from .samples import SkipSample, collate
from .sources import listed_sizes

logger = logging.getLogger(__name__)
WARNED_SKIPS = 5  # skipped samples logged as warnings per reason and worker; the rest at debug level


class NoSamplesError(InputError):
    """A stream that can never yield a sample; the message names its shards (or table) and the skip counts.

    Raised in a DataLoader worker, it reaches the main process rebuilt from a message that carries the worker's
    traceback; the constructor keeps only the error's own line, so that programs can print it as one line.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


@dataclass
class StreamPosition:
    """Where an epoch's stream stands, per worker: raw samples consumed (what a resumed run skips before decoding)
    and batches delivered (what it no longer yields)."""

    consumed: Dict[int, int] = field(default_factory=dict)
    batches: Dict[int, int] = field(default_factory=dict)

    def update(self, worker: int, consumed: int) -> None:
        """Record one delivered batch of ``worker``, which had consumed ``consumed`` raw samples by then."""
        self.consumed[worker] = consumed
        self.batches[worker] = self.batches.get(worker, 0) + 1

    def to_dict(self) -> Dict[str, Dict[str, int]]:
        return {"consumed": {str(k): v for k, v in sorted(self.consumed.items())},
                "batches": {str(k): v for k, v in sorted(self.batches.items())}}

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Mapping[str, int]]]) -> "StreamPosition":
        data = data or {}
        return cls({int(k): int(v) for k, v in data.get("consumed", {}).items()},
                   {int(k): int(v) for k, v in data.get("batches", {}).items()})


class SkipCounter:
    """Counts skipped samples per reason, each sample (or shard) once however often the stream reads it again, and
    logs each one (the first few per reason as warnings, the rest at debug level)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._seen: set = set()

    def add(self, reason: str, identity: str, detail: str, samples: int = 1) -> None:
        """Count ``samples`` samples skipped for ``reason``, unless ``identity`` was counted for it before."""
        if (reason, identity) in self._seen:
            return
        self._seen.add((reason, identity))
        self.counts[reason] += samples
        logger.log(logging.WARNING if self.counts[reason] <= WARNED_SKIPS else logging.DEBUG, "skipping %s", detail)

    def tar_errors(self, url: str, count: bool = True) -> Callable[[Exception], bool]:
        """A webdataset error handler for one shard: skip the damaged part, and count it when ``count``."""
        def handle(error: Exception) -> bool:
            if count:
                where = str(error.args[0]).split(" @ ")[0] if error.args else type(error).__name__
                self.add("corrupt tar data", f"{url}:{where}", f"corrupt tar data in {url}: {where}")
            return True

        return handle


class _Progress:
    """Tells a stream that can never yield a sample from one that has not found one yet.

    Each pass over the source tries some sources (shards, table rows). A pass is *settled* once every sample it read
    went through decoding (the shuffle buffer holds samples back). When no sample has decoded and the settled passes
    together tried every source, none ever will: :class:`NoSamplesError`, instead of cycling forever. A resumed
    worker skips, undecoded, the samples it consumed before the interruption: a pass that held such a sample proves
    nothing about its sources, but one that read nothing at all (every shard unreadable) does.
    """

    def __init__(self, sources: Iterable[str], described: str, skips: SkipCounter) -> None:
        self.untried = set(sources)
        self.described = described
        self.skips = skips
        self.decoded = False
        self.read: Dict[int, int] = {}
        self.tried: Dict[int, List[str]] = {}
        self.done: Counter = Counter()
        self.inconclusive: set = set()

    def pass_read(self, cycle: int, samples: int, tried: List[str]) -> None:
        """Pass ``cycle`` has read all of its ``samples`` from the ``tried`` sources."""
        if not self.decoded:
            self.read[cycle], self.tried[cycle] = samples, tried
            self._settle(cycle)

    def sample_done(self, cycle: int, decoded: bool) -> None:
        """A sample of pass ``cycle`` went through the decoder."""
        if decoded:
            self.decoded = True
            self.read, self.tried, self.done = {}, {}, Counter()
        elif not self.decoded:
            self.done[cycle] += 1
            self._settle(cycle)

    def sample_passed_over(self, cycle: int) -> None:
        """A sample of pass ``cycle`` was skipped undecoded (a resumed worker's already consumed samples)."""
        if not self.decoded:
            self.inconclusive.add(cycle)
            self.done[cycle] += 1
            self._settle(cycle)

    def _settle(self, cycle: int) -> None:
        if self.read.get(cycle) != self.done[cycle]:
            return
        del self.read[cycle], self.done[cycle]
        tried = self.tried.pop(cycle)
        if cycle in self.inconclusive:
            self.inconclusive.discard(cycle)
            return
        self.untried.difference_update(tried)
        if not self.untried:
            skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skips.counts.items()))
            raise NoSamplesError(f"no usable sample in {self.described}: nothing could be read, or every sample "
                                 f"was skipped ({skipped or 'no sample could be read'})")


class BatchStream(IterableDataset):
    """Batches from a stream of raw samples, resumable per worker. Subclasses supply :meth:`_pass`, :meth:`_sources`
    and :meth:`_describe`.

    Args:
        decoder: raw sample -> dict of tensors (raises :class:`SkipSample` to drop a sample).
        batch_size: samples per batch.
        batches_per_worker: batches each (rank, worker) yields per epoch (the source cycles); None: one pass in
            order, last batch partial (validation).
        seed: shuffle seed.
        shuffle_buffer: samples in the shuffle buffer (0: no buffer shuffle).
        rank, world_size: this process in the data-parallel group.
    """

    def __init__(self, decoder: Callable[[Mapping[str, Any]], Dict[str, Any]], batch_size: int,
                 batches_per_worker: Optional[int], seed: int = 0, shuffle_buffer: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__()
        self.decoder = decoder
        self.batch_size = batch_size
        self.batches_per_worker = batches_per_worker
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.resume_from = StreamPosition()

    @property
    def training(self) -> bool:
        return self.batches_per_worker is not None

    def set_epoch(self, epoch: int, resume_from: Optional[StreamPosition] = None) -> None:
        """Select the epoch (its shuffles) and, when resuming, what each worker already delivered."""
        self.epoch = epoch
        self.resume_from = resume_from or StreamPosition()
        if hasattr(self.decoder, "epoch"):
            self.decoder.epoch = epoch

    def _pass(self, cycle: int, slot: int, slots: int, skips: SkipCounter
              ) -> Tuple[List[str], Iterator[Dict[str, Any]]]:
        """Pass ``cycle`` over this slot's share of the source: the sources it tries and their raw samples."""
        raise NotImplementedError

    def _sources(self) -> List[str]:
        """Every source (shard, table row) a slot may try."""
        raise NotImplementedError

    def _describe(self) -> str:
        """The source, for messages."""
        raise NotImplementedError

    def settings(self) -> str:
        """What a resumed run must read the same, for streams whose sources do not say it (the synthetic stream's
        settings); the class name otherwise."""
        return type(self).__name__

    def _passes(self, slot: int, slots: int, skips: SkipCounter, progress: Optional[_Progress]
                ) -> Iterator[Tuple[int, Dict[str, Any]]]:
        """(pass number, raw sample): passes without end when training, one pass otherwise."""
        for cycle in itertools.count() if self.training else range(1):
            tried, samples = self._pass(cycle, slot, slots, skips)
            read = 0
            for raw in samples:
                read += 1
                yield cycle, raw
            if progress is not None:
                progress.pass_read(cycle, read, tried)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slots = self.world_size * workers
        slot = self.rank * workers + worker
        skip = self.resume_from.consumed.get(worker, 0)
        produced = self.resume_from.batches.get(worker, 0)
        if self.training and produced >= self.batches_per_worker:
            return
        skips = SkipCounter()
        progress = _Progress(self._sources(), self._describe(), skips)
        samples: Iterator[Tuple[int, Dict[str, Any]]] = self._passes(slot, slots, skips, progress)
        if self.training and self.shuffle_buffer > 1:
            samples = _shuffle(samples, self.shuffle_buffer, min(100, self.shuffle_buffer),
                               rng=random.Random(f"{self.seed}:{self.epoch}:{slot}"))
        consumed, pending = 0, []
        for cycle, raw in samples:
            consumed += 1
            if consumed <= skip:
                progress.sample_passed_over(cycle)
                continue
            try:
                pending.append(self.decoder(raw))
            except SkipSample as error:
                skips.add(error.reason, error.key, str(error))
                progress.sample_done(cycle, decoded=False)
                continue
            progress.sample_done(cycle, decoded=True)
            if len(pending) == self.batch_size:
                yield self._batch(pending, worker, consumed, skips)
                pending, produced = [], produced + 1
                if self.training and produced >= self.batches_per_worker:
                    return
        if pending and not self.training:
            yield self._batch(pending, worker, consumed, skips)

    def check_usable(self) -> None:
        """Decode samples from the start of the source, in this process, until one succeeds: data that holds no
        usable sample then stops a run when it starts, not after its first epoch has trained (validation data).

        Raises:
            NoSamplesError: a whole pass over the source yielded no usable sample; the message names the source and
                the skip counts.
        """
        skips = SkipCounter()
        tried, samples = self._pass(0, 0, 1, skips)
        for raw in samples:
            try:
                self.decoder(raw)
                return
            except SkipSample as error:
                skips.add(error.reason, error.key, str(error))
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(skips.counts.items()))
        raise NoSamplesError(f"no usable sample in {self._describe()}: nothing could be read, or every sample was "
                             f"skipped ({skipped or 'no sample could be read'})")

    def _batch(self, pending: list, worker: int, consumed: int, skips: SkipCounter) -> Dict[str, Any]:
        batch = collate(pending)
        batch["_worker"] = worker
        batch["_consumed"] = consumed
        batch["_skipped"] = dict(skips.counts)
        return batch


class ShardStream(BatchStream):
    """Batches from webdataset shards (local paths, ``pipe:`` or URLs that webdataset can open).

    Shards are permuted per (seed, epoch, cycle) and split over the (rank, worker) slots; with fewer shards than
    slots every slot reads all shards and keeps every slots-th sample. ``resampled`` draws shards with replacement,
    in proportion to ``weights`` when given (one per shard). A shard that yields fewer samples than its folder's
    ``sizes.json`` lists is reported and the missing samples are counted as ``short shard``.
    """

    def __init__(self, urls: List[str], decoder: Callable[[Mapping[str, Any]], Dict[str, Any]], batch_size: int,
                 batches_per_worker: Optional[int], seed: int = 0, resampled: bool = False,
                 shuffle_buffer: int = 1000, rank: int = 0, world_size: int = 1,
                 weights: Optional[List[float]] = None) -> None:
        super().__init__(decoder, batch_size, batches_per_worker, seed, shuffle_buffer, rank, world_size)
        if not urls:
            raise InputError("no shards to read")
        if weights is not None and (len(weights) != len(urls) or not sum(weights) > 0):
            raise InputError(f"{len(weights)} shard weights for {len(urls)} shards, or all zero")
        self.urls = list(urls)
        self.resampled = resampled
        self.weights = weights
        self.listed_sizes = listed_sizes(self.urls)

    def _shard_order(self, cycle: int, slot: int, slots: int) -> List[str]:
        if self.resampled:
            rng = random.Random(f"{self.seed}:{self.epoch}:{cycle}:{slot}")
            if self.weights is not None:
                return rng.choices(self.urls, weights=self.weights, k=len(self.urls))
            return [rng.choice(self.urls) for _ in range(len(self.urls))]
        order = list(self.urls)
        if self.training:
            random.Random(f"{self.seed}:{self.epoch}:{cycle}").shuffle(order)
        return order[slot::slots] if len(order) >= slots else order

    def _sources(self) -> List[str]:
        return self.urls

    def _describe(self) -> str:
        shown = ", ".join(self.urls[:3]) + (", ..." if len(self.urls) > 3 else "")
        return f"{len(self.urls)} shard{'s' if len(self.urls) > 1 else ''} ({shown})"

    def _pass(self, cycle: int, slot: int, slots: int, skips: SkipCounter
              ) -> Tuple[List[str], Iterator[Dict[str, Any]]]:
        shards = self._shard_order(cycle, slot, slots)
        if self.resampled or len(self.urls) >= slots:
            return shards, self._read(shards, skips, count=True)
        # Every slot reads every shard and keeps its share of the samples: shard problems are counted by slot 0.
        return shards, itertools.islice(self._read(shards, skips, count=slot == 0), slot, None, slots)

    def _read(self, shards: List[str], skips: SkipCounter, count: bool) -> Iterator[Dict[str, Any]]:
        for url in shards:
            read = 0
            for raw in tarfile_samples([{"url": url}], handler=skips.tar_errors(url, count)):
                read += 1
                yield raw
            listed = self.listed_sizes.get(url)
            if count and listed is not None and read < listed:
                skips.add("short shard", url, f"{url}: read {read} of the {listed} samples its sizes.json lists "
                                              "(cut short?)", listed - read)
