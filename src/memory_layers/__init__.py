"""memory_layers: a standalone product-key memory library (no open_clip dependency).

    >>> import torch
    >>> from memory_layers import MemoryConfig, ProductKeyMemory
    >>> memory = ProductKeyMemory(768, 768, MemoryConfig(n_keys=64, heads=4, knn=32, k_dim=256, v_dim=1024))
    >>> memory(torch.randn(2, 197, 768)).shape
    torch.Size([2, 197, 768])
"""
from .config import MemoryConfig
from .memory import ProductKeyMemory, create_value_table
from .optim import RowwiseAdamW, param_groups
from .tracking import track_usage
from .usage import SlotUsage, UsageSummary
from .values import ValueTable
from .values_parallel import ShardedValueTable, full_value_tables, shard_value_tables, sync_value_shard_grads

__all__ = [
    "MemoryConfig",
    "ProductKeyMemory",
    "SlotUsage",
    "UsageSummary",
    "ValueTable",
    "create_value_table",
    "param_groups",
    "RowwiseAdamW",
    "track_usage",
    "ShardedValueTable",
    "full_value_tables",
    "shard_value_tables",
    "sync_value_shard_grads",
]
