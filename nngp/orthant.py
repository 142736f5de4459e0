"""Orthant probabilities ``P[1{g_i > 0} = y_i for all i]``, ``g ~ N(mean, K)``, in log space.

Methods
-------
``ep``
    Expectation Propagation with Heaviside sites (:mod:`nngp.ep`): deterministic, no error bar,
    scales to n = 10^4 (one Cholesky per iteration). Reports convergence.
``genz``
    ``scipy.stats.multivariate_normal.cdf`` (Genz's randomised quasi-Monte Carlo). An oracle for
    small n only (limit :data:`GENZ_MAX_DIM`): no log space (it underflows to 0 for tiny
    probabilities), cost grows fast with n. scipy does not return its error estimate; pass
    ``repeats=r`` (> 1) to get a standard error from r independent randomisations.
``tilting``
    Minimax exponential tilting (Botev 2017, J. R. Stat. Soc. B 79:125): sequential sampling of
    the whitened variables from tilted truncated normals, the tilt chosen by solving Botev's
    saddle-point equations (started from the EP posterior mean). Unbiased for P with an honest
    Monte Carlo standard error (delta method on the log), and it stays accurate to hundreds of
    dimensions. Also returns Botev's deterministic upper bound ``psi*`` on log P.

Whatever the method, a problem with an exact answer gets it (:mod:`nngp.orthant_exact`: n <= 2
variables, by Sheppard's formula or a one-dimensional integral; a rank-one K, by an interval of
one Gaussian), reported as ``method="exact"`` with ``stderr = 0``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, special, stats

from sampler.checks import check_choice, check_float, check_int, check_real_array
from sampler.seeding import derive_seed

from .ep import ep_orthant
from .orthant_exact import exact_log_orthant

METHODS = ("ep", "genz", "tilting")
GENZ_MAX_DIM = 100
#: A constraint violated by its mean by more than this many standard deviations is reduced exactly
#: (:func:`_reduce_far_violation`) instead of being handed to EP, tilting or Genz.
Z_FAR = 40.0
#: Gauss-Laguerre nodes of that reduction's expectation over the violated variable's tail.
N_LAGUERRE = 16
PSD_CHECK_MAX_DIM = 1000
_OPTIONS = {"ep": {"damping", "max_iter", "tol", "updates", "jitter"}, "genz": {"maxpts", "repeats"},
            "tilting": {"n_samples", "solve", "ep_options"}}


@dataclass(frozen=True)
class OrthantResult:
    """A log orthant probability with its diagnostics.

    Attributes
    ----------
    log_prob : float
        Natural log of ``P[1{g_i > 0} = y_i for all i]``.
    stderr : float
        Standard error of ``log_prob`` (Monte Carlo methods), ``nan`` where the method has none.
    converged : bool
        EP: converged to ``tol``; tilting: the saddle point was found (else the EP tilt was used,
        still unbiased); genz: True.
    n_iter : int
        EP iterations / saddle-point solver evaluations / 0.
    max_change : float
        EP: last iteration's largest change of a posterior marginal; tilting: norm of the
        saddle-point residual; genz: nan.
    n_samples : int
        Monte Carlo samples (tilting, genz: points per repeat), 0 for EP.
    jitter : float
        Added to K's diagonal.
    upper_bound : float
        Tilting only: Botev's deterministic upper bound on ``log_prob`` (``nan`` otherwise).
    """

    log_prob: float
    stderr: float
    converged: bool
    n_iter: int
    method: str
    max_change: float = math.nan
    n_samples: int = 0
    jitter: float = 0.0
    upper_bound: float = math.nan


def check_problem(K, y, mean=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate ``K`` (symmetric PSD, finite, (n, n)), ``y`` (0/1 of length n) and ``mean``.

    Returns float64 tensors ``(K, y, mean)``. Positive semi-definiteness is checked with an
    eigen-decomposition up to n = ``PSD_CHECK_MAX_DIM``; above, only its necessary conditions
    (non-negative diagonal, |K_ij| <= sqrt(K_ii K_jj)) are checked and EP reports a failed
    Cholesky.
    """
    if not isinstance(K, (torch.Tensor, np.ndarray)):
        raise TypeError(f"K must be a torch.Tensor or numpy array, got {type(K).__name__}")
    K = torch.from_numpy(check_real_array("K", K, allow_empty=True).astype(np.float64))
    if K.dim() != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K must be a non-empty square (n, n) matrix, got shape {tuple(K.shape)}")
    n = K.shape[0]
    scale = float(K.abs().max())
    if scale < 1e-300:
        raise ValueError(f"K's largest entry is {scale:.3g}: the covariance is zero or underflowed (float64's "
                         f"smallest normal number is 2.2e-308); rescale K (the orthant probability of a zero-mean "
                         f"Gaussian does not depend on its scale)")
    if mean is not None:
        mean = torch.as_tensor(mean, dtype=torch.float64) / math.sqrt(scale)
    # P[sign(g) = y] is unchanged when g is scaled by c > 0: work with K / max|K| (and mean / sqrt of it),
    # so tiny or huge kernels neither underflow nor overflow in the checks below (tolerances relative to 1)
    K = K / scale
    if float((K - K.T).abs().max()) > 1e-8:
        raise ValueError(f"K must be symmetric, max |K - K^T| = {float((K - K.T).abs().max()):.3g}")
    d = torch.diagonal(K)
    if bool((d < 0).any()):
        raise ValueError(f"K must be positive semi-definite, but its diagonal has negative entries "
                         f"(min {float(d.min()):.3g})")
    bound = torch.sqrt(d[:, None] * d[None, :])
    if bool((K.abs() > bound * (1 + 1e-8) + 1e-12).any()):
        raise ValueError("K must be positive semi-definite, but some |K_ij| > sqrt(K_ii K_jj)")
    if n <= PSD_CHECK_MAX_DIM:
        low = float(torch.linalg.eigvalsh(K)[0])
        if low < -1e-8:
            raise ValueError(f"K must be positive semi-definite, its smallest eigenvalue is {low:.3g} "
                             f"(largest entry 1)")
    if isinstance(y, (list, tuple, np.ndarray)):
        y = torch.as_tensor(y)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != n:
        got = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
        raise ValueError(f"y must be a 1-d array of n={n} labels in {{0, 1}}, got {got}")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"y must hold only 0 and 1 (1 means g > 0), got values {sorted(set(y.tolist()))[:5]}")
    y = y.to(torch.float64)
    if mean is not None and (mean.shape != (n,) or not bool(torch.isfinite(mean).all())):
        raise ValueError(f"mean must be a finite vector of length n={n}, got shape {tuple(mean.shape)}")
    return K, y, mean


