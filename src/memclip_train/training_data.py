"""Building the training and validation loaders of a run: webdataset shards, a CSV table or the synthetic world's
endless stream, picked from ``--train-data``/``--val-data`` and ``--dataset-type``."""
from __future__ import annotations

import logging
import math
from typing import Callable, List, Optional

import torch
from torch.utils.data import DataLoader

from memclip.errors import InputError

from .data.csv_stream import CsvStream
from .data.loaders import RunData
from .data.samples import SampleDecoder, SampleFields
from .data.shard_stream import BatchStream, ShardStream
from .data.sources import held_keys, is_csv, peek_samples, resolve_webdataset, shard_weights
from .distributed import DistributedEnv
from .params import DataConfig
from .preemption import leave_signals_to_the_main_process
from .synth.batch_stream import SynthStream, is_synth_stream, parse_stream_spec

logger = logging.getLogger(__name__)


def _kind(spec: str, dataset_type: str) -> str:
    if dataset_type != "auto":
        return dataset_type
    if is_synth_stream(spec):
        return "synth-stream"
    return "csv" if is_csv(spec) else "webdataset"


PEEKED_SAMPLES = 16


def check_caption_keys(urls: List[str], fields: SampleFields, caption_key: str, long_caption_key: str,
                       flag: str) -> None:
    """Refuse caption keys that the first samples of the data do not hold, before any training: a key no sample
    holds would make every caption a stand-in (a typo in ``--long-caption-key`` trains short captions as long).

    ``--caption-key`` is required where the task reads it as its caption; in stage 2, where the long caption's first
    sentence stands in for a missing short caption (Long-CLIP's convention), a key no peeked sample holds is only
    warned about. Keys that some samples lack are counted while training.

    Raises:
        ValueError: naming the flag, the key, the shard and the keys its first samples hold.
    """
    shard, samples = peek_samples(urls, PEEKED_SAMPLES)
    if not samples or not fields.captions:
        return
    held = [set(held_keys(sample)) for sample in samples]
    found = sorted(set().union(*held))
    wanted = {"--caption-key": caption_key} if "text" in fields.captions else {}
    if "long" in fields.captions or "short" in fields.captions:
        wanted["--long-caption-key"] = long_caption_key
    where = f"the first {len(samples)} samples of {shard}"
    for option, key in wanted.items():
        if not any(key in keys for keys in held):
            raise InputError(f"{flag}: {option} {key}: none of {where} holds it; they hold {', '.join(found)}")
    if "short" in fields.captions and not any(caption_key in keys for keys in held):
        logger.warning("%s: --caption-key %s: none of %s holds it (they hold %s): each short caption will be the "
                       "long caption's first sentence", flag, caption_key, where, ", ".join(found))


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
            raise InputError(f"{flag} {spec!r}: a synth stream is endless; validate on a written world's shards "
                             "(python -m memclip_train.synth --out DIR, then --val-data DIR/val/000000.tar)")
        if num_samples is None:
            raise InputError(f"{flag} {spec!r}: a synth stream is endless; pass --train-num-samples N (samples per "
                             "epoch)")
        stream: BatchStream = SynthStream(parse_stream_spec(spec), decoder, batch_size, None, seed, rank, world)
        total = num_samples
    elif kind == "csv":
        if "long" in fields.captions and not config.csv_long_caption_key:
            raise InputError(f"{flag} {spec}: this task reads long captions, and a table holds them in a column: pass "
                             "--csv-long-caption-key COLUMN (without it every long caption would be the short one)")
        stream = CsvStream(spec, decoder, batch_size, None, config.csv_img_key, config.csv_caption_key,
                           config.csv_long_caption_key, config.csv_separator, seed, rank, world)
        total = num_samples or len(stream)
    else:
        urls, total = resolve_webdataset(spec, num_samples, flag)
        check_caption_keys(urls, fields, config.caption_key, config.long_caption_key, flag)
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
