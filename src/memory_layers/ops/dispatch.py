"""Backend choice for the memory read-out ops, and the public dispatching entry points.

Backend (``backend=`` argument, else ``MEMORY_LAYERS_BACKEND``, default ``auto``):
    ``torch``  the plain-torch references (:mod:`memory_layers.ops.reference`);
    ``triton`` the fused Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``;
    ``auto``   ``triton`` for CUDA tensors when triton imports, else ``torch``.

Embedding-bag path (``path=`` argument, else ``MEMORY_LAYERS_BAG_PATH``, default ``auto``):
    ``fused``  one gather-and-sum kernel (triton backend) or ``F.embedding_bag`` (torch backend);
    ``dense``  weights scattered into a (T, S) matrix times the table (:mod:`memory_layers.ops.dense_bag`);
    ``auto``   on the torch backend ``F.embedding_bag``; on the triton backend ``fused`` for tables of more than
               :data:`DENSE_MAX_SLOTS` slots, and for smaller tables the path :func:`rule_bag_path` gives from
               the shapes alone (no timing: the choice under ``torch.compile`` and CUDA-graph capture), refined
               outside capture by timing both paths on the first call per (device, S, V, B, dtypes, token bucket,
               grad) key; the winner is cached per process (:func:`clear_path_caches` forgets it) and logged once.
               A call under capture uses the measured winner when there is one, else the rule.

Top-k: half scores are one fp32 GEMM on every backend; the backend picks the slots from them (sort and pruning).
With ``auto`` on CUDA, the Triton selection and the torch one are timed on the first call per (device, n_keys,
knn, token-head bucket) and the faster is kept, as for the bag.

The triton modules are imported only when first used, so ``import memory_layers`` works without triton, and
``TRITON_INTERPRET`` may be set after ``memory_layers`` was imported (but before the first triton call).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import torch

from .dense_bag import dense_compute_dtype, embedding_bag_dense
from .reference import (
    _check_bag_shapes,
    _check_topk_shapes,
    embedding_bag_torch,
    half_scores,
    product_key_topk_with,
    select_topk_torch,
    topk_with,
)
from .runtime import BACKEND_ENV, BAG_PATH_ENV, DeviceLike, check_triton_launch, triton_available

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")
BAG_PATHS = ("auto", "fused", "dense")
# Tables up to this many slots may take the dense path on the triton backend.
DENSE_MAX_SLOTS = 16384
# The timing-free rule: the dense path when S <= DENSE_SLOTS_PER_READ[compute dtype] * B (and the tokens read at
# least S rows in all). Estimates for an H100 from FLOPs and bytes (docs/kernels.md): a dense read-out costs about
# 6 * S * V FLOPs per token, the fused one about 3 * B * V * (bytes per element) bytes; the GPU check prints the
# measured crossover to refine them.
DENSE_SLOTS_PER_READ: Dict[torch.dtype, int] = {torch.bfloat16: 64, torch.float16: 64, torch.float32: 16}
MEASURE_WARMUP = 1
MEASURE_ITERATIONS = 3

MeasureKey = Tuple[object, ...]

_BAG_PATH_CACHE: Dict[MeasureKey, str] = {}
_TOPK_PATH_CACHE: Dict[MeasureKey, str] = {}
_CACHE_LOCK = threading.Lock()
_MEASURING = threading.local()


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


def _bag_key(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
             read_values: Optional[torch.Tensor] = None) -> MeasureKey:
    grad = torch.is_grad_enabled() and (values.requires_grad or weights.requires_grad)
    slots, v_dim = values.shape
    tokens, bag = indices.shape
    return (str(values.device), slots, v_dim, bag, dense_compute_dtype(values, read_values), weights.dtype,
            _token_bucket(tokens), grad)


def rule_bag_path(slots: int, bag: int, tokens: int, compute_dtype: torch.dtype) -> str:
    """``dense`` or ``triton`` (the fused kernel) from the shapes alone, without timing anything.

    Dense when the table has at most ``DENSE_SLOTS_PER_READ[compute_dtype] * bag`` slots (and at most
    :data:`DENSE_MAX_SLOTS`) and the call reads at least as many rows as the table holds (``tokens * bag >=
    slots``: for fewer, one read of the whole table by the GEMM costs more than the gathers).
    """
    limit = min(DENSE_MAX_SLOTS, DENSE_SLOTS_PER_READ.get(compute_dtype, 0) * bag)
    return "dense" if 0 < slots <= limit and tokens * bag >= slots else "triton"


def _topk_key(halves: torch.Tensor, knn: int) -> MeasureKey:
    tokens, heads, _, n_keys = halves.shape
    return (str(halves.device), n_keys, knn, _token_bucket(tokens * heads))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mean_seconds(step: Callable[[], None], device: torch.device) -> float:
    """Mean seconds of ``step`` over :data:`MEASURE_ITERATIONS` calls after :data:`MEASURE_WARMUP` untimed ones."""
    for _ in range(MEASURE_WARMUP):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(MEASURE_ITERATIONS):
        step()
    _synchronize(device)
    return (time.perf_counter() - start) / MEASURE_ITERATIONS


def _time_bag(fn: Callable, values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, grad: bool,
              read_values: Optional[torch.Tensor] = None) -> float:
    """Mean seconds of ``fn`` (forward, plus backward when ``grad``) over a few iterations after a warm-up."""
    with torch.enable_grad() if grad else torch.no_grad():
        values = values.detach().requires_grad_(grad and values.requires_grad)
        weights = weights.detach().requires_grad_(grad and weights.requires_grad)
        read = None if read_values is None else read_values.detach()
        inputs = [t for t in (values, weights) if t.requires_grad]

        def step() -> None:
            out = fn(values, indices, weights, read)
            if inputs:
                torch.autograd.grad(out, inputs, torch.ones_like(out))

        return _mean_seconds(step, values.device)


def _time_select(fn: Callable, halves: torch.Tensor, knn: int) -> float:
    """Mean seconds of the slot selection ``fn(halves, knn)`` (no gradient: selections have none)."""
    with torch.no_grad():
        return _mean_seconds(lambda: fn(halves, knn), halves.device)


def is_capturing(device: torch.device) -> bool:
    """True while tracing (torch.compile) or capturing a CUDA graph: no timing or synchronising then."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_compiling", lambda: False)():
        return True
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _measured_choice(
    cache: Dict[MeasureKey, str], key: MeasureKey, device: torch.device, default: str,
    timings: Callable[[], Dict[str, float]],
) -> Tuple[str, Optional[Dict[str, float]]]:
    """The cached winner for ``key``, else the fastest of ``timings()`` (cached); also the times when measured now.

    The timing runs without the cache lock held and under saved-tensor hooks of its own, so a caller's hooks never
    see its graphs: a non-reentrant gradient checkpoint would otherwise recompute its whole forward when the timing
    backward unpacks a saved tensor, and that forward would call this op again mid-measurement. A call that arrives
    while this thread is measuring, or while tracing or capturing a CUDA graph, gets the cached winner when there is
    one, else ``default`` (not cached).
    """
    cached = cache.get(key)
    if cached is not None:
        return cached, None
    if getattr(_MEASURING, "active", False) or is_capturing(device):
        return default, None
    _MEASURING.active = True
    try:
        with torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
            times = timings()
    finally:
        _MEASURING.active = False
    with _CACHE_LOCK:
        winner = cache.setdefault(key, min(times, key=times.get))
    return winner, times


