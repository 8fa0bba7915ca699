"""Building the training and validation loaders of a run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader

from ..distributed import DistributedEnv
from ..params import DataConfig
from ..preemption import leave_signals_to_the_main_process
from .csv_stream import CsvStream
from .samples import SampleDecoder, SampleFields
from .shard_stream import BatchStream, ShardStream
from .sources import is_csv, resolve_webdataset, shard_weights
from .synth_stream import SynthStream, is_synth_stream, parse_stream_spec


@dataclass
class RunData:
    """A loader with its stream and epoch size.

    Attributes:
        loader: yields batch dicts (tensors plus ``_worker``, ``_consumed`` and ``_skipped`` bookkeeping).
        stream: the dataset behind it (``set_epoch`` selects the epoch and the resume point).
        batches_per_epoch: batches this rank sees per epoch (None: one pass, validation).
        samples_per_epoch: samples per epoch over all ranks.
    """

    loader: DataLoader
    stream: BatchStream
    batches_per_epoch: Optional[int]
    samples_per_epoch: Optional[int]


def _kind(spec: str, dataset_type: str) -> str:
    if dataset_type != "auto":
        return dataset_type
    if is_synth_stream(spec):
        return "synth-stream"
    return "csv" if is_csv(spec) else "webdataset"


def build_data(spec: str, config: DataConfig, fields: SampleFields, preprocess: Callable, tokenizer: Callable,
               batch_size: int, env: DistributedEnv, seed: int, train: bool,
               num_samples: Optional[int] = None) -> RunData:
    """A training loader (shuffled, cycling, an exact number of batches per epoch on every rank) or a validation
    loader (one ordered pass on this process alone)."""
    decoder = SampleDecoder(fields, preprocess, tokenizer, config.caption_key, config.long_caption_key, seed)
    workers = config.workers
    rank, world = (env.rank, env.world_size) if train else (0, 1)
    flag = "--train-data" if train else "--val-data"
    kind = _kind(spec, config.dataset_type)
    if kind == "synth-stream":
        if not train:
            raise ValueError(f"{flag} {spec!r}: a synth stream is endless; validate on a written world's shards "
                             "(python -m memclip_train.synth --out DIR, then --val-data DIR/val/000000.tar)")
        if num_samples is None:
            raise ValueError(f"{flag} {spec!r}: a synth stream is endless; pass --train-num-samples N (samples per "
                             "epoch)")
        stream: BatchStream = SynthStream(parse_stream_spec(spec), decoder, batch_size, None, seed, rank, world)
        total = num_samples
    elif kind == "csv":
        stream = CsvStream(spec, decoder, batch_size, None, config.csv_img_key, config.csv_caption_key,
                           config.csv_long_caption_key, config.csv_separator, seed, rank, world)
        total = num_samples or len(stream)
    else:
        urls, total = resolve_webdataset(spec, num_samples, flag)
        factors = config.train_data_upsampling_factors if train else None
        stream = ShardStream(urls, decoder, batch_size, None, seed, config.dataset_resampled and train,
                             config.shuffle_buffer, rank, world, shard_weights(spec, factors) if factors else None)
    batches = None
    if train:
        global_batch = batch_size * world
        per_worker = math.ceil(math.ceil(total / global_batch) / max(1, workers))
        stream.batches_per_worker = per_worker
        batches = per_worker * max(1, workers)
        total = batches * global_batch
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False,
                        pin_memory=torch.cuda.is_available() and env.device.type == "cuda",
                        worker_init_fn=leave_signals_to_the_main_process)
    return RunData(loader, stream, batches, total)
