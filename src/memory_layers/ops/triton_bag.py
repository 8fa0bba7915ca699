"""Fused weighted embedding bag in Triton, forward and backward, without (T, B, V) tensors or float atomics.

Forward, grid (T, cdiv(V, BLOCK_V)): each program walks its token's bag in BLOCK_B chunks, loads the
(BLOCK_B, BLOCK_V) tile of value rows and accumulates ``weight * row`` (fp32, or fp64 for fp64 tables).

The rows are read from ``read`` (the table itself, or a narrower copy of it: under autocast the bf16 copy
:class:`memory_layers.ValueTable` keeps, half the bytes of an fp32 table), and the output is in ``read``'s dtype.
The value gradient is always computed for the master table, in its dtype, accumulated in fp32 from the output
gradient as it arrives (bf16 under autocast: it is never widened to an fp32 copy).

Backward:
    grad_weights[t, b] = grad_out[t] . read[indices[t, b]], grid (T, cdiv(B, BLOCK_B)), looping over V blocks;
    grad_values by a sorted segment reduction: torch sorts the flat (T * B) indices (stable) and finds each
    slot's segment start by a binary search in them (searchsorted, (S + 1,) offsets: no host sync, unlike a
    bincount, so the backward can be captured in a CUDA graph). Each segment is cut into chunks of at most
    ``chunk`` entries (:data:`SEGMENT_CHUNK`), and one program sums ``weight * grad_out[token]`` over one chunk,
    so a hot slot read by a large share of all tokens is spread over many programs instead of serialising the
    kernel. A slot of one chunk writes its row directly; a slot of several writes one partial row per chunk, and a
    second kernel adds those rows in chunk order. Every row is written exactly once (rows never read get zeros):
    no atomics, and the same bits on every run.

Widths that are not powers of two are padded to the block and masked. Indices are not range-checked on the device
(an out-of-range slot reads out of bounds); the memory layer only produces valid ones. Every launch runs under
:func:`memory_layers.ops.runtime.device_guard` of its tensors' device.

Importing this module needs triton, and decorates the kernels: set ``TRITON_INTERPRET=1`` before the first import
to run them on CPU tensors. :mod:`memory_layers.ops` imports it lazily, only when the triton backend is used.

Shapes: values (S, V), indices (T, B) int64, weights (T, B) -> (T, V) in the read table's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .reference import _check_bag_shapes
from .runtime import check_triton_launch, device_guard

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# entries of one slot's segment that one program of the value-gradient reduction sums
SEGMENT_CHUNK = 2048
_MAX_BLOCK_V = 128
_MAX_BLOCK_B = 32
_BLOCK_E = 32


@triton.jit
def _load_value_tile(values_ptr, rows, offs_v, b_valid, v_valid, stride_vs):
    """The (BLOCK_B, BLOCK_V) tile of value rows ``rows`` at columns ``offs_v``; masked lanes read 0."""
    return tl.load(values_ptr + rows[:, None] * stride_vs + offs_v[None, :],
                   mask=b_valid[:, None] & v_valid[None, :], other=0.0)


@triton.jit
def _bag_forward_kernel(
    values_ptr,
    indices_ptr,
    weights_ptr,
    out_ptr,
    bag,
    v_dim,
    stride_vs,
    ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_valid = offs_v < v_dim
    acc = tl.zeros([BLOCK_V], dtype=ACC_DTYPE)
    for b0 in range(0, bag, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        b_valid = offs_b < bag
        rows = tl.load(indices_ptr + token * bag + offs_b, mask=b_valid, other=0).to(tl.int64)
        weight = tl.load(weights_ptr + token * bag + offs_b, mask=b_valid, other=0.0).to(ACC_DTYPE)
        tile = _load_value_tile(values_ptr, rows, offs_v, b_valid, v_valid, stride_vs)
        acc += tl.sum(tile.to(ACC_DTYPE) * weight[:, None], axis=0)
    tl.store(out_ptr + token * v_dim + offs_v, acc.to(out_ptr.dtype.element_ty), mask=v_valid)


@triton.jit
def _bag_grad_weights_kernel(
    values_ptr,
    indices_ptr,
    grad_out_ptr,
    grad_weights_ptr,
    bag,
    v_dim,
    stride_vs,
    ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_valid = offs_b < bag
    rows = tl.load(indices_ptr + token * bag + offs_b, mask=b_valid, other=0).to(tl.int64)
    acc = tl.zeros([BLOCK_B], dtype=ACC_DTYPE)
    for v0 in range(0, v_dim, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_valid = offs_v < v_dim
        grad = tl.load(grad_out_ptr + token * v_dim + offs_v, mask=v_valid, other=0.0).to(ACC_DTYPE)
        tile = _load_value_tile(values_ptr, rows, offs_v, b_valid, v_valid, stride_vs)
        acc += tl.sum(tile.to(ACC_DTYPE) * grad[None, :], axis=1)
    tl.store(grad_weights_ptr + token * bag + offs_b, acc.to(grad_weights_ptr.dtype.element_ty), mask=b_valid)


@triton.jit
def _bag_grad_values_kernel(
    order_ptr,
    chunk_start_ptr,
    chunk_end_ptr,
    chunk_row_ptr,
    chunk_partial_ptr,
    weights_ptr,
    grad_out_ptr,
    grad_values_ptr,
    partials_ptr,
    bag,
    v_dim,
    ACC_DTYPE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    chunk = tl.program_id(0).to(tl.int64)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_valid = offs_v < v_dim
    start = tl.load(chunk_start_ptr + chunk)
    end = tl.load(chunk_end_ptr + chunk)
    acc = tl.zeros([BLOCK_V], dtype=ACC_DTYPE)
    for e0 in range(start, end, BLOCK_E):
        offs_e = e0 + tl.arange(0, BLOCK_E)
        e_valid = offs_e < end
        entry = tl.load(order_ptr + offs_e, mask=e_valid, other=0).to(tl.int64)
        token = entry // bag
        weight = tl.load(weights_ptr + entry, mask=e_valid, other=0.0).to(ACC_DTYPE)
        grad = tl.load(
            grad_out_ptr + token[:, None] * v_dim + offs_v[None, :],
            mask=e_valid[:, None] & v_valid[None, :],
            other=0.0,
        )
        acc += tl.sum(grad.to(ACC_DTYPE) * weight[:, None], axis=0)
    # a chunk writes its slot's row (row >= 0) or, when its slot has several chunks, one partial row (partial >= 0)
    row = tl.load(chunk_row_ptr + chunk)
    partial = tl.load(chunk_partial_ptr + chunk)
    tl.store(grad_values_ptr + row * v_dim + offs_v, acc.to(grad_values_ptr.dtype.element_ty),
             mask=v_valid & (row >= 0))
    tl.store(partials_ptr + partial * v_dim + offs_v, acc, mask=v_valid & (partial >= 0))


@triton.jit
def _sum_partials_kernel(
    partials_ptr,
    slot_ptr,
    first_ptr,
    count_ptr,
    grad_values_ptr,
    v_dim,
    BLOCK_V: tl.constexpr,
):
    program = tl.program_id(0).to(tl.int64)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_valid = offs_v < v_dim
    slot = tl.load(slot_ptr + program)
    first = tl.load(first_ptr + program)
    count = tl.load(count_ptr + program)
    acc = tl.zeros([BLOCK_V], dtype=partials_ptr.dtype.element_ty)
    for index in range(0, count):  # chunk order: the same sum on every run
        acc += tl.load(partials_ptr + (first + index) * v_dim + offs_v, mask=v_valid, other=0.0)
    tl.store(grad_values_ptr + slot * v_dim + offs_v, acc.to(grad_values_ptr.dtype.element_ty),
             mask=v_valid & (slot >= 0))


def _acc_dtype(*tensors: torch.Tensor) -> tl.dtype:
    """fp64 accumulation when any operand is fp64, else fp32."""
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def _blocks(bag: int, v_dim: int) -> Tuple[int, int]:
    return min(triton.next_power_of_2(bag), _MAX_BLOCK_B), min(triton.next_power_of_2(v_dim), _MAX_BLOCK_V)


def _bag_forward(read: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(S, V), (T, B), (T, B) contiguous -> (T, V) in ``read``'s dtype."""
    tokens, bag = indices.shape
    v_dim = read.shape[1]
    out = torch.empty(tokens, v_dim, dtype=read.dtype, device=read.device)
    if tokens == 0 or bag == 0 or v_dim == 0:
        return out.zero_()
    block_b, block_v = _blocks(bag, v_dim)
    grid = (tokens, triton.cdiv(v_dim, block_v))
    with device_guard(read.device):
        _bag_forward_kernel[grid](
            read, indices, weights, out, bag, v_dim, read.stride(0),
            ACC_DTYPE=_acc_dtype(read, weights), BLOCK_B=block_b, BLOCK_V=block_v,
        )
    return out


