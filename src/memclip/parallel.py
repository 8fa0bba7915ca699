"""`ParallelMemoryMLP`: a block's pretrained MLP with a memory beside it, joined by a zero-initialised gate."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from memory_layers import ProductKeyMemory

READ_OUT_EPS = 1e-6  # keeps the RMS normalisation of an all-zero read-out finite


class ParallelMemoryMLP(nn.Module):
    """``mlp(x) + gate * rms_normalised(memory(x))`` with ``gate`` a per-channel vector that starts at zero.

    At initialisation the block computes exactly what the teacher's block computed, so distillation starts from
    a zero loss and the memory only adds what helps (Kim & Jung 2020). While the gate is zero, so is every gradient
    of the memory's own parameters: the gate has to open first. It therefore trains at its own fixed lr
    (``MemoryConfig.gate_lr``, declared to :func:`memory_layers.param_groups` as the ``gates`` group), because at a
    fine-tuning lr Adam would open it by only about that lr per step.

    The read-out is divided by its root mean square over the channels (no learned scale: the gate is the scale), so
    a gate of g adds a read-out of RMS g to an MLP output of RMS ~0.5-1. Without it, a freshly initialised memory
    reads out about 1/25 of the MLP's RMS (values of std v_dim^-1/2, averaged over knn slots), and a gate opened to
    0.3 by the gate lr still changed a tiny ViT's image embeddings by 1 - cos = 1e-4: open, but inert.

    Args:
        mlp: the block's pretrained MLP, (..., width) -> (..., width).
        memory: the memory, (..., width) -> (..., width).
        gate_lr: the gate's fixed learning rate.
    """

    def __init__(self, mlp: nn.Module, memory: ProductKeyMemory, gate_lr: float = 1e-2) -> None:
        super().__init__()
        self.mlp = mlp
        self.memory = memory
        self.gate_lr = gate_lr
        self.memory_gate = nn.Parameter(torch.zeros(memory.output_dim))

    def fixed_lr_parameters(self) -> List[Tuple[str, nn.Parameter, float, float]]:
        """The optimizer group of the gate: ("gates", gate, gate_lr, no weight decay)."""
        return [("gates", self.memory_gate, self.gate_lr, 0.0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., width) -> (..., width)."""
        read_out = self.memory(x)
        scale = torch.rsqrt(read_out.float().pow(2).mean(-1, keepdim=True) + READ_OUT_EPS)
        read_out = read_out * scale.to(read_out.dtype)
        return self.mlp(x) + self.memory_gate.to(x.dtype) * read_out


def memory_gates(model: nn.Module) -> List[nn.Parameter]:
    """The ``memory_gate`` of every :class:`ParallelMemoryMLP` in ``model``, in module order (empty in
    ``replace`` mode)."""
    return [module.memory_gate for module in model.modules() if isinstance(module, ParallelMemoryMLP)]
