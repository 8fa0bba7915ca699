"""`track_usage`: record which slots every memory layer of a model reads while a block of code runs."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator

from torch import nn

from .memory import ProductKeyMemory
from .usage import SlotUsage


@contextlib.contextmanager
def track_usage(model: nn.Module) -> Iterator[Dict[str, SlotUsage]]:
    """Record slot usage of every :class:`ProductKeyMemory` in ``model`` while the block runs.

    Yields a dict from module name to :class:`SlotUsage`; call ``.summary()`` on each after the pass. Recording
    happens in the forward pass, so run it under ``torch.no_grad()`` and without gradient checkpointing, which would
    count recomputed tokens twice. Nested blocks share the outer block's accumulators (the inner block neither
    resets nor stops them), so both see every read.
    """
    trackers: Dict[str, SlotUsage] = {}
    started = []
    for name, memory in model.named_modules():
        if not isinstance(memory, ProductKeyMemory):
            continue
        if memory.usage_tracker is None:
            memory.start_usage_tracking()
            started.append(memory)
        trackers[name] = memory.usage_tracker
    try:
        yield trackers
    finally:
        for memory in started:
            memory.stop_usage_tracking()
