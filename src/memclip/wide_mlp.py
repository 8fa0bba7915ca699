"""`WideMLPConfig` and `widen_mlps`: the dense control, whose memory blocks keep a (wider) MLP instead of a memory.

A product-key memory buys parameters at almost no compute. The control that isolates that claim has the *same
parameters* as the memory student but pays for them in FLOPs: the MLPs of the memory blocks are widened until they
hold as many parameters as the memory (:func:`equal_parameter_hidden`). It starts exactly at the teacher: the
pretrained rows of ``c_fc`` and columns of ``c_proj`` are kept, the new ``c_fc`` rows get ``nn.Linear``'s default
initialisation, and the new ``c_proj`` columns are zero, so the new hidden units add nothing until training moves
them (their ``c_proj`` columns get gradients at once, since the units they read are active).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

import torch
from torch import nn

from memory_layers.config import from_dict_strict

from .errors import InputError
from .surgery import vision_blocks


@dataclass(frozen=True)
class WideMLPConfig:
    """Which vision blocks get a wider MLP, and how wide (validated when built).

    Attributes:
        layers: block indices whose MLP is widened (0-based, unique; empty: none).
        hidden: the widened MLP's hidden width (at least the block's own; checked when applied).
    """

    layers: Tuple[int, ...] = ()
    hidden: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, bytes)):
            raise InputError(f"WideMLPConfig.layers={self.layers!r}: must be a list of block indices")
        object.__setattr__(self, "layers", tuple(self.layers))
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.layers):
            raise InputError(f"WideMLPConfig.layers={list(self.layers)}: must be non-negative integers")
        if len(set(self.layers)) != len(self.layers):
            raise InputError(f"WideMLPConfig.layers={list(self.layers)}: block indices are repeated")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise InputError(f"WideMLPConfig.hidden={self.hidden!r}: must be a non-negative integer")
        if self.layers and self.hidden < 1:
            raise InputError("WideMLPConfig.hidden: widened blocks need a hidden width >= 1")

    @property
    def is_default(self) -> bool:
        return not self.layers

    def to_dict(self) -> Dict[str, Any]:
        return {"layers": list(self.layers), "hidden": self.hidden}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WideMLPConfig":
        return from_dict_strict(cls, data, "fields")


def mlp_parameters(width: int, hidden: int) -> int:
    """Parameters of one open_clip MLP block: ``c_fc`` (width -> hidden) and ``c_proj`` (hidden -> width), biases
    included."""
    return 2 * width * hidden + hidden + width


def equal_parameter_hidden(width: int, parameters: int, blocks: int) -> int:
    """The hidden width at which ``blocks`` MLPs of a ``width``-wide tower hold ``parameters`` in all (rounded to the
    nearest integer, so the match is exact to within one hidden unit per block)."""
    return max(1, round((parameters / blocks - width) / (2 * width + 1)))


def widen_mlp(mlp: nn.Module, hidden: int) -> None:
    """Widen one open_clip MLP (``c_fc`` / ``c_proj``) to ``hidden`` units in place, keeping what it computes (see
    the module docstring).

    Raises:
        ValueError: ``hidden`` is narrower than the MLP.
        TypeError: ``mlp`` has no linear ``c_fc`` and ``c_proj``.
    """
    c_fc, c_proj = getattr(mlp, "c_fc", None), getattr(mlp, "c_proj", None)
    if not isinstance(c_fc, nn.Linear) or not isinstance(c_proj, nn.Linear):
        raise TypeError(f"widening needs an open_clip MLP with c_fc and c_proj linear layers; got {type(mlp).__name__}")
    old = c_fc.out_features
    if hidden < old:
        raise InputError(f"WideMLPConfig.hidden={hidden} is narrower than the block's MLP ({old})")
    factory = {"device": c_fc.weight.device, "dtype": c_fc.weight.dtype}
    wide_fc = nn.Linear(c_fc.in_features, hidden, bias=c_fc.bias is not None, **factory)
    wide_proj = nn.Linear(hidden, c_proj.out_features, bias=c_proj.bias is not None, **factory)
    with torch.no_grad():
        wide_fc.weight[:old] = c_fc.weight
        if c_fc.bias is not None:
            wide_fc.bias[:old] = c_fc.bias
        wide_proj.weight[:, :old] = c_proj.weight
        wide_proj.weight[:, old:] = 0.0
        if c_proj.bias is not None:
            wide_proj.bias.copy_(c_proj.bias)
    mlp.c_fc, mlp.c_proj = wide_fc, wide_proj


def widen_mlps(model: nn.Module, config: WideMLPConfig) -> None:
    """Widen the MLP of each listed vision block to ``config.hidden`` in place, keeping what it computes.

    Raises:
        ValueError: a block index lies outside the tower, or the width is narrower than the block's MLP.
        TypeError: a listed block has no open_clip MLP (``c_fc`` / ``c_proj``).
    """
    blocks = vision_blocks(model)
    outside = [i for i in config.layers if i >= len(blocks)]
    if outside:
        raise InputError(f"WideMLPConfig.layers={list(config.layers)}: blocks {outside} are outside the tower's "
                         f"depth {len(blocks)}")
    for index in config.layers:
        widen_mlp(blocks[index].mlp, config.hidden)
