"""Product-key slot selection in Triton: the sort and the pruning, one program per (token, head).

The half scores come from one GEMM (:func:`memory_layers.ops.reference.half_scores`, cuBLAS on a GPU), so this
kernel never reads the keys. Each program
    1. loads its two rows of N half scores (fp32),
    2. sorts both halves at once and keeps the top-knn of each (sub-key ids and scores) in a small scratch buffer,
    3. reads back only the candidate pairs (a, b) of ranks with ``(a + 1) * (b + 1) <= knn`` (280 of them for
       knn = 64 instead of 4096; see :func:`memory_layers.ops.reference.candidate_pairs`),
    4. sorts the candidate sums and writes the first knn, fp32 scores and slot ids ``i * N + j``.

Sorting with a payload uses one int64 sort: the fp32 score is mapped to an int32 whose signed order is the float
order, shifted into the high 32 bits, and the element's flipped position (``POSITION_FLIP - position``) is put in
the low 32 bits, so equal scores rank the lower position first: the lower sub-key id in step 2, the candidate pair
of better ranks in step 4. That is the order the torch selection uses (:func:`memory_layers.ops.reference.
top_positions`), so both backends return the same slots even when scores tie. The candidate sums are the same fp32
additions the torch selection does (and that gathering the slots' scores from the half scores does), so both
backends return the same scores.

The launch runs under :func:`memory_layers.ops.runtime.device_guard` of the half scores' device.

Importing this module needs triton, and decorates the kernel: set ``TRITON_INTERPRET=1`` before the first import
to run it on CPU tensors. :mod:`memory_layers.ops` imports it lazily, only when the triton backend is used.

Shapes: halves (T, H, 2, N) fp32 -> scores (T, H, knn) fp32, slots (T, H, knn) int64.
"""
from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
import triton.language as tl

from .runtime import check_triton_launch, device_guard
from .reference import POSITION_FLIP, candidate_pairs

_INT32_MIN = tl.constexpr(-2147483648)
_POSITION_FLIP = tl.constexpr(POSITION_FLIP)


@triton.jit
def _pack_descending(x, position, valid):
    """fp32 ``x`` and int ``position`` -> int64 whose signed order is (x, -position); invalid lanes sort last."""
    bits = x.to(tl.int32, bitcast=True)
    key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    key = tl.where(valid, key, _INT32_MIN)
    return (key.to(tl.int64) << 32) | (position.to(tl.int64) * -1 + _POSITION_FLIP)


@triton.jit
def _unpack(packed):
    """Inverse of :func:`_pack_descending`: int64 -> (fp32 value, int32 position)."""
    high = packed >> 32
    position = ((packed - (high << 32)) * -1 + _POSITION_FLIP).to(tl.int32)
    key = high.to(tl.int32)
    bits = tl.where(key >= 0, key, key ^ 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True), position


@triton.jit
def _select_topk_kernel(
    halves_ptr,
    pair_a_ptr,
    pair_b_ptr,
    scratch_scores_ptr,
    scratch_ids_ptr,
    out_scores_ptr,
    out_slots_ptr,
    n_keys,
    knn,
    n_pairs,
    BLOCK_N: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    program = tl.program_id(0).to(tl.int64)

    # 1. the two rows of half scores (2, BLOCK_N).
    halves = tl.arange(0, 2)
    offs_n = tl.arange(0, BLOCK_N)
    valid = (offs_n[None, :] < n_keys) & (halves[:, None] >= 0)
    scores = tl.load(halves_ptr + program * 2 * n_keys + halves[:, None] * n_keys + offs_n[None, :], mask=valid,
                     other=0.0)

    # 2. sort both halves; keep the top-knn (scores and sub-key ids) of each in scratch (T * H, 2, knn).
    positions = offs_n[None, :] + halves[:, None] * 0
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

    # 4. the first knn: their fp32 scores and slot ids i * N + j.
    out_valid = offs_p < knn
    rank_a = tl.load(pair_a_ptr + pair, mask=out_valid, other=0)
    rank_b = tl.load(pair_b_ptr + pair, mask=out_valid, other=0)
    id_a = tl.load(scratch_ids_ptr + scratch_base + rank_a, mask=out_valid, other=0)
    id_b = tl.load(scratch_ids_ptr + scratch_base + knn + rank_b, mask=out_valid, other=0)
    tl.store(out_scores_ptr + program * knn + offs_p, best, mask=out_valid)
    tl.store(out_slots_ptr + program * knn + offs_p, id_a.to(tl.int64) * n_keys + id_b.to(tl.int64), mask=out_valid)


@functools.lru_cache(maxsize=None)
def _padded_pairs(knn: int, device: str) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`candidate_pairs` as int32 on ``device``, zero-padded to a power of two, and the unpadded count."""
    pair_a, pair_b = candidate_pairs(knn)
    n_pairs = pair_a.numel()
    pad = triton.next_power_of_2(n_pairs) - n_pairs
    return (torch.nn.functional.pad(pair_a, (0, pad)).to(device, torch.int32),
            torch.nn.functional.pad(pair_b, (0, pad)).to(device, torch.int32), n_pairs)


def select_topk_triton(halves: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The knn best slots per (token, head), best first, with the Triton kernel (same contract as
    :func:`memory_layers.ops.reference.select_topk_torch`).

    Args:
        halves: (T, H, 2, N) fp32 half scores.
        knn: slots per (token, head), 1 <= knn <= N.
    Returns:
        scores (T, H, knn) fp32, sorted descending, and slots (T, H, knn) int64 ids ``i * N + j``.
    """
    if halves.dtype != torch.float32:
        raise TypeError(f"triton top-k selects from fp32 half scores, got {halves.dtype} (float64 queries or keys "
                        f"run on the torch backend)")
    tokens, heads, _, n_keys = halves.shape
    if not 1 <= knn <= n_keys:
        raise ValueError(f"knn={knn} must satisfy 1 <= knn <= n_keys ({n_keys})")
    check_triton_launch(halves.device, _select_topk_kernel)
    scores = torch.empty(tokens, heads, knn, dtype=torch.float32, device=halves.device)
    slots = torch.empty(tokens, heads, knn, dtype=torch.int64, device=halves.device)
    if tokens == 0 or heads == 0:
        return scores, slots
    rows = tokens * heads
    scratch_scores = torch.empty(rows, 2, knn, dtype=torch.float32, device=halves.device)
    scratch_ids = torch.empty(rows, 2, knn, dtype=torch.int32, device=halves.device)
    pair_a, pair_b, n_pairs = _padded_pairs(knn, str(halves.device))
    block_n = triton.next_power_of_2(n_keys)
    block_p = pair_a.numel()
    num_warps = 8 if max(block_n, block_p) >= 2048 else 4
    with device_guard(halves.device):
        _select_topk_kernel[(rows,)](
            halves.contiguous(), pair_a, pair_b, scratch_scores, scratch_ids, scores, slots, n_keys, knn, n_pairs,
            BLOCK_N=block_n, BLOCK_P=block_p, num_warps=num_warps,
        )
    return scores, slots