def _measured_bag_path(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                       read_values: Optional[torch.Tensor], measure: bool) -> str:
    """``triton`` or ``dense``: with ``measure`` the cached winner for this key, else whichever runs faster now
    (cached); without, or for no tokens, the rule."""
    key = _bag_key(values, indices, weights, read_values)
    grad = bool(key[-1])
    rule = rule_bag_path(values.shape[0], indices.shape[1], indices.shape[0], key[4])
    if indices.shape[0] == 0 or not measure:
        return rule

    winner, times = _measured_choice(_BAG_PATH_CACHE, key, values.device, rule, lambda: {
        "triton": _time_bag(embedding_bag_triton, values, indices, weights, grad, read_values=read_values),
        "dense": _time_bag(embedding_bag_dense, values, indices, weights, grad, read_values=read_values),
    })
    if times is not None:
        logger.info(
            "embedding bag on %s, %d slots x %d, bag %d, %s, ~%d tokens%s: %s path (fused %.3f ms, dense %.3f ms; "
            "the rule says %s)", key[0], key[1], key[2], key[3], str(key[4]).replace("torch.", ""), key[6],
            ", with grad" if grad else "", "fused" if winner == "triton" else "dense", 1e3 * times["triton"],
            1e3 * times["dense"], "fused" if rule == "triton" else "dense",
        )
    return winner


