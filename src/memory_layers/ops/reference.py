"""Plain-torch implementations of the memory read-out ops.

These are the references every faster path is checked against, and the default on the CPU.

Shapes (T = tokens, H = heads, K = k_dim, N = n_keys, B = bag size = H * knn, V = v_dim):
    query (T, H, K), keys (H, 2, N, K // 2) -> scores, indices (T, H, knn)
    values (N * N, V), indices (T, B), weights (T, B) -> (T, V)
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def _check_topk_shapes(query: torch.Tensor, keys: torch.Tensor, knn: int) -> None:
    if query.dim() != 3:
        raise ValueError(f"query must be (tokens, heads, k_dim), got shape {tuple(query.shape)}")
    if keys.dim() != 4 or keys.shape[1] != 2:
        raise ValueError(f"keys must be (heads, 2, n_keys, k_dim // 2), got shape {tuple(keys.shape)}")
    heads, _, n_keys, half = keys.shape
    if query.shape[1] != heads or query.shape[2] != 2 * half:
        raise ValueError(f"query {tuple(query.shape)} does not match keys {tuple(keys.shape)}")
    if not 1 <= knn <= n_keys:
        raise ValueError(f"knn={knn} must satisfy 1 <= knn <= n_keys ({n_keys})")


def half_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scores of each query half against its sub-keys: (T, H, K) x (H, 2, N, K/2) -> (T, H, 2, N)."""
    tokens, heads, k_dim = query.shape
    halves = query.view(tokens, heads, 2, k_dim // 2)
    return torch.einsum("thpd,hpnd->thpn", halves, keys.to(query.dtype))


def product_key_topk_torch(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search: top-knn per half, then top-knn over the knn x knn candidate sums.

    Args:
        query: (T, H, K) queries.
        keys: (H, 2, N, K // 2) sub-keys of the two halves.
        knn: slots to return per (token, head).
    Returns:
        scores (T, H, knn) sorted descending, and indices (T, H, knn) int64 slot ids in [0, N * N) where
        slot = i * N + j for sub-key i of the first half and j of the second.
    """
    _check_topk_shapes(query, keys, knn)
    n_keys = keys.shape[2]
    scores = half_scores(query, keys)
    scores_1, index_1 = scores[:, :, 0].topk(knn, dim=-1)
    scores_2, index_2 = scores[:, :, 1].topk(knn, dim=-1)
    candidates = (scores_1.unsqueeze(-1) + scores_2.unsqueeze(-2)).flatten(-2)
    candidate_ids = (index_1.unsqueeze(-1) * n_keys + index_2.unsqueeze(-2)).flatten(-2)
    best_scores, best = candidates.topk(knn, dim=-1)
    return best_scores, candidate_ids.gather(-1, best)


def product_key_topk_bruteforce(
    query: torch.Tensor, keys: torch.Tensor, knn: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-knn over all N * N slots (memory O(T * H * N^2)); for tests only."""
    _check_topk_shapes(query, keys, knn)
    scores = half_scores(query, keys)
    full = (scores[:, :, 0].unsqueeze(-1) + scores[:, :, 1].unsqueeze(-2)).flatten(-2)
    return full.topk(knn, dim=-1)


def _check_bag_shapes(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> None:
    if values.dim() != 2:
        raise ValueError(f"values must be (slots, v_dim), got shape {tuple(values.shape)}")
    if indices.dim() != 2 or weights.shape != indices.shape:
        raise ValueError(
            f"indices and weights must both be (tokens, bag), got {tuple(indices.shape)} and {tuple(weights.shape)}"
        )


def embedding_bag_torch(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of value rows per token with torch's fused ``embedding_bag`` (no (T, B, V) tensor).

    Args:
        values: (S, V) value table.
        indices: (T, B) int64 slot ids.
        weights: (T, B) weights (cast to the table's dtype).
    Returns:
        (T, V) in the table's dtype.
    """
    _check_bag_shapes(values, indices, weights)
    return F.embedding_bag(indices, values, per_sample_weights=weights.to(values.dtype), mode="sum")


def embedding_bag_naive(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gather then sum: builds the (T, B, V) tensor the fast paths avoid. The reference for tests."""
    _check_bag_shapes(values, indices, weights)
    return (values[indices] * weights.to(values.dtype).unsqueeze(-1)).sum(dim=1)
