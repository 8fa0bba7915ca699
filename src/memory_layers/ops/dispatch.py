"""Backend choice for the memory read-out ops, and the public dispatching entry points.

Backend (``backend=`` argument, else ``MEMORY_LAYERS_BACKEND``, default ``auto``):
    ``torch``  the plain-torch references (:mod:`memory_layers.ops.reference`);
    ``triton`` the fused Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``;
    ``auto``   ``triton`` for CUDA tensors when triton imports, else ``torch``.

Embedding-bag path (``path=`` argument, else ``MEMORY_LAYERS_BAG_PATH``, default ``auto``):
    ``fused``  one gather-and-sum kernel (triton backend) or ``F.embedding_bag`` (torch backend);
    ``dense``  weights scattered into a (T, S) matrix times the table (:mod:`memory_layers.ops.dense_bag`);
    ``auto``   on the torch backend ``F.embedding_bag``; on the triton backend ``fused`` for tables of more than
               :data:`DENSE_MAX_SLOTS` slots, and for smaller tables whichever of the two was faster when first
               timed for that (device, S, V, B, dtypes, token bucket, grad) key; the winner is cached per process
               (:func:`clear_bag_path_cache` forgets it) and logged once.

The triton modules are imported only when first used, so ``import memory_layers`` works without triton, and
``TRITON_INTERPRET`` may be set after ``memory_layers`` was imported (but before the first triton call).
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
import time
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .dense_bag import embedding_bag_dense
from .reference import _check_bag_shapes, embedding_bag_torch, product_key_topk_torch

logger = logging.getLogger(__name__)

BACKEND_ENV = "MEMORY_LAYERS_BACKEND"
BAG_PATH_ENV = "MEMORY_LAYERS_BAG_PATH"
BACKENDS = ("auto", "torch", "triton")
BAG_PATHS = ("auto", "fused", "dense")
# Tables up to this many slots may take the dense path on the triton backend (after timing both paths).
DENSE_MAX_SLOTS = 16384
MEASURE_WARMUP = 1
MEASURE_ITERATIONS = 3
# Query dtypes the triton top-k kernel accepts; ``auto`` falls back to torch for others (e.g. float64).
TRITON_TOPK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

DeviceLike = Union[torch.device, str]
BagKey = Tuple[object, ...]

_BAG_PATH_CACHE: Dict[BagKey, str] = {}
_BAG_PATH_LOCK = threading.Lock()


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


def _parse_choice(value: Optional[str], env: str, allowed: Tuple[str, ...], argument: str) -> str:
    """The argument if given, else the environment variable, else ``auto``; validated against ``allowed``."""
    if value is None:
        raw = os.environ.get(env, "")
        if not raw.strip():
            return "auto"
        choice = raw.strip().lower()
        if choice not in allowed:
            raise ValueError(f"environment variable {env}={raw!r} is not one of {', '.join(allowed)}")
        return choice
    choice = str(value).strip().lower()
    if choice not in allowed:
        raise ValueError(f"{argument}={value!r} is not one of {', '.join(allowed)} (see also {env})")
    return choice


def backend_choice(backend: Optional[str] = None) -> str:
    """The requested backend before resolution: ``auto``, ``torch`` or ``triton`` (argument over environment)."""
    return _parse_choice(backend, BACKEND_ENV, BACKENDS, "backend")


def bag_path_choice(path: Optional[str] = None) -> str:
    """The requested bag path before resolution: ``auto``, ``fused`` or ``dense`` (argument over environment)."""
    return _parse_choice(path, BAG_PATH_ENV, BAG_PATHS, "path")


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


def resolve_backend(device: DeviceLike, backend: Optional[str] = None) -> str:
    """``torch`` or ``triton`` for tensors on ``device``.

    Args:
        device: where the op's tensors live.
        backend: ``auto``, ``torch`` or ``triton``; None reads ``MEMORY_LAYERS_BACKEND`` (default ``auto``).
    Raises:
        ValueError: for an unknown backend name (argument or environment variable).
        RuntimeError: ``triton`` asked for but not installed, or asked for on a non-CUDA device without
            ``TRITON_INTERPRET=1``.
    """
    choice = backend_choice(backend)
    device = torch.device(device)
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"backend 'triton' was requested but triton is not installed (set {BACKEND_ENV}=torch)")
        check_triton_launch(device)
    return choice


def _token_bucket(tokens: int) -> int:
    """The next power of two >= tokens (at least 1): nearby batch sizes share one measurement."""
    return 1 << max(0, int(tokens) - 1).bit_length()


def _bag_key(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> BagKey:
    grad = torch.is_grad_enabled() and (values.requires_grad or weights.requires_grad)
    slots, v_dim = values.shape
    tokens, bag = indices.shape
    return (str(values.device), slots, v_dim, bag, values.dtype, weights.dtype, _token_bucket(tokens), grad)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_bag(fn: Callable, values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, grad: bool) -> float:
    """Mean seconds of ``fn`` (forward, plus backward when ``grad``) over a few iterations after a warm-up."""
    with torch.enable_grad() if grad else torch.no_grad():
        values = values.detach().requires_grad_(grad and values.requires_grad)
        weights = weights.detach().requires_grad_(grad and weights.requires_grad)
        inputs = [t for t in (values, weights) if t.requires_grad]
        start = 0.0
        for step in range(MEASURE_WARMUP + MEASURE_ITERATIONS):
            if step == MEASURE_WARMUP:
                _synchronize(values.device)
                start = time.perf_counter()
            out = fn(values, indices, weights)
            if inputs:
                torch.autograd.grad(out, inputs, torch.ones_like(out))
        _synchronize(values.device)
    return (time.perf_counter() - start) / MEASURE_ITERATIONS


def _is_capturing(device: torch.device) -> bool:
    """True while tracing (torch.compile) or capturing a CUDA graph: no timing or synchronising then."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_compiling", lambda: False)():
        return True
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _measured_bag_path(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> str:
    """``triton`` or ``dense``, whichever ran faster on the first call for this key (cached)."""
    key = _bag_key(values, indices, weights)
    cached = _BAG_PATH_CACHE.get(key)
    if cached is not None:
        return cached
    if _is_capturing(values.device):
        return "triton"
    with _BAG_PATH_LOCK:
        cached = _BAG_PATH_CACHE.get(key)
        if cached is not None:
            return cached
        grad = bool(key[-1])
        times = {
            "triton": _time_bag(embedding_bag_triton, values, indices, weights, grad),
            "dense": _time_bag(embedding_bag_dense, values, indices, weights, grad),
        }
        winner = min(times, key=times.get)
        _BAG_PATH_CACHE[key] = winner
    logger.info(
        "embedding bag on %s, %d slots x %d, bag %d, %s, ~%d tokens%s: %s path (fused %.3f ms, dense %.3f ms)",
        key[0], key[1], key[2], key[3], str(values.dtype).replace("torch.", ""), key[6], ", with grad" if grad else "",
        "fused" if winner == "triton" else "dense", 1e3 * times["triton"], 1e3 * times["dense"],
    )
    return winner


def clear_bag_path_cache() -> None:
    """Forget every measured fused-vs-dense choice (the next call per key measures again)."""
    with _BAG_PATH_LOCK:
        _BAG_PATH_CACHE.clear()


def bag_path_cache() -> Dict[BagKey, str]:
    """A copy of the measured choices: key (device, S, V, B, values dtype, weights dtype, token bucket, grad)."""
    with _BAG_PATH_LOCK:
        return dict(_BAG_PATH_CACHE)


def resolve_bag_path(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    backend: Optional[str] = None,
    path: Optional[str] = None,
) -> str:
    """The embedding-bag implementation a call would use: ``torch``, ``triton`` or ``dense``.

    Args:
        values: (S, V) value table; indices, weights: (T, B).
        backend: as in :func:`resolve_backend`.
        path: ``auto``, ``fused`` or ``dense``; None reads ``MEMORY_LAYERS_BAG_PATH`` (default ``auto``).
    On the triton backend with ``auto`` and S <= :data:`DENSE_MAX_SLOTS`, the first call per key times both paths.
    """
    resolved = resolve_backend(values.device, backend)
    choice = bag_path_choice(path)
    if choice == "dense":
        return "dense"
    if resolved == "torch":
        return "torch"
    if choice == "fused" or values.shape[0] > DENSE_MAX_SLOTS:
        return "triton"
    return _measured_bag_path(values, indices, weights)


def _require_triton(device: torch.device) -> None:
    """Check before the triton modules are first imported: their kernels are decorated in the mode of that moment."""
    if not triton_available():
        raise RuntimeError(f"the triton kernels need triton, which is not installed (set {BACKEND_ENV}=torch)")
    check_triton_launch(device)


def product_key_topk_triton(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused Triton product-key search; see :func:`memory_layers.ops.triton_topk.product_key_topk_triton`."""
    _require_triton(query.device)
    from .triton_topk import product_key_topk_triton as implementation

    return implementation(query, keys, knn)


def embedding_bag_triton(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The fused Triton embedding bag; see :func:`memory_layers.ops.triton_bag.embedding_bag_triton`."""
    _require_triton(values.device)
    from .triton_bag import embedding_bag_triton as implementation

    return implementation(values, indices, weights)


def product_key_topk(
    query: torch.Tensor, keys: torch.Tensor, knn: int, backend: Optional[str] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search on the chosen backend.

    Args:
        query: (T, H, K) queries; keys: (H, 2, N, K // 2) sub-keys; knn: slots per (token, head).
        backend: ``auto``, ``torch`` or ``triton``; None reads ``MEMORY_LAYERS_BACKEND``.
    Returns:
        scores (T, H, knn) sorted descending, indices (T, H, knn) int64 slot ids ``i * N + j``.
    """
    resolved = resolve_backend(query.device, backend)
    if resolved == "triton" and backend_choice(backend) == "auto" and query.dtype not in TRITON_TOPK_DTYPES:
        resolved = "torch"
    if resolved == "triton":
        return product_key_topk_triton(query, keys, knn)
    return product_key_topk_torch(query, keys, knn)


_BAG_IMPLEMENTATIONS: Dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "torch": embedding_bag_torch,
    "triton": embedding_bag_triton,
    "dense": embedding_bag_dense,
}


def embedding_bag(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    backend: Optional[str] = None,
    path: Optional[str] = None,
) -> torch.Tensor:
    """Weighted sum of value rows per token on the chosen backend and path (see :func:`resolve_bag_path`).

    Args:
        values: (S, V) value table; indices: (T, B) int64 slot ids; weights: (T, B).
        backend: ``auto``, ``torch`` or ``triton``; path: ``auto``, ``fused`` or ``dense``.
    Returns:
        (T, V) in the table's dtype.
    """
    _check_bag_shapes(values, indices, weights)
    return _BAG_IMPLEMENTATIONS[resolve_bag_path(values, indices, weights, backend, path)](values, indices, weights)
