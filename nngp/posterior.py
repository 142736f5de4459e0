"""log P(S) and log P_B(f|S) in the NNGP limit, for thousands of functions.

``P_B(f|S) = P(S, E = f) / P(S)`` where both are orthant probabilities of ``g ~ N(0, K)``, K the
NNGP kernel on S then E (docs/DESIGN.md). Two EP estimators:

``ep`` (the reference's method)
    One EP on all m + k points per function, labels ``(y_S, f)``:
    ``log P_B(f|S) = log Z_EP(S, E=f) - log Z_EP(S)``. Each per-f EP is warm-started from the
    sites of the EP on S (E's sites start flat), which only saves iterations.
``ep-conditional``
    One EP on S gives sites and hence the Gaussian ``q(g_E | S) = N(m_E, C_E)``,
    ``m_E = K_ES (K_SS + S~)^-1 mu~``, ``C_E = K_EE - K_ES (K_SS + S~)^-1 K_SE``. Each f is then
    the k-dimensional orthant probability ``log P[sign(g_E) = f]`` under that Gaussian, by EP on
    k dimensions, batched over functions.

Where they differ: ``ep`` lets E's constraints move the sites of S (the joint EP), while
``ep-conditional`` freezes S's sites and replaces ``p(g_E | S's constraints)`` by its Gaussian
EP approximation before imposing E's constraints. The difference grows with how much E's labels
pull on S's posterior: small for functions the posterior favours, larger for functions far from
the posterior mean's signs. ``benchmarks/log_pb.py`` measures it (MNIST, m = 1000, k = 100) and
the closing note of issue 3 reports the numbers.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, fields, replace

import numpy as np
from tqdm.auto import tqdm
import torch

from sampler.checks import check_choice, check_device, check_int
from sampler.architectures import Architecture
from sampler.data import Split
from sampler.functions import strings_to_bits
from sampler.seeding import derive_seed

from .ep import EPResult, ep_orthant, ep_predict, warn_unconverged
from .empirical import kernel_for
from .orthant import Z_FAR, _orthant_tilting, collinear_conflict, orthant, orthant_feasible

LOG_PB_METHODS = ("ep-conditional", "ep")
FEASIBILITY_MAX_M = 3000  # an eigendecomposition of K_SS decides feasibility; ~10 s at this size on 2 cores
LOG_PS_METHODS = ("ep", "tilting", "genz")


@dataclass(frozen=True)
class TrainPosterior:
    """The EP fit on the training set S and the Gaussian it implies on the test set E.

    Attributes
    ----------
    log_ps : float
        EP estimate of ``log P(S)``, the log marginal likelihood under the 0-1 likelihood.
    converged, n_iter, max_change, jitter
        The EP's diagnostics (:class:`nngp.EPResult`); jitter is 0 unless needed.
    pred_mean, pred_cov : torch.Tensor, float64, shapes (k,) and (k, k)
        Mean and covariance of ``q(g_E | S)``.
    K : torch.Tensor, float64, shape (m + k, m + k)
        NNGP kernel on S then E.
    ep : EPResult
        The EP on S (sites, Cholesky factor), fitted on the distinct inputs of S
        (``train_keep``: their rows in S; an exact duplicate adds no constraint).
    """

    log_ps: float
    converged: bool
    n_iter: int
    max_change: float
    jitter: float
    pred_mean: torch.Tensor = field(repr=False)
    pred_cov: torch.Tensor = field(repr=False)
    K: torch.Tensor = field(repr=False)
    ep: EPResult = field(repr=False)
    y_train: torch.Tensor = field(repr=False)  # labels of the distinct inputs of S that EP fitted
    train_keep: torch.Tensor = field(repr=False)
    fitted_on: str = ""  # fingerprint of the (architecture, split) it was fitted on: fit_fingerprint


def fit_fingerprint(arch: Architecture, split: Split) -> str:
    """A short hash of what a posterior depends on: ``arch``'s spec, x_train, y_train, x_test."""
    h = hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode())
    for t in (split.x_train, split.y_train, split.x_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_posterior(posterior, arch: Architecture, split: Split) -> None:
    """Refuse a ``posterior=`` fitted on another architecture or split (it would give wrong numbers)."""
    if not isinstance(posterior, TrainPosterior):
        raise TypeError(f"posterior must be a TrainPosterior (nngp.train_posterior), got {type(posterior).__name__}")
    if posterior.fitted_on != fit_fingerprint(arch, split):
        raise ValueError("posterior was fitted on another architecture or split than the arch and split given "
                         "here: fit it with nngp.train_posterior(arch, split) for these, or pass the ones it was "
                         "fitted on")


@dataclass(frozen=True)
class LogPBResult:
    """``log P_B(f|S)`` for many functions with per-function diagnostics.

    Attributes
    ----------
    log_pb, converged, n_iter : (F,) arrays of float64, bool, int
        The value, and whether the EP (or tilting saddle point) for that function converged in
        how many iterations.
    stderr : (F,) float64 array
        Monte Carlo standard error (``conditional_method="tilting"``), else nan.
    log_ps : float
        ``log P(S)`` used as the denominator.
    """

    log_pb: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    stderr: np.ndarray
    log_ps: float
    method: str


def _check_split(split) -> None:
    if not isinstance(split, Split):
        raise TypeError(f"split must be a sampler.Split, got {type(split).__name__}")


def _first_copy(x: torch.Tensor) -> np.ndarray:
    """For each row of ``x``, the index of the first row identical to it (its own index if none)."""
    first: dict[bytes, int] = {}
    return np.array([first.setdefault(row.tobytes(), i) for i, row in enumerate(x.detach().cpu().numpy())],
                    dtype=np.int64)


def _unique_rows(x: torch.Tensor) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of ``x`` (in order)."""
    first = _first_copy(x)
    return np.flatnonzero(first == np.arange(len(first)))


def _impossible_functions(split: Split, bits: np.ndarray) -> np.ndarray:
    """Functions that give two identical inputs (S or E) different labels: P_B(f|S) = 0."""
    m = split.n_train
    first = _first_copy(split.x_all())
    bad = np.zeros(bits.shape[0], dtype=bool)
    y_s = split.y_train.numpy()
    for b in range(m, len(first)):
        a = first[b]
        if a != b:
            bad |= (np.full(bits.shape[0], y_s[a]) if a < m else bits[:, a - m]) != bits[:, b - m]
    return bad


def _fit_or_check(posterior, arch: Architecture, split: Split, **fit) -> TrainPosterior:
    """``posterior`` after checking it was fitted on ``arch`` and ``split``, else a new fit."""
    if posterior is None:
        return train_posterior(arch, split, **fit)
    _check_posterior(posterior, arch, split)
    return posterior


def train_posterior(
    arch: Architecture,
    split: Split,
    *,
    jitter: float | None = None,
    damping: float = 0.8,
    max_iter: int = 200,
    tol: float = 1e-4,
    K: torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> TrainPosterior:
    """EP on S under the NNGP prior of ``arch``; compute it once and pass it as ``posterior=``.

    Parameters
    ----------
    arch : sampler.Architecture
        Its kernel comes from :func:`nngp.kernel_for` (analytic where a closed form exists, else
        Monte Carlo with the default number of networks); pass ``K`` to choose otherwise.
    jitter : float, optional
        Added to the kernel's diagonal; ``None`` adds none unless a Cholesky fails, then the
        smallest that works (reported in ``jitter``).
    damping, max_iter, tol
        EP settings (see :func:`nngp.ep.ep_orthant`). ``tol = 1e-4`` (largest change of a
        posterior marginal, in posterior standard deviations) changed log P(S) by ~1e-7 against
        1e-6 on MNIST (m = 1000) and saves a third of the iterations.
    K : torch.Tensor, shape (m + k, m + k), optional
        A precomputed kernel on ``split.x_all()`` (e.g. :func:`nngp.empirical_kernel`).
    device : str or torch.device, optional
        Where the kernel and the EP are computed (default: ``K``'s device, else the CPU), in
        float64. The fit is returned on the CPU, so later steps need not know where it ran.
    """
    device = check_device(device, allow_none=True)
    _check_split(split)
    m, k = split.n_train, split.n_test
    if K is None:
        K = kernel_for(arch, split.x_all(), input_shape=split.input_shape, device=device).K
    elif tuple(K.shape) != (m + k, m + k):
        raise ValueError(f"K must have shape (m + k, m + k) = ({m + k}, {m + k}), got {tuple(K.shape)}")
    K = K.to(dtype=torch.float64, device=device if device is not None else K.device)
    y = split.y_train.to(dtype=torch.float64, device=K.device)
    first, y_s = _first_copy(split.x_train), split.y_train.numpy()
    bad = [(int(a), b) for b, a in enumerate(first) if y_s[a] != y_s[b]]
    if bad:
        i, j = bad[0]
        raise ValueError(f"S holds {len(bad)} pair(s) of identical inputs with different labels (e.g. rows {i} and "
                         f"{j}): no function fits S, P(S) = 0. Remove the duplicates from the training set")
    # duplicated inputs add no constraint but EP would count them twice: fit the distinct ones
    keep = torch.from_numpy(np.flatnonzero(first == np.arange(m))).to(K.device)
    K_ss = K[keep][:, keep]
    conflict = collinear_conflict(K_ss, y[keep])
    if conflict is not None:
        i, j = (int(keep[t]) for t in conflict)
        raise ValueError(f"no function of the NNGP prior fits S: inputs {i} and {j} of S have perfectly correlated "
                         f"outputs under this kernel (e.g. x and c*x with sigma_b = 0) but opposite labels, so "
                         f"P(S) = 0. Remove one of them, or use sigma_b > 0")
    res = ep_orthant(K_ss, y[keep], damping=damping, max_iter=max_iter, tol=tol, jitter=jitter)
    if res.jitter > 0 and jitter is None and K_ss.shape[0] <= FEASIBILITY_MAX_M:
        # K_SS is singular: beyond pairs, S's labels may still lie outside its support
        if not orthant_feasible(K_ss.cpu(), y[keep].cpu()):
            raise ValueError("no function of the NNGP prior fits S: the kernel on S is singular and S's labels "
                             "lie outside its support, so P(S) = 0")
    warn_unconverged(res, "EP on the training set")
    mean, cov = ep_predict(res, K_ss, None, K[keep, m:], K[m:, m:])
    if K.device.type != "cpu":
        K, y, keep, mean, cov = (t.cpu() for t in (K, y, keep, mean, cov))
        res = replace(res, **{f.name: getattr(res, f.name).cpu() for f in fields(res)
                              if isinstance(getattr(res, f.name), torch.Tensor)})
    return TrainPosterior(float(res.log_z), bool(res.converged), res.n_iter, float(res.max_change), res.jitter,
                          mean, cov, K, res, y[keep], keep, fit_fingerprint(arch, split))


def log_ps(arch: Architecture, split: Split, *, method: str = "ep", jitter: float | None = None,
           seed: int | None = None, posterior: TrainPosterior | None = None, **options) -> float:
    """``log P(S)``: the log probability that a function drawn from the NNGP prior fits S.

    The log marginal likelihood under the 0-1 likelihood: an m-dimensional orthant probability of
    ``N(0, K_SS)``.

    Parameters
    ----------
    method : {"ep", "tilting", "genz"}
        ``ep`` (default; reuses ``posterior`` if given), or a Monte Carlo orthant estimator
        (``seed`` required; ``genz`` for m <= 100 only).
    jitter : float, optional
        Diagonal added to the kernel (``None``: adaptive, see :func:`train_posterior`).
    posterior : TrainPosterior, optional
        A fit from :func:`train_posterior` (avoids recomputing kernel and EP).
    **options
        Passed to :func:`nngp.orthant` for the Monte Carlo methods, to :func:`train_posterior`
        for ``ep``.
    """
    check_choice("method", method, LOG_PS_METHODS)
    if method == "ep":
        return _fit_or_check(posterior, arch, split, jitter=jitter, **options).log_ps
    if posterior is not None:
        _check_posterior(posterior, arch, split)
    _check_split(split)
    K = posterior.K if posterior is not None else kernel_for(arch, split.x_train, input_shape=split.input_shape).K
    m = split.n_train
    K_ss = K[:m, :m]
    if jitter:
        K_ss = K_ss + jitter * torch.eye(m, dtype=K_ss.dtype)
    return orthant(K_ss, split.y_train, method=method, seed=seed, **options).log_prob


def gp_test_error(arch: Architecture, split: Split, *, posterior: TrainPosterior | None = None) -> float:
    """Test error on E of the GP classifier: sign of the mean of ``q(g_E | S)`` (EP on S).

    ``q(g_i > 0 | S) > 1/2`` exactly when that mean is positive, so this is also the error of
    the most probable label per test point.
    """
    pred = (_fit_or_check(posterior, arch, split).pred_mean > 0).to(torch.int64)
    return float((pred != split.y_test.to(torch.int64)).double().mean())


def _function_bits(functions, k: int) -> np.ndarray:
    if isinstance(functions, (np.ndarray, torch.Tensor)):
        bits = np.asarray(functions.cpu() if isinstance(functions, torch.Tensor) else functions)
        if bits.ndim != 2 or bits.shape[1] != k or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"functions as an array must be (F, k={k}) of 0/1, got shape {bits.shape}")
        return bits.astype(np.uint8)
    if isinstance(functions, str):
        raise TypeError("functions must be a list of bitstrings (not one string); wrap it: [f]")
    if functions is None or not hasattr(functions, "__iter__"):
        raise TypeError(f"functions must be a list of bitstrings or an (F, k) 0/1 array, got "
                        f"{type(functions).__name__}")
    functions = list(functions)
    if not functions:
        return np.zeros((0, k), dtype=np.uint8)
    bits = strings_to_bits(functions)
    if bits.shape[1] != k:
        raise ValueError(f"functions must be bitstrings of length k = split.n_test = {k}, got length {bits.shape[1]}")
    return bits


def log_pb(arch: Architecture, split: Split, functions, *, method: str = "ep-conditional",
           progress: bool = False, **kwargs) -> np.ndarray:
    """``log P_B(f|S)`` (natural log) for each function f, a numpy float64 array of shape (F,).

    See :func:`log_pb_details` for the parameters; this returns its ``log_pb`` and warns
    (RuntimeWarning) when some EP did not converge.
    """
    res = log_pb_details(arch, split, functions, method=method, progress=progress, **kwargs)
    bad = ~res.converged
    if bad.any():
        warnings.warn(f"log_pb(method={method!r}): EP did not converge for {int(bad.sum())} of {bad.size} "
                      f"function(s); see nngp.log_pb_details for which", RuntimeWarning, stacklevel=2)
    return res.log_pb


def log_pb_details(
    arch: Architecture,
    split: Split,
    functions,
    *,
    method: str = "ep-conditional",
    progress: bool = False,
    posterior: TrainPosterior | None = None,
    conditional_method: str = "ep",
    batch_size: int = 512,
    damping: float = 0.8,
    max_iter: int = 200,
    tol: float = 1e-4,
    jitter: float | None = None,
    seed: int | None = None,
    n_samples: int = 10000,
) -> LogPBResult:
    """``log P_B(f|S)`` for each function, with per-function diagnostics.

    Parameters
    ----------
    functions : sequence of str, or array (F, k) of 0/1
        Bitstrings of length k = ``split.n_test`` in E's order.
    method : {"ep-conditional", "ep"}
        See the module docstring.
    posterior : TrainPosterior, optional
        A fit from :func:`train_posterior` for this ``arch`` and ``split`` (not recomputed).
    conditional_method : {"ep", "tilting"}
        For ``ep-conditional``: the k-dimensional orthant by batched EP, or by minimax tilting
        (Monte Carlo standard error per f in ``stderr``; needs ``seed``; slower).
    batch_size : int
        Functions per batched EP (memory ~ 3 * batch_size * k^2 * 8 bytes).
    seed, n_samples : int
        For ``conditional_method="tilting"``: its seed (required) and samples per function.
    """
    check_choice("method", method, LOG_PB_METHODS)
    check_choice("conditional_method", conditional_method, ("ep", "tilting"))
    batch_size = check_int("batch_size", batch_size, minimum=1)
    _check_split(split)
    k = split.n_test
    bits = _function_bits(functions, k)
    post = _fit_or_check(posterior, arch, split, jitter=jitter, damping=damping, max_iter=max_iter, tol=tol)
    n_f = bits.shape[0]
    out, stderr = np.full(n_f, np.nan), np.full(n_f, np.nan)
    conv, iters = np.zeros(n_f, dtype=bool), np.zeros(n_f, dtype=np.int64)
    with tqdm(total=n_f, desc=f"log P_B ({method})", unit="f", disable=not progress) as bar:
        e_keep = torch.from_numpy(_unique_rows(split.x_test))
        cov_e, mean_e = post.pred_cov[e_keep][:, e_keep], post.pred_mean[e_keep]
        if method == "ep-conditional" and conditional_method == "ep":
            # per function through nngp.orthant where EP is not the right tool: an exact answer (k <= 2
            # distinct test points) or a constraint the predictive mean violates by > Z_FAR sd
            f_all = torch.from_numpy(bits[:, e_keep.numpy()]).to(torch.float64)
            z = (2.0 * f_all - 1.0) * mean_e / torch.diagonal(cov_e).clamp_min(1e-300).sqrt()
            alone = (z.amin(-1) < -Z_FAR) | (len(e_keep) <= 2)
            for i in torch.nonzero(alone).squeeze(1).tolist():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an impossible f: -inf, said once below
                    r = orthant(cov_e, f_all[i], mean=mean_e, method="ep", damping=damping, max_iter=max_iter,
                                tol=tol, jitter=jitter)
                out[i], conv[i], iters[i] = r.log_prob, r.converged, r.n_iter
                bar.update(1)
            batched = torch.nonzero(~alone).squeeze(1)
            for lo in range(0, len(batched), batch_size):
                idx = batched[lo:lo + batch_size]
                f = f_all[idx]
                r = ep_orthant(cov_e, f, mean=mean_e, damping=damping, max_iter=max_iter,
                               tol=tol, jitter=jitter)
                out[idx.numpy()] = r.log_z.numpy()
                conv[idx.numpy()] = r.converged.numpy()
                iters[idx.numpy()] = r.n_iter
                bar.update(len(f))
        elif method == "ep-conditional":
            if seed is None:
                raise ValueError("conditional_method='tilting' is stochastic: pass seed=<int>")
            for i in range(n_f):
                r = _orthant_tilting(cov_e, torch.from_numpy(bits[i][e_keep.numpy()]).to(torch.float64), mean_e,
                                     seed=derive_seed(check_int("seed", seed, minimum=0), "tilting", i),
                                     n_samples=n_samples)
                out[i], stderr[i], conv[i], iters[i] = r.log_prob, r.stderr, r.converged, r.n_iter
                bar.update(1)
        else:
            # distinct inputs of S then E: S's are post.train_keep, E's are those new to S and E
            keep = torch.from_numpy(_unique_rows(split.x_all()))
            e_cols = (keep[len(post.train_keep):] - split.n_train).numpy()
            K_all = post.K[keep][:, keep]
            init = (torch.cat([post.ep.tau, torch.zeros(len(e_cols), dtype=torch.float64)]),
                    torch.cat([post.ep.nu, torch.zeros(len(e_cols), dtype=torch.float64)]))
            for i in range(n_f):
                y = torch.cat([post.y_train, torch.from_numpy(bits[i][e_cols]).to(torch.float64)])
                r = ep_orthant(K_all, y, damping=damping, max_iter=max_iter, tol=tol,
                               jitter=post.jitter if jitter is None else jitter, init=init)
                out[i] = float(r.log_z) - post.log_ps
                conv[i], iters[i] = bool(r.converged), r.n_iter
                bar.update(1)
    impossible = _impossible_functions(split, bits)
    if impossible.any():
        warnings.warn(f"{int(impossible.sum())} function(s) disagree with labels of identical inputs (in S or "
                      f"within E): their P_B(f|S) is exactly 0, returned as log P_B = -inf", RuntimeWarning,
                      stacklevel=2)
        out[impossible] = -np.inf
        conv[impossible] = True
    if np.isnan(out).any() or np.isposinf(out).any():
        raise FloatingPointError(f"{int((~np.isfinite(out)).sum())} log P_B values are NaN or +inf")
    conv &= post.converged
    return LogPBResult(out, conv, iters, stderr, post.log_ps, method)
