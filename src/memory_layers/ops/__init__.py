"""Memory read-out ops: product-key top-k search and the weighted embedding bag.

``product_key_topk`` and ``embedding_bag`` dispatch between the torch references and the fused Triton kernels
(see :mod:`memory_layers.ops.dispatch` for ``MEMORY_LAYERS_BACKEND`` / ``MEMORY_LAYERS_BAG_PATH``). Triton is
optional: the triton modules are imported on first use only.
"""
from .dense_bag import embedding_bag_dense
from .dispatch import (
    DENSE_MAX_SLOTS,
    bag_path_cache,
    clear_path_caches,
    embedding_bag,
    embedding_bag_triton,
    product_key_topk,
    product_key_topk_triton,
    resolve_backend,
    resolve_bag_path,
    select_topk_triton,
    topk_from_half_scores,
    topk_path_cache,
)
from .reference import (
    candidate_pairs,
    embedding_bag_naive,
    embedding_bag_torch,
    half_scores,
    product_key_topk_bruteforce,
    product_key_topk_torch,
    product_key_topk_with,
    score_dtype,
    select_topk_torch,
    slot_scores,
)
from .runtime import BACKEND_ENV, BAG_PATH_ENV, interpreter_enabled, triton_available

__all__ = [
    "BACKEND_ENV",
    "BAG_PATH_ENV",
    "DENSE_MAX_SLOTS",
    "bag_path_cache",
    "candidate_pairs",
    "clear_path_caches",
    "embedding_bag",
    "embedding_bag_dense",
    "embedding_bag_naive",
    "embedding_bag_torch",
    "embedding_bag_triton",
    "half_scores",
    "interpreter_enabled",
    "product_key_topk",
    "product_key_topk_bruteforce",
    "product_key_topk_torch",
    "product_key_topk_triton",
    "product_key_topk_with",
    "resolve_backend",
    "resolve_bag_path",
    "score_dtype",
    "select_topk_torch",
    "select_topk_triton",
    "slot_scores",
    "topk_from_half_scores",
    "topk_path_cache",
    "triton_available",
]
