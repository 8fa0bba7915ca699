"""Fused weighted embedding bag in Triton, forward and backward, without (T, B, V) tensors or float atomics.

Forward, grid (T, cdiv(V, BLOCK_V)): each program walks its token's bag in BLOCK_B chunks, loads the
(BLOCK_B, BLOCK_V) tile of value rows and accumulates ``weight * row`` (fp32, or fp64 for fp64 tables).

Backward:
    grad_weights[t, b] = grad_out[t] . values[indices[t, b]], grid (T, cdiv(B, BLOCK_B)), looping over V blocks;
    grad_values by a sorted segment reduction: torch sorts the flat (T * B) indices (stable) and finds each
    slot's segment start by a binary search in them (searchsorted, (S + 1,) offsets: no host sync, unlike a
    bincount, so the backward can be captured in a CUDA graph); the kernel, grid
    (S, cdiv(V, BLOCK_V)), sums ``weight * grad_out[token]`` over its slot's segment in BLOCK_E chunks. Every row
    is written exactly once (rows never read get zeros), so no atomics and a deterministic result.

Widths that are not powers of two are padded to the block and masked. Indices are not range-checked on the device
(an out-of-range slot reads out of bounds); the memory layer only produces valid ones.

Importing this module needs triton, and decorates the kernels: set ``TRITON_INTERPRET=1`` before the first import
to run them on CPU tensors. :mod:`memory_layers.ops` imports it lazily, only when the triton backend is used.

Shapes: values (S, V), indices (T, B) int64, weights (T, B) -> (T, V) in the table's dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .runtime import check_triton_launch
from .reference import _check_bag_shapes

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
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
    offsets_ptr,
    weights_ptr,
    grad_out_ptr,
    grad_values_ptr,
    bag,
    v_dim,
    ACC_DTYPE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_valid = offs_v < v_dim
    start = tl.load(offsets_ptr + row)
    end = tl.load(offsets_ptr + row + 1)
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
    tl.store(grad_values_ptr + row * v_dim + offs_v, acc.to(grad_values_ptr.dtype.element_ty), mask=v_valid)


def _acc_dtype(*tensors: torch.Tensor) -> tl.dtype:
    """fp64 accumulation when any operand is fp64, else fp32."""
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def _blocks(bag: int, v_dim: int) -> Tuple[int, int]:
    return min(triton.next_power_of_2(bag), _MAX_BLOCK_B), min(triton.next_power_of_2(v_dim), _MAX_BLOCK_V)


def _bag_forward(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(S, V), (T, B), (T, B) contiguous -> (T, V) in values dtype."""
    tokens, bag = indices.shape
    v_dim = values.shape[1]
    out = torch.empty(tokens, v_dim, dtype=values.dtype, device=values.device)
    if tokens == 0 or v_dim == 0:
        return out.zero_()
    block_b, block_v = _blocks(bag, v_dim)
    grid = (tokens, triton.cdiv(v_dim, block_v))
    _bag_forward_kernel[grid](
        values, indices, weights, out, bag, v_dim, values.stride(0),
        ACC_DTYPE=_acc_dtype(values, weights), BLOCK_B=block_b, BLOCK_V=block_v,
    )
    return out


def _bag_grad_weights(
    values: torch.Tensor, indices: torch.Tensor, grad_out: torch.Tensor, weights_dtype: torch.dtype
) -> torch.Tensor:
    """grad_weights (T, B) in ``weights_dtype``: each entry the dot of grad_out[t] with its value row."""
    tokens, bag = indices.shape
    v_dim = values.shape[1]
    grad_weights = torch.zeros(tokens, bag, dtype=weights_dtype, device=values.device)
    if tokens == 0 or bag == 0 or v_dim == 0:
        return grad_weights
    block_b, block_v = _blocks(bag, v_dim)
    grid = (tokens, triton.cdiv(bag, block_b))
    _bag_grad_weights_kernel[grid](
        values, indices, grad_out, grad_weights, bag, v_dim, values.stride(0),
        ACC_DTYPE=_acc_dtype(values, grad_weights), BLOCK_B=block_b, BLOCK_V=block_v,
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


def _bag_grad_values(
    values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor
) -> torch.Tensor:
    """grad_values (S, V) in values dtype by the sorted segment reduction (no atomics)."""
    slots, v_dim = values.shape
    tokens, bag = indices.shape
    grad_values = torch.empty(slots, v_dim, dtype=values.dtype, device=values.device)
    if tokens * bag == 0 or v_dim == 0 or slots == 0:
        return grad_values.zero_()
    order, offsets = sorted_segments(indices, slots)
    block_v = min(triton.next_power_of_2(v_dim), _MAX_BLOCK_V)
    grid = (slots, triton.cdiv(v_dim, block_v))
    _bag_grad_values_kernel[grid](
        order, offsets, weights, grad_out, grad_values, bag, v_dim,
        ACC_DTYPE=_acc_dtype(values, weights), BLOCK_E=_BLOCK_E, BLOCK_V=block_v,
    )
    return grad_values


class EmbeddingBag(torch.autograd.Function):
    """Autograd wrapper of the fused bag: differentiable in values and weights, not twice."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, indices, weights)
        return _bag_forward(values, indices, weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, Optional[torch.Tensor]]:
        values, indices, weights = ctx.saved_tensors
        grad_out = grad_out.to(values.dtype).contiguous()
        grad_values = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_values = _bag_grad_values(values, indices, weights, grad_out)
        if ctx.needs_input_grad[2]:
            grad_weights = _bag_grad_weights(values, indices, grad_out, weights.dtype)
        return grad_values, None, grad_weights


def embedding_bag_triton(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of value rows per token with the fused Triton kernels (same contract as the references).

    Args:
        values: (S, V) value table: fp32, bf16, fp16 or fp64.
        indices: (T, B) int64 (or int32) slot ids in [0, S).
        weights: (T, B) weights, any float dtype (fp32 weights on a bf16 table stay fp32 in the accumulation).
    Returns:
        (T, V) in the table's dtype, accumulated in fp32 (fp64 for fp64 operands). Differentiable in values and
        weights; grad_values is in the table's dtype, grad_weights in the weights' dtype.
    """
    _check_bag_shapes(values, indices, weights)
    if values.dtype not in SUPPORTED_DTYPES or weights.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"triton embedding bag supports {SUPPORTED_DTYPES}, got {values.dtype} / {weights.dtype}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"indices must be int64 or int32, got {indices.dtype}")
    if not (values.device == indices.device == weights.device):
        raise ValueError(f"values, indices and weights must share a device: {values.device}, {indices.device}, "
                         f"{weights.device}")
    check_triton_launch(values.device, _bag_forward_kernel)
    if values.stride(1) != 1:
        values = values.contiguous()
    return EmbeddingBag.apply(values, indices.contiguous(), weights.contiguous())
