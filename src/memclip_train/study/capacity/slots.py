"""The arms of the slot probe: what fills the MLP slot of the teacher's last block, and what each costs.

- ``mlp``: the teacher's own MLP, trained: the control at equal FLOPs.
- ``memory`` arms: the project's product-key memory (``ViT-Tiny-8-mem``'s knobs, 1,024 slots) and the same memory
  with more slots at the same knn and heads (the Berges axis: parameters grow, FLOPs stay level). They start from
  the library's initialisation, as a memory does before distillation.
- ``wide`` arms: the teacher's MLP widened (:func:`memclip.wide_mlp.widen_mlp`: its units kept, new ones added with
  zero output weights) to a memory arm's parameter count: the control at equal parameters, paying in FLOPs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from memclip.wide_mlp import equal_parameter_hidden, widen_mlp
from memory_layers import MemoryConfig, ProductKeyMemory
from memclip.errors import InputError

KINDS = ("mlp", "memory", "wide")


@dataclass(frozen=True)
class Arm:
    """One arm (validated when built).

    Attributes:
        key: its name in files and on the command line.
        kind: ``mlp``, ``memory`` or ``wide``.
        n_keys: sub-keys per half of a memory arm (``n_keys ** 2`` slots).
        matches: the memory arm whose parameter count a ``wide`` arm takes.
    """

    key: str
    kind: str
    n_keys: int = 0
    matches: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"Arm {self.key!r}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.kind == "memory" and self.n_keys < 1:
            raise InputError(f"Arm {self.key!r}: a memory arm needs n_keys >= 1")
        if self.kind == "wide" and not self.matches:
            raise InputError(f"Arm {self.key!r}: a wide arm names the memory arm it matches")

    @property
    def label(self) -> str:
        """The arm's name in tables and figures."""
        if self.kind == "mlp":
            return "MLP (equal FLOPs)"
        if self.kind == "memory":
            return f"memory, {self.n_keys ** 2:,} slots"
        return f"MLP widened to {self.matches}'s parameters"


def check_arms(arms: Sequence[Arm]) -> None:
    """Raise ValueError on repeated keys or a wide arm that matches no memory arm of the list."""
    keys = [arm.key for arm in arms]
    if len(set(keys)) != len(keys):
        raise InputError(f"capacity arms: repeated keys in {keys}")
    memories = {arm.key for arm in arms if arm.kind == "memory"}
    for arm in arms:
        if arm.kind == "wide" and arm.matches not in memories:
            raise InputError(f"capacity arm {arm.key!r} matches {arm.matches!r}, which is not a memory arm of "
                             f"{sorted(memories)}")


def memory_config(base: MemoryConfig, arm: Arm) -> MemoryConfig:
    """The arm's memory: the base knobs with its own number of slots (knn and heads unchanged)."""
    return base.replace(n_keys=arm.n_keys, knn=min(base.knn, arm.n_keys), layers=())


def parameter_count(module: nn.Module) -> int:
    """Parameters of ``module``, a shared tensor once."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def build_slot(arm: Arm, teacher_mlp: nn.Module, base: MemoryConfig, width: int,
               arms: Mapping[str, Arm]) -> nn.Module:
    """A fresh, trainable slot for ``arm`` (seed torch's generator before calling: it draws the initialisation)."""
    if arm.kind == "memory":
        return ProductKeyMemory(width, width, memory_config(base, arm))
    slot = copy.deepcopy(teacher_mlp)
    if arm.kind == "wide":
        target = parameter_count(ProductKeyMemory(width, width, memory_config(base, arms[arm.matches])))
        widen_mlp(slot, equal_parameter_hidden(width, target, 1))
    for param in slot.parameters():
        param.requires_grad_(True)
    return slot


@torch.no_grad()
def slot_flops(slot: nn.Module, width: int) -> int:
    """Forward FLOPs of the slot for one token, as :mod:`memclip.cost` counts them (2 per multiply-add of every
    matrix product, plus a memory's embedding bag: ``heads * knn`` rows of ``v_dim``, 2 FLOPs per element)."""
    counter = FlopCounterMode(display=False)
    with counter:
        slot(torch.zeros(1, width))
    flops = counter.get_total_flops()
    if isinstance(slot, ProductKeyMemory):
        flops += 2 * slot.heads * slot.knn * slot.v_dim
    return int(flops)


def arm_costs(arms: Sequence[Arm], teacher_mlp: nn.Module, base: MemoryConfig, width: int) -> Dict[str, Dict]:
    """``{arm key: {"label", "parameters", "flops", "hidden" or "slots"}}`` of every arm's slot."""
    by_key = {arm.key: arm for arm in arms}
    out = {}
    for arm in arms:
        slot = build_slot(arm, teacher_mlp, base, width, by_key)
        entry = {"label": arm.label, "kind": arm.kind, "parameters": parameter_count(slot),
                 "flops": slot_flops(slot, width)}
        if arm.kind == "memory":
            entry["slots"] = arm.n_keys ** 2
        else:
            entry["hidden"] = slot.c_fc.out_features
        out[arm.key] = entry
    return out
