"""Plain-torch implementations of the memory read-out ops.

These are the references every faster path is checked against, and the default on the CPU.

Shapes (T = tokens, H = heads, K = k_dim, N = n_keys, B = bag size = H * knn, V = v_dim):
    query (T, H, K), keys (H, 2, N, K // 2) -> scores, indices (T, H, knn)
    values (N * N, V), indices (T, B), weights (T, B) -> (T, V)
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

# CPU read-out in column blocks: bytes of one (S, block) slice of the table (the size of a core's L2 cache), and the
# narrowest block worth a call of its own
CPU_BLOCK_BYTES = 1 << 20
CPU_MIN_BLOCK = 16


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


def score_dtype(query: torch.Tensor, keys: torch.Tensor) -> torch.dtype:
    """The dtype slot scores are computed in: float64 when either input is float64, else float32 (also for bf16
    and fp16 inputs and under autocast, so that every backend ranks slots alike)."""
    return torch.float64 if torch.float64 in (query.dtype, keys.dtype) else torch.float32


def half_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scores of each query half against its sub-keys: (T, H, K) x (H, 2, N, K/2) -> (T, H, 2, N).

    Computed as a batched GEMM in :func:`score_dtype` with autocast off, whatever the input dtypes.
    """
    tokens, heads, k_dim = query.shape
    dtype = score_dtype(query, keys)
    with torch.autocast(query.device.type, enabled=False):
        halves = query.to(dtype).view(tokens, heads, 2, k_dim // 2)
        return torch.einsum("thpd,hpnd->thpn", halves, keys.to(dtype))


@functools.lru_cache(maxsize=None)
def candidate_pairs(knn: int, device: str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank pairs (a, b) with ``(a + 1) * (b + 1) <= knn``: two int64 tensors of length P on ``device`` (cached).

    P is 280 for knn = 64, against knn * knn = 4,096 pairs. A pair outside the set can never be needed: every
    (a', b') with a' <= a and b' <= b scores at least as high, and there are (a + 1) * (b + 1) - 1 >= knn of them
    besides (a, b) itself.
    """
    pairs = [(a, b) for a in range(knn) for b in range(knn // (a + 1))]
    pair_a = torch.tensor([a for a, _ in pairs], dtype=torch.int64, device=device)
    pair_b = torch.tensor([b for _, b in pairs], dtype=torch.int64, device=device)
    return pair_a, pair_b


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """fp32 or fp64 scores -> int32 or int64 keys whose integer order is the float order (for non-NaN values).

    Sorting and top-k run faster on integers than on floats (whose comparisons must place NaNs).
    """
    bits = scores.view(torch.int32 if scores.dtype == torch.float32 else torch.int64)
    return bits ^ ((bits >> (bits.element_size() * 8 - 1)) & torch.iinfo(bits.dtype).max)


# the low 32 bits of a packed fp32 ranking key hold ``POSITION_FLIP - position``: a lower position ranks higher
POSITION_FLIP = (1 << 31) - 1


def top_positions(scores: torch.Tensor, k: int, sorted: bool = True) -> torch.Tensor:
    """Positions of the ``k`` best entries along the last dimension: by score descending, ties to the lower position.

    The order is total, so every device and every kernel returns the same positions (torch's ``topk`` breaks ties in
    no stated order). A full ranking (k = n) is a stable sort of the scores' integer keys; otherwise fp32 scores are
    packed with their flipped position into one int64 key, unique per row, and ranked by ``topk``, and fp64 scores
    (whose integer keys take all 64 bits) by a stable sort.

    Args:
        scores: (..., n) fp32 or fp64.
        k: 1 <= k <= n.
        sorted: best first (True), or the same positions in no particular order (fp32 only; faster on the CPU).
    Returns:
        (..., k) int64 positions.
    """
    keys = order_keys(scores)
    if scores.dtype == torch.float32 and k < scores.shape[-1]:
        positions = torch.arange(scores.shape[-1], dtype=torch.int64, device=scores.device)
        packed = (keys.to(torch.int64) << 32) + (POSITION_FLIP - positions)
        return packed.topk(k, dim=-1, sorted=sorted).indices
    return keys.sort(dim=-1, descending=True, stable=True).indices[..., :k]


def select_topk_torch(halves: torch.Tensor, knn: int, sorted: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """The knn best slots per (token, head) from the half scores, and their scores (no gradient).

    Top-knn of each half, then the top-knn of the sums over only the :func:`candidate_pairs` of their ranks. Ties
    are broken the same way on every backend (:func:`top_positions`): among equal half scores the lower sub-key id
    ranks first, and among equal sums the candidate pair of better ranks, first half first (for slots whose two
    halves tie exactly: the lower slot id). :func:`product_key_topk_bruteforce` ranks all slots by the same order.
    Few, large tensor ops: on a shared machine every op that runs on several threads can wait for a descheduled one.

    Args:
        halves: (T, H, 2, N) fp32 or fp64 half scores (:func:`half_scores`).
        knn: slots per (token, head), 1 <= knn <= N.
        sorted: best first (True), or in no particular order (faster on the CPU; the same set).
    Returns:
        scores (T, H, knn) in the half scores' dtype (the sums ``halves[i] + halves[j]``) and slots (T, H, knn)
        int64 ids ``i * N + j``.
    """
    tokens, heads, _, n_keys = halves.shape
    ids = top_positions(halves, knn)
    rows = tokens * heads
    top = halves.gather(-1, ids).reshape(rows, 2, knn)
    pair_a, pair_b = candidate_pairs(knn, str(halves.device))
    sums = top[:, 0].index_select(-1, pair_a) + top[:, 1].index_select(-1, pair_b)
    best = top_positions(sums, knn, sorted=sorted or sums.dtype != torch.float32)
    scores = sums.gather(-1, best)
    best = best.reshape(-1)
    ids = ids.reshape(rows, 2, knn)
    slots = (ids[:, 0].gather(-1, pair_a.index_select(0, best).view(rows, knn)) * n_keys
             + ids[:, 1].gather(-1, pair_b.index_select(0, best).view(rows, knn)))
    return scores.view(tokens, heads, knn), slots.view(tokens, heads, knn)


def slot_scores(halves: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Scores of the given slots, differentiable in ``halves``: (T, H, 2, N), (T, H, k) -> (T, H, k).

    The same fp32 (or fp64) sums the selection ranked, so scores of slots chosen best first come out sorted.
    """
    n_keys = halves.shape[-1]
    return halves[:, :, 0].gather(-1, slots // n_keys) + halves[:, :, 1].gather(-1, slots % n_keys)


TopkSelector = Callable[[torch.Tensor, int], Tuple[torch.Tensor, torch.Tensor]]


def _check_halves(halves: torch.Tensor, knn: int) -> None:
    if halves.dim() != 4 or halves.shape[2] != 2:
        raise ValueError(f"half scores must be (tokens, heads, 2, n_keys), got shape {tuple(halves.shape)}")
    if not 1 <= knn <= halves.shape[3]:
        raise ValueError(f"knn={knn} must satisfy 1 <= knn <= n_keys ({halves.shape[3]})")


def topk_with(select: TopkSelector, halves: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact top-knn from half scores (T, H, 2, N) with ``select`` (halves, knn -> scores, slots).

    ``select`` runs without gradient. When the half scores need one, the scores are gathered from them instead
    (:func:`slot_scores`: the same sums), so every backend shares the backward (a scatter into (T, H, 2, N)).
    """
    _check_halves(halves, knn)
    with torch.no_grad():
        scores, slots = select(halves.detach(), knn)
    if torch.is_grad_enabled() and halves.requires_grad:
        scores = slot_scores(halves, slots)
    return scores, slots


def product_key_topk_with(
    select: TopkSelector, query: torch.Tensor, keys: torch.Tensor, knn: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search: half scores from one GEMM (:func:`half_scores`), then :func:`topk_with`."""
    _check_topk_shapes(query, keys, knn)
    return topk_with(select, half_scores(query, keys), knn)


def product_key_topk_torch(query: torch.Tensor, keys: torch.Tensor, knn: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact product-key search in plain torch (:func:`select_topk_torch`).

    Args:
        query: (T, H, K) queries, any float dtype.
        keys: (H, 2, N, K // 2) sub-keys of the two halves.
        knn: slots to return per (token, head).
    Returns:
        scores (T, H, knn) in :func:`score_dtype` (fp32, or fp64 for fp64 inputs), sorted descending, and indices
        (T, H, knn) int64 slot ids in [0, N * N) where slot = i * N + j for sub-key i of the first half and j of
        the second. Differentiable in query and keys.
    """
    return product_key_topk_with(select_topk_torch, query, keys, knn)


def product_key_topk_bruteforce(
    query: torch.Tensor, keys: torch.Tensor, knn: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-knn over all N * N slots (memory O(T * H * N^2)); for tests only.

    Ranks every slot by the order the pruned selections use (:func:`select_topk_torch`): score descending, then
    the slot's rank in the first half, then in the second (ranks: half score descending, ties to the lower sub-key).
    """
    _check_topk_shapes(query, keys, knn)
    halves = half_scores(query, keys)
    n_keys = halves.shape[-1]
    full = (halves[:, :, 0].unsqueeze(-1) + halves[:, :, 1].unsqueeze(-2)).flatten(-2)
    order = order_keys(halves).sort(dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(n_keys, device=order.device).expand_as(order))
    pair_rank = (ranks[:, :, 0].unsqueeze(-1) * n_keys + ranks[:, :, 1].unsqueeze(-2)).flatten(-2)
    by_rank = pair_rank.argsort(dim=-1, stable=True)
    best = order_keys(full.gather(-1, by_rank)).sort(dim=-1, descending=True, stable=True).indices[..., :knn]
    slots = by_rank.gather(-1, best)
    return full.gather(-1, slots), slots


def _check_bag_shapes(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> None:
    if values.dim() != 2:
        raise ValueError(f"values must be (slots, v_dim), got shape {tuple(values.shape)}")
    if indices.dim() != 2 or weights.shape != indices.shape:
        raise ValueError(
            f"indices and weights must both be (tokens, bag), got {tuple(indices.shape)} and {tuple(weights.shape)}"
        )


def column_block(values: torch.Tensor) -> Optional[int]:
    """Columns per block for a CPU read-out in column blocks, or None to read whole rows.

    A bag reads rows scattered over the whole table; on the CPU a table bigger than the core's cache is then read
    from main memory or the shared cache for every row. Reading :data:`CPU_BLOCK_BYTES`-sized column slices of the
    table one after the other keeps each slice in the core's cache (2x faster for a 4,096 x 1,024 fp32 table).
    """
    slots, v_dim = values.shape
    if values.device.type != "cpu":
        return None
    block = 1 << max(0, (CPU_BLOCK_BYTES // max(1, slots * values.element_size())).bit_length() - 1)
    return block if CPU_MIN_BLOCK <= block < v_dim else None


def embedding_bag_torch(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                        sparse_grad: bool = False) -> torch.Tensor:
    """Weighted sum of value rows per token with torch's fused ``embedding_bag`` (no (T, B, V) tensor).

    Without gradient on one CPU thread, the table is read in column blocks (:func:`column_block`); the sums are the
    same. With several threads each block would be a parallel region of its own, which on a shared machine costs
    more than the cache saves (every region waits for the slowest thread), so the table is read whole.

    Args:
        values: (S, V) value table.
        indices: (T, B) int64 slot ids.
        weights: (T, B) weights (cast to the table's dtype).
        sparse_grad: give ``values`` a sparse COO gradient of the rows read instead of a dense one.
    Returns:
        (T, V) in the table's dtype.
    """
    _check_bag_shapes(values, indices, weights)
    weights = weights.to(values.dtype)
    block = column_block(values)
    grad = torch.is_grad_enabled() and (values.requires_grad or weights.requires_grad)
    if block is None or grad or torch.get_num_threads() > 1:
        return F.embedding_bag(indices, values, per_sample_weights=weights, mode="sum", sparse=sparse_grad)
    return torch.cat([F.embedding_bag(indices, values[:, start:start + block], per_sample_weights=weights, mode="sum")
                      for start in range(0, values.shape[1], block)], dim=1)


def embedding_bag_naive(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gather then sum: builds the (T, B, V) tensor the fast paths avoid. The reference for tests."""
    _check_bag_shapes(values, indices, weights)
    return (values[indices] * weights.to(values.dtype).unsqueeze(-1)).sum(dim=1)
