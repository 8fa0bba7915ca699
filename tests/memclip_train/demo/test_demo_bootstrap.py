"""The report's noise test: bootstrap intervals on R@k and how a paired difference is put into words."""
import numpy as np
import pytest

from memclip_train.report.bootstrap import paired_difference, recall_interval
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


def test_t_quantiles_and_the_detectable_difference():
    from memclip_train.report.bootstrap import detectable_difference, t_quantile
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.8, 2) == pytest.approx(1.061, abs=1e-3)
    assert t_quantile(0.025, 2) == pytest.approx(-4.303, abs=1e-3)
    assert t_quantile(0.975, float("inf")) == pytest.approx(1.960, abs=1e-3)
    # 80% power at a 95% level: (1.96 + 0.84) / 1.96 of the half-width, not the half-width itself
    assert detectable_difference(1.0) == pytest.approx(1.43, abs=0.005)
    assert detectable_difference(1.0, df=2) == pytest.approx((4.303 + 1.061) / 4.303, abs=1e-3)


def test_a_t_interval_over_three_seeds_reproduces_the_issues_example():
    from memclip_train.report.bootstrap import t_interval
    pooled = t_interval([0.6, 2.6, 1.9])   # the demo's zero-shot shape, student - control, seeds 0, 1, 2
    assert pooled["value"] == pytest.approx(1.7) and pooled["df"] == 2
    assert round(pooled["low"], 1) == -0.8 and round(pooled["high"], 1) == 4.2
    assert np.isnan(t_interval([1.0])["low"])


def test_the_two_level_bootstrap_covers_seed_to_seed_variation():
    from memclip_train.report.bootstrap import two_level_summary
    rng = np.random.default_rng(0)
    # three seeds whose means differ by far more than their items' noise
    values = np.stack([rng.normal(mean, 0.1, 400) for mean in (0.0, 1.0, 2.0)])
    pooled = two_level_summary(values)
    items_only = two_level_summary(values.reshape(1, -1))   # the seeds treated as one run: items only
    assert pooled["value"] == pytest.approx(values.mean()) and pooled["seeds"] == pytest.approx(values.mean(1))
    assert pooled["high"] - pooled["low"] > 10 * (items_only["high"] - items_only["low"])
    assert pooled["t_low"] < pooled["low"] and pooled["t_high"] > pooled["high"]   # 3 seeds: t is wider still
    assert pooled["detectable"] == pytest.approx(1.43 * pooled["half_width"], rel=0.01)
    assert two_level_summary(values, scale=400)["value"] == pytest.approx(values.sum(1).mean())


def test_holm_and_bootstrap_p_values():
    from memclip_train.report.bootstrap import bootstrap_p_value, holm
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert bootstrap_p_value(np.linspace(1, 2, 100)) == pytest.approx(0.01)
    assert bootstrap_p_value(np.linspace(-1, 1, 1001)) == pytest.approx(1.0)
