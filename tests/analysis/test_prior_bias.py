"""Simplicity-bias statistics against closed forms and synthetic data with a known answer."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.prior_bias import complexity_bound, ones_distribution, rank_frequency, spread, zipf_exponent


def test_bound_recovers_a_planted_envelope():
    rng = np.random.default_rng(0)
    c = rng.uniform(10, 100, size=5000)
    slope, intercept = -0.08, -1.0
    # every point below the line, a few exactly on it at each level
    log_p = intercept + slope * c - rng.exponential(2.0, size=c.size)
    on = rng.choice(c.size, 200, replace=False)
    log_p[on] = intercept + slope * c[on]
    bound = complexity_bound(c, log_p, np.full(c.size, 50))
    assert bound.slope == pytest.approx(slope, abs=0.01)
    assert np.all(bound(bound.levels) >= bound.maxima - 1e-12)  # an upper bound on its points
    assert bound.r < -0.95


def test_bound_ignores_rarely_drawn_functions():
    c = np.array([1.0, 2.0, 3.0, 50.0])
    log_p = np.array([-1.0, -2.0, -3.0, 0.0])  # the high point was drawn once: noise
    bound = complexity_bound(c, log_p, np.array([100, 100, 100, 1]), min_count=10)
    assert bound.slope == pytest.approx(-1.0) and bound.intercept == pytest.approx(0.0)
    with pytest.raises(ValueError, match="fewer than 2 functions"):
        complexity_bound(c, log_p, np.array([1, 1, 1, 100]))


def test_ones_distribution_against_scipy_binomial():
    k = 12
    p_t, binom = ones_distribution(np.array([0, 12, 6, 6]), np.array([3, 1, 4, 2]), k)
    assert np.allclose(binom, stats.binom.pmf(np.arange(k + 1), k, 0.5), rtol=1e-12)
    assert p_t[0] == pytest.approx(0.3) and p_t[12] == pytest.approx(0.1) and p_t[6] == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"n_ones must lie in \[0, k=12\]"):
        ones_distribution(np.array([13]), np.array([1]), k)


def test_zipf_and_spread_on_a_zipf_sample():
    ranks = np.arange(1, 2001)
    counts = np.round(1e6 / ranks).astype(int)
    n = int(counts.sum())
    assert zipf_exponent(counts, n) == pytest.approx(-1.0, abs=0.02)
    s = spread(counts, n)
    assert s["n_functions"] == 2000 and s["top_share"] == pytest.approx(1e6 / n)
    assert s["decades"] == pytest.approx(math.log10(1e6 / 500), abs=1e-9)
    p = counts / n
    assert s["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    rank, freq = rank_frequency(counts[::-1], n)
    assert rank[0] == 1 and freq[0] == pytest.approx(1e6 / n)
