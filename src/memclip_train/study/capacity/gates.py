"""The gates of the slot probe, checked before any grid point runs (docs/capacity.md):

- **G1, visible:** a nearest-centroid classifier on the cached features recovers the held-out identity at the
  largest K (the facts can be seen);
- **G2, learnable:** the MLP control reaches the bar of held-out R@1 at the smallest K (the facts can be learned);
- **G3, binding:** the MLP control falls below the bar at the largest K (the facts strain it).

If a gate fails the grid does not run: the design is fixed and registered again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import torch


@dataclass(frozen=True)
class Gate:
    """One gate's outcome: ``value`` (a fraction) against ``threshold``; ``above`` says which side passes."""

    name: str
    description: str
    value: float
    threshold: float
    above: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.above else self.value < self.threshold

    def sentence(self) -> str:
        side = ">=" if self.above else "<"
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.name} ({self.description}): {100 * self.value:.1f}% (needs {side} {100 * self.threshold:.0f}%)" \
               f" - {verdict}"

    def to_dict(self) -> Dict:
        return {**asdict(self), "passed": self.passed}


class GateFailed(RuntimeError):
    """A gate failed: the grid must not run."""

    def __init__(self, gates: Sequence[Gate]) -> None:
        failed = [gate for gate in gates if not gate.passed]
        super().__init__("the grid does not run: " + "; ".join(gate.sentence() for gate in failed)
                         + ". Fix the design and register it again (docs/capacity.md).")
        self.gates = list(gates)


def check(gates: Sequence[Gate]) -> None:
    """Raise :class:`GateFailed` unless every gate passed."""
    if not all(gate.passed for gate in gates):
        raise GateFailed(gates)


@torch.no_grad()
def nearest_centroid_accuracy(features: torch.Tensor, train_renders: int, chunk: int = 2048) -> float:
    """Held-out identity accuracy of a nearest-centroid classifier (Euclidean) on (K, renders, width) features: the
    centroid of each identity's training renders, queried with each held-out render among all K centroids."""
    centroids = features[:, :train_renders].mean(dim=1)
    queries = features[:, train_renders:]
    correct, total = 0, 0
    for render in range(queries.shape[1]):
        for start in range(0, len(centroids), chunk):
            nearest = torch.cdist(queries[start:start + chunk, render], centroids).argmin(dim=1)
            correct += int((nearest == torch.arange(start, start + len(nearest))).sum())
            total += len(nearest)
    return correct / total


def visible(accuracy: float, k: int, threshold: float) -> Gate:
    return Gate("G1", f"visible: nearest-centroid held-out identity accuracy at K = {k:,}", accuracy, threshold,
                above=True)


def learnable(recall: float, k: int, threshold: float) -> Gate:
    return Gate("G2", f"learnable: the MLP's held-out R@1 at K = {k:,}", recall, threshold, above=True)


def binding(recall: float, k: int, threshold: float) -> Gate:
    return Gate("G3", f"binding: the MLP's held-out R@1 at K = {k:,}", recall, threshold, above=False)


def sentences(gates: List[Gate]) -> List[str]:
    return [gate.sentence() for gate in gates]
