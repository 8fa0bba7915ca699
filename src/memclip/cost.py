"""`model_cost`: parameters and forward FLOPs per image of a model's vision tower, memory read-out included.

FLOPs count 2 per multiply-add of every matrix product and convolution, as ``torch.utils.flop_counter`` does
(projections, attention scores and their weighted sums, MLPs, stems, the memory's query projection and its sub-key
scores; the CPU's fused attention kernel is counted like the GPU's), plus the memory's embedding bag, which that
counter does not see: each token gathers ``heads * knn`` value rows of ``v_dim`` and sums them with weights, 2 FLOPs
per element. Top-k selection, softmax, norms and activations are not counted, for any model, so the figures compare
the matrix work of towers that differ only in their MLPs and memories.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from memory_layers import ProductKeyMemory

from .surgery import memory_parameters


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


@dataclass(frozen=True)
class ModelCost:
    """What a model costs.

    Attributes:
        parameters: every parameter of the model (a shared value table once).
        vision_parameters: the parameters of the image tower.
        memory_parameters: the parameters of its memories (0 without memory).
        vision_flops: forward FLOPs of the image tower for one image (see the module docstring).
        memory_bag_flops: the part of ``vision_flops`` spent in the memories' embedding bags.
    """

    parameters: int
    vision_parameters: int
    memory_parameters: int
    vision_flops: int
    memory_bag_flops: int

    def to_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


def _unique_count(parameters) -> int:
    seen, total = set(), 0
    for param in parameters:
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


@torch.no_grad()
def model_cost(model: nn.Module) -> ModelCost:
    """Parameters and forward FLOPs per image of ``model`` (an open_clip or memclip CLIP with a ViT image tower)."""
    visual = model.visual
    size = visual.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    param = next(visual.parameters())
    image = torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype)
    bag_flops: List[int] = []

    def count_bag(module: ProductKeyMemory, inputs, output) -> None:
        tokens = inputs[0].numel() // module.input_dim
        bag_flops.append(2 * tokens * module.heads * module.knn * module.v_dim)

    hooks = [m.register_forward_hook(count_bag) for m in visual.modules() if isinstance(m, ProductKeyMemory)]
    # In training mode: in eval mode nn.MultiheadAttention takes a fused fast path that the counter does not see.
    training = visual.training
    visual.train()
    try:
        with FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as counter:
            visual(image)
    finally:
        visual.train(training)
        for hook in hooks:
            hook.remove()
    return ModelCost(
        parameters=_unique_count(model.parameters()),
        vision_parameters=_unique_count(visual.parameters()),
        memory_parameters=_unique_count(memory_parameters(model)),
        vision_flops=int(counter.get_total_flops()) + sum(bag_flops),
        memory_bag_flops=sum(bag_flops),
    )