def _measured_select(halves: torch.Tensor, knn: int) -> str:
    """``triton`` or ``torch``: the slot selection that ran faster on the first call for this key (cached)."""
    key = _topk_key(halves, knn)
    winner, times = _measured_choice(_TOPK_PATH_CACHE, key, halves.device, "triton", lambda: {
        "triton": _time_select(select_topk_triton, halves, knn),
        "torch": _time_select(select_topk_torch, halves, knn),
    })
    if times is not None:
        logger.info("top-k selection on %s, n_keys %d, knn %d, ~%d token-heads: %s (triton %.3f ms, torch %.3f ms)",
                    key[0], key[1], key[2], key[3], winner, 1e3 * times["triton"], 1e3 * times["torch"])
    return winner


def clear_path_caches() -> None:
    """Forget every measured choice, bag paths and top-k selections (the next call per key measures again)."""
    with _CACHE_LOCK:
        _BAG_PATH_CACHE.clear()
        _TOPK_PATH_CACHE.clear()


def bag_path_cache() -> Dict[MeasureKey, str]:
    """A copy of the measured bag paths: key (device, S, V, B, values dtype, weights dtype, token bucket, grad)."""
    with _CACHE_LOCK:
        return dict(_BAG_PATH_CACHE)


def topk_path_cache() -> Dict[MeasureKey, str]:
    """A copy of the measured top-k selections: key (device, n_keys, knn, token-head bucket) -> triton or torch."""
    with _CACHE_LOCK:
        return dict(_TOPK_PATH_CACHE)


def resolve_bag_path(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    backend: Optional[str] = None,
    path: Optional[str] = None,
    read_values: Optional[torch.Tensor] = None,
    measure: bool = True,
    sparse_grad: bool = False,
) -> str:
    """The embedding-bag implementation a call would use: ``torch``, ``triton`` or ``dense``.

    Args:
        values: (S, V) value table; indices, weights: (T, B); read_values: the copy the call reads, if any.
        backend: as in :func:`resolve_backend`.
        path: ``auto``, ``fused`` or ``dense``; None reads ``MEMORY_LAYERS_BAG_PATH`` (default ``auto``).
        measure: with ``auto`` on the triton backend, time both paths on the first call per key and keep the
            winner (False: :func:`rule_bag_path` alone, which every process computes alike; see
            :meth:`memory_layers.ShardedValueTable.agreed_implementation`).
        sparse_grad: the call wants a sparse value gradient, which the dense path cannot give: ``auto`` never picks
            it, and ``dense`` raises ValueError.
    On the triton backend with ``auto`` and S <= :data:`DENSE_MAX_SLOTS`, the first call per key times both paths,
    except under ``torch.compile`` or CUDA-graph capture, where the rule decides.
    """
    resolved = resolve_backend(values.device, backend)
    choice = bag_path_choice(path)
    if choice == "dense":
        if sparse_grad:
            raise ValueError(f"bag path 'dense' (path= or {BAG_PATH_ENV}) gives a dense value gradient, and this "
                             "table asks for a sparse one: use 'fused' or 'auto'")
        return "dense"
    if resolved == "torch":
        return "torch"
    if choice == "fused" or values.shape[0] > DENSE_MAX_SLOTS or sparse_grad:
        return "triton"
    return _measured_bag_path(values, indices, weights, read_values, measure)


def _require_triton(device: torch.device) -> None:
    """Check before the triton modules are first imported: their kernels are decorated in the mode of that moment."""
    if not triton_available():
        raise RuntimeError(f"the triton kernels need triton, which is not installed (set {BACKEND_ENV}=torch)")
    check_triton_launch(device)


