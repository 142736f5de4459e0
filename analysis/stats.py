"""Statistics comparing P_SGD with P_B: correlations of the logs, distances between the
distributions, cumulative mass. Pure functions over numpy arrays; results are frozen dataclasses.

Logs are natural (docs/DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps
from scipy.special import logsumexp

from .complexity import _check_int

if TYPE_CHECKING:  # pragma: no cover
    from sampler.functions import FunctionCounts

# Bootstrap resamples are processed in blocks of at most this many (resample, point) entries.
_BLOCK_ELEMENTS = 4_000_000


def _as_1d(name: str, x) -> np.ndarray:
    if isinstance(x, (str, bytes, dict, set)) or x is None:
        raise TypeError(f"{name} must be a 1-d array of real numbers, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array, got shape {arr.shape}")
    return arr


def _pair(name_a: str, a, name_b: str, b) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-d float arrays of the same length (:func:`_as_1d` each)."""
    a, b = _as_1d(name_a, a), _as_1d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {a.size} and {b.size}")
    return a, b


def _cumulative(p: np.ndarray, log_p_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sums of ``p`` ranked by ``log_p_b`` (descending, ties in input order) and by ``p``."""
    return np.cumsum(p[np.argsort(-log_p_b, kind="stable")]), np.cumsum(np.sort(p)[::-1])


@dataclass(frozen=True)
class Correlation:
    """Correlation of log P_SGD (y) with log P_B (x) over n functions, natural logs.

    Attributes
    ----------
    pearson, spearman : float
        Pearson r; Spearman rho (ties get average ranks).
    pearson_pvalue, spearman_pvalue : float
        Their two-sided p-values (scipy.stats.pearsonr, scipy.stats.spearmanr).
    slope, intercept : float
        Least-squares fit ``log P_SGD = slope * log P_B + intercept`` (intercept in nats); slope 1
        and intercept 0 is the diagonal P_SGD = P_B.
    pearson_ci, spearman_ci, slope_ci : (float, float)
        Percentile bootstrap intervals at level ``ci`` (e.g. 0.95) from ``n_boot`` paired
        resamples of the n functions; ``(nan, nan)`` when ``n_boot == 0`` or no resample was usable.
    ci, n_boot : float, int
        The level and the resamples asked for.
    n_boot_used : int
        Resamples in which both variables varied (the others have no defined correlation and are
        left out of the intervals; ``notes`` says how many).
    notes : tuple of str
        Why any field is nan, or what was left out. Empty when everything is defined.
    """

    n: int
    pearson: float
    spearman: float
    slope: float
    intercept: float
    pearson_ci: tuple[float, float]
    spearman_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    pearson_pvalue: float
    spearman_pvalue: float
    ci: float
    n_boot: int
    n_boot_used: int
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values (tuples as lists), ready for JSON; nan stays nan."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _rowwise_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and least-squares slope of y on x for each row pair of ``(b, n)`` arrays; r is nan
    where either row is constant, the slope where x is."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (xc * xc).sum(axis=1), (yc * yc).sum(axis=1), (xc * yc).sum(axis=1)
    r, slope = np.full(x.shape[0], np.nan), np.full(x.shape[0], np.nan)
    ok = (sxx > 0) & (syy > 0)
    r[ok] = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
    slope[sxx > 0] = sxy[sxx > 0] / sxx[sxx > 0]
    return np.clip(r, -1.0, 1.0), slope


def _bootstrap_stats(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Pearson, Spearman and slope of ``y`` on ``x`` for each resample ``idx[b]`` of the points:
    ``(b, 3)``, nan where a resample leaves a variable constant."""
    xb, yb = x[idx], y[idx]
    pearson, slope = _rowwise_fit(xb, yb)
    spearman = _rowwise_fit(sps.rankdata(xb, axis=1), sps.rankdata(yb, axis=1))[0]
    return np.stack([pearson, spearman, slope], axis=1)


def correlate(log_p_sgd, log_p_b, *, n_boot: int = 1000, seed: int | np.random.Generator = 0,
              ci: float = 0.95) -> Correlation:
    """Pearson and Spearman correlation of log P_SGD with log P_B, the log-log fit and bootstrap
    confidence intervals.

    Parameters
    ----------
    log_p_sgd, log_p_b : (n,) arrays
        Natural logs of P_SGD(f|S) (y axis) and of P_B(f|S) (x axis) of the same n >= 3 functions,
        finite: filter out functions with an unknown or zero probability first.
    n_boot : int
        Paired bootstrap resamples of the n functions (0: no intervals).

    Notes
    -----
    A constant input (every function with the same log probability) has no correlation: the
    fields that need variation are nan and ``notes`` says why, rather than raising, so that a
    report can still be written.
    """
    y, x = _pair("log_p_sgd", log_p_sgd, "log_p_b", log_p_b)
    for name, arr in (("log_p_sgd", y), ("log_p_b", x)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} must be finite, got {int(bad.sum())} non-finite values "
                             f"(first at index {int(np.flatnonzero(bad)[0])}: {arr[bad][0]})")
    n = int(x.size)
    if n < 3:
        raise ValueError(f"correlate needs at least 3 functions, got n={n}")
    n_boot = _check_int("n_boot", n_boot, minimum=0)
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be a confidence level in (0, 1), got ci={ci!r}")
    ci = float(ci)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(_check_int("seed", seed, minimum=0))

    notes: list[str] = []
    nan = math.nan
    x_var, y_var = bool(np.ptp(x) > 0), bool(np.ptp(y) > 0)
    if x_var and y_var:
        pr, sr = sps.pearsonr(x, y), sps.spearmanr(x, y)
        pearson, pearson_p = float(pr.statistic), float(pr.pvalue)
        spearman, spearman_p = float(sr.statistic), float(sr.pvalue)
    else:
        pearson = pearson_p = spearman = spearman_p = nan
        which = " and ".join(nm for nm, v in (("log_p_b", x_var), ("log_p_sgd", y_var)) if not v)
        notes.append(f"{which} is constant over the {n} functions: correlations are undefined (nan)")
    if x_var:
        lr = sps.linregress(x, y)
        slope, intercept = float(lr.slope), float(lr.intercept)
    else:
        slope = intercept = nan
        notes.append("log_p_b is constant: the log-log slope is undefined (nan)")

    cis, n_used = [(nan, nan)] * 3, 0
    if n_boot == 0:
        notes.append("n_boot=0: no bootstrap confidence intervals (nan)")
    else:
        block = max(1, _BLOCK_ELEMENTS // n)
        boot = np.concatenate([_bootstrap_stats(x, y, rng.integers(0, n, size=(min(block, n_boot - start), n)))
                               for start in range(0, n_boot, block)])
        q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
        cis = []
        for j, name in enumerate(("pearson", "spearman", "slope")):
            vals = boot[:, j][np.isfinite(boot[:, j])]
            if j == 0:
                n_used = int(vals.size)
            cis.append(tuple(float(v) for v in np.percentile(vals, q)) if vals.size else (nan, nan))
            if vals.size < n_boot:
                notes.append(f"{name}: {n_boot - vals.size} of {n_boot} bootstrap resamples had a constant "
                             f"variable and were left out of the interval")
    return Correlation(n=n, pearson=pearson, spearman=spearman, slope=slope, intercept=intercept,
                       pearson_ci=cis[0], spearman_ci=cis[1], slope_ci=cis[2], pearson_pvalue=pearson_p,
                       spearman_pvalue=spearman_p, ci=ci, n_boot=n_boot, n_boot_used=n_used, notes=tuple(notes))


@dataclass(frozen=True)
class Distances:
    """How close P_SGD is to P_B on their shared support (the functions positive under both), each
    **renormalised on it**: every distance is between the renormalised distributions.

    Attributes
    ----------
    n_shared, n_sgd, n_b : int
        Functions in the shared support; with positive probability in each input.
    mass_sgd, mass_b : float
        Sum of each input over the shared support, as given (not renormalised): e.g. the fraction
        of fitted runs whose function has a P_B, and the total P_B of the functions SGD found.
    kl, kl_reverse : float
        KL(P_SGD || P_B) and KL(P_B || P_SGD), in nats.
    tv : float
        Total variation, ``0.5 * sum |P_SGD - P_B|``, in [0, 1].
    js : float
        Jensen-Shannon divergence in nats, in [0, log 2].
    top_share : dict int -> float
        For each N: share of the (renormalised) P_SGD mass carried by the N functions that P_B
        ranks highest (ties in P_B keep input order). N larger than ``n_shared`` uses all.
    top_share_by_sgd : dict int -> float
        The same share for the N functions P_SGD itself ranks highest: the most any N functions
        can carry, to read ``top_share`` against.
    """

    n_shared: int
    n_sgd: int
    n_b: int
    mass_sgd: float
    mass_b: float
    kl: float
    kl_reverse: float
    tv: float
    js: float
    top_share: Mapping[int, float] = field(default_factory=dict)
    top_share_by_sgd: Mapping[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Flat plain-Python dict: scalar fields, then ``top{N}_share`` and ``top{N}_share_by_sgd``."""
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if not isinstance(v, Mapping)}
        out.update({f"top{k}_share": v for k, v in self.top_share.items()})
        out.update({f"top{k}_share_by_sgd": v for k, v in self.top_share_by_sgd.items()})
        return out


def _to_log_arrays(p_sgd, p_b, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Align the two inputs and return their natural logs (-inf where the probability is 0)."""
    if isinstance(p_sgd, Mapping) != isinstance(p_b, Mapping):
        raise TypeError(f"p_sgd and p_b must both be mappings (function -> p) or both arrays, got "
                        f"{type(p_sgd).__name__} and {type(p_b).__name__}")
    if isinstance(p_sgd, Mapping):
        keys = list(p_sgd) + [k for k in p_b if k not in p_sgd]
        fill = -math.inf if log else 0.0
        a = np.array([p_sgd.get(k, fill) for k in keys], dtype=float)
        b = np.array([p_b.get(k, fill) for k in keys], dtype=float)
    else:
        a, b = _pair("p_sgd", p_sgd, "p_b", p_b)
    out = []
    for name, arr in (("p_sgd", a), ("p_b", b)):
        if log and (np.isnan(arr).any() or (arr == np.inf).any()):
            raise ValueError(f"{name} (natural logs, log=True) must be finite or -inf, got NaN or +inf")
        if not log and (not np.isfinite(arr).all() or (arr < 0).any()):
            raise ValueError(f"{name} must hold finite probabilities >= 0, got "
                             f"{arr[~np.isfinite(arr) | (arr < 0)][:3].tolist()} (pass log=True for logs)")
        with np.errstate(divide="ignore"):
            out.append(arr if log else np.log(arr))
    return out[0], out[1]


def compare_distributions(p_sgd, p_b, *, log: bool = False, top_n: Sequence[int] = (1, 10, 100)) -> Distances:
    """KL, total variation and Jensen-Shannon between P_SGD and P_B on their shared support, and
    the share of P_SGD mass carried by the functions P_B ranks highest.

    Parameters
    ----------
    p_sgd, p_b : mapping str -> float, or (n,) arrays
        Probabilities of functions: either two mappings (function -> p; a function missing from
        one has probability 0 there) or two aligned arrays (entry i is the same function).
        They need not sum to 1.
    log : bool
        The inputs are natural logs (``-inf`` for probability 0). Prefer this for P_B: tiny
        probabilities such as ``exp(-800)`` underflow to 0 and would leave the support.
    top_n : sequence of int
        The N for ``top_share``, each >= 1.

    Raises
    ------
    ValueError
        On NaN, negative or infinite probabilities (or NaN / +inf logs), misaligned arrays, or
        when no function has positive probability under both.
    """
    if not isinstance(log, bool):
        raise TypeError(f"log must be a bool, got {log!r}")
    tops = [_check_int("top_n entry", t, minimum=1) for t in top_n]
    la, lb = _to_log_arrays(p_sgd, p_b, log)
    pos_a, pos_b = np.isfinite(la), np.isfinite(lb)
    shared = pos_a & pos_b
    n_shared = int(shared.sum())
    if n_shared == 0:
        raise ValueError(f"p_sgd and p_b share no function with positive probability (p_sgd has "
                         f"{int(pos_a.sum())}, p_b has {int(pos_b.sum())}): the distances are undefined")
    la, lb = la[shared], lb[shared]
    mass_a, mass_b = float(np.exp(logsumexp(la))), float(np.exp(logsumexp(lb)))
    # Renormalise in log space so that tiny probabilities keep their ratios.
    la, lb = la - logsumexp(la), lb - logsumexp(lb)
    pa, pb = np.exp(la), np.exp(lb)
    kl, kl_rev = float(np.sum(pa * (la - lb))), float(np.sum(pb * (lb - la)))
    tv = float(0.5 * np.abs(pa - pb).sum())
    lm = np.logaddexp(la, lb) - math.log(2.0)
    js = float(0.5 * np.sum(pa * (la - lm)) + 0.5 * np.sum(pb * (lb - lm)))
    cum_by_b, cum_by_a = _cumulative(pa, lb)
    top = {t: float(cum_by_b[min(t, n_shared) - 1]) for t in tops}
    top_a = {t: float(cum_by_a[min(t, n_shared) - 1]) for t in tops}
    return Distances(n_shared=n_shared, n_sgd=int(pos_a.sum()), n_b=int(pos_b.sum()), mass_sgd=mass_a,
                     mass_b=mass_b, kl=max(kl, 0.0), kl_reverse=max(kl_rev, 0.0), tv=min(tv, 1.0),
                     js=min(max(js, 0.0), math.log(2.0)), top_share=top, top_share_by_sgd=top_a)


@dataclass(frozen=True)
class CumulativeMass:
    """Cumulative P_SGD mass of functions ranked by P_B and by P_SGD (:func:`cumulative_mass`).

    Attributes
    ----------
    rank : (n,) int array
        1..n.
    by_pb : (n,) float array
        ``by_pb[i]`` = P_SGD mass of the ``i+1`` functions with the highest P_B (ties keep input
        order).
    by_sgd : (n,) float array
        The same for the ``i+1`` functions with the highest P_SGD (the upper envelope).
    normalised : bool
        Whether P_SGD was renormalised to sum to 1 over the n functions (else the curves end at
        the mass the n functions carry).
    """

    rank: np.ndarray
    by_pb: np.ndarray
    by_sgd: np.ndarray
    normalised: bool


def cumulative_mass(log_p_sgd, log_p_b, *, normalise: bool = False) -> CumulativeMass:
    """Cumulative P_SGD mass of the functions ranked by P_B, and ranked by P_SGD.

    Parameters
    ----------
    log_p_sgd : (n,) array
        Natural log of P_SGD for each function; -inf allowed (contributes 0).
    log_p_b : (n,) array
        Natural log of P_B for the same functions (only their order matters); -inf ranks last.
    """
    ls, lb = _pair("log_p_sgd", log_p_sgd, "log_p_b", log_p_b)
    if ls.size == 0:
        raise ValueError("cumulative_mass needs at least one function, got none")
    for name, arr in (("log_p_sgd", ls), ("log_p_b", lb)):
        if np.isnan(arr).any() or (arr == np.inf).any():
            raise ValueError(f"{name} must be finite or -inf, got NaN or +inf")
    if normalise:
        if not np.isfinite(ls).any():
            raise ValueError("cannot normalise: every log_p_sgd is -inf")
        ls = ls - logsumexp(ls)
    by_pb, by_sgd = _cumulative(np.exp(ls), lb)
    return CumulativeMass(rank=np.arange(1, ls.size + 1), by_pb=by_pb, by_sgd=by_sgd, normalised=bool(normalise))


def select_functions(counts: "FunctionCounts", min_count: int = 1) -> list[str]:
    """The functions found at least ``min_count`` (>= 1) times, most frequent first (ties by
    bitstring), from a ``sampler.FunctionCounts`` (anything with a ``counts`` mapping str -> int).
    """
    min_count = _check_int("min_count", min_count, minimum=1)
    mapping = getattr(counts, "counts", None)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"counts must be a sampler.FunctionCounts, got {type(counts).__name__}")
    items = sorted(((f, c) for f, c in mapping.items() if c >= min_count), key=lambda kv: (-kv[1], kv[0]))
    return [f for f, _ in items]


@dataclass(frozen=True)
class FitTest:
    """A chi-square test of counts over functions.

    Attributes
    ----------
    statistic, dof : float, int
        Pearson's chi-square and its degrees of freedom (cells - 1).
    pvalue : float
        Probability of a statistic at least this large under the null (nan when fewer than 2
        cells remain).
    n_cells : int
        Cells after pooling: functions whose expected count is below ``min_expected`` are
        pooled with the functions the reference does not cover into one "other" cell.
    """

    statistic: float
    dof: int
    pvalue: float
    n_cells: int


def _chi2(observed: np.ndarray, expected: np.ndarray, min_expected: float) -> FitTest:
    """Pearson's chi-square after pooling every cell expected below ``min_expected`` into one;
    a pooled cell still below it joins the smallest other cell."""
    big = expected >= min_expected
    obs, exp = observed[big].astype(float), expected[big].astype(float)
    obs_o, exp_o = float(observed[~big].sum()), float(expected[~big].sum())
    if exp_o >= min_expected or len(exp) == 0 or (exp_o == 0 and obs_o > 0):
        obs, exp = np.r_[obs, obs_o], np.r_[exp, exp_o]
    elif exp_o > 0 or obs_o > 0:
        j = int(np.argmin(exp))
        obs[j] += obs_o
        exp[j] += exp_o
    if len(exp) < 2:
        return FitTest(math.nan, 0, math.nan, int(len(exp)))
    with np.errstate(divide="ignore", invalid="ignore"):  # an impossible observed cell: statistic inf, p = 0
        terms = np.where(exp > 0, (obs - exp) ** 2 / exp, np.where(obs > 0, np.inf, 0.0))
    stat = float(terms.sum())
    dof = len(exp) - 1
    return FitTest(stat, dof, float(sps.chi2.sf(stat, dof)), int(len(exp)))


def goodness_of_fit(counts, log_p, *, n: int | None = None, min_expected: float = 5.0) -> FitTest:
    """Are sampled counts consistent with model probabilities? Pearson's chi-square.

    Parameters
    ----------
    counts : (F,) array of int
        How often each of F functions was sampled.
    log_p : (F,) array
        Natural log of the model's probability of each function (need not sum to 1 over the F:
        the rest of the model's mass, and of the samples, form one "other" cell).
    n : int, optional
        Total samples (default ``sum(counts)``): samples of functions outside the F go to "other".
    min_expected : float
        Functions with fewer expected samples are pooled into "other" (the chi-square
        approximation needs about 5 per cell).
    """
    c, lp = _pair("counts", counts, "log_p", log_p)
    if (c < 0).any() or not np.all(c == np.round(c)):
        raise ValueError("counts must be non-negative integers")
    total = float(c.sum()) if n is None else float(_check_int("n", n, minimum=0))
    if total < c.sum():
        raise ValueError(f"n must be >= sum(counts) = {int(c.sum())}, got n={int(total)}")
    p = np.exp(np.where(np.isfinite(lp), lp, -np.inf))
    if p.sum() > 1 + 1e-9:
        raise ValueError(f"the model probabilities sum to {p.sum():.6g} > 1")
    observed = np.r_[c, total - c.sum()]
    expected = np.r_[total * p, total * max(0.0, 1.0 - p.sum())]
    return _chi2(observed, expected, min_expected)


def homogeneity(counts_a, counts_b, *, min_expected: float = 5.0) -> FitTest:
    """Were two samples of functions drawn from the same distribution? Chi-square test of
    homogeneity of a 2 x F table (``counts_a``, ``counts_b`` over the same F functions; pass 0
    where one sample never found a function). Cells are pooled by the pooled counts only, so the
    pooling does not depend on which sample holds what."""
    a, b = _pair("counts_a", counts_a, "counts_b", counts_b)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return FitTest(math.nan, 0, math.nan, 0)
    pooled, share = a + b, na / (na + nb)
    keep = np.minimum(pooled * share, pooled * (1 - share)) >= min_expected
    table = np.array([np.r_[x[keep], x[~keep].sum()] for x in (a, b)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return FitTest(math.nan, 0, math.nan, int(table.shape[1]))
    res = sps.chi2_contingency(table, correction=False)
    return FitTest(float(res.statistic), int(res.dof), float(res.pvalue), int(table.shape[1]))


@dataclass(frozen=True)
class ZScores:
    """An estimate against a reference with standard errors, function by function.

    Attributes
    ----------
    z : np.ndarray of float64, shape (n,)
        ``(log_p - log_p_ref) / se_ref``.
    median_abs_z, median_se : float or None
        Median of ``|z|`` and of ``se_ref`` (None when n = 0).
    """

    z: np.ndarray
    median_abs_z: float | None
    median_se: float | None


def z_scores(log_p, log_p_ref, se_ref) -> ZScores:
    """Standardised differences of ``log_p`` from ``log_p_ref`` in units of ``se_ref`` (three
    arrays of shape (n,), natural logs)."""
    lp, ref, se = (np.asarray(v, dtype=float).reshape(-1) for v in (log_p, log_p_ref, se_ref))
    if not len(lp) == len(ref) == len(se):
        raise ValueError(f"log_p, log_p_ref and se_ref must have one length, got {len(lp)}, {len(ref)}, {len(se)}")
    z = (lp - ref) / se if len(lp) else np.zeros(0)
    return ZScores(z, float(np.median(np.abs(z))) if len(z) else None, float(np.median(se)) if len(se) else None)
