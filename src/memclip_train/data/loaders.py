"""`RunData`: a run's training or validation loader with its stream and epoch size (built by
:func:`memclip_train.training_data.build_data`, which picks the stream)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch.utils.data import DataLoader

from .shard_stream import BatchStream


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
