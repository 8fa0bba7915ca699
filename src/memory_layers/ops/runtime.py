"""Where the memory ops can run: the environment variables that choose a backend and bag path, whether triton
imports, and whether its kernels can launch on a device. Shared by the dispatcher and the triton kernel modules
(which import it, not the dispatcher, so that the dispatcher can import them lazily without a circle).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from typing import Optional, Union

import torch

logger = logging.getLogger(__name__)

BACKEND_ENV = "MEMORY_LAYERS_BACKEND"
BAG_PATH_ENV = "MEMORY_LAYERS_BAG_PATH"

DeviceLike = Union[torch.device, str]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether ``import triton`` works in this process (checked once)."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception as error:  # ImportError, or a broken install failing in its own way
        logger.debug("triton is not usable: %s", error)
        return False
    return True


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` is set to a true value (triton then runs kernels on the CPU, in numpy)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


def check_triton_launch(device: DeviceLike, kernel: Optional[object] = None) -> None:
    """Raise a clear RuntimeError unless triton kernels can run on tensors of ``device``.

    CUDA tensors always can. Other devices need ``TRITON_INTERPRET=1``, and triton itself (and ``kernel``, when
    given) must have been imported while it was set: ``triton.jit`` picks interpreter or compiler when a function
    is decorated, triton's own library functions (``tl.sort``) included. Needs triton installed.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return
    if not interpreter_enabled():
        raise RuntimeError(
            f"the triton backend runs on CUDA tensors; {device.type} tensors need TRITON_INTERPRET=1 (the triton "
            f"interpreter, for tests). Use CUDA tensors, or backend='torch' / {BACKEND_ENV}=torch."
        )
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.sort, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 is set but triton was imported before it was (torch._dynamo imports triton, for "
            "one), so triton's own jit functions are compiled ones: set TRITON_INTERPRET=1 before anything imports "
            "triton."
        )
    if kernel is not None and not isinstance(kernel, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 is set but the memory_layers triton kernels were imported before it was: set it "
            "before the first use of the triton backend (before memory_layers.ops.triton_* is imported)."
        )


def device_guard(device: DeviceLike) -> contextlib.AbstractContextManager:
    """The context every triton launch runs in: ``torch.cuda.device(device)`` for CUDA tensors, nothing otherwise.

    Triton launches a kernel on the *current* CUDA device, not on its tensors' device: a rank whose tensors live on
    ``cuda:1`` while ``cuda:0`` is current would launch on the wrong GPU (an illegal address, or a silent wrong
    result). Every launch in :mod:`memory_layers.ops` enters this guard with its tensors' device.
    """
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``cuda``, ``cpu``, ...), on every torch the requirements allow."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast casts fp32 matmul inputs to on ``device_type``, or None when autocast is off there."""
    if not autocast_enabled(device_type):
        return None
    get = getattr(torch, "get_autocast_dtype", None)
    if get is not None:  # torch >= 2.4
        return get(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()
