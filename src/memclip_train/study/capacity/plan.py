"""`CapacityPlan`: everything the slot probe runs (full and --quick), validated when built. docs/capacity.md
pre-registers the full plan."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from memclip.errors import InputError

from .slots import Arm, check_arms

ARMS: Tuple[Arm, ...] = (
    Arm("mlp", "mlp"),
    Arm("memory", "memory", n_keys=32),
    Arm("wide", "wide", matches="memory"),
    Arm("memory-16k", "memory", n_keys=128),
)
"""The registered arms: the control at equal FLOPs, the project's memory (1,024 slots), the MLP widened to that
memory's parameters, and the memory with 16,384 slots at the same knn and heads."""

EXTRA_ARMS: Tuple[Arm, ...] = (
    Arm("memory-64k", "memory", n_keys=256),
    Arm("wide-16k", "wide", matches="memory-16k"),
)
"""Arms that run only when named (``--arms``): too slow for the 2-core budget at every K."""

PRIMARY = ("memory", "mlp")
"""The pre-registered contrast: the project's memory minus the MLP, at equal FLOPs."""
SECONDARY = (("memory-16k", "mlp"), ("memory", "wide"))
"""Secondary contrasts (Holm-corrected): the larger memory minus the MLP; the memory minus the MLP of its
parameters (structure, or only parameters?)."""


@dataclass(frozen=True)
class CapacityPlan:
    """The slot probe's design.

    Attributes:
        teacher_model: the teacher's architecture; ``memory_model``: the memclip config whose memory knobs the
            memory arms take (slots aside).
        identity_seed, render_seed: which identities (the first K of one shuffled order) and which nuisances.
        train_renders, heldout_renders: renders per identity for training and for the held-out score.
        ks: the K of the grid (ascending); the two largest are the primary K.
        exposures: exposures per identity at every K; ``exposure_check``: more exposures at ``check_k``.
        arms: the arms of the grid (keys of :data:`ARMS` / :data:`EXTRA_ARMS`).
        seeds: seeds at every K; ``primary_seeds``: more seeds at the two largest K.
        lr_grid, value_lr_grid: the lr grid of every arm and the value lr grid of memory arms (the first value
            lr is the library's own); ``lr_k``, ``lr_exposures``, ``lr_seed``: where they are chosen (training
            renders only), ``lr_extensions``: how often a grid may grow past an edge.
        batch_size, warmup_fraction, weight_decay: the training recipe of every point.
        gate_visible, gate_learnable, gate_binding: the gates' thresholds (fractions): G1 nearest-centroid
            accuracy at the largest K at least; G2 the MLP's held-out R@1 at the smallest K at least; G3 the MLP's
            held-out R@1 at the largest K below.
        rebuild_tolerance: the largest allowed difference between ``encode_image`` and the cached rebuild.
    """

    teacher_model: str = "ViT-Tiny-8"
    memory_model: str = "ViT-Tiny-8-mem"
    identity_seed: int = 0
    render_seed: int = 0
    train_renders: int = 3
    heldout_renders: int = 1
    ks: Tuple[int, ...] = (1024, 4096, 8192, 16384, 32768)
    exposures: int = 100
    exposure_check: Tuple[int, ...] = (400,)
    check_k: int = 16384
    arms: Tuple[str, ...] = tuple(arm.key for arm in ARMS)
    seeds: Tuple[int, ...] = (0,)
    primary_seeds: Tuple[int, ...] = (1, 2)
    lr_grid: Tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)
    value_lr_grid: Tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    lr_k: int = 4096
    lr_exposures: int = 100
    lr_seed: int = 100
    lr_extensions: int = 2
    batch_size: int = 512
    warmup_fraction: float = 0.02
    weight_decay: float = 0.0
    gate_visible: float = 0.95
    gate_learnable: float = 0.95
    gate_binding: float = 0.50
    rebuild_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        known = {arm.key: arm for arm in ARMS + EXTRA_ARMS}
        unknown = sorted(set(self.arms) - set(known))
        if unknown:
            raise InputError(f"CapacityPlan.arms: unknown {unknown}; known: {sorted(known)}")
        if not set(PRIMARY) <= set(self.arms):
            raise InputError(f"CapacityPlan.arms={list(self.arms)}: the primary arms {list(PRIMARY)} must run")
        check_arms([known[key] for key in self.arms])
        if list(self.ks) != sorted(set(self.ks)) or len(self.ks) < 2:
            raise InputError(f"CapacityPlan.ks={list(self.ks)}: at least two K, ascending and distinct")
        if self.ks[0] < self.batch_size:
            raise InputError(f"CapacityPlan: the smallest K ({self.ks[0]}) must be at least the batch size "
                             f"({self.batch_size}), so that a batch holds distinct identities")
        if self.check_k not in self.ks or self.lr_k < self.batch_size:
            raise InputError(f"CapacityPlan: check_k ({self.check_k}) must be one of ks and lr_k ({self.lr_k}) at "
                             "least the batch size")
        if self.train_renders < 1 or self.heldout_renders < 1:
            raise InputError("CapacityPlan: needs at least one training and one held-out render per identity")
        if not self.seeds or self.lr_seed in self.seeds + self.primary_seeds:
            raise InputError(f"CapacityPlan: needs seeds, and the lr seed ({self.lr_seed}) outside the grid's")
        if not self.lr_grid or not self.value_lr_grid or min(self.lr_grid + self.value_lr_grid) <= 0:
            raise InputError("CapacityPlan: lr grids must be non-empty and positive")

    @property
    def renders(self) -> int:
        return self.train_renders + self.heldout_renders

    @property
    def largest_k(self) -> int:
        return self.ks[-1]

    @property
    def primary_ks(self) -> Tuple[int, ...]:
        """The K of the primary contrast: the two largest."""
        return self.ks[-2:]

    def arm(self, key: str) -> Arm:
        return {arm.key: arm for arm in ARMS + EXTRA_ARMS}[key]

    def arm_map(self) -> Dict[str, Arm]:
        return {key: self.arm(key) for key in self.arms}

    @classmethod
    def quick(cls) -> "CapacityPlan":
        """A toy size for the tests: K = 16 and 64, four exposures, a few-slot memory, batch 16."""
        return cls(ks=(16, 64), exposures=4, exposure_check=(8,), check_k=64, seeds=(0,), primary_seeds=(1,),
                   lr_grid=(1e-2, 1e-1), value_lr_grid=(1e-2,), lr_k=32, lr_exposures=2, lr_extensions=0,
                   batch_size=16, gate_visible=0.0, gate_learnable=0.0, gate_binding=1.01,
                   arms=("mlp", "memory", "wide"))