def orthant(K, y, *, method: str = "ep", mean=None, seed: int | None = None, **options) -> OrthantResult:
    """``log P[1{g_i > 0} = y_i for all i]`` for ``g ~ N(mean, K)``, with diagnostics.

    Parameters
    ----------
    K : tensor or array, shape (n, n)
        Symmetric positive semi-definite covariance.
    y : tensor or array, shape (n,)
        Labels in {0, 1}: 1 requires ``g_i > 0``, 0 requires ``g_i < 0``.
    method : {"ep", "genz", "tilting"}
        See the module docstring; ``genz`` and ``tilting`` are stochastic and need ``seed``.
        Problems with an exact answer (n <= 2, rank-one K) get it whatever the method
        (``result.method == "exact"``).
    mean : optional, shape (n,)
        Mean of g (default 0).
    **options
        ``ep``: ``damping`` (0.8), ``max_iter`` (200), ``tol`` (1e-6), ``updates``
        ("parallel"/"sequential"), ``jitter`` (None: adaptive).
        ``genz``: ``maxpts`` (20000 n), ``repeats`` (1).
        ``tilting``: ``n_samples`` (10000), ``solve`` (True: find the minimax tilt; False:
        use the EP posterior mean as tilt).
    """
    check_choice("method", method, METHODS)
    K, y, mean = check_problem(K, y, mean)
    allowed = _OPTIONS[method]
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method={method!r}; valid: {sorted(allowed)}")
    if method != "ep":
        if seed is None:
            raise ValueError(f"method={method!r} is stochastic: pass seed=<int>")
        seed = check_int("seed", seed, minimum=0)
    keep, conflict = _duplicate_variables(K, y, mean)
    impossible = None
    if conflict or (mean is None and collinear_conflict(K, y) is not None):
        impossible = ("two perfectly correlated variables must have different signs (or two perfectly "
                      "anti-correlated ones the same sign)")
    elif keep is not None:
        # a duplicate adds no constraint, but EP would count it twice: drop it (exact)
        K, y = K[keep][:, keep], y[keep]
        mean = None if mean is None else mean[keep]
    if impossible is None and K.shape[0] <= PSD_CHECK_MAX_DIM and not orthant_feasible(K, y, mean):
        impossible = ("the sign pattern y is impossible under this singular K (the orthant misses the support "
                      "of N(mean, K))")
    if impossible:
        warnings.warn(f"{impossible}: the probability is exactly 0, returned as log_prob = -inf", RuntimeWarning,
                      stacklevel=2)
        return OrthantResult(-math.inf, 0.0, True, 0, method)
    exact = exact_log_orthant(K, y, mean)  # n <= 2 or a rank-one K: no approximation needed
    if exact is not None:
        return OrthantResult(exact, 0.0, True, 0, "exact")
    far = _reduce_far_violation(K, y, mean, method=method, seed=seed, **options)
    if far is not None:
        return far
    if method == "ep":
        return _orthant_ep(K, y, mean, **options)
    if method == "genz":
        return _orthant_genz(K, y, mean, seed=seed, **options)
    return _orthant_tilting(K, y, mean, seed=seed, **options)


