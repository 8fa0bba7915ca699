"""Bootstrap intervals on retrieval recall: which differences exceed run-to-run (sampling) noise."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np


def recall_interval(ranks: Sequence[int], k: int = 1, resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> Tuple[float, float, float]:
    """R@k (%) and its percentile bootstrap interval, resampling the queries with replacement."""
    hits = (np.asarray(ranks) <= k).astype(np.float64)
    rng = np.random.default_rng(seed)
    samples = hits[rng.integers(0, len(hits), size=(resamples, len(hits)))].mean(axis=1) * 100
    tail = (1 - level) / 2 * 100
    return float(hits.mean() * 100), float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))


def paired_difference(ranks_a: Sequence[int], ranks_b: Sequence[int], k: int = 1, resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> Dict[str, float]:
    """R@k(a) - R@k(b) on the same queries, with a paired bootstrap interval; ``significant`` when it excludes 0,
    ``identical`` when both models hit and miss on exactly the same queries, and ``half_width`` half the interval's
    width: about the smallest difference this many queries could have told apart from noise."""
    a = (np.asarray(ranks_a) <= k).astype(np.float64)
    b = (np.asarray(ranks_b) <= k).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError("paired comparison needs the same queries for both models")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(resamples, len(a)))
    samples = (a[index].mean(axis=1) - b[index].mean(axis=1)) * 100
    tail = (1 - level) / 2 * 100
    low, high = float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))
    return {"difference": float((a.mean() - b.mean()) * 100), "low": low, "high": high,
            "half_width": (high - low) / 2, "significant": bool(low > 0 or high < 0),
            "identical": bool(np.array_equal(a, b))}
