"""The dense embedding bag for small tables: scatter the weights into a (T, S) matrix, then one matmul.

For a table of a few thousand slots a (T, S) @ (S, V) matmul on tensor cores can beat a gather kernel; it is plain
torch, so autograd gives the backward (grad_values = dense^T @ grad_out, grad_weights gathered from
grad_out @ values^T) and it runs on any device. Memory is O(T * S) per token chunk, so it is meant for tables of at
most :data:`memory_layers.ops.dispatch.DENSE_MAX_SLOTS` slots.

Shapes: values (S, V), indices (T, B) int64, weights (T, B) -> (T, V) in the table's dtype.
"""
from __future__ import annotations

import torch

from .reference import _check_bag_shapes

# Largest (tokens x slots) weight matrix built at once; longer inputs are processed in token chunks.
DENSE_CHUNK_ELEMENTS = 1 << 24


def embedding_bag_dense(
    values: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    chunk_elements: int = DENSE_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Weighted bag as ``scatter(weights) @ values``; repeated indices in a bag add up.

    Args:
        values: (S, V) value table.
        indices: (T, B) int64 slot ids.
        weights: (T, B) weights, cast to the table's dtype (as the torch reference does).
        chunk_elements: at most this many (token, slot) entries per dense matrix; at least one token per chunk.
    Returns:
        (T, V) in the table's dtype; differentiable in values and weights.
    """
    _check_bag_shapes(values, indices, weights)
    slots, v_dim = values.shape
    tokens = indices.shape[0]
    if tokens == 0:
        return values.new_zeros(0, slots) @ values
    weights = weights.to(values.dtype)
    chunk = max(1, chunk_elements // max(1, slots))
    outputs = []
    for start in range(0, tokens, chunk):
        index = indices[start:start + chunk]
        dense = values.new_zeros(index.shape[0], slots).scatter_add(1, index, weights[start:start + chunk])
        outputs.append(dense @ values)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