def _reduce_far_violation(K, y, mean, **how) -> OrthantResult | None:
    """A constraint its mean violates by more than :data:`Z_FAR` standard deviations
    (``z_i = s_i m_i / sigma_i < -Z_FAR``) holds only in the far tail, within a few ``sigma_i / |z_i|``
    of ``g_i = 0``. There ``P = Phi(z_i) E[P(rest | g_i)]``, the expectation over ``g_i`` in that
    tail (density ``exp(-lam t - t^2 / (2 sigma_i^2))`` in ``t = s_i g_i > 0``, ``lam = |m_i| / sigma_i^2``),
    taken by :data:`N_LAGUERRE`-point Gauss-Laguerre quadrature; each ``P(rest | g_i)`` is an orthant
    problem of n - 1 variables under the conditional Gaussian, solved by :func:`orthant` with the same
    method (and reduced again if another constraint is as far off). EP itself cannot take such a mean:
    its site precisions reach ``z^2`` and its posterior mean cancels terms of size ``z^3`` (issue 26: a
    mean of 1e4 against its label gave 'non-finite site parameters'). None when no constraint is that
    far off. Its cost grows as ``N_LAGUERRE ** j`` with the number j of such constraints (each node reduces
    the next one): with every one of n variables far off (K = I + 0.1, means -100), 0.5 s at n = 4 and 6.3 s
    at n = 5 on the 2-core CPU, about 16 times more for each further one."""
    if mean is None:
        return None
    s = 2.0 * y - 1.0
    d = torch.diagonal(K)
    z = torch.where(d > 0, s * mean / d.clamp_min(1e-300).sqrt(), torch.full_like(d, math.inf))
    i = int(torch.argmin(z))
    if float(z[i]) >= -Z_FAR:
        return None
    var_i, m_i, s_i = float(K[i, i]), float(mean[i]), float(s[i])
    log_i = float(special.log_ndtr(float(z[i])))
    rest = torch.arange(K.shape[0]) != i
    k_ri = K[rest, i]
    cond_K = K[rest][:, rest] - torch.outer(k_ri, k_ri) / var_i
    cond_K = 0.5 * (cond_K + cond_K.T)
    nodes, weights = np.polynomial.laguerre.laggauss(N_LAGUERRE)
    lam = abs(m_i) / var_i
    determined = float(cond_K.abs().max()) <= 1e-12 * float(K.abs().max())  # the rest is determined by g_i
    logs, subs = [], []
    for x, w in zip(nodes, weights):
        t = x / lam
        cond_mean = mean[rest] + k_ri / var_i * (s_i * t - m_i)
        if determined:
            sub = OrthantResult(exact_log_orthant(torch.zeros_like(cond_K), y[rest], cond_mean), 0.0, True, 0,
                                "exact")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an impossible node is -inf, as it should be
                sub = orthant(cond_K, y[rest], mean=cond_mean, **how)
        subs.append(sub)
        logs.append((math.log(w) - 0.5 * t * t / var_i, sub.log_prob))
    tail = special.logsumexp([a for a, _ in logs])
    log_e = special.logsumexp([a + b for a, b in logs]) - tail if any(math.isfinite(b) for _, b in logs) else -math.inf
    worst = max(subs, key=lambda r: (not r.converged, r.stderr if math.isfinite(r.stderr) else 0.0))
    return dataclasses.replace(worst, log_prob=float(log_i + log_e),
                               converged=all(r.converged for r in subs))


