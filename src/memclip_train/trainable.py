"""Choosing what trains: named parts of a CLIP model (memory, visual, text, logit_scale, all)."""
from __future__ import annotations

from typing import Dict, List, Sequence

from torch import nn

import memclip
from memclip.errors import InputError


def part_parameters(model: nn.Module, part: str) -> List[nn.Parameter]:
    """The parameters of one part. ``visual`` includes the memory; ``text`` is the whole text tower."""
    if part == "all":
        return list(model.parameters())
    if part == "memory":
        return memclip.memory_parameters(model)
    if part == "visual":
        return list(model.visual.parameters())
    if part == "logit_scale":
        return [p for name in ("logit_scale", "logit_bias") if isinstance(p := getattr(model, name, None),
                                                                           nn.Parameter)]
    if part == "text":
        text = getattr(model, "text", None)
        if text is not None:
            return list(text.parameters())
        visual_ids = {id(p) for p in model.visual.parameters()}
        scale_ids = {id(p) for p in part_parameters(model, "logit_scale")}
        return [p for p in model.parameters() if id(p) not in visual_ids and id(p) not in scale_ids]
    raise InputError(f"unknown trainable part {part!r}")


def set_trainable(model: nn.Module, parts: Sequence[str]) -> Dict[str, int]:
    """Freeze everything, then unfreeze ``parts``; returns trainable parameter counts per part (for the log).

    Raises:
        ValueError: nothing would train (e.g. ``memory`` on a model without memory).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    counts = {}
    for part in parts:
        params = part_parameters(model, part)
        for param in params:
            param.requires_grad_(True)
        counts[part] = sum(p.numel() for p in params)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"--trainable {','.join(parts)} leaves nothing to train in this model")
    return counts
