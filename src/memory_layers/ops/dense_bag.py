"""The dense embedding bag for small tables: scatter the weights into a (T, S) matrix, then one matmul.

For a table of a few thousand slots a (T, S) @ (S, V) matmul on tensor cores can beat a gather kernel, and it runs
on any device. The (T, S) matrix is built in the compute dtype (the read table's: the bf16 copy under autocast), in
token chunks of at most :data:`DENSE_CHUNK_ELEMENTS` entries, and never saved: the backward rebuilds each chunk
from the indices and weights (a memset and a scatter) instead of keeping O(T * S) per layer for it.

Backward: grad_values = dense^T @ grad_out (a GEMM in the compute dtype, summed over chunks in fp32 and given to
the master table in its dtype, as autocast's matmuls do), grad_weights gathered from grad_out @ read^T.

Shapes: values (S, V), indices (T, B) int64, weights (T, B) -> (T, V).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .reference import _check_bag_shapes
from .runtime import autocast_dtype

# Largest (tokens x slots) weight matrix built at once (512 MB in bf16): longer inputs are processed in token chunks,
# whose value gradients are added in fp32. ViT-B-16-mem's 50,432 tokens x 4,096 slots is one chunk.
DENSE_CHUNK_ELEMENTS = 1 << 28


def _scatter(indices: torch.Tensor, weights: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, B) ids and weights -> (n, S) in ``dtype``; repeated ids in a row add up."""
    return torch.zeros(indices.shape[0], slots, dtype=dtype, device=indices.device).scatter_add_(
        1, indices, weights.to(dtype))


def _chunks(tokens: int, slots: int, chunk_elements: int):
    step = max(1, chunk_elements // max(1, slots))
    return [slice(start, min(start + step, tokens)) for start in range(0, tokens, step)]


class DenseBag(torch.autograd.Function):
    """``scatter(weights) @ read``, differentiable in ``values`` (the master table ``read`` is or copies) and in
    the weights; the (T, S) matrix is rebuilt in the backward, not saved."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, read: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                chunk_elements: int) -> torch.Tensor:
        slots = read.shape[0]
        out = read.new_empty(indices.shape[0], read.shape[1])
        with torch.autocast(read.device.type, enabled=False):
            for rows in _chunks(indices.shape[0], slots, chunk_elements):
                torch.mm(_scatter(indices[rows], weights[rows], slots, read.dtype), read, out=out[rows])
        ctx.save_for_backward(read, indices, weights)
        ctx.master_dtype = values.dtype
        ctx.chunk_elements = chunk_elements
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor
                 ) -> Tuple[Optional[torch.Tensor], None, None, Optional[torch.Tensor], None]:
        read, indices, weights = ctx.saved_tensors
        slots = read.shape[0]
        grad_out = grad_out.to(read.dtype)
        need_values, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        accumulate = torch.float64 if ctx.master_dtype == torch.float64 else torch.float32
        grad_values = (torch.zeros(slots, read.shape[1], dtype=accumulate, device=read.device) if need_values
                       else None)
        grad_weights = torch.empty_like(weights) if need_weights else None
        with torch.autocast(read.device.type, enabled=False):
            for rows in _chunks(indices.shape[0], slots, ctx.chunk_elements):
                grad = grad_out[rows]
                if need_values:
                    dense = _scatter(indices[rows], weights[rows], slots, read.dtype)
                    grad_values += (dense.t() @ grad).to(accumulate)
                if need_weights:
                    grad_weights[rows] = (grad @ read.t()).gather(1, indices[rows]).to(weights.dtype)
        if grad_values is not None:
            grad_values = grad_values.to(ctx.master_dtype)
        return grad_values, None, None, grad_weights, None


def dense_compute_dtype(values: torch.Tensor, read_values: Optional[torch.Tensor] = None) -> torch.dtype:
    """The dtype the dense path computes in: the read copy's, else autocast's for an fp32 table, else the table's."""
    if read_values is not None:
        return read_values.dtype
    cast = autocast_dtype(values.device.type)
    return cast if cast is not None and values.dtype == torch.float32 else values.dtype


def embedding_bag_dense(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    read_values: Optional[torch.Tensor] = None,
    sparse_grad: bool = False,
    chunk_elements: int = DENSE_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Weighted bag as ``scatter(weights) @ table``; repeated indices in a bag add up.

    Args:
        values: (S, V) value table (the master: it gets the value gradient, in its dtype).
        indices: (T, B) int64 slot ids.
        weights: (T, B) weights, cast to the compute dtype (as a matmul under autocast casts its inputs).
        read_values: an optional (S, V) copy of ``values`` in a narrower dtype (the bf16 copy under autocast) to
            read instead of ``values``; without it, under autocast an fp32 table is cast for the call.
        sparse_grad: refused (ValueError): a dense read-out makes a dense value gradient.
        chunk_elements: at most this many (token, slot) entries per dense matrix; at least one token per chunk.
    Returns:
        (T, V) in the dtype of the table read: ``read_values``' when given, else ``values``' (under autocast too:
        the product is computed in the autocast dtype and cast back). Differentiable in values and weights.
    """
    _check_bag_shapes(values, indices, weights)
    if sparse_grad:
        raise ValueError("the dense bag path gives a dense value gradient; a sparse one needs path 'fused' or 'auto'")
    if read_values is not None and read_values.shape != values.shape:
        raise ValueError(f"read_values {tuple(read_values.shape)} must have the table's shape {tuple(values.shape)}")
    compute = dense_compute_dtype(values, read_values)
    read = read_values if read_values is not None else values.detach().to(compute)
    out = DenseBag.apply(values, read, indices, weights, chunk_elements)
    return out if read_values is not None else out.to(values.dtype)