def orthant_feasible(K: torch.Tensor, y: torch.Tensor, mean: torch.Tensor | None = None, *,
                     rank_tol: float = 1e-10) -> bool:
    """Whether ``{g : 1{g_i > 0} = y_i}`` has positive probability under ``N(mean, K)``.

    A non-singular K gives every orthant positive probability. A singular K puts its mass on
    ``mean + range(K)``, which may miss an orthant (e.g. ``K = [[1, -1], [-1, 1]]`` with
    ``y = [1, 1]``, or two inputs whose kernel rows are proportional with opposite labels). With
    ``K = U diag(lam) U^T`` and ``L = U sqrt(lam)`` over the eigenvalues above ``rank_tol *
    max(lam)``, the linear programme ``max t  s.t.  s_i (mean_i + (L z)_i) >= t, t <= 1``
    (``s = 2y - 1``) has ``t* > 0`` exactly when the orthant meets the support in an open set.

    ``K``: (n, n) float64 tensor, symmetric PSD; ``y``: (n,) of 0/1; ``rank_tol``: relative size
    under which an eigenvalue counts as zero.
    """
    lam, U = torch.linalg.eigh(K)
    if float(lam[0]) > rank_tol * float(lam[-1]):
        return True
    big = lam > rank_tol * lam[-1]
    L = (U[:, big] * lam[big].sqrt()).numpy()
    s = 2.0 * y.numpy() - 1.0
    m0 = np.zeros(len(s)) if mean is None else mean.numpy()
    r = L.shape[1]
    # variables (z_1..z_r, t); minimise -t subject to -s_i L_i z + t <= s_i m0_i
    a_ub = np.hstack([-(s[:, None] * L), np.ones((len(s), 1))])
    res = optimize.linprog(np.r_[np.zeros(r), -1.0], A_ub=a_ub, b_ub=s * m0,
                  bounds=[(None, None)] * r + [(None, 1.0)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"orthant_feasible: the linear programme failed ({res.message})")
    return -res.fun > 1e-9


def collinear_conflict(K: torch.Tensor, y: torch.Tensor, *, tol: float = 1e-12) -> tuple[int, int] | None:
    """A pair ``(i, j)`` of zero-mean variables that are perfectly correlated (``rho >= 1 - tol``)
    with different labels, or perfectly anti-correlated (``rho <= -1 + tol``) with equal labels:
    then ``P[1{g > 0} = y] = 0``. ``None`` if there is no such pair. O(n^2) memory and time.
    """
    d = torch.diagonal(K).clamp_min(0).sqrt()
    pos = d > 0
    rho = K / (d[:, None] * d[None, :]).clamp_min(1e-300)
    same = y[:, None] == y[None, :]
    bad = ((rho >= 1 - tol) & ~same) | ((rho <= -1 + tol) & same)
    bad &= pos[:, None] & pos[None, :]
    hit = torch.nonzero(torch.triu(bad, diagonal=1))
    return None if hit.shape[0] == 0 else (int(hit[0, 0]), int(hit[0, 1]))


def _duplicate_variables(K, y, mean):
    """Indices to keep after dropping exact duplicates (correlation 1, equal variance and mean),
    and whether some duplicate pair has conflicting labels. ``(None, False)`` if none."""
    d = torch.diagonal(K)
    dup = (K >= (1.0 - 1e-12) * d[:, None]) & (K >= (1.0 - 1e-12) * d[None, :]) & (d[:, None] > 0)
    if mean is not None:
        dup &= (mean[:, None] - mean[None, :]).abs() <= 1e-12 * (1.0 + mean.abs().max())
    dup = torch.triu(dup, diagonal=1)
    if not bool(dup.any()):
        return None, False
    i, j = torch.nonzero(dup, as_tuple=True)
    if bool((y[i] != y[j]).any()):
        return None, True
    drop = torch.zeros(K.shape[0], dtype=torch.bool)
    drop[j] = True
    return torch.nonzero(~drop).squeeze(1), False


def log_orthant(K, y, *, method: str = "ep", **kwargs) -> float:
    """``orthant(K, y, method=method, **kwargs).log_prob``; warns if EP did not converge."""
    res = orthant(K, y, method=method, **kwargs)
    if not res.converged:
        warnings.warn(f"log_orthant(method={method!r}) did not converge (n_iter={res.n_iter}, "
                      f"max_change={res.max_change:.2e}); the value may be inaccurate", RuntimeWarning, stacklevel=2)
    return res.log_prob


def _orthant_ep(K, y, mean, damping=0.8, max_iter=200, tol=1e-6, updates="parallel", jitter=None):
    damping = check_float("damping", damping, minimum=0.0, maximum=1.0, strict_minimum=True)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    tol = check_float("tol", tol, minimum=0.0, strict_minimum=True)
    if jitter is not None:
        jitter = check_float("jitter", jitter, minimum=0.0)
    r = ep_orthant(K, y, mean=mean, damping=damping, max_iter=max_iter, tol=tol, updates=updates, jitter=jitter)
    return OrthantResult(float(r.log_z), math.nan, bool(r.converged), r.n_iter, "ep", float(r.max_change), 0,
                         r.jitter)


def _orthant_genz(K, y, mean, *, seed, maxpts=None, repeats=1):
    n = K.shape[0]
    if n > GENZ_MAX_DIM:
        raise ValueError(f"method='genz' is limited to n <= {GENZ_MAX_DIM} dimensions (scipy's Genz "
                         f"integrator has no log space and loses all accuracy beyond), got n={n}; use "
                         f"method='tilting' (error bars) or method='ep'")
    repeats = check_int("repeats", repeats, minimum=1)
    maxpts = check_int("maxpts", 20000 * n if maxpts is None else maxpts, minimum=1)
    s = (2.0 * y - 1.0).numpy()
    cov = K.numpy() * np.outer(s, s)
    loc = np.zeros(n) if mean is None else -s * mean.numpy()
    rng = np.random.default_rng(derive_seed(seed, "nngp.orthant.genz"))
    vals = []
    for _ in range(repeats):
        p = stats.multivariate_normal.cdf(np.zeros(n), mean=loc, cov=cov, allow_singular=True, maxpts=maxpts,
                                          abseps=0.0, releps=1e-6, rng=rng)
        if not p > 0:
            raise FloatingPointError(f"method='genz' returned P = {p!r} (underflow: the probability is below "
                                     f"what scipy resolves); use method='tilting' or 'ep'")
        vals.append(math.log(p))
    stderr = float(np.std(vals, ddof=1) / math.sqrt(repeats)) if repeats > 1 else math.nan
    return OrthantResult(float(np.mean(vals)), stderr, True, 0, "genz", math.nan, maxpts, 0.0)


def _inv_mills_np(z):
    """``phi(z) / Phi(z)`` for arrays (stable for all z)."""
    return math.sqrt(2.0 / math.pi) / special.erfcx(-z / math.sqrt(2.0))


def _ordered_cholesky(C: np.ndarray, lower: np.ndarray):
    """Cholesky factor of ``C[perm][:, perm]`` with Genz-Botev variable ordering.

    At each step the variable whose one-sided constraint (given the expected values of the
    variables already placed) is least likely to hold goes next; this makes the sequential
    sampler far more efficient. Returns ``(L, perm)``.
    """
    d = C.shape[0]
    C, lower = C.copy(), lower.copy()
    perm = np.arange(d)
    L, z = np.zeros_like(C), np.zeros(d)
    for j in range(d):
        rest = slice(j, d)
        var = np.diag(C)[rest] - np.sum(L[rest, :j] ** 2, axis=1)
        sd = np.sqrt(np.maximum(var, 1e-300))
        tl = (lower[rest] - L[rest, :j] @ z[:j]) / sd
        k = j + int(np.argmin(special.log_ndtr(-tl)))
        if k != j:
            for arr in (perm, lower, z):
                arr[[j, k]] = arr[[k, j]]
            C[[j, k], :] = C[[k, j], :]
            C[:, [j, k]] = C[:, [k, j]]
            L[[j, k], :] = L[[k, j], :]
        piv = C[j, j] - L[j, :j] @ L[j, :j]
        if piv <= 1e-14 * C[j, j] or piv <= 0:
            raise np.linalg.LinAlgError(
                f"the covariance is singular along variable {perm[j]} (conditional variance {piv:.3g}); "
                f"duplicate inputs? add jitter to K's diagonal or use method='ep'")
        L[j, j] = math.sqrt(piv)
        L[j + 1:, j] = (C[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
        a = (lower[j] - L[j, :j] @ z[:j]) / L[j, j]
        z[j] = _inv_mills_np(-a)  # mean of N(0, 1) truncated to [a, inf)
    return L, perm


def _psi_parts(x, mu, M, lt):
    a = lt - (M @ x) - mu
    return a, _inv_mills_np(-a)


def _saddle_system(v, M, lt):
    d = M.shape[0]
    x, mu = v[:d], v[d:]
    a, rho = _psi_parts(x, mu, M, lt)
    dd = -(rho * (rho - a))  # d rho / d t, t = mu + M x, equals -(1 - truncated variance)
    f = np.concatenate([mu - x + rho, -mu + M.T @ rho])
    eye = np.eye(d)
    j11 = -eye + dd[:, None] * M
    j12 = eye + np.diag(dd)
    j21 = M.T @ (dd[:, None] * M)
    j22 = -eye + M.T * dd[None, :]
    return f, np.block([[j11, j12], [j21, j22]])


def _psi(x, mu, M, lt):
    a, _ = _psi_parts(x, mu, M, lt)
    return float(np.sum(0.5 * mu * mu - x * mu + special.log_ndtr(-a)))


def tilting_setup(K: torch.Tensor, y: torch.Tensor, mean, *, solve=True, ep_options=None):
    """Ordered Cholesky, tilt and diagnostics for :func:`_orthant_tilting` (numpy float64)."""
    s = (2.0 * y - 1.0).numpy()
    C = K.numpy() * np.outer(s, s)
    lower = np.zeros_like(s) if mean is None else -s * mean.numpy()
    L, perm = _ordered_cholesky(C, lower)
    diag = np.diag(L)
    M = np.tril(L / diag[:, None], -1)
    lt = lower[perm] / diag
    # start: EP posterior mean in whitened, ordered coordinates
    ep = ep_orthant(K, y, mean=mean, **(ep_options or {}))
    h_mean = s * (ep.mean.numpy() - (0.0 if mean is None else mean.numpy()))
    x0 = np.linalg.solve(L, h_mean[perm])
    _, rho0 = _psi_parts(x0, np.zeros_like(x0), M, lt)
    mu0 = M.T @ rho0  # the second saddle equation evaluated at the EP point
    v0 = np.concatenate([x0, mu0])
    converged, n_eval, resid = False, 0, math.nan
    x, mu = x0, mu0
    if solve:
        sol = optimize.root(_saddle_system, v0, args=(M, lt), jac=True, method="hybr")
        n_eval = int(sol.nfev)
        if np.all(np.isfinite(sol.x)):
            resid = float(np.linalg.norm(_saddle_system(sol.x, M, lt)[0]))
            if resid < 1e-6 * math.sqrt(len(v0)):
                converged = True
                x, mu = sol.x[:len(x0)], sol.x[len(x0):]
    if not converged:
        # any tilt keeps the estimator unbiased; centre the proposal on the EP mean instead
        mu = x0
    return L, M, lt, mu, x, converged, n_eval, resid


def _orthant_tilting(K, y, mean, *, seed, n_samples=10000, solve=True, ep_options=None):
    n_samples = check_int("n_samples", n_samples, minimum=2)
    L, M, lt, mu, x, converged, n_eval, resid = tilting_setup(K, y, mean, solve=solve, ep_options=ep_options)
    d = L.shape[0]
    rng = np.random.default_rng(derive_seed(seed, "nngp.orthant.tilting"))
    z = np.zeros((n_samples, d))
    logw = np.zeros(n_samples)
    for k in range(d):
        a = lt[k] - z[:, :k] @ M[k, :k] - mu[k]  # lower bound of the standardised tilted variable
        log_mass = special.log_ndtr(-a)
        # inverse CDF in log space: P(Z > t | Z > a) = u, u ~ U(0, 1)
        t = np.maximum(-special.ndtri_exp(np.log(rng.random(n_samples)) + log_mass), a)
        z[:, k] = mu[k] + t
        logw += 0.5 * mu[k] ** 2 - z[:, k] * mu[k] + log_mass
    top = logw.max()
    w = np.exp(logw - top)
    mean_w = w.mean()
    log_prob = float(top + math.log(mean_w))
    rel = float(w.std(ddof=1) / math.sqrt(n_samples) / mean_w)
    upper = _psi(x, mu, M, lt) if converged else math.nan
    if not math.isfinite(log_prob):
        raise FloatingPointError("tilting estimator produced a non-finite log probability")
    return OrthantResult(log_prob, rel, converged, n_eval, "tilting", resid, n_samples, 0.0, upper)
