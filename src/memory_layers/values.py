"""The value table of a product-key memory: an (n_slots, v_dim) parameter read as weighted bags."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from . import ops


class ValueTable(nn.Module):
    """A value table, read by weighted sums of rows.

    A model with shared values creates one ``ValueTable`` and passes the same object to every memory layer; the
    table then appears once in ``model.parameters()``. It carries its own learning rate and weight decay, which
    :func:`memory_layers.param_groups` reads through :meth:`fixed_lr_parameters`.

    Args:
        n_slots: rows (``n_keys ** 2``).
        v_dim: row width.
        lr: fixed learning rate of the table.
        weight_decay: weight decay of the table.
    """

    def __init__(self, n_slots: int, v_dim: int, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.n_slots = n_slots
        self.v_dim = v_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.weight = nn.Parameter(torch.empty(n_slots, v_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=1.0 / math.sqrt(self.v_dim))

    def fixed_lr_parameters(self) -> List[Tuple[str, nn.Parameter, float, float]]:
        """The optimizer group of the table: ("values", weight, lr, weight decay)."""
        return [("values", self.weight, self.lr, self.weight_decay)]

    def forward(self, indices: torch.Tensor, weights: torch.Tensor, backend: Optional[str] = None,
                path: Optional[str] = None) -> torch.Tensor:
        """Read bags: indices and weights (T, B) -> (T, v_dim), on ``backend`` and bag ``path`` (None: the
        environment's, see :func:`memory_layers.ops.embedding_bag`)."""
        return ops.embedding_bag(self.weight, indices, weights, backend, path)

    def extra_repr(self) -> str:
        return f"n_slots={self.n_slots}, v_dim={self.v_dim}, lr={self.lr:g}, weight_decay={self.weight_decay:g}"
