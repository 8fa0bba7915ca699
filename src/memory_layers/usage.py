"""Memory-usage statistics (Lample et al. 2019): which slots a pass reads, and how evenly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch


@dataclass(frozen=True)
class UsageSummary:
    """Usage of one memory layer over a pass.

    Attributes:
        fraction_read: share of slots read at least once (with non-zero weight).
        kl_from_uniform: KL(p || uniform) in nats, where p is the read weight per slot normalised over the pass;
            0 means perfectly even use, log(n_slots) means one slot takes everything.
        tokens: tokens that went through the layer.
        n_slots: slots in the table.
    """

    fraction_read: float
    kl_from_uniform: float
    tokens: int
    n_slots: int

    def to_dict(self) -> Dict[str, float]:
        return {
            "fraction_read": self.fraction_read,
            "kl_from_uniform": self.kl_from_uniform,
            "tokens": self.tokens,
            "n_slots": self.n_slots,
        }


class SlotUsage:
    """Accumulates per-slot read counts and read weights over many forward passes.

    The accumulators live on the device of the reads (moved there by the first update), so an update adds on the
    device with ``index_add_``: no host sync per batch, and it works under ``torch.use_deterministic_algorithms``
    (where CUDA's weighted ``bincount`` raises). :meth:`summary` reads them back.

    Attributes:
        weight: (n_slots,) fp64 read weight per slot.
        reads: (n_slots,) int64 reads with non-zero weight per slot.
        tokens: tokens recorded.
    """

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.weight = torch.zeros(n_slots, dtype=torch.float64)
        self.reads = torch.zeros(n_slots, dtype=torch.int64)
        self.tokens = 0

    @torch.no_grad()
    def update(self, indices: torch.Tensor, weights: torch.Tensor) -> None:
        """Add one batch: indices and weights (T, B) of the bags read."""
        flat_indices = indices.reshape(-1).to(torch.int64)
        flat_weights = weights.reshape(-1).to(torch.float64)
        if self.weight.device != flat_indices.device:
            self.weight = self.weight.to(flat_indices.device)
            self.reads = self.reads.to(flat_indices.device)
        self.weight.index_add_(0, flat_indices, flat_weights)
        self.reads.index_add_(0, flat_indices, (flat_weights > 0).to(torch.int64))
        self.tokens += indices.shape[0]

    def summary(self) -> UsageSummary:
        weight, reads = self.weight.cpu(), self.reads.cpu()
        total = float(weight.sum())
        fraction = float((reads > 0).sum()) / self.n_slots
        if total <= 0.0:
            return UsageSummary(fraction, float("nan"), self.tokens, self.n_slots)
        p = weight / total
        nonzero = p > 0
        kl = float((p[nonzero] * torch.log(p[nonzero] * self.n_slots)).sum())
        return UsageSummary(fraction, max(kl, 0.0), self.tokens, self.n_slots)
