"""`ParallelMemoryMLP`: a block's pretrained MLP with a memory beside it, joined by a zero-initialised gate."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from memory_layers import ProductKeyMemory


class ParallelMemoryMLP(nn.Module):
    """``mlp(x) + gate * memory(x)`` with ``gate`` a per-channel vector that starts at zero.

    At initialisation the block computes exactly what the teacher's block computed, so distillation starts from
    a zero loss and the memory only adds what helps (Kim & Jung 2020).

    Args:
        mlp: the block's pretrained MLP, (..., width) -> (..., width).
        memory: the memory, (..., width) -> (..., width).
    """

    def __init__(self, mlp: nn.Module, memory: ProductKeyMemory) -> None:
        super().__init__()
        self.mlp = mlp
        self.memory = memory
        self.memory_gate = nn.Parameter(torch.zeros(memory.output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., width) -> (..., width)."""
        return self.mlp(x) + self.memory_gate.to(x.dtype) * self.memory(x)


def memory_gates(model: nn.Module) -> List[nn.Parameter]:
    """The ``memory_gate`` of every :class:`ParallelMemoryMLP` in ``model``, in module order (empty in
    ``replace`` mode)."""
    return [module.memory_gate for module in model.modules() if isinstance(module, ParallelMemoryMLP)]
