"""Fused product-key top-k search in Triton: one program per (token, head).

Each program
    1. computes the two half-score vectors ``q_half . subkeys`` (fp32 accumulate, K/2 looped in BLOCK_D chunks),
    2. sorts both halves at once and keeps the top-knn of each (sub-key ids and scores) in a small scratch buffer,
    3. reads back only the candidate pairs (a, b) of ranks with ``(a + 1) * (b + 1) <= knn`` (280 of them for
       knn = 64 instead of 4096): a pair outside that set has at least knn pairs that score at least as high
       (every (a', b') with a' <= a and b' <= b), so it can never be needed,
    4. sorts the candidate sums and writes the first knn with their slot ids ``i * N + j``.

Sorting with a payload uses one int64 sort: the fp32 score is mapped to an int32 whose signed order is the float
order, shifted into the high 32 bits, and the element's position is put in the low 32 bits.

The backward is plain torch and never builds a (T, H, knn, K) tensor: the score gradients are scattered into
half-score gradients (T, H, 2, N), then two einsums give the query and key gradients.

Importing this module needs triton, and decorates the kernels: set ``TRITON_INTERPRET=1`` before the first import
to run them on CPU tensors. :mod:`memory_layers.ops` imports it lazily, only when the triton backend is used.

Shapes: query (T, H, K), keys (H, 2, N, K // 2) -> scores (T, H, knn), indices (T, H, knn) int64.
"""
from __future__ import annotations

import threading
from typing import Dict, Tuple

import torch
import triton
import triton.language as tl

from .dispatch import check_triton_launch
from .reference import _check_topk_shapes

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Elements of the (2, BLOCK_N, BLOCK_D) key tile loaded per step; BLOCK_D shrinks as N grows.
_KEY_TILE_ELEMENTS = 8192
_INT32_MIN = tl.constexpr(-2147483648)


@triton.jit
def _pack_descending(x, position, valid):
    """fp32 ``x`` and int ``position`` -> int64 whose signed order is (x, position); invalid lanes sort last."""
    bits = x.to(tl.int32, bitcast=True)
    key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    key = tl.where(valid, key, _INT32_MIN)
    return (key.to(tl.int64) << 32) | position.to(tl.int64)


@triton.jit
def _unpack(packed):
    """Inverse of :func:`_pack_descending`: int64 -> (fp32 value, int32 position)."""
    high = packed >> 32
    position = (packed - (high << 32)).to(tl.int32)
    key = high.to(tl.int32)
    bits = tl.where(key >= 0, key, key ^ 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True), position


