"""Learning-rate schedules: linear warmup, then cosine decay or constant. Groups with ``fixed_lr`` are left alone."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict

import torch

logger = logging.getLogger(__name__)


class LearningRateSchedule:
    """Sets each group's lr for a global step; stateless (the step is the state), so resuming is exact.

    Args:
        optimizer: its groups' initial ``lr`` is each group's base lr.
        warmup: warmup steps (lr rises linearly from base / warmup to base).
        total_steps: steps of the whole run.
        kind: ``cosine`` (to 0 at the end) or ``const``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total_steps: int, kind: str = "cosine"):
        self.optimizer = optimizer
        self.warmup = warmup
        self.total_steps = max(1, total_steps)
        self.kind = kind
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

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "const":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def __call__(self, step: int) -> float:
        """Set the lrs for ``step``; returns the factor applied to the scheduled groups."""
        factor = self.factor(step)
        for group in self.optimizer.param_groups:
            if not group.get("fixed_lr", False):
                group["lr"] = group["base_lr"] * factor
        return factor
