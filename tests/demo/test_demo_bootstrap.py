"""The report's noise test: bootstrap intervals on R@k and how a paired difference is put into words."""
import numpy as np
import pytest

from memclip_train.demo.bootstrap import paired_difference, recall_interval
from memclip_train.demo.report import verdict


def test_recall_interval_brackets_the_recall():
    ranks = [1] * 30 + [5] * 70
    value, low, high = recall_interval(ranks)
    assert value == pytest.approx(30.0)
    assert 20 < low < 30 < high < 40


def test_a_large_paired_gain_is_beyond_noise_and_a_tiny_one_is_not():
    rng = np.random.default_rng(0)
    base = rng.integers(1, 10, size=300)
    better = np.where(rng.random(300) < 0.3, 1, base)
    gain = paired_difference(better, base)
    assert gain["difference"] > 10 and gain["low"] > 0 and gain["significant"] and not gain["identical"]
    assert verdict(gain) == "higher, beyond noise"
    assert verdict(paired_difference(base, better)) == "lower, beyond noise"

    nudged = base.copy()
    nudged[np.flatnonzero(base > 1)[0]] = 1  # one more hit out of 300
    small = paired_difference(nudged, base)
    assert small["low"] <= 0 <= small["high"] and not small["significant"] and not small["identical"]
    assert verdict(small) == "within run-to-run noise"


def test_identical_hits_are_called_identical_even_when_lower_ranks_differ():
    a = np.array([1, 3, 1, 7, 2])
    b = np.array([1, 2, 1, 9, 5])
    same = paired_difference(a, b)
    assert same["identical"] and same["difference"] == 0 and not same["significant"]
    assert "exactly the same queries" in verdict(same)
    assert not paired_difference(a, b, k=2)["identical"]


def test_paired_difference_needs_the_same_queries():
    with pytest.raises(ValueError, match="same queries"):
        paired_difference([1, 2, 3], [1, 2])
