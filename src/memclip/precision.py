"""Precision names (open_clip's) and the autocast each one trains and evaluates under."""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager, Union

import torch

from .errors import InputError

PRECISIONS = ("fp32", "amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16")
"""``amp*`` keep fp32 weights and run under autocast; ``bf16``/``fp16`` cast the weights (open_clip keeps its norms
in fp32, memclip its memories in the same dtype); ``pure_*`` cast everything."""
AUTOCAST_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16, "amp_bfloat16": torch.bfloat16}
"""The autocast dtype of each precision that runs under autocast."""
FP32_WEIGHT_PRECISIONS = ("fp32",) + tuple(AUTOCAST_DTYPES)
"""The precisions that keep fp32 weights: what evaluation and the benchmarks offer."""


def autocast_for(precision: str, device: Union[torch.device, str]) -> Callable[[], ContextManager]:
    """A no-argument factory of the context ``precision`` runs under on ``device``: autocast to its dtype for the
    ``amp`` precisions, nothing for the others (their weights already have their dtype), as open_clip_train does.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}: must be one of {PRECISIONS}")
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])
