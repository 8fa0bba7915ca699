"""K-way retrieval of names from image embeddings: R@1, cross-entropy and the bits stored.

Every query is scored against all K names with the full K-way softmax at a logit scale ``s``:
``p(name j | image) = softmax_j(s * cos(z, n_j))``. A query *stores* ``max(0, log2 K - CE)`` bits, CE the
cross-entropy of its true name in bits: a model that knows nothing (uniform over K) stores 0, a sure and right one
``log2 K``. Summed over the held-out queries this counts the facts a model holds in bits, and unlike R@1 it does not
collapse past capacity: a model that narrows each name down to a few candidates still stores most of ``log2 K``.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def bits_stored(cross_entropy_bits: torch.Tensor, names: int) -> torch.Tensor:
    """Per query: ``max(0, log2(names) - CE)``, CE in bits."""
    return (math.log2(names) - cross_entropy_bits).clamp(min=0.0)


@torch.no_grad()
def score_queries(embeddings: torch.Tensor, targets: torch.Tensor, names: torch.Tensor, scale: float,
                  chunk: int = 2048) -> Dict[str, torch.Tensor]:
    """Full K-way scores of each query.

    Args:
        embeddings: (Q, D) image embeddings (normalised here).
        targets: (Q,) index of each query's true name.
        names: (K, D) unit name vectors.
        scale: the logit scale.

    Returns:
        ``{"hit": (Q,) bool (the true name ranks first; a tie counts against it), "ce_bits": (Q,) float,
        "bits": (Q,) float}``.
    """
    z = F.normalize(embeddings.float(), dim=-1)
    hits, ce = [], []
    for start in range(0, len(z), chunk):
        cos = z[start:start + chunk] @ names.T
        true = targets[start:start + chunk]
        true_cos = cos.gather(1, true[:, None])[:, 0]
        others = cos.clone()
        others.scatter_(1, true[:, None], -float("inf"))
        hits.append(true_cos > others.max(dim=1).values)
        ce.append((torch.logsumexp(scale * cos, dim=1) - scale * true_cos) / LN2)
    ce_bits = torch.cat(ce)
    return {"hit": torch.cat(hits), "ce_bits": ce_bits, "bits": bits_stored(ce_bits, len(names))}


@torch.no_grad()
def mean_log_likelihood(cos: torch.Tensor, true_cos: torch.Tensor, scale: float) -> float:
    """Mean log-probability (nats) of the true names, from (Q, K) cosines and the (Q,) true ones."""
    return float((scale * true_cos - torch.logsumexp(scale * cos, dim=1)).mean())


@torch.no_grad()
def calibrate_scale(embeddings: torch.Tensor, targets: torch.Tensor, names: torch.Tensor,
                    bounds: Tuple[float, float] = (1.0, 1000.0), steps: int = 30) -> float:
    """The logit scale that maximises the mean log-likelihood of the true names among all K (golden-section search
    over log(scale); the log-likelihood is concave in the scale). Fitted on training renders, it gives every arm the
    temperature that suits the full K-way softmax rather than the sampled one it trained with."""
    z = F.normalize(embeddings.float(), dim=-1)
    cos = z @ names.T
    true_cos = cos.gather(1, targets[:, None])[:, 0]
    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (mean_log_likelihood(cos, true_cos, math.exp(x)) for x in (a, b))
    for _ in range(steps):
        if fa < fb:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = mean_log_likelihood(cos, true_cos, math.exp(b))
        else:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = mean_log_likelihood(cos, true_cos, math.exp(a))
    return math.exp((low + high) / 2)
