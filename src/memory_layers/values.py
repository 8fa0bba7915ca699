"""The value table of a product-key memory: an (n_slots, v_dim) parameter read as weighted bags."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from . import ops
from .ops.runtime import autocast_dtype


class ValueTable(nn.Module):
    """A value table, read by weighted sums of rows.

    A model with shared values creates one ``ValueTable`` and passes the same object to every memory layer; the
    table then appears once in ``model.parameters()``. It carries its own learning rate and weight decay, which
    :func:`memory_layers.param_groups` reads through :meth:`fixed_lr_parameters`.

    Under autocast an fp32 table is read through a copy in the autocast dtype (:meth:`read_copy`: half the bytes
    per gathered row), made once and kept until the weight changes, so the layers sharing the table, and the
    recompute of a gradient checkpoint, read the same copy; the value gradient still reaches the fp32 weight.

    Under ``torch.compile`` the copy is a cast inside the graph (no cache, so no graph break), and a table with
    ``sparse_grad`` is read outside the graph (one graph break per read): compiled autograd graphs cannot return a
    sparse gradient.

    Args:
        n_slots: rows (``n_keys ** 2``).
        v_dim: row width.
        lr: fixed learning rate of the table.
        weight_decay: weight decay of the table.
        sparse_grad: the weight's gradient is a sparse COO tensor of the rows read (by the torch and fused paths),
            for an optimizer that updates those rows only (:class:`memory_layers.RowwiseAdamW`).
    """

    def __init__(self, n_slots: int, v_dim: int, lr: float = 1e-3, weight_decay: float = 0.0,
                 sparse_grad: bool = False) -> None:
        super().__init__()
        self.n_slots = n_slots
        self.v_dim = v_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.sparse_grad = sparse_grad
        self.weight = nn.Parameter(torch.empty(n_slots, v_dim))
        self._read_copy: Optional[Tuple[Tuple[object, ...], torch.Tensor]] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=1.0 / math.sqrt(self.v_dim))

    def fixed_lr_parameters(self) -> List[Tuple[str, nn.Parameter, float, float]]:
        """The optimizer group of the table: ("values", weight, lr, weight decay)."""
        return [("values", self.weight, self.lr, self.weight_decay)]

    def read_copy(self) -> Optional[torch.Tensor]:
        """Under autocast, the (detached) weight in the autocast dtype that reads gather from; else None.

        Made on the first read under autocast and reused until the weight changes: in place through autograd-visible
        ops (an optimizer step, ``load_state_dict``; its version counter moves) or by a new tensor. Writes through
        ``weight.data`` are not seen: call :meth:`drop_read_copy` after them.
        """
        weight = self.weight
        dtype = autocast_dtype(weight.device.type)
        if dtype is None or weight.dtype != torch.float32 or dtype == weight.dtype:
            return None
        if torch.compiler.is_compiling():  # a node of the graph; comparing data pointers would break it
            return weight.detach().to(dtype)
        key = (dtype, weight.device, weight.data_ptr(), weight._version)
        if self._read_copy is None or self._read_copy[0] != key:
            self._read_copy = (key, weight.detach().to(dtype))
        return self._read_copy[1]

    def drop_read_copy(self) -> None:
        """Forget the autocast copy (the next read under autocast makes a new one)."""
        self._read_copy = None

    def forward(self, indices: torch.Tensor, weights: torch.Tensor, backend: Optional[str] = None,
                path: Optional[str] = None) -> torch.Tensor:
        """Read bags: indices and weights (T, B) -> (T, v_dim), on ``backend`` and bag ``path`` (None: the
        environment's, see :func:`memory_layers.ops.embedding_bag`). The output is in the weight's dtype, or under
        autocast in the autocast dtype (read from :meth:`read_copy`)."""
        read = _read_outside_graph if self.sparse_grad else _read
        return read(self, indices, weights, backend, path)

    def extra_repr(self) -> str:
        sparse = ", sparse_grad=True" if self.sparse_grad else ""
        return (f"n_slots={self.n_slots}, v_dim={self.v_dim}, lr={self.lr:g}, weight_decay={self.weight_decay:g}"
                f"{sparse}")


def _read(table: ValueTable, indices: torch.Tensor, weights: torch.Tensor, backend: Optional[str],
          path: Optional[str]) -> torch.Tensor:
    return ops.embedding_bag(table.weight, indices, weights, backend, path, read_values=table.read_copy(),
                             sparse_grad=table.sparse_grad)


@torch.compiler.disable
def _read_outside_graph(table: ValueTable, indices: torch.Tensor, weights: torch.Tensor, backend: Optional[str],
                        path: Optional[str]) -> torch.Tensor:
    """:func:`_read`, run eagerly under ``torch.compile``: AOTAutograd cannot trace a backward that returns a sparse
    gradient (``F.embedding_bag(sparse=True)`` fails in its fake tensors), while an eager read's autograd node gives
    it to the weight beside the compiled graphs."""
    return _read(table, indices, weights, backend, path)
