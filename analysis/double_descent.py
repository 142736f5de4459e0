"""Double descent: the per-point statistics of fixed-budget training runs across model sizes.

Pure functions over numpy arrays; results are frozen dataclasses. A *point* is one model size
(number of parameters ``p``) trained ``n`` times for a fixed budget; its test error is summarised by
the mean over runs with a Student-t 95% interval, and the curve's peak is located relative to the
interpolation threshold ``p = m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` values and its two-sided Student-t interval (``level``); ``lo = hi = mean`` for n = 1,
    nan for n = 0."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float


def mean_interval(values, *, level: float = 0.95) -> MeanInterval:
    """The mean of the finite entries of ``values`` (1-d) and its Student-t interval at ``level``.

    Non-finite entries (diverged runs) are left out and not counted in ``n``.
    """
    if not (isinstance(level, float) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-d, got shape {x.shape}")
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n == 1:
        return MeanInterval(mean, mean, mean, 1, level)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return MeanInterval(mean, mean - half, mean + half, n, level)


@dataclass(frozen=True)
class Peak:
    """Where a curve over model sizes peaks, against its two ends.

    Attributes
    ----------
    p_over_m : float
        Parameters at the peak divided by m (the interpolation threshold is 1).
    height : float
        The curve's value at the peak.
    small, large : float
        Its values at the smallest and the largest model.
    """

    p_over_m: float
    height: float
    small: float
    large: float


def find_peak(n_params, values, *, m: int) -> Peak:
    """The maximum of ``values`` over models of ``n_params`` parameters (1-d, same length, any order),
    with the values at the smallest and the largest model. Raises ``ValueError`` on empty or
    mismatched input; nan values are ignored for the maximum."""
    p = np.asarray(n_params, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or p.shape != v.shape or p.size == 0:
        raise ValueError(f"n_params and values must be 1-d of one non-zero length, got shapes {p.shape} and {v.shape}")
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be an int >= 1, got {m!r}")
    if not np.isfinite(v).any():
        return Peak(math.nan, math.nan, math.nan, math.nan)
    order = np.argsort(p, kind="stable")
    p, v = p[order], v[order]
    top = int(np.nanargmax(v))
    return Peak(float(p[top] / m), float(v[top]), float(v[0]), float(v[-1]))
