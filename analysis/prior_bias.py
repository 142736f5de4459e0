"""The prior's bias toward simple functions: rank-frequency, the complexity bound, the number of ones.

Pure numpy (no torch, no matplotlib): the figures are in :mod:`analysis.prior_plots`.

Valle-Perez, Camargo and Louis (ICLR 2019) found that for random FCNs on the Boolean system
``log P(f)`` is bounded above by a falling linear function of the function's complexity,
``log P(f) <= a - b K(f)`` (the simplicity bias bound of Dingle et al. 2018), and that ``P(f)`` against
its rank follows a Zipf-like law; Mingard et al. (2020) that the number of ones T is far from the
binomial of the uniform prior over functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ComplexityBound:
    """An upper bound ``log P <= intercept + slope * complexity`` fitted to sampled frequencies.

    Attributes
    ----------
    slope : float
        Natural-log probability per unit of complexity (negative: simpler functions may be likelier).
    intercept : float
        Natural log.
    levels : ndarray ``(n_levels,)``
        The complexity values (bin centres) whose largest log P entered the fit.
    maxima : ndarray ``(n_levels,)``
        The largest log P at each level.
    r : float
        Pearson correlation of ``levels`` and ``maxima`` (how linear the envelope is).
    """

    slope: float
    intercept: float
    levels: np.ndarray
    maxima: np.ndarray
    r: float

    def __call__(self, complexity) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(complexity, dtype=np.float64)


def complexity_bound(complexity, log_p, counts, *, min_count: int = 10, n_bins: int = 20) -> ComplexityBound:
    """Fit the upper envelope of ``log_p`` against ``complexity``.

    The complexity range is cut into ``n_bins`` equal bins; in each, the largest ``log_p`` among the
    functions drawn at least ``min_count`` times is the envelope's point (a frequency drawn fewer times
    is mostly sampling noise, and functions drawn once sit on the floor ``log(1/N)`` whatever their
    probability). A least-squares line through those points gives the slope; the intercept is then
    raised until the line lies on or above every point, so it is an upper bound on the data.

    Parameters
    ----------
    complexity, log_p, counts : array-like ``(n,)``
        Per function: its complexity (e.g. LZ, in bits), natural log of its frequency, its count.
    """
    c = np.asarray(complexity, dtype=np.float64)
    lp = np.asarray(log_p, dtype=np.float64)
    n = np.asarray(counts)
    if not (c.shape == lp.shape == n.shape) or c.ndim != 1:
        raise ValueError(f"complexity, log_p and counts must be 1-D of one length, got {c.shape}, {lp.shape}, "
                         f"{n.shape}")
    keep = n >= min_count
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 functions drawn >= min_count={min_count} times: no bound to fit")
    c, lp = c[keep], lp[keep]
    edges = np.linspace(c.min(), c.max(), n_bins + 1)
    which = np.clip(np.digitize(c, edges) - 1, 0, n_bins - 1)
    levels, maxima = [], []
    for b in np.unique(which):
        sel = which == b
        i = np.argmax(lp[sel])
        levels.append(c[sel][i])
        maxima.append(lp[sel][i])
    levels, maxima = np.array(levels), np.array(maxima)
    if levels.size < 2 or np.ptp(levels) == 0:
        return ComplexityBound(0.0, float(maxima.max()), levels, maxima, math.nan)
    slope, _ = np.polyfit(levels, maxima, 1)
    intercept = float(np.max(maxima - slope * levels))
    r = float(np.corrcoef(levels, maxima)[0, 1])
    return ComplexityBound(float(slope), intercept, levels, maxima, r)


def ones_distribution(n_ones, counts, k: int) -> tuple[np.ndarray, np.ndarray]:
    """P(T) of the number of ones T of a sampled function, and the uniform prior's binomial.

    Parameters
    ----------
    n_ones : array ``(n,)`` of int
        Ones in each distinct function.
    counts : array ``(n,)``
        Times each was drawn.
    k : int
        Bits per function.

    Returns
    -------
    p_t : ndarray ``(k + 1,)``
        Fraction of samples with T = 0..k ones.
    binomial : ndarray ``(k + 1,)``
        ``C(k, T) / 2^k``: P(T) if every function were equally likely.
    """
    t_of = np.asarray(n_ones, dtype=np.int64)
    w = np.asarray(counts, dtype=np.float64)
    if t_of.ndim != 1 or w.shape != t_of.shape:
        raise ValueError(f"n_ones and counts must be 1-D of one length, got {t_of.shape} and {w.shape}")
    if t_of.size and (t_of.min() < 0 or t_of.max() > k):
        raise ValueError(f"n_ones must lie in [0, k={k}]")
    p_t = np.bincount(t_of, weights=w, minlength=k + 1) / w.sum()
    t = np.arange(k + 1)
    log_binom = np.array([math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1) for i in t]) \
        - k * math.log(2)
    return p_t, np.exp(log_binom)


def spread(counts, n_samples: int) -> dict:
    """How concentrated the sampled prior is: shares, decades, entropy (plug-in, with the number of
    functions drawn once as a warning that it is a lower bound).

    Returns a dict: ``n_functions``, ``top_share`` (P of the most frequent function), ``top10_share``,
    ``decades`` (log10 of the ratio of the largest to the smallest sampled frequency: a lower bound on the
    prior's span), ``entropy_bits`` (plug-in entropy of the frequencies, a lower bound where many functions
    were drawn once), ``singletons``.
    """
    n = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    p = n / n_samples
    return {"n_functions": int(n.size), "top_share": float(p[0]), "top10_share": float(p[:10].sum()),
            "decades": float(np.log10(n[0] / n[-1])), "entropy_bits": float(-(p * np.log2(p)).sum()),
            "singletons": int((n == 1).sum())}


def rank_frequency(counts, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank (1 = most frequent) and frequency of each sampled function, in rank order."""
    n = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    return np.arange(1, n.size + 1), n / n_samples


def zipf_exponent(counts, n_samples: int, *, min_count: int = 10) -> float:
    """Slope of log P against log rank over the functions drawn >= ``min_count`` times (least squares;
    about -1 for Zipf's law)."""
    rank, p = rank_frequency(counts, n_samples)
    keep = p * n_samples >= min_count
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(rank[keep]), np.log(p[keep]), 1)[0])
