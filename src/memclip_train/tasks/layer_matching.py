"""Per-block matching for distillation: the student's memory read-out against the teacher's MLP output."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from memclip.surgery import vision_blocks


class MlpOutputs:
    """Records the output of ``blocks[i].mlp`` for each listed block during a forward pass.

    In a student the ``mlp`` slot holds the memory (or the parallel MLP + memory), so its output is the memory
    read-out that replaced the teacher's MLP output at that block.
    """

    def __init__(self, model: nn.Module, blocks: List[int]) -> None:
        self.outputs: Dict[int, torch.Tensor] = {}
        modules = vision_blocks(model)
        self.handles = [modules[i].mlp.register_forward_hook(self._hook(i)) for i in blocks]

    def _hook(self, index: int):
        def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self.outputs[index] = output
        return record

    def pop(self) -> Dict[int, torch.Tensor]:
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def layer_cosine_terms(student: Dict[int, torch.Tensor], teacher: Dict[int, torch.Tensor]) -> Dict[int, torch.Tensor]:
    """1 - cos per block, averaged over tokens: {block: scalar}."""
    return {i: 1 - F.cosine_similarity(student[i].float(), teacher[i].float(), dim=-1).mean() for i in student}
