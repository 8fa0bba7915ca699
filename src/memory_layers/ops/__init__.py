"""Memory read-out ops: product-key top-k search and the weighted embedding bag."""
from .reference import (
    embedding_bag_naive,
    embedding_bag_torch,
    half_scores,
    product_key_topk_bruteforce,
    product_key_topk_torch,
)

product_key_topk = product_key_topk_torch
embedding_bag = embedding_bag_torch

__all__ = [
    "embedding_bag",
    "embedding_bag_naive",
    "embedding_bag_torch",
    "half_scores",
    "product_key_topk",
    "product_key_topk_bruteforce",
    "product_key_topk_torch",
]
