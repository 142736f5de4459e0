"""Orthant probabilities with exact answers: n <= 2 variables, and a rank-one covariance.

``P[1{g_i > 0} = y_i for all i]``, ``g ~ N(mean, K)``, in natural log, where it needs no
approximation (issue 26: EP is off by 0.08-0.12 nats on two strongly correlated variables, does
not converge on a rank-one K, and fails on extreme means, in exactly these cases):

- one variable: ``log Phi(s m / sigma)`` (``s = 2y - 1``), by ``log_ndtr`` (finite for any mean);
- two variables, zero mean: Sheppard's formula ``P = 1/4 + arcsin(s1 s2 rho) / (2 pi)``;
- two variables with a mean: ``P = int_{a1}^inf phi(t) Phi((rho t - a2) / sqrt(1 - rho^2)) dt``
  (``a_i = -s_i m_i / sigma_i``), a one-dimensional integral of a log-concave function, taken in
  log space around its mode (adaptive quadrature; relative error ~1e-10), so that a mean of 1e4
  standard deviations against its label gives its (finite, very negative) log probability;
- a rank-one ``K = v v^T`` (any n): ``g = mean + v z`` with ``z ~ N(0, 1)``, so the orthant is an
  interval of z: ``log(Phi(hi) - Phi(lo))``, -inf when the interval is empty.

Variables with zero variance are deterministic (``g_i = mean_i``): they hold or not.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import integrate, optimize, special

__all__ = ["exact_log_orthant", "log_interval", "RANK_ONE_TOL"]

#: ``K`` counts as rank one when ``|K_ij - v_i v_j| <= RANK_ONE_TOL sqrt(K_ii K_jj)`` for all i, j.
RANK_ONE_TOL = 1e-12
_LOG_QUARTER = math.log(0.25)


def log_interval(lo: float, hi: float) -> float:
    """``log(Phi(hi) - Phi(lo))`` for ``lo <= hi`` (-inf when ``lo >= hi``), stable in both tails."""
    if not lo < hi:
        return -math.inf
    if lo > 0:  # upper tail: Phi(-lo) - Phi(-hi)
        lo, hi = -hi, -lo
    a, b = special.log_ndtr(hi), special.log_ndtr(lo)
    return float(a + np.log1p(-np.exp(b - a))) if b < a else -math.inf


def _deterministic(mean_i: float, y_i: float) -> bool:
    """Whether a zero-variance variable ``g_i = mean_i`` has the label ``y_i`` (1 means g > 0)."""
    return (mean_i > 0) == (y_i == 1)


def _two(c: np.ndarray, m: np.ndarray) -> float:
    """``log P[h_1 > 0, h_2 > 0]``, ``h ~ N(m, c)``, both variances > 0."""
    sd = np.sqrt(np.diag(c))
    rho = float(np.clip(c[0, 1] / (sd[0] * sd[1]), -1.0, 1.0))
    a1, a2 = float(-m[0] / sd[0]), float(-m[1] / sd[1])  # u_i = (h_i - m_i) / sd_i > a_i
    if a1 == 0 and a2 == 0:
        return float(_LOG_QUARTER + math.log1p(2.0 * math.asin(rho) / math.pi))  # Sheppard
    if 1.0 - abs(rho) <= 1e-15:  # u_2 = +-u_1: an interval of u_1
        return log_interval(max(a1, a2), math.inf) if rho > 0 else log_interval(a1, -a2)
    r = math.sqrt((1.0 - rho) * (1.0 + rho))

    def g(t):  # log of the integrand phi(t) Phi((rho t - a2) / r), concave in t
        return -0.5 * t * t - 0.5 * math.log(2.0 * math.pi) + float(special.log_ndtr((rho * t - a2) / r))

    # the mode on [a1, inf): the integrand is log-concave, so its mass lies within a few units of it
    res = optimize.minimize_scalar(lambda t: -g(t), bounds=(a1, max(a1, 0.0) + 1e4 + abs(a2) / r), method="bounded",
                                   options={"xatol": 1e-10})
    t0 = float(res.x)
    top = g(t0)
    lo, hi = max(a1, t0 - 40.0), t0 + 40.0
    # break points: the mode and where Phi's argument crosses 0 (the integrand's bend, sharp as rho -> +-1),
    # each with neighbours at geometric distances, so that a peak of any width (1e-8 to 10) is resolved
    centres = [t0] + ([a2 / rho] if rho != 0 else [])
    points = sorted({p for c in centres for k in range(-8, 2) for p in (c - 10.0 ** k, c, c + 10.0 ** k)
                     if lo < p < hi})
    with warnings.catch_warnings():  # far in the tails quad may flag roundoff at 1e-10 relative on an integral
        warnings.simplefilter("ignore", integrate.IntegrationWarning)  # scaled to a peak of 1: harmless in the log
        val, _ = integrate.quad(lambda t: math.exp(g(t) - top), lo, hi, points=points or None, limit=400,
                                epsabs=0.0, epsrel=1e-10)
    return float(top + math.log(val)) if val > 0 else -math.inf


def exact_log_orthant(K: torch.Tensor, y: torch.Tensor, mean: torch.Tensor | None = None) -> float | None:
    """The exact ``log P[1{g_i > 0} = y_i for all i]`` for ``g ~ N(mean, K)`` where one exists
    (``n <= 2``, or ``K`` of rank one), else None.

    ``K``: (n, n) float64 tensor, symmetric positive semi-definite (as :func:`nngp.orthant.check_problem`
    returns it); ``y``: (n,) of 0/1; ``mean``: (n,) or None. Returns a float (``-inf`` for an
    impossible pattern) or None.
    """
    n = K.shape[0]
    Kn = K.detach().cpu().numpy().astype(np.float64)
    yn = y.detach().cpu().numpy()
    m = np.zeros(n) if mean is None else mean.detach().cpu().numpy().astype(np.float64)
    s = 2.0 * yn - 1.0
    d = np.diag(Kn)
    var = d > 1e-15 * max(float(d.max()), 1e-300)
    if not all(_deterministic(m[i], yn[i]) for i in np.nonzero(~var)[0]):
        return -math.inf
    keep = np.nonzero(var)[0]
    if keep.size == 0:
        return 0.0
    c, h = Kn[np.ix_(keep, keep)] * np.outer(s[keep], s[keep]), s[keep] * m[keep]  # h ~ N(h, c), all h > 0
    if keep.size == 1:
        return float(special.log_ndtr(h[0] / math.sqrt(c[0, 0])))
    if keep.size == 2:
        return _two(c, h)
    sd = np.sqrt(np.diag(c))
    rho0 = c[0] / (sd[0] * sd)  # rank one exactly when every correlation is +-1 (every 2 x 2 minor is 0)
    if np.any(np.abs(c - np.outer(rho0 * sd, rho0 * sd)) > RANK_ONE_TOL * np.outer(sd, sd)):
        return None
    v = sd * np.sign(rho0)  # h = m + v z, z ~ N(0, 1): every h_i > 0 is a half-line of z
    lo, hi = -math.inf, math.inf
    for vi, hi_mean in zip(v, h):
        if vi > 0:
            lo = max(lo, -hi_mean / vi)
        elif vi < 0:
            hi = min(hi, -hi_mean / vi)
        elif hi_mean <= 0:  # no variance along z (numerically) and the wrong sign
            return -math.inf
    return log_interval(lo, hi)
