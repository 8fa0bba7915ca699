"""Zero-shot accuracy from the (N, C) class scores: the rank of each image's true class, top-1/top-5 and mean
per-class accuracy, and clip_benchmark's names for them."""
from __future__ import annotations

from typing import Dict

import torch

from ..retrieval_metrics import worst_for_nan

def true_class_ranks(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) rank of each image's true class among the (N, C) scores: 0 = top-1 (ties count in the image's favour).

    NaN is the worst score: a true class scored NaN ranks last (C - 1), a NaN competitor behind the true class.
    """
    true = logits.gather(1, labels[:, None])
    ranks = (worst_for_nan(logits) > worst_for_nan(true)).sum(dim=1)
    return torch.where(true[:, 0].isnan(), logits.shape[1] - 1, ranks)


def accuracy_metrics(ranks: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """top-1, top-5 and mean per-class top-1 accuracy in %, from the ranks of the true classes."""
    hits = (ranks == 0).float()
    present = labels.unique()
    per_class = torch.stack([hits[labels == c].mean() for c in present])
    return {"top1": 100 * hits.mean().item(), "top5": 100 * (ranks < 5).float().mean().item(),
            "mean_per_class_top1": 100 * per_class.mean().item(), "classes_present": int(len(present)),
            "num_classes": num_classes}


def clip_benchmark_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """Accuracy under clip_benchmark's names, as fractions, as its ``zeroshot_classification.evaluate`` computes
    them: ``acc1``, ``acc5`` (NaN with fewer than 5 classes) and ``mean_per_class_recall`` (the top-1 prediction's
    recall averaged over the classes present)."""
    predictions = logits.argmax(dim=1)
    top5 = logits.topk(min(5, num_classes), dim=1).indices
    recalls = torch.stack([(predictions[labels == c] == c).float().mean() for c in labels.unique()])
    return {"acc1": (predictions == labels).float().mean().item(),
            "acc5": (top5 == labels[:, None]).any(dim=1).float().mean().item() if num_classes >= 5 else float("nan"),
            "mean_per_class_recall": recalls.mean().item()}
