"""Learning-rate schedules: linear warmup, then cosine decay, constant, or constant with a cooldown (open_clip_train's
``cosine``, ``const`` and ``const-cooldown``). Groups with ``fixed_lr`` are left alone."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional

import torch

from memclip.errors import InputError

SCHEDULES = ("cosine", "const", "const-cooldown", "none")
logger = logging.getLogger(__name__)


DEFAULT_WARMUP = 10000
"""open_clip_train's default warmup steps."""


def warmup_steps(warmup: Optional[int], warmup_fraction: Optional[float], total_steps: int,
                 kind: str = "cosine") -> int:
    """The warmup of a run of ``total_steps`` optimizer steps: ``warmup_fraction`` of them (rounded, at least one)
    when given, else ``warmup``, else open_clip's 10000 steps, or 5% of the run when the run is not longer than that
    (a warning says so).

    Raises:
        ValueError: a given ``warmup`` is as long as the run or longer (and the schedule has one): the lr would never
            reach its peak, nor decay. The message gives the run's length and a warmup that fits.
    """
    if warmup_fraction is not None:
        return max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    if kind == "none":
        return warmup if warmup is not None else DEFAULT_WARMUP
    fitting = total_steps // 20
    steps = f"{total_steps} optimizer step{'s' if total_steps != 1 else ''}"
    if warmup is None:
        if DEFAULT_WARMUP < total_steps:
            return DEFAULT_WARMUP
        logger.warning("no --warmup given and open_clip's default of %d steps is longer than this run (%s): warming "
                       "up over %d steps (5%% of the run) instead", DEFAULT_WARMUP, steps, fitting)
        return fitting
    if warmup >= total_steps:
        raise InputError(f"--warmup {warmup} is not shorter than the run ({steps}): the lr would "
                         f"never reach --lr, nor decay. Pass a shorter --warmup (e.g. {max(1, fitting)}, 5% "
                         "of the run) or --warmup-fraction F (a share of the run)")
    return warmup


class LearningRateSchedule:
    """Sets each group's lr for a global step; stateless (the step is the state), so resuming is exact.

    Args:
        optimizer: its groups' initial ``lr`` is each group's base lr.
        warmup: warmup steps (lr rises linearly from base / warmup to base).
        total_steps: steps of the whole run.
        kind: ``cosine`` (to 0 at the end), ``const``, ``const-cooldown`` (constant, then the last
            ``cooldown_steps`` decay as ``(1 - t) ** cooldown_power`` from base to ``cooldown_end``), or ``none``
            (``--skip-scheduler``: no warmup, no decay).
        cooldown_steps, cooldown_power, cooldown_end: the cooldown of ``const-cooldown``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total_steps: int, kind: str = "cosine",
                 cooldown_steps: int = 0, cooldown_power: float = 1.0, cooldown_end: float = 0.0):
        if kind not in SCHEDULES:
            raise InputError(f"unknown lr schedule {kind!r}; choose from {SCHEDULES}")
        self.optimizer = optimizer
        self.warmup = warmup
        self.total_steps = max(1, total_steps)
        self.kind = kind
        self.cooldown_start = self.total_steps - cooldown_steps
        self.cooldown_power = cooldown_power
        self.cooldown_end = cooldown_end
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

    def state_dict(self) -> Dict[str, Any]:
        """The schedule's settings (checkpoints keep them; the step is the rest of its state)."""
        return {"kind": self.kind, "warmup": self.warmup, "total_steps": self.total_steps}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Check a checkpoint's schedule against this run's: the run follows its own, and says what changed."""
        changed = {key: (value, state[key]) for key, value in self.state_dict().items() if state.get(key) != value}
        if changed:
            logger.warning("the learning-rate schedule differs from the checkpoint's (%s): following this run's",
                           ", ".join(f"{key} {new} instead of {old}" for key, (new, old) in changed.items()))

    def lr(self, base: float, step: int) -> float:
        """The lr at ``step`` of a group whose base lr is ``base``."""
        if self.kind == "none":
            return base
        if step < self.warmup:
            return base * (step + 1) / self.warmup
        if self.kind == "const" or (self.kind == "const-cooldown" and step < self.cooldown_start):
            return base
        if self.kind == "const-cooldown":
            progress = (step - self.cooldown_start) / max(1, self.total_steps - self.cooldown_start)
            decay = (1 - min(1.0, progress)) ** self.cooldown_power
            return decay * (base - self.cooldown_end) + self.cooldown_end
        progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * base

    def __call__(self, step: int) -> None:
        """Set the lrs of the scheduled groups for ``step``."""
        for group in self.optimizer.param_groups:
            if not group.get("fixed_lr", False):
                group["lr"] = self.lr(group["base_lr"], step)
