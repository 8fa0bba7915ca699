"""Bootstrap intervals on retrieval recall: which differences exceed run-to-run (sampling) noise.

Ranks are one run's (Q,) ranks, or (R, Q): R runs (seeds) of one model on the same Q queries. Runs are pooled with a
two-level bootstrap: a resample draws R runs with replacement, then Q queries with replacement within each drawn run,
so the interval covers seed-to-seed variation as well as the query sample (resampling only the queries while the runs
stay fixed covers the queries alone: one seed's "effect" can fail to repeat on the next). With one run it is the
ordinary bootstrap over the queries. Two models' paired difference resamples the same runs and queries for both.

Half an interval is not the smallest difference a run can detect: a true difference that size lands on the
interval's edge and is found half of the time. :func:`detectable_difference` gives the one found with 80% power
(about 1.43 times the half-width at a 95% level).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from memclip.errors import InputError


def _hits(ranks: Sequence, k: int) -> np.ndarray:
    """(R, Q) float hits at k of R runs on Q queries (a single run's (Q,) ranks become (1, Q))."""
    hits = (np.asarray(ranks) <= k).astype(np.float64)
    if hits.ndim not in (1, 2):
        raise InputError(f"ranks must be (queries,) or (runs, queries), got shape {hits.shape}")
    return hits.reshape(-1, hits.shape[-1])


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples."""
    tail = (1 - level) / 2 * 100
    return float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))


def recall_interval(ranks: Sequence, k: int = 1, resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> Tuple[float, float, float]:
    """R@k (%) and its percentile bootstrap interval (runs, then queries, resampled with replacement)."""
    hits = _hits(ranks, k)
    low, high = percentile_interval(two_level_samples(hits, resamples, seed) * 100, level)
    return float(hits.mean() * 100), low, high


def paired_difference_samples(ranks_a: Sequence, ranks_b: Sequence, k: int = 1, resamples: int = 1000,
                              seed: int = 0) -> np.ndarray:
    """The bootstrap distribution of R@k(a) - R@k(b) in points, (resamples,): runs, then queries, resampled with
    replacement, the same draws for both models (and, for one ``seed`` and shape, for every call). A model with a
    single run (a model that is not trained, like a teacher) is compared with every run of the other.

    Raises:
        ValueError: the two models were not scored on the same queries, or have different numbers of runs (> 1).
    """
    return two_level_samples(_paired(_hits(ranks_a, k), _hits(ranks_b, k)), resamples, seed) * 100


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(R, Q) per-run, per-query differences a - b (a single run is broadcast against the other's runs)."""
    if a.shape[1] != b.shape[1]:
        raise InputError("paired comparison needs the same queries for both models")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise InputError(f"paired comparison needs the same runs (seeds) for both models: {a.shape[0]} and "
                         f"{b.shape[0]}")
    return a - b


def difference_summary(difference: float, samples: np.ndarray, level: float = 0.95) -> Dict[str, float]:
    """``{"difference", "low", "high", "half_width", "detectable", "significant"}`` for a difference and its
    bootstrap samples: ``detectable`` is the difference found with 80% power (:func:`detectable_difference`, about
    1.43 times the half width); significant when the interval excludes 0."""
    low, high = percentile_interval(samples, level)
    half = (high - low) / 2
    return {"difference": float(difference), "low": low, "high": high, "half_width": half,
            "detectable": detectable_difference(half, level), "significant": bool(low > 0 or high < 0)}


def paired_difference(ranks_a: Sequence, ranks_b: Sequence, k: int = 1, resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> Dict[str, Any]:
    """R@k(a) - R@k(b) on the same queries and runs, with a paired two-level bootstrap interval (see
    :func:`difference_summary`); ``significant`` when it excludes 0, ``identical`` when both models hit and miss on
    exactly the same queries. With two or more runs, ``seeds`` holds each run's difference and ``t_low``/``t_high``
    the t-interval over them."""
    a, b = _hits(ranks_a, k), _hits(ranks_b, k)
    samples = paired_difference_samples(ranks_a, ranks_b, k, resamples, seed)
    result: Dict[str, Any] = {**difference_summary((a.mean() - b.mean()) * 100, samples, level),
                              "identical": bool(a.shape == b.shape and np.array_equal(a, b))}
    if max(a.shape[0], b.shape[0]) > 1:
        t = t_interval(_paired(a, b).mean(axis=1) * 100, level)
        result.update({"seeds": t["seeds"], "t_low": t["low"], "t_high": t["high"]})
    return result


# ---------------------------------------------------------------------------------------------------- seeds pooled
def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (``df=inf``: the normal).

    Bisection on the distribution function, integrated numerically (no scipy): accurate to about 1e-6.
    """
    if not 0.0 < probability < 1.0:
        raise InputError(f"t_quantile: probability {probability} must lie strictly between 0 and 1")
    if df <= 0:
        raise InputError(f"t_quantile: degrees of freedom {df} must be positive")
    if math.isinf(df):
        return NormalDist().inv_cdf(probability)
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:   # 0.5 + the integral of the density from 0 to x (Simpson's rule)
        grid = np.linspace(0.0, x, 2001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        step = grid[1] - grid[0]
        return 0.5 + step / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        low, high = high, high * 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


def detectable_difference(half_width: float, level: float = 0.95, power: float = 0.8,
                          df: float = math.inf) -> float:
    """The true difference a test at ``level`` detects with probability ``power``, given an interval's half width.

    With a standard error ``se`` the interval's half width is ``q(1 - a/2) * se`` and the detectable difference is
    ``(q(1 - a/2) + q(power)) * se``, ``q`` the normal (or, with ``df``, Student's t) quantile: about 1.43 times the
    half width for a 95% interval at 80% power. Half the interval is the difference that lands exactly on its edge,
    which a test finds only half of the time.
    """
    alpha = 1.0 - level
    edge = t_quantile(1.0 - alpha / 2, df)
    return half_width * (edge + t_quantile(power, df)) / edge


def t_interval(per_seed: Sequence[float], level: float = 0.95) -> Dict[str, Any]:
    """Mean over seeds and its t-interval: ``{"value", "low", "high", "half_width", "detectable", "seeds", "df"}``.

    Each seed's value is one observation; with one seed there is no interval (``low``/``high`` are NaN).
    """
    values = np.asarray(per_seed, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        nan = float("nan")
        return {"value": mean, "low": nan, "high": nan, "half_width": nan, "detectable": nan,
                "seeds": values.tolist(), "df": 0}
    df = len(values) - 1
    half = t_quantile(1 - (1 - level) / 2, df) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return {"value": mean, "low": mean - half, "high": mean + half, "half_width": half,
            "detectable": detectable_difference(half, level, df=df), "seeds": values.tolist(), "df": df}


def two_level_samples(values: np.ndarray, resamples: int = 1000, seed: int = 0, chunk: int = 25) -> np.ndarray:
    """Bootstrap distribution of the mean of ``values`` (S seeds, Q items): (resamples,).

    Each resample draws S seeds with replacement, then, for each drawn seed, Q items with replacement (the items of
    a seed: its queries or identities), and averages over both. Paired differences come from the difference of two
    models' arrays (same seeds, same items), so one call resamples both alike.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or not values.size:
        raise InputError(f"two_level_samples: expected a non-empty (seeds, items) array, got shape {values.shape}")
    seeds, items = values.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        drawn_seeds = rng.integers(0, seeds, size=(count, seeds))
        drawn_items = rng.integers(0, items, size=(count, seeds, items))
        rows = values[drawn_seeds[..., None], drawn_items]
        out[start:start + count] = rows.mean(axis=(1, 2))
    return out


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller share of samples on either side of 0
    (ties split), at most 1 and at least one resample's worth."""
    samples = np.asarray(samples)
    below = (samples < 0).mean() + 0.5 * (samples == 0).mean()
    return float(min(1.0, max(2 * min(below, 1 - below), 1.0 / len(samples))))


def two_level_summary(values: np.ndarray, scale: float = 1.0, level: float = 0.95, resamples: int = 1000,
                      seed: int = 0) -> Dict[str, Any]:
    """The mean of ``values`` (S seeds, Q items) times ``scale``, its two-level bootstrap interval (seeds, then
    items), the per-seed values and the t-interval over seeds:

    ``{"value", "low", "high", "half_width", "detectable", "p", "significant", "seeds", "t_low", "t_high"}``.
    ``detectable`` is the difference found with 80% power (:func:`detectable_difference`); ``p`` the bootstrap
    p-value of 0 (:func:`bootstrap_p_value`). With ``scale = Q`` the value is a per-seed sum over the items (bits
    stored) rather than a mean.
    """
    values = np.asarray(values, dtype=np.float64)
    samples = two_level_samples(values, resamples, seed) * scale
    low, high = percentile_interval(samples, level)
    per_seed = values.mean(axis=1) * scale
    t = t_interval(per_seed, level)
    half = (high - low) / 2
    return {"value": float(per_seed.mean()), "low": low, "high": high, "half_width": half,
            "detectable": detectable_difference(half, level), "p": bootstrap_p_value(samples),
            "significant": bool(low > 0 or high < 0), "seeds": per_seed.tolist(), "t_low": t["low"],
            "t_high": t["high"]}


def holm(p_values: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (same order as given): a family of tests whose adjusted p < alpha keeps
    the chance of any false positive under alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