@triton.jit
def _product_key_topk_kernel(
    query_ptr,
    keys_ptr,
    pair_a_ptr,
    pair_b_ptr,
    scratch_scores_ptr,
    scratch_ids_ptr,
    out_scores_ptr,
    out_indices_ptr,
    heads,
    n_keys,
    half_dim,
    knn,
    n_pairs,
    stride_qt,
    stride_qh,
    stride_kh,
    stride_kp,
    stride_kn,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    token = (pid // heads).to(tl.int64)
    head = (pid % heads).to(tl.int64)
    program = pid.to(tl.int64)

    # 1. half scores (2, BLOCK_N): row p is query half p against the N sub-keys of half p.
    halves = tl.arange(0, 2)
    offs_n = tl.arange(0, BLOCK_N)
    n_valid = offs_n < n_keys
    query_base = query_ptr + token * stride_qt + head * stride_qh
    keys_base = keys_ptr + head * stride_kh
    scores = tl.zeros([2, BLOCK_N], dtype=tl.float32)
    for d0 in range(0, half_dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_valid = offs_d < half_dim
        q = tl.load(query_base + halves[:, None] * half_dim + offs_d[None, :], mask=d_valid[None, :], other=0.0)
        k = tl.load(
            keys_base + halves[:, None, None] * stride_kp + offs_n[None, :, None] * stride_kn + offs_d[None, None, :],
            mask=n_valid[None, :, None] & d_valid[None, None, :],
            other=0.0,
        )
        scores += tl.sum(k.to(tl.float32) * q.to(tl.float32)[:, None, :], axis=2)

    # 2. sort both halves; keep the top-knn (scores and sub-key ids) of each in scratch (T * H, 2, knn).
    positions = offs_n[None, :] + halves[:, None] * 0
    valid = n_valid[None, :] & (halves[:, None] >= 0)
    half_sorted, half_ids = _unpack(tl.sort(_pack_descending(scores, positions, valid), descending=True))
    scratch_offs = program * 2 * knn + halves[:, None] * knn + offs_n[None, :]
    keep = (offs_n[None, :] < knn) & (halves[:, None] >= 0)
    tl.store(scratch_scores_ptr + scratch_offs, half_sorted, mask=keep)
    tl.store(scratch_ids_ptr + scratch_offs, half_ids, mask=keep)
    tl.debug_barrier()

    # 3. candidate sums over the rank pairs (a, b) with (a + 1) * (b + 1) <= knn.
    scratch_base = program * 2 * knn
    offs_p = tl.arange(0, BLOCK_P)
    p_valid = offs_p < n_pairs
    rank_a = tl.load(pair_a_ptr + offs_p, mask=p_valid, other=0)
    rank_b = tl.load(pair_b_ptr + offs_p, mask=p_valid, other=0)
    score_a = tl.load(scratch_scores_ptr + scratch_base + rank_a, mask=p_valid, other=0.0)
    score_b = tl.load(scratch_scores_ptr + scratch_base + knn + rank_b, mask=p_valid, other=0.0)
    best, pair = _unpack(tl.sort(_pack_descending(score_a + score_b, offs_p, p_valid), descending=True))

    # 4. the first knn, with slot ids i * N + j.
    out_valid = offs_p < knn
    rank_a = tl.load(pair_a_ptr + pair, mask=out_valid, other=0)
    rank_b = tl.load(pair_b_ptr + pair, mask=out_valid, other=0)
    id_a = tl.load(scratch_ids_ptr + scratch_base + rank_a, mask=out_valid, other=0)
    id_b = tl.load(scratch_ids_ptr + scratch_base + knn + rank_b, mask=out_valid, other=0)
    slots = id_a.to(tl.int64) * n_keys + id_b.to(tl.int64)
    out_offs = program * knn + offs_p
    tl.store(out_scores_ptr + out_offs, best.to(out_scores_ptr.dtype.element_ty), mask=out_valid)
    tl.store(out_indices_ptr + out_offs, slots, mask=out_valid)


_PAIR_CACHE: Dict[Tuple[int, str], Tuple[torch.Tensor, torch.Tensor, int]] = {}
_PAIR_LOCK = threading.Lock()


def candidate_pairs(knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank pairs (a, b) with ``(a + 1) * (b + 1) <= knn``: two int32 tensors of length P (280 for knn = 64)."""
    pairs = [(a, b) for a in range(knn) for b in range(knn // (a + 1))]
    pair_a = torch.tensor([a for a, _ in pairs], dtype=torch.int32)
    pair_b = torch.tensor([b for _, b in pairs], dtype=torch.int32)
    return pair_a, pair_b


def _device_pairs(knn: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`candidate_pairs` on ``device``, zero-padded to a power of two; cached per (knn, device)."""
    key = (knn, str(device))
    cached = _PAIR_CACHE.get(key)
    if cached is None:
        with _PAIR_LOCK:
            pair_a, pair_b = candidate_pairs(knn)
            n_pairs = pair_a.numel()
            padded = triton.next_power_of_2(n_pairs)
            pad = torch.zeros(padded - n_pairs, dtype=torch.int32)
            cached = (torch.cat([pair_a, pad]).to(device), torch.cat([pair_b, pad]).to(device), n_pairs)
            _PAIR_CACHE[key] = cached
    return cached


def _topk_forward(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel: query (T, H, K), keys (H, 2, N, K/2) -> scores (T, H, knn) query dtype, indices int64."""
    tokens, heads, k_dim = query.shape
    n_keys, half_dim = keys.shape[2], keys.shape[3]
    query = query.contiguous()
    keys = keys.contiguous()
    scores = torch.empty(tokens, heads, knn, dtype=query.dtype, device=query.device)
    indices = torch.empty(tokens, heads, knn, dtype=torch.int64, device=query.device)
    if tokens == 0:
        return scores, indices
    scratch_scores = torch.empty(tokens * heads, 2, knn, dtype=torch.float32, device=query.device)
    scratch_ids = torch.empty(tokens * heads, 2, knn, dtype=torch.int32, device=query.device)
    pair_a, pair_b, n_pairs = _device_pairs(knn, query.device)
    block_n = triton.next_power_of_2(n_keys)
    block_d = max(1, min(triton.next_power_of_2(half_dim), _KEY_TILE_ELEMENTS // (2 * block_n)))
    block_p = pair_a.numel()
    num_warps = 8 if max(block_n, block_p) >= 2048 else 4
    _product_key_topk_kernel[(tokens * heads,)](
        query, keys, pair_a, pair_b, scratch_scores, scratch_ids, scores, indices,
        heads, n_keys, half_dim, knn, n_pairs,
        query.stride(0), query.stride(1), keys.stride(0), keys.stride(1), keys.stride(2),
        BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_P=block_p, num_warps=num_warps,
    )
    return scores, indices


def product_key_topk_backward(
    grad_scores: torch.Tensor,
    indices: torch.Tensor,
    query: torch.Tensor,
    keys: torch.Tensor,
    need_query: bool = True,
    need_keys: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``scores = q1 . k1[i] + q2 . k2[j]`` for the selected slots ``i * N + j`` (fp32 inside).

    Args:
        grad_scores: (T, H, knn) gradient of the returned scores.
        indices: (T, H, knn) int64 slot ids of the forward.
        query: (T, H, K) queries of the forward.
        keys: (H, 2, N, K // 2) sub-keys of the forward.
        need_query / need_keys: skip a gradient that is not needed (returned as None).
    Returns:
        grad_query (T, H, K) in query dtype, grad_keys (H, 2, N, K // 2) in keys dtype.
    """
    tokens, heads, k_dim = query.shape
    n_keys = keys.shape[2]
    grad = grad_scores.float()
    grad_half = grad.new_zeros(tokens, heads, 2, n_keys)
    grad_half[:, :, 0].scatter_add_(-1, indices // n_keys, grad)
    grad_half[:, :, 1].scatter_add_(-1, indices % n_keys, grad)
    grad_query = grad_keys = None
    if need_query:
        grad_query = torch.einsum("thpn,hpnd->thpd", grad_half, keys.float()).reshape(tokens, heads, k_dim)
        grad_query = grad_query.to(query.dtype)
    if need_keys:
        halves = query.float().reshape(tokens, heads, 2, k_dim // 2)
        grad_keys = torch.einsum("thpn,thpd->hpnd", grad_half, halves).to(keys.dtype)
    return grad_query, grad_keys


class ProductKeyTopk(torch.autograd.Function):
    """Autograd wrapper: forward = the fused kernel, backward = :func:`product_key_topk_backward`."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
        scores, indices = _topk_forward(query, keys, knn)
        ctx.save_for_backward(query, keys, indices)
        ctx.mark_non_differentiable(indices)
        return scores, indices

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores: torch.Tensor, grad_indices: torch.Tensor):
        query, keys, indices = ctx.saved_tensors
        grad_query, grad_keys = product_key_topk_backward(
            grad_scores, indices, query, keys, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_query, grad_keys, None


def product_key_topk_triton(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search with the fused Triton kernel (same contract as ``product_key_topk_torch``).

    Args:
        query: (T, H, K) queries, fp32, bf16 or fp16 (scores are accumulated in fp32).
        keys: (H, 2, N, K // 2) sub-keys (any of those dtypes; read in fp32).
        knn: slots per (token, head), 1 <= knn <= N.
    Returns:
        scores (T, H, knn) in the query dtype, sorted descending, and indices (T, H, knn) int64 slot ids
        ``i * N + j``. Differentiable in query and keys.
    """
    _check_topk_shapes(query, keys, knn)
    if query.dtype not in SUPPORTED_DTYPES or keys.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"triton top-k supports {SUPPORTED_DTYPES}, got query {query.dtype}, keys {keys.dtype}")
    if keys.device != query.device:
        raise ValueError(f"query is on {query.device} but keys are on {keys.device}")
    check_triton_launch(query.device, _product_key_topk_kernel)
    return ProductKeyTopk.apply(query, keys, knn)
