"""Values parallelism in the trainer: the memory's value tables split by columns over groups of ranks.

(A "shard" here is one rank's column slice of a value table, :class:`memory_layers.ShardedValueTable`; the tar files
of samples are the other kind, :mod:`memclip_train.data.shard_writer`.)

Enabled by the model's memory config, e.g. ``--memory values_parallel_group_size=2``. The tables are sharded after
the model is built (and its pretrained weights loaded) and before the optimizer and DDP see it; DDP ignores the
shards, the trainer averages their gradients with :func:`memory_layers.sync_value_shard_grads`, and checkpoints,
validation and the final ``save_pretrained`` see the full tables (:func:`memory_layers.full_value_tables`).
"""
from __future__ import annotations

import logging

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from memclip.errors import InputError
from memory_layers.values_parallel import ddp_ignored_parameter_names, shard_value_tables

from .distributed import DistributedEnv

logger = logging.getLogger(__name__)


def values_parallel_group_size(model: nn.Module) -> int:
    """The group size the model's memory config asks for (1 for a model without memory)."""
    spec = getattr(model, "memclip_spec", None)
    memory = getattr(spec, "memory", None)
    return memory.values_parallel_group_size if memory is not None else 1


def setup_values_parallel(model: nn.Module, env: DistributedEnv) -> int:
    """Shard ``model``'s value tables when its config asks for it and the run is distributed (collective).

    A single-process run with a group size above 1 logs a warning and stays unsharded. Returns the number of tables
    sharded.

    Raises:
        InputError: the group size does not divide the world size or the tables' v_dim.
    """
    size = values_parallel_group_size(model)
    if size <= 1:
        return 0
    if not env.distributed:
        logger.warning("values_parallel_group_size=%d needs a distributed run; this one has a single process, so "
                       "the value tables stay unsharded", size)
        return 0
    try:
        count = shard_value_tables(model, size)
    except ValueError as error:  # memory_layers' own check of the --memory setting against the run
        raise InputError(str(error)) from error
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ddp_ignored_parameter_names(model))
    return count
