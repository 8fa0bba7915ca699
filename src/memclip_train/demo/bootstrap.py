"""Bootstrap intervals on retrieval recall: which differences exceed run-to-run (sampling) noise.

Ranks are one run's (Q,) ranks, or (R, Q): R runs (seeds) of one model on the same Q queries. Runs are pooled: a
resample draws Q queries with replacement and keeps every run of each, so the interval covers the query sample while
the recall is the mean over runs.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np


def _hits(ranks: Sequence, k: int) -> np.ndarray:
    """(R, Q) float hits at k of R runs on Q queries (a single run's (Q,) ranks become (1, Q))."""
    hits = (np.asarray(ranks) <= k).astype(np.float64)
    if hits.ndim not in (1, 2):
        raise ValueError(f"ranks must be (queries,) or (runs, queries), got shape {hits.shape}")
    return hits.reshape(-1, hits.shape[-1])


def _resampled_recall(hits: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(resamples,) recall in %: the mean over runs of each run's recall on the resampled queries."""
    return hits[:, index].mean(axis=2).mean(axis=0) * 100


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples."""
    tail = (1 - level) / 2 * 100
    return float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))


def recall_interval(ranks: Sequence, k: int = 1, resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> Tuple[float, float, float]:
    """R@k (%) and its percentile bootstrap interval, resampling the queries with replacement (runs pooled)."""
    hits = _hits(ranks, k)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, hits.shape[1], size=(resamples, hits.shape[1]))
    low, high = percentile_interval(_resampled_recall(hits, index), level)
    return float(hits.mean() * 100), low, high


def paired_difference_samples(ranks_a: Sequence, ranks_b: Sequence, k: int = 1, resamples: int = 1000,
                              seed: int = 0) -> np.ndarray:
    """The bootstrap distribution of R@k(a) - R@k(b) in points, (resamples,): the queries resampled with
    replacement, the same draws for both models (and, for one ``seed`` and query count, for every call).

    Raises:
        ValueError: the two models were not scored on the same number of queries.
    """
    a, b = _hits(ranks_a, k), _hits(ranks_b, k)
    if a.shape[1] != b.shape[1]:
        raise ValueError("paired comparison needs the same queries for both models")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))
    return _resampled_recall(a, index) - _resampled_recall(b, index)


def difference_summary(difference: float, samples: np.ndarray, level: float = 0.95) -> Dict[str, float]:
    """``{"difference", "low", "high", "half_width", "significant"}`` for a difference and its bootstrap samples:
    ``half_width`` is half the interval's width, about the smallest difference this many queries could have told
    apart from noise; significant when the interval excludes 0."""
    low, high = percentile_interval(samples, level)
    return {"difference": float(difference), "low": low, "high": high, "half_width": (high - low) / 2,
            "significant": bool(low > 0 or high < 0)}


def paired_difference(ranks_a: Sequence, ranks_b: Sequence, k: int = 1, resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> Dict[str, float]:
    """R@k(a) - R@k(b) on the same queries, with a paired bootstrap interval (runs pooled) and its half width (see
    :func:`difference_summary`); ``significant`` when it excludes 0, ``identical`` when both models hit and miss on
    exactly the same queries."""
    a, b = _hits(ranks_a, k), _hits(ranks_b, k)
    samples = paired_difference_samples(ranks_a, ranks_b, k, resamples, seed)
    return {**difference_summary((a.mean() - b.mean()) * 100, samples, level),
            "identical": bool(a.shape == b.shape and np.array_equal(a, b))}