def select_topk_triton(halves: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Triton top-k selection (scores, slots); see :func:`memory_layers.ops.triton_topk.select_topk_triton`."""
    _require_triton(halves.device)
    from .triton_topk import select_topk_triton as implementation

    return implementation(halves, knn)


def embedding_bag_triton(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                         read_values: Optional[torch.Tensor] = None, sparse_grad: bool = False) -> torch.Tensor:
    """The fused Triton embedding bag; see :func:`memory_layers.ops.triton_bag.embedding_bag_triton`."""
    _require_triton(values.device)
    from .triton_bag import embedding_bag_triton as implementation

    return implementation(values, indices, weights, read_values, sparse_grad)


def product_key_topk_triton(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search with the Triton slot selection (same contract as ``product_key_topk_torch``).

    Half scores are one fp32 GEMM; the kernel sorts and prunes (see :mod:`memory_layers.ops.triton_topk`).
    Raises TypeError for float64 inputs (their fp64 half scores are selected on the torch backend).
    """
    return product_key_topk_with(select_topk_triton, query, keys, knn)


def _select_topk(
    halves: torch.Tensor, knn: int, backend: Optional[str], sorted: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k selection (scores, slots) on the chosen backend; ``auto`` on the triton backend times triton against
    torch once per key."""
    resolved = resolve_backend(halves.device, backend)
    if resolved == "triton" and backend_choice(backend) == "auto":
        resolved = _measured_select(halves, knn) if halves.dtype == torch.float32 else "torch"
    if resolved == "triton":
        return select_topk_triton(halves, knn)
    return select_topk_torch(halves, knn, sorted)


def topk_from_half_scores(
    halves: torch.Tensor, knn: int, backend: Optional[str] = None, sorted: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact top-knn slots from half scores on the chosen backend (the second step of :func:`product_key_topk`).

    Args:
        halves: (T, H, 2, N) fp32 (or fp64) half scores; knn: slots per (token, head).
        backend: ``auto``, ``torch`` or ``triton``; None reads ``MEMORY_LAYERS_BACKEND``.
        sorted: best first; False lets the torch backend skip ordering the knn winners (the same set).
    Returns:
        scores (T, H, knn) in the half scores' dtype, differentiable in ``halves``, and indices (T, H, knn) int64
        slot ids ``i * N + j``.
    """
    return topk_with(lambda h, k: _select_topk(h, k, backend, sorted), halves, knn)


def product_key_topk(
    query: torch.Tensor, keys: torch.Tensor, knn: int, backend: Optional[str] = None, sorted: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search on the chosen backend.

    Half scores (T, H, 2, N) are one GEMM in fp32 (fp64 for fp64 inputs) with autocast off, on every backend; the
    backend only selects the slots, and the scores are gathered from the half scores, so backends agree under
    autocast too.

    Args:
        query: (T, H, K) queries; keys: (H, 2, N, K // 2) sub-keys; knn: slots per (token, head).
        backend: ``auto``, ``torch`` or ``triton``; None reads ``MEMORY_LAYERS_BACKEND``.
        sorted: best first (the default); see :func:`topk_from_half_scores`.
    Returns:
        scores (T, H, knn) fp32 (fp64 for fp64 inputs), indices (T, H, knn) int64 slot ids ``i * N + j``.
        Differentiable in query and keys.
    """
    _check_topk_shapes(query, keys, knn)
    return topk_from_half_scores(half_scores(query, keys), knn, backend, sorted)


def embedding_bag_reference(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                            read_values: Optional[torch.Tensor] = None, sparse_grad: bool = False) -> torch.Tensor:
    """The torch backend's bag: ``F.embedding_bag`` on the table itself (fp32 under autocast, whose copy it does not
    read), its output cast to the read copy's dtype when one is given, so every path returns the same dtype."""
    out = embedding_bag_torch(values, indices, weights, sparse_grad)
    return out if read_values is None else out.to(read_values.dtype)


BagImplementation = Callable[..., torch.Tensor]
BAG_IMPLEMENTATIONS: Dict[str, BagImplementation] = {
    "torch": embedding_bag_reference,
    "triton": embedding_bag_triton,
    "dense": embedding_bag_dense,
}


def embedding_bag(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    backend: Optional[str] = None,
    path: Optional[str] = None,
    read_values: Optional[torch.Tensor] = None,
    implementation: Optional[str] = None,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Weighted sum of value rows per token on the chosen backend and path (see :func:`resolve_bag_path`).

    Args:
        values: (S, V) value table (the master: the value gradient goes to it, in its dtype).
        indices: (T, B) int64 slot ids; weights: (T, B).
        backend: ``auto``, ``torch`` or ``triton``; path: ``auto``, ``fused`` or ``dense``.
        read_values: an optional (S, V) copy of ``values`` in a narrower dtype for the paths to read (the bf16
            copy :class:`memory_layers.ValueTable` keeps under autocast: half the bytes of an fp32 table).
        implementation: ``torch``, ``triton`` or ``dense`` to run, already resolved (by a caller that agreed on it
            with other ranks); None resolves it here.
        sparse_grad: give ``values`` a sparse COO gradient of the rows read (torch and fused paths; see
            :class:`memory_layers.ValueTable`) instead of a dense (S, V) one.
    Returns:
        (T, V) in the dtype of the table read, the same on every path: ``read_values``' when given, else
        ``values``' (also under autocast).
    """
    _check_bag_shapes(values, indices, weights)
    if implementation is None:
        implementation = resolve_bag_path(values, indices, weights, backend, path, read_values,
                                          sparse_grad=sparse_grad)
    return BAG_IMPLEMENTATIONS[implementation](values, indices, weights, read_values, sparse_grad=sparse_grad)
