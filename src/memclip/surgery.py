"""Teacher -> student surgery: put product-key memories into the MLP slots of an open_clip vision tower."""
from __future__ import annotations

from typing import Dict, List, Mapping, Union

from torch import nn

from memory_layers import MemoryConfig, ProductKeyMemory, SlotUsage, UsageSummary, create_value_table

from .errors import InputError
from .parallel import ParallelMemoryMLP


def vision_blocks(model: nn.Module) -> nn.ModuleList:
    """The residual blocks of an open_clip ViT image tower (``model.visual.transformer.resblocks``).

    Raises:
        TypeError: the image tower is not an open_clip VisionTransformer (timm and ResNet towers have no MLP slots
            memclip knows how to replace).
    """
    visual = getattr(model, "visual", model)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or not all(hasattr(b, "mlp") for b in blocks):
        raise TypeError(
            f"memory layers need an open_clip VisionTransformer image tower with transformer.resblocks[i].mlp; "
            f"got {type(visual).__name__}"
        )
    return blocks


def _block_width(block: nn.Module) -> int:
    norm = getattr(block, "ln_2", None)
    if norm is not None and hasattr(norm, "normalized_shape"):
        return int(norm.normalized_shape[0])
    return int(block.attn.embed_dim)


def attach_memory(model: nn.Module, config: MemoryConfig) -> Dict[int, ProductKeyMemory]:
    """Replace (or flank, in ``"parallel"`` mode) the MLP of each listed vision block with a memory.

    With ``share_values`` one :class:`memory_layers.ValueTable` is created here and handed to every layer, so the
    model holds it once; without it each layer owns its table. Nothing outside the listed MLPs changes.

    Returns:
        The new memories by block index.
    Raises:
        ValueError: a layer index lies outside the tower's depth.
    """
    blocks = vision_blocks(model)
    config.check_layers(len(blocks))
    memories: Dict[int, ProductKeyMemory] = {}
    if not config.layers:
        return memories
    widths = {_block_width(blocks[i]) for i in config.layers}
    if len(widths) != 1:
        raise InputError(f"memory blocks have different widths {sorted(widths)}; shared values need one width")
    width = widths.pop()
    shared = create_value_table(config, config.value_dim(width)) if config.share_values else None
    for index in config.layers:
        block = blocks[index]
        memory = ProductKeyMemory(width, width, config, values=shared)
        if config.mode == "replace":
            block.mlp = memory
        else:
            block.mlp = ParallelMemoryMLP(block.mlp, memory, gate_lr=config.gate_lr)
        memories[index] = memory
    return memories


def memory_layers_of(model: nn.Module) -> Dict[int, ProductKeyMemory]:
    """The memories of a memclip model by vision block index (empty for a model without memory)."""
    try:
        blocks = vision_blocks(model)
    except TypeError:
        return {}
    found: Dict[int, ProductKeyMemory] = {}
    for index, block in enumerate(blocks):
        if isinstance(block.mlp, ProductKeyMemory):
            found[index] = block.mlp
        elif isinstance(block.mlp, ParallelMemoryMLP):
            found[index] = block.mlp.memory
    return found


def usage_by_block(model: nn.Module, usage: Mapping[str, SlotUsage]) -> Dict[Union[int, str], UsageSummary]:
    """The summaries of :func:`memory_layers.track_usage`'s trackers (keyed by module name) keyed by the vision block
    index of each memory; a memory outside the vision blocks keeps its module name."""
    modules = dict(model.named_modules())
    index_of = {id(memory): index for index, memory in memory_layers_of(model).items()}
    return {index_of.get(id(modules.get(name)), name): tracker.summary() for name, tracker in usage.items()}


def memory_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Every parameter that belongs to the memory: the memories (shared values once) and parallel gates."""
    params: List[nn.Parameter] = []
    seen = set()
    blocks = vision_blocks(model) if memory_layers_of(model) else []
    for block in blocks:
        owned = []
        if isinstance(block.mlp, ProductKeyMemory):
            owned = list(block.mlp.parameters())
        elif isinstance(block.mlp, ParallelMemoryMLP):
            owned = list(block.mlp.memory.parameters()) + [block.mlp.memory_gate]
        for param in owned:
            if id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def freeze_except_memory(model: nn.Module) -> int:
    """Freeze every parameter except the memory's; returns the number of trainable parameters left.

    Raises:
        ValueError: the model has no memory, so nothing would train.
    """
    trainable = memory_parameters(model)
    if not trainable:
        raise InputError("freeze_except_memory: the model has no memory layers, so nothing would train")
    for param in model.parameters():
        param.requires_grad_(False)
    for param in trainable:
        param.requires_grad_(True)
    return sum(p.numel() for p in trainable)
