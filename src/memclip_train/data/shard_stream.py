"""`ShardStream`: a resumable webdataset pipeline that yields whole batches.

Per epoch and per (rank, worker) slot:
    shards shuffled with (seed, epoch) -> split by node and worker (or by sample when there are fewer shards than
    slots) -> tar members grouped into samples (corrupt members skipped and counted) -> sample shuffle buffer seeded
    with (seed, epoch, slot) -> skip the samples a resumed run already consumed -> decode -> batch.

The shard list cycles, so every slot yields exactly its share of batches and ranks never fall out of step. Each batch
records how many raw samples its worker has consumed so far; a checkpoint stores those counts, and a resumed run
skips exactly that many samples per worker *before decoding*, which reproduces the uninterrupted stream.
"""
from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from torch.utils.data import IterableDataset, get_worker_info
from webdataset.filters import _shuffle
from webdataset.tariterators import tarfile_samples

from .samples import SkipSample, collate

logger = logging.getLogger(__name__)


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


class _Counting:
    """A webdataset error handler that counts what it skips (and logs the first few)."""

    def __init__(self, counts: Counter, reason: str) -> None:
        self.counts = counts
        self.reason = reason

    def __call__(self, error: Exception) -> bool:
        self.counts[self.reason] += 1
        if self.counts[self.reason] <= 5:
            logger.warning("skipping %s: %r", self.reason, error)
        return True


class BatchStream(IterableDataset):
    """Batches from a stream of raw samples, resumable per worker. Subclasses supply :meth:`_raw_samples`.

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

    def _raw_samples(self, slot: int, slots: int, counts: Counter) -> Iterator[Dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slots = self.world_size * workers
        slot = self.rank * workers + worker
        counts: Counter = Counter()
        samples = self._raw_samples(slot, slots, counts)
        if self.training and self.shuffle_buffer > 1:
            samples = _shuffle(samples, self.shuffle_buffer, min(100, self.shuffle_buffer),
                               rng=random.Random(f"{self.seed}:{self.epoch}:{slot}"))
        skip = self.resume_from.consumed.get(worker, 0)
        produced = self.resume_from.batches.get(worker, 0)
        if self.training and produced >= self.batches_per_worker:
            return
        consumed, pending = 0, []
        for raw in samples:
            consumed += 1
            if consumed <= skip:
                continue
            try:
                pending.append(self.decoder(raw))
            except SkipSample as error:
                _Counting(counts, error.reason)(error)
                continue
            if len(pending) == self.batch_size:
                yield self._batch(pending, worker, consumed, counts)
                pending, produced = [], produced + 1
                if self.training and produced >= self.batches_per_worker:
                    return
        if pending and not self.training:
            yield self._batch(pending, worker, consumed, counts)

    def _batch(self, pending: list, worker: int, consumed: int, counts: Counter) -> Dict[str, Any]:
        batch = collate(pending)
        batch["_worker"] = worker
        batch["_consumed"] = consumed
        batch["_skipped"] = dict(counts)
        return batch


class ShardStream(BatchStream):
    """Batches from webdataset shards (local paths, ``pipe:`` or URLs that webdataset can open).

    Shards are permuted per (seed, epoch, cycle) and split over the (rank, worker) slots; with fewer shards than
    slots every slot reads all shards and keeps every slots-th sample. ``resampled`` draws shards with replacement,
    in proportion to ``weights`` when given (one per shard).
    """

    def __init__(self, urls: List[str], decoder: Callable[[Mapping[str, Any]], Dict[str, Any]], batch_size: int,
                 batches_per_worker: Optional[int], seed: int = 0, resampled: bool = False,
                 shuffle_buffer: int = 1000, rank: int = 0, world_size: int = 1,
                 weights: Optional[List[float]] = None) -> None:
        super().__init__(decoder, batch_size, batches_per_worker, seed, shuffle_buffer, rank, world_size)
        if not urls:
            raise ValueError("no shards to read")
        if weights is not None and (len(weights) != len(urls) or not sum(weights) > 0):
            raise ValueError(f"{len(weights)} shard weights for {len(urls)} shards, or all zero")
        self.urls = list(urls)
        self.resampled = resampled
        self.weights = weights

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

    def _raw_samples(self, slot: int, slots: int, counts: Counter) -> Iterator[Dict[str, Any]]:
        cycles = itertools.count() if self.training else range(1)
        split_samples = not self.resampled and len(self.urls) < slots
        for cycle in cycles:
            shards = self._shard_order(cycle, slot, slots)
            stream = tarfile_samples(({"url": url} for url in shards), handler=_Counting(counts, "corrupt tar data"))
            if split_samples:
                stream = itertools.islice(stream, slot, None, slots)
            yield from stream
