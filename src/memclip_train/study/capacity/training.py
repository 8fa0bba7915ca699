"""Training one slot on cached features, and scoring it: one point of the slot probe.

Each exposure pass shows every identity once, through one of its training renders drawn at random, in batches of
distinct identities. The loss is the image-to-name cross-entropy over the batch's names (CLIP's image-to-text term
with the text side fixed), at a trainable logit scale that starts at the teacher's. The optimizer is AdamW over
:func:`memory_layers.param_groups`, so a memory's value table keeps the library's own treatment (its fixed value
lr, no weight decay, not scheduled); everything else follows warmup and cosine decay from the arm's lr.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memory_layers import param_groups
from memclip.errors import InputError

from ...schedule import LearningRateSchedule
from .features import SlotProbe
from .metrics import calibrate_scale, score_queries

MAX_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class SlotRecipe:
    """How a slot trains (validated when built).

    Attributes:
        lr: peak lr of every group but a memory's values.
        exposures: passes over the identities (each shows every identity once).
        batch_size: identities per step.
        warmup_fraction: share of the steps spent warming up.
        weight_decay: AdamW weight decay of matrices (a memory's values keep their own).
        calibration_queries: training renders the evaluation's logit scale is fitted on (at most).
    """

    lr: float
    exposures: int
    batch_size: int = 512
    warmup_fraction: float = 0.02
    weight_decay: float = 0.0
    calibration_queries: int = 2048

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise InputError(f"SlotRecipe.lr={self.lr}: must be positive")
        for name in ("exposures", "batch_size", "calibration_queries"):
            if getattr(self, name) < 1:
                raise InputError(f"SlotRecipe.{name}={getattr(self, name)}: must be >= 1")
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(f"SlotRecipe.warmup_fraction={self.warmup_fraction}: must lie in [0, 1)")

    def steps(self, identities: int) -> int:
        return self.exposures * math.ceil(identities / self.batch_size)


class SlotModel(nn.Module):
    """The trainable slot and logit scale on top of the frozen probe."""

    def __init__(self, probe: SlotProbe, slot: nn.Module, logit_scale: float) -> None:
        super().__init__()
        self.probe = probe
        self.slot = slot
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, width) cached features -> (B, D) normalised embeddings."""
        return F.normalize(self.probe.embed(h, self.slot), dim=-1)


def _optimizer(model: SlotModel, recipe: SlotRecipe) -> torch.optim.Optimizer:
    trainable = nn.ModuleDict({"slot": model.slot})
    groups = param_groups(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
    groups.append({"name": "logit_scale", "params": [model.log_scale], "lr": recipe.lr, "weight_decay": 0.0,
                   "fixed_lr": False})
    return torch.optim.AdamW(groups, lr=recipe.lr)


def train_slot(model: SlotModel, features: torch.Tensor, names: torch.Tensor, train_renders: int,
               recipe: SlotRecipe, seed: int, progress: Optional[Callable[[int, int], None]] = None
               ) -> Dict[str, Any]:
    """Train ``model.slot`` (and its logit scale) in place.

    Args:
        features: (K, renders, width) cached features; renders ``0 .. train_renders - 1`` are for training.
        names: (K, D) unit name vectors.
        seed: the order of identities and renders (the slot's initialisation is drawn before).
        progress: called with (step, steps) every few steps.

    Returns:
        ``{"steps", "seconds", "loss": [(step, loss), ...] (about 50 points), "final_loss", "learned_scale"}``.

    Raises:
        FloatingPointError: the loss is not finite (the lr is too high for the arm).
    """
    identities = features.shape[0]
    steps = recipe.steps(identities)
    optimizer = _optimizer(model, recipe)
    schedule = LearningRateSchedule(optimizer, warmup=int(recipe.warmup_fraction * steps), total_steps=steps)
    rng = np.random.default_rng(seed)
    every = max(1, steps // 50)
    curve, step, start, recent = [], 0, time.time(), []
    model.train()
    for _ in range(recipe.exposures):
        order = torch.from_numpy(rng.permutation(identities))
        render = torch.from_numpy(rng.integers(0, train_renders, identities))
        for first in range(0, identities, recipe.batch_size):
            batch = order[first:first + recipe.batch_size]
            schedule(step)
            z = model(features[batch, render[batch]])
            logits = model.scale * z @ names[batch].T
            loss = F.cross_entropy(logits, torch.arange(len(batch)))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at step {step} of {steps} (lr {recipe.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            recent.append(loss.item())
            step += 1
            if step % every == 0 or step == steps:
                curve.append((step, float(np.mean(recent))))
                recent = []
                if progress:
                    progress(step, steps)
    model.eval()
    return {"steps": steps, "seconds": round(time.time() - start, 2), "loss": curve,
            "final_loss": curve[-1][1] if curve else float("nan"), "learned_scale": float(model.scale.detach())}


@torch.no_grad()
def evaluate_slot(model: SlotModel, features: torch.Tensor, names: torch.Tensor, train_renders: int,
                  recipe: SlotRecipe, seed: int, train_scored: int = 1, chunk: int = 4096) -> Dict[str, Any]:
    """Score renders against all K names, at a logit scale fitted on training renders.

    Args:
        features: (K, renders, width); renders from ``train_renders`` on are held out.
        train_scored: how many training renders per identity are scored (the first ones): scoring costs K x K
            cosines per render.

    Returns:
        ``{"scale", "train": {...}, "heldout": {...}}``; each split holds ``r1`` (%), ``bits`` (the sum over
        identities of the bits stored, averaged over the split's scored renders) and the per-identity arrays
        ``hit`` and ``bits_per_identity`` (numpy, averaged over renders).
    """
    model.eval()
    identities, renders, width = features.shape
    embeddings = torch.cat([model(part) for part in features.reshape(-1, width).split(chunk)]
                           ).view(identities, renders, -1)
    targets = torch.arange(identities)
    rng = np.random.default_rng(seed + 7919)
    calibration = torch.from_numpy(rng.permutation(identities)[:recipe.calibration_queries])
    scale = calibrate_scale(embeddings[calibration, 0], targets[calibration], names)
    out: Dict[str, Any] = {"scale": scale}
    for split, columns in (("train", range(min(train_scored, train_renders))),
                           ("heldout", range(train_renders, renders))):
        scored = [score_queries(embeddings[:, r], targets, names, scale) for r in columns]
        hit = torch.stack([s["hit"].double() for s in scored]).mean(0).numpy()
        bits = torch.stack([s["bits"].double() for s in scored]).mean(0).numpy()
        out[split] = {"r1": float(hit.mean() * 100), "bits": float(bits.sum()), "hit": hit,
                      "bits_per_identity": bits, "renders": len(scored)}
    return out
