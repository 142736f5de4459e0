"""Per-point statistics of double descent: the Student-t interval (against scipy) and the peak."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.double_descent import find_peak, mean_interval


def test_mean_interval_is_scipys_student_t_interval():
    x = np.random.default_rng(0).normal(0.3, 0.05, size=11)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    got = mean_interval(np.append(x, np.nan))  # a diverged run is left out
    assert (got.n, got.mean) == (11, pytest.approx(x.mean()))
    assert (got.lo, got.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert math.isnan(mean_interval([]).mean) and mean_interval([0.5]).lo == 0.5


def test_find_peak_against_both_ends():
    peak = find_peak([400, 100, 50, 200], [0.2, 0.3, 0.25, 0.4], m=200)
    assert (peak.p_over_m, peak.height, peak.small, peak.large) == (1.0, 0.4, 0.25, 0.2)
    with pytest.raises(ValueError, match="one non-zero length"):
        find_peak([1, 2], [0.1], m=2)