def _bag_grad_weights(
    read: torch.Tensor, indices: torch.Tensor, grad_out: torch.Tensor, weights_dtype: torch.dtype
) -> torch.Tensor:
    """grad_weights (T, B) in ``weights_dtype``: each entry the dot of grad_out[t] with its row of ``read``."""
    tokens, bag = indices.shape
    v_dim = read.shape[1]
    grad_weights = torch.zeros(tokens, bag, dtype=weights_dtype, device=read.device)
    if tokens == 0 or bag == 0 or v_dim == 0:
        return grad_weights
    block_b, block_v = _blocks(bag, v_dim)
    grid = (tokens, triton.cdiv(bag, block_b))
    with device_guard(read.device):
        _bag_grad_weights_kernel[grid](
            read, indices, grad_out, grad_weights, bag, v_dim, read.stride(0),
            ACC_DTYPE=_acc_dtype(read, grad_weights), BLOCK_B=block_b, BLOCK_V=block_v,
        )
    return grad_weights


def sorted_segments(indices: torch.Tensor, n_slots: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The segment layout of the grad_values reduction.

    Args:
        indices: (T, B) slot ids.
        n_slots: S.
    Returns:
        order (T * B,) int64: flat entry positions sorted by slot (stable), and offsets (S + 1,) int64: slot r's
        entries are ``order[offsets[r]:offsets[r + 1]]``.
    """
    sorted_slots, order = indices.reshape(-1).sort(stable=True)
    boundaries = torch.arange(n_slots + 1, dtype=sorted_slots.dtype, device=indices.device)
    return order, torch.searchsorted(sorted_slots, boundaries)


@dataclass(frozen=True)
class ChunkLayout:
    """How the value-gradient reduction cuts the slots' segments into chunks (all on the device, no host sync).

    The arrays are sized by bounds known from the shapes alone, so that the launch grids are too; entries past the
    real counts are inert (an empty range, row and partial -1).

    Attributes:
        start, end: (C,) int64 entry range ``order[start:end]`` of each chunk; C = min(S, E) + cdiv(E, chunk) for E
            flat entries (each read slot has at most ``len / chunk + 1`` chunks).
        row: (C,) int64 the slot whose gradient row a chunk writes, when that slot has one chunk; else -1.
        partial: (C,) int64 the partial row a chunk writes, when its slot has several chunks; else -1.
        n_partials: rows of the partials buffer, a bound: 2 * cdiv(E, chunk).
        multi_slot, multi_first, multi_count: (M,) int64 per slot of several chunks: the slot (-1 past the real
            count), its first partial row and its number of chunks; M = E // (chunk + 1).
    """

    start: torch.Tensor
    end: torch.Tensor
    row: torch.Tensor
    partial: torch.Tensor
    n_partials: int
    multi_slot: torch.Tensor
    multi_first: torch.Tensor
    multi_count: torch.Tensor


def chunk_layout(offsets: torch.Tensor, n_entries: int, chunk: int) -> ChunkLayout:
    """The :class:`ChunkLayout` of the segments ``offsets`` (S + 1,) over ``n_entries`` sorted entries."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    n_slots = offsets.numel() - 1
    device = offsets.device
    counts = offsets[1:] - offsets[:-1]
    n_chunks = (counts + chunk - 1) // chunk
    chunk_end = torch.cumsum(n_chunks, 0)
    bound = min(n_slots, n_entries) + triton.cdiv(n_entries, chunk)
    ids = torch.arange(bound, dtype=torch.int64, device=device)
    slot = torch.searchsorted(chunk_end, ids, right=True)
    valid = slot < n_slots
    slot = slot.clamp_max(n_slots - 1)
    index_in_slot = ids - (chunk_end[slot] - n_chunks[slot])
    start = offsets[slot] + index_in_slot * chunk
    end = torch.where(valid, torch.minimum(start + chunk, offsets[slot + 1]), start)
    several = n_chunks > 1
    multi_chunks = torch.where(several, n_chunks, torch.zeros_like(n_chunks))
    multi_end = torch.cumsum(multi_chunks, 0)
    first_partial = multi_end - multi_chunks
    chunk_several = valid & several[slot]
    row = torch.where(valid & ~chunk_several, slot, torch.full_like(slot, -1))
    partial = torch.where(chunk_several, first_partial[slot] + index_in_slot, torch.full_like(slot, -1))
    multi_bound = n_entries // (chunk + 1)
    multi_ids = torch.arange(multi_bound, dtype=torch.int64, device=device)
    multi_slot = torch.searchsorted(torch.cumsum(several.to(torch.int64), 0), multi_ids, right=True)
    multi_valid = multi_slot < n_slots
    multi_slot = multi_slot.clamp_max(n_slots - 1)
    return ChunkLayout(
        start=start, end=end, row=row, partial=partial, n_partials=2 * triton.cdiv(n_entries, chunk),
        multi_slot=torch.where(multi_valid, multi_slot, torch.full_like(multi_slot, -1)),
        multi_first=first_partial[multi_slot], multi_count=torch.where(multi_valid, n_chunks[multi_slot],
                                                                       torch.zeros_like(multi_slot)),
    )


def _segment_sums(indices: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor, out: torch.Tensor,
                  n_slots: int, row_of_slot: Optional[torch.Tensor], chunk: int) -> None:
    """Write each read slot's ``sum weight * grad_out[token]`` into ``out[slot]`` (or ``out[row_of_slot[slot]]``)
    by the chunked segment reduction; rows of slots never read are not touched."""
    tokens, bag = indices.shape
    v_dim = grad_out.shape[1]
    device = grad_out.device
    order, offsets = sorted_segments(indices, n_slots)
    layout = chunk_layout(offsets, tokens * bag, chunk)
    row, multi_slot = layout.row, layout.multi_slot
    if row_of_slot is not None:
        row = torch.where(row >= 0, row_of_slot[row.clamp_min(0)], row)
        multi_slot = torch.where(multi_slot >= 0, row_of_slot[multi_slot.clamp_min(0)], multi_slot)
    acc_dtype = _acc_dtype(out, weights)
    partials = torch.empty(max(1, layout.n_partials), v_dim, device=device,
                           dtype=torch.float64 if acc_dtype == tl.float64 else torch.float32)
    block_v = min(triton.next_power_of_2(v_dim), _MAX_BLOCK_V)
    v_blocks = triton.cdiv(v_dim, block_v)
    with device_guard(device):
        _bag_grad_values_kernel[(layout.start.numel(), v_blocks)](
            order, layout.start, layout.end, row, layout.partial, weights, grad_out, out, partials,
            bag, v_dim, ACC_DTYPE=acc_dtype, BLOCK_E=_BLOCK_E, BLOCK_V=block_v,
        )
        if multi_slot.numel():
            _sum_partials_kernel[(multi_slot.numel(), v_blocks)](
                partials, multi_slot, layout.multi_first, layout.multi_count, out, v_dim, BLOCK_V=block_v,
            )


def _bag_grad_values(
    n_slots: int, master_dtype: torch.dtype, indices: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """grad_values (S, V) in ``master_dtype`` by the chunked segment reduction (no atomics, deterministic); chunks
    of ``chunk`` entries (default :data:`SEGMENT_CHUNK`)."""
    grad_values = torch.zeros(n_slots, grad_out.shape[1], dtype=master_dtype, device=grad_out.device)
    if indices.numel() and grad_out.shape[1] and n_slots:
        _segment_sums(indices, weights, grad_out, grad_values, n_slots, None,
                      SEGMENT_CHUNK if chunk is None else chunk)
    return grad_values


def sparse_rows(rows: torch.Tensor, values: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """A coalesced sparse COO (S, V) gradient holding ``values`` (R, V) at the sorted, distinct ``rows`` (R,)."""
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, is_coalesced=True, check_invariants=False)


def _bag_grad_values_sparse(
    n_slots: int, master_dtype: torch.dtype, indices: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """The value gradient as a sparse COO (S, V) tensor of the rows read: one host sync (their count)."""
    v_dim = grad_out.shape[1]
    counts = torch.bincount(indices.reshape(-1), minlength=n_slots) if indices.numel() else None
    if counts is None or v_dim == 0:
        empty = torch.zeros(0, v_dim, dtype=master_dtype, device=grad_out.device)
        return sparse_rows(torch.zeros(0, dtype=torch.int64, device=grad_out.device), empty, (n_slots, v_dim))
    read = counts > 0
    rows = torch.nonzero(read).view(-1)
    values = torch.empty(rows.numel(), v_dim, dtype=master_dtype, device=grad_out.device)
    row_of_slot = torch.cumsum(read.to(torch.int64), 0) - 1
    _segment_sums(indices, weights, grad_out, values, n_slots, row_of_slot, SEGMENT_CHUNK if chunk is None else chunk)
    return sparse_rows(rows, values, (n_slots, v_dim))


class EmbeddingBag(torch.autograd.Function):
    """Autograd wrapper of the fused bag: reads ``read``, differentiable in ``values`` (the master table, which
    ``read`` is or copies) and in the weights; not twice."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, read: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                sparse_grad: bool) -> torch.Tensor:
        ctx.save_for_backward(read, indices, weights)
        ctx.master = (values.shape[0], values.dtype)
        ctx.sparse_grad = sparse_grad
        return _bag_forward(read, indices, weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor
                 ) -> Tuple[Optional[torch.Tensor], None, None, Optional[torch.Tensor], None]:
        read, indices, weights = ctx.saved_tensors
        if grad_out.dtype not in SUPPORTED_DTYPES:
            grad_out = grad_out.to(read.dtype)
        grad_out = grad_out.contiguous()
        grad_values = grad_weights = None
        if ctx.needs_input_grad[0]:
            n_slots, master_dtype = ctx.master
            reduce = _bag_grad_values_sparse if ctx.sparse_grad else _bag_grad_values
            grad_values = reduce(n_slots, master_dtype, indices, weights, grad_out)
        if ctx.needs_input_grad[3]:
            grad_weights = _bag_grad_weights(read, indices, grad_out, weights.dtype)
        return grad_values, None, None, grad_weights, None


def embedding_bag_triton(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                         read_values: Optional[torch.Tensor] = None, sparse_grad: bool = False) -> torch.Tensor:
    """Weighted sum of value rows per token with the fused Triton kernels (same contract as the references).

    Args:
        values: (S, V) value table: fp32, bf16, fp16 or fp64.
        indices: (T, B) int64 (or int32) slot ids in [0, S).
        weights: (T, B) weights, any float dtype (fp32 weights on a bf16 table stay fp32 in the accumulation).
        read_values: an optional (S, V) copy of ``values`` in another dtype (the bf16 copy under autocast) that
            the kernels read instead; the value gradient still goes to ``values``.
        sparse_grad: give ``values`` a sparse COO gradient of the rows read (coalesced; one host sync for their
            count) instead of a dense (S, V) one.
    Returns:
        (T, V) in the read table's dtype, accumulated in fp32 (fp64 for fp64 operands). Differentiable in values and
        weights; grad_values is in ``values``' dtype, accumulated in fp32 from the output gradient in the dtype it
        arrives in; grad_weights in the weights' dtype.
    """
    _check_bag_shapes(values, indices, weights)
    read = values if read_values is None else read_values
    if read.shape != values.shape:
        raise ValueError(f"read_values {tuple(read.shape)} must have the table's shape {tuple(values.shape)}")
    for tensor in (values, read, weights):
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"triton embedding bag supports {SUPPORTED_DTYPES}, got {tensor.dtype}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"indices must be int64 or int32, got {indices.dtype}")
    if not (values.device == read.device == indices.device == weights.device):
        raise ValueError(f"values, indices and weights must share a device: {values.device}, {indices.device}, "
                         f"{weights.device}")
    check_triton_launch(values.device, _bag_forward_kernel)
    if read.stride(1) != 1:
        read = read.contiguous()
    return EmbeddingBag.apply(values, read, indices.contiguous(), weights.contiguous(), sparse_grad)
