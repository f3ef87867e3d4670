"""Confidence intervals of a mean over items (videos, prompts, seeds), and their comparison.

``mean_ci`` gives ``(mean, low, high)``: a seeded percentile bootstrap over the items (the default,
no normality assumption) or a Student-t interval; ``statistic_ci`` bootstraps any other statistic
of a set of items. ``differs`` says whether two intervals are disjoint, the conservative test the
reports use to call a difference real.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Literal

import numpy as np

from pyrawan.errors import InputError

Method = Literal["bootstrap", "t"]


def _as_values(values: Iterable[float]) -> np.ndarray:
    """Finite float64 vector of the items; an empty or non-finite input is an InputError."""
    array = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise InputError("mean_ci: no values to average. Pass at least one per-item value.")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise InputError(f"mean_ci: value {bad} is not finite. Remove or fix the item that produced it.")
    return array


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise InputError(f"mean_ci: level={level} is outside (0, 1). Use e.g. 0.95 for a 95% interval.")


def bootstrap_ci(values: np.ndarray, level: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` [N] from ``resamples`` resamples."""
    if resamples < 1:
        raise InputError(f"mean_ci: resamples={resamples} must be >= 1 (2000 is the default).")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def t_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` [N]: mean ± t_{(1+level)/2, N-1} · s / sqrt(N)."""
    from scipy import stats as sps

    mean = float(values.mean())
    if values.size < 2:
        return mean, mean
    sem = float(values.std(ddof=1)) / math.sqrt(values.size)
    half = float(sps.t.ppf((1.0 + level) / 2.0, df=values.size - 1)) * sem
    return mean - half, mean + half


def mean_ci(
    values: Iterable[float],
    level: float = 0.95,
    method: Method = "bootstrap",
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of the per-item ``values`` and its ``level`` confidence interval: ``(mean, low, high)``.

    ``method="bootstrap"``: percentile bootstrap over items, ``resamples`` draws seeded by ``seed``
    (same input, same interval). ``method="t"``: Student-t interval. With one item the interval is
    the point itself (no spread can be estimated; reports show n alongside).
    """
    array = _as_values(values)
    _check_level(level)
    mean = float(array.mean())
    if array.size == 1:
        return mean, mean, mean
    if method == "bootstrap":
        low, high = bootstrap_ci(array, level, resamples, seed)
    elif method == "t":
        low, high = t_ci(array, level)
    else:
        raise InputError(f"mean_ci: method={method!r} is unknown. Use 'bootstrap' or 't'.")
    return mean, low, high


def statistic_ci(n: int, statistic: Callable[[np.ndarray], float], level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(value, low, high)`` of a statistic of ``n`` items with a seeded percentile-bootstrap interval.

    ``statistic(indices)`` gets item indices ``[n]`` (all of them for the value, ``n`` drawn with
    replacement for each resample) and returns a float; use it for set-level numbers that are not
    a mean (a Fréchet distance). With one item the interval is the point itself.
    """
    if n < 1:
        raise InputError("statistic_ci: no items. Pass at least one.")
    _check_level(level)
    if resamples < 1:
        raise InputError(f"statistic_ci: resamples={resamples} must be >= 1 (2000 is the default).")
    value = float(statistic(np.arange(n)))
    if n == 1:
        return value, value, value
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return value, float(low), float(high)


def differs(a_ci: tuple[float, ...], b_ci: tuple[float, ...]) -> bool:
    """True when the intervals do not overlap. Each is ``(mean, low, high)`` or ``(low, high)``."""
    a_low, a_high = a_ci[-2], a_ci[-1]
    b_low, b_high = b_ci[-2], b_ci[-1]
    return a_high < b_low or b_high < a_low
