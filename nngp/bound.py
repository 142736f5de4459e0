"""The marginal-likelihood PAC-Bayes bound of Valle-Perez, Camargo & Louis (ICLR 2019)."""

from __future__ import annotations

import math
import numbers

from sampler.checks import check_float, check_int


def pac_bayes_bound(log_ps: float, m: int, *, delta: float = 0.05) -> float:
    """Bound on the expected generalisation error of the Bayesian posterior that fits S.

    With probability at least ``1 - delta`` over training sets S of size m (Valle-Perez,
    Camargo & Louis 2019, "Deep learning generalizes because the parameter-function map is
    biased towards simple functions", ICLR, Corollary 1 / eq. (1), from McAllester's (1999)
    PAC-Bayes theorem applied to the prior restricted to the functions that fit S)::

        -ln(1 - eps) <= (ln(1 / P(S)) + ln(2 m / delta)) / (m - 1)

    so this returns the error bound ``eps = 1 - exp(-(-log_ps + ln(2 m / delta)) / (m - 1))`` in
    [0, 1] (a fraction of E misclassified, in expectation over the posterior).

    Parameters
    ----------
    log_ps : float
        Natural log of the marginal likelihood P(S) under the 0-1 likelihood (<= 0);
        ``-inf`` (no function fits S) gives the trivial bound 1.
    m : int
        Training set size (>= 2).
    delta : float
        Confidence parameter in (0, 1).
    """
    m = check_int("m", m, minimum=2)
    log_ps = _check_log_ps_delta(log_ps, delta)
    if log_ps == -math.inf:
        return 1.0
    rhs = (-min(log_ps, 0.0) + math.log(2.0 * m / delta)) / (m - 1)
    return float(-math.expm1(-rhs))


#: The reference code's confidence parameter.
REFERENCE_DELTA = 2.0 ** -10


def pac_bayes_bound_reference(log_ps: float, m: int, *, delta: float = REFERENCE_DELTA) -> float:
    """The same bound in the form the paper's reference code reports (Mingard et al. 2021's scripts)::

        eps = 1 - exp(-(ln(1 / P(S)) + 2 ln m + 1 - ln delta) / m),    delta = 2^-10

    Parameters and checks as :func:`pac_bayes_bound` (``m >= 1`` here); ``-inf`` gives 1.
    """
    m = check_int("m", m, minimum=1)
    log_ps = _check_log_ps_delta(log_ps, delta)
    if log_ps == -math.inf:
        return 1.0
    rhs = (-min(log_ps, 0.0) + 2.0 * math.log(m) + 1.0 - math.log(delta)) / m
    return float(-math.expm1(-rhs))


def _check_log_ps_delta(log_ps, delta) -> float:
    delta = check_float("delta", delta, minimum=0.0, maximum=1.0, strict_minimum=True)
    if delta >= 1.0:
        raise ValueError(f"delta must be < 1, got delta={delta}")
    if isinstance(log_ps, bool) or not isinstance(log_ps, numbers.Real):
        raise TypeError(f"log_ps must be a real number (natural log of P(S)), got {type(log_ps).__name__}")
    log_ps = float(log_ps)
    if math.isnan(log_ps) or log_ps == math.inf:
        raise ValueError(f"log_ps must be a log probability (<= 0 or -inf), got log_ps={log_ps}")
    if log_ps > 1e-9:
        raise ValueError(f"log_ps must be <= 0 (a log probability), got log_ps={log_ps}")
    return log_ps
