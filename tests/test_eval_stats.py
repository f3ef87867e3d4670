"""Confidence intervals of ``pyrawan.eval.stats``: t-interval against scipy, bootstrap sanity."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from pyrawan.errors import InputError
from pyrawan.eval.stats import differs, mean_ci


def test_t_interval_matches_scipy():
    sample = np.random.default_rng(3).normal(loc=2.0, scale=0.5, size=40)
    mean, low, high = mean_ci(sample, level=0.95, method="t")
    ref_low, ref_high = sps.t.interval(0.95, df=sample.size - 1, loc=sample.mean(), scale=sps.sem(sample))
    assert mean == pytest.approx(sample.mean())
    assert low == pytest.approx(ref_low, rel=1e-12)
    assert high == pytest.approx(ref_high, rel=1e-12)


def test_t_interval_by_hand():
    # values 1..5: mean 3, s = sqrt(2.5), t_{0.975,4} = 2.7764451...
    mean, low, high = mean_ci([1, 2, 3, 4, 5], method="t")
    half = 2.7764451051977987 * np.sqrt(2.5) / np.sqrt(5)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), rel=1e-9)


def test_bootstrap_is_seeded_and_close_to_t_for_normal_data():
    sample = np.random.default_rng(0).normal(size=200)
    a = mean_ci(sample, seed=7)
    b = mean_ci(sample, seed=7)
    c = mean_ci(sample, seed=8)
    assert a == b
    assert a != c
    _, t_low, t_high = mean_ci(sample, method="t")
    assert a[1] == pytest.approx(t_low, abs=0.05)
    assert a[2] == pytest.approx(t_high, abs=0.05)
    assert a[1] < a[0] < a[2]


def test_bootstrap_coverage_sanity():
    """Over 200 normal samples of 30, the 95% bootstrap interval covers the true mean ~95% of the time."""
    rng = np.random.default_rng(11)
    covered = 0
    trials = 200
    for i in range(trials):
        sample = rng.normal(loc=1.0, scale=2.0, size=30)
        _, low, high = mean_ci(sample, resamples=500, seed=i)
        covered += low <= 1.0 <= high
    # Percentile bootstrap undercovers slightly at n=30; binomial sd at p=.95 over 200 trials is ~1.5%.
    assert 0.86 <= covered / trials <= 0.99


def test_wider_level_gives_wider_interval():
    sample = np.random.default_rng(1).exponential(size=50)
    _, lo90, hi90 = mean_ci(sample, level=0.90)
    _, lo99, hi99 = mean_ci(sample, level=0.99)
    assert lo99 < lo90 and hi99 > hi90


def test_single_value_and_constant():
    assert mean_ci([4.0]) == (4.0, 4.0, 4.0)
    assert mean_ci([2.0, 2.0, 2.0], method="t") == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("kwargs, values", [
    ({}, []),
    ({}, [1.0, float("nan")]),
    ({"level": 1.5}, [1.0, 2.0]),
    ({"method": "jackknife"}, [1.0, 2.0]),
])
def test_bad_input_is_input_error(kwargs, values):
    with pytest.raises(InputError):
        mean_ci(values, **kwargs)


def test_differs():
    assert differs((1.0, 0.5, 1.5), (3.0, 2.0, 4.0))
    assert differs((3.0, 2.0, 4.0), (1.0, 0.5, 1.5))
    assert not differs((1.0, 0.5, 2.5), (3.0, 2.0, 4.0))
    assert not differs((0.0, 1.0), (1.0, 2.0))  # touching intervals overlap
    assert differs((0.0, 1.0), (1.01, 2.0))


def test_statistic_ci_bootstraps_any_statistic_and_matches_mean_ci_for_the_mean():
    from pyrawan.eval.stats import statistic_ci

    sample = np.random.default_rng(1).normal(size=30)
    assert statistic_ci(30, lambda idx: float(sample[idx].mean()), seed=4) == pytest.approx(mean_ci(sample, seed=4))
    value, low, high = statistic_ci(30, lambda idx: float(sample[idx].max()))
    assert value == sample.max() and high == pytest.approx(sample.max()) and low < high
    assert statistic_ci(1, lambda idx: 7.0) == (7.0, 7.0, 7.0)
    with pytest.raises(InputError, match="no items"):
        statistic_ci(0, lambda idx: 0.0)


def test_edges_of_the_arguments_and_the_messages():
    """Found by mutation testing (docs/testing.md): the boundaries of ``level``/``resamples``/``n`` and the texts."""
    from pyrawan.eval.stats import statistic_ci

    for level in (0.0, 1.0):
        with pytest.raises(InputError, match=rf"^mean_ci: level={level} is outside \(0, 1\)\. Use e\.g\. 0\.95"):
            mean_ci([1.0, 2.0], level=level)
    with pytest.raises(InputError, match=r"^mean_ci: value nan is not finite\. Remove or fix the item that produced it"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(InputError, match=r"^mean_ci: no values to average\. Pass at least one per-item value\.$"):
        mean_ci([])
    with pytest.raises(InputError, match=r"^mean_ci: resamples=0 must be >= 1 \(2000 is the default\)\.$"):
        mean_ci([1.0, 2.0], resamples=0)
    with pytest.raises(InputError, match=r"^statistic_ci: resamples=0 must be >= 1 \(2000 is the default\)\.$"):
        statistic_ci(2, lambda idx: 0.0, resamples=0)
    with pytest.raises(InputError, match=r"^statistic_ci: no items\. Pass at least one\.$"):
        statistic_ci(0, lambda idx: 0.0)
    _, low, high = mean_ci([1.0, 5.0], resamples=1)                    # one resample: a one-point interval
    assert low == high and low in (1.0, 3.0, 5.0)
    assert statistic_ci(2, lambda idx: float(idx.sum()), resamples=1)[1] in (0.0, 1.0, 2.0)
    assert statistic_ci(3, lambda idx: float(idx.sum()))[0] == 3.0          # the value uses every item once
    _, low, high = statistic_ci(2, lambda idx: float(np.array([1.0, 5.0])[idx].mean()))
    assert low == 1.0 and high == 5.0                                     # two items have a spread
    sample = np.random.default_rng(2).normal(size=12)
    stat = lambda idx: float(sample[idx].mean())                          # noqa: E731
    assert statistic_ci(12, stat) == statistic_ci(12, stat, seed=0) != statistic_ci(12, stat, seed=1)
    assert mean_ci(sample) == mean_ci(sample, seed=0) != mean_ci(sample, seed=1)     # the default seed is 0
    with pytest.raises(InputError, match=r"^mean_ci: method='jackknife' is unknown\. Use 'bootstrap' or 't'\.$"):
        mean_ci([1.0, 2.0], method="jackknife")


def test_t_interval_of_two_values_and_a_flattened_input():
    mean, low, high = mean_ci([1.0, 3.0], method="t")                    # s = sqrt(2), sem = 1, t_{0.975,1} = 12.706
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - 12.706204736, 2.0 + 12.706204736))
    assert mean_ci([[1.0, 2.0], [3.0, 7.0]]) == mean_ci([1.0, 2.0, 3.0, 7.0])


def test_differs_reads_the_high_end_of_a_three_tuple():
    assert not differs((3.0, 2.0, 4.0), (1.5, 1.0, 2.5))                 # 2.5 >= 2.0: they overlap
    assert not differs((1.5, 1.0, 2.5), (3.0, 2.0, 4.0))
