"""P_B(f|S) in the GP limit by elliptical slice sampling (Murray, Adams & MacKay 2010).

The latent values ``g ~ N(0, K)`` on S + E (S first) are conditioned on reproducing S:
``g_i > 0`` iff ``y_i = 1`` for every i in S (as for networks, ``g_i = 0`` reads as label 0, which
matters only for zero-variance points such as the zero input without biases). This is a 0/1 likelihood, so ESS's slice level is
irrelevant: from a feasible ``g`` and an auxiliary draw ``nu ~ N(0, K)``, a point
``g cos(t) + nu sin(t)`` on the ellipse is accepted iff it satisfies every constraint, and the
angle bracket shrinks towards ``t = 0`` (the current, feasible point) otherwise. The chain leaves
the truncated Gaussian invariant; the signs of ``g_E`` of its states, read as bitstrings, are
samples of P_B(f|S) exact up to Monte Carlo error.

Starting point (documented design): each chain draws ``g0 = A w``, ``w ~ N(0, I)``,
``A A^T = K``, then takes the minimum-norm change of ``w`` that flips the signs of ``g0_S`` that
disagree with ``y`` (``g_S -> sign-corrected |g0_S|``). Where ``K_SS`` is non-singular this is
always feasible (every ``|g_i|`` of S must exceed ``1e-6 sqrt(K_ii)``, so that no start rests
on rounding) and needs no rejection; the chains start dispersed, like folded prior draws, and
``burn_in`` steps remove the start's bias. If the correction fails (``K_SS`` singular), a few
thousand prior draws are tried; if none reproduces S, ``ValueError`` says that P(S) may be 0.

Chains run in lock step, vectorised: one step proposes for every chain at once and keeps
shrinking the brackets of the chains not yet accepted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from sampler.checks import check_device, check_int
from sampler.functions import FunctionCounts, string_to_bits
from sampler.seeding import make_generator

from .empirical import kernel_for

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class EssResult:
    """Samples of the functions on E of the GP conditioned on S (:func:`ess_sample`).

    Attributes
    ----------
    test_bits : np.ndarray, uint8, shape (n_chains, n_kept, k)
        ``1{g_E > 0}`` of each kept state, in E's order.
    counts : FunctionCounts
        Counts of the kept functions; ``n_runs == n_fit == n_chains * n_kept`` (every ESS state
        reproduces S by construction).
    n_chains, n_kept, burn_in, thin, seed
        As run (``n_kept``: kept states per chain).
    proposals_per_step : float
        Mean number of ellipse points tried per step (>= 1; large means a small feasible set).
    rhat_max, ess_bulk_min : float
        Largest rank-normalised split R-hat and smallest bulk effective sample size (arviz) over
        the E bits that vary; ``nan`` when every kept sample has the same function.
    """

    test_bits: np.ndarray
    counts: FunctionCounts
    n_chains: int
    n_kept: int
    burn_in: int
    thin: int
    proposals_per_step: float
    rhat_max: float
    ess_bulk_min: float
    seconds: float
    seed: int

    def chain_frequencies(self, function: str) -> np.ndarray:
        """Fraction of each chain's kept states equal to ``function``, shape ``(n_chains,)``.

        Chains are independent, so ``std / sqrt(n_chains)`` of this is an honest standard error of
        the pooled frequency whatever the autocorrelation within chains.
        """
        bits = string_to_bits(function)
        if bits.shape[0] != self.test_bits.shape[2]:
            raise ValueError(f"function must have length {self.test_bits.shape[2]}, got {bits.shape[0]}")
        return (self.test_bits == bits).all(axis=2).mean(axis=1)


def kernel_factor(K, *, name: str = "K") -> torch.Tensor:
    """``A`` with ``A @ A.T == K`` for a symmetric PSD ``K``, float64, by eigendecomposition.

    Eigenvalues below ``10 n eps max|eigenvalue|`` (and negative ones down to ``-1e-8
    max|eigenvalue|``) count as rounding and are set to 0, so singular kernels (duplicate inputs)
    are fine; more negative ones raise ``ValueError``.
    """
    K = torch.as_tensor(K, dtype=torch.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"{name} must be a square (n, n) matrix with n >= 1, got shape {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError(f"{name} has non-finite entries")
    scale = K.abs().max().item()
    if (K - K.T).abs().max().item() > 1e-8 * max(scale, 1e-300):
        raise ValueError(f"{name} must be symmetric; max |K - K^T| = {(K - K.T).abs().max().item():.3g}")
    lam, U = torch.linalg.eigh((K + K.T) / 2)
    tol = 1e-8 * max(lam.abs().max().item(), 1e-300)
    if lam.min().item() < -tol:
        raise ValueError(f"{name} must be positive semi-definite; smallest eigenvalue {lam.min().item():.3g} "
                         f"(largest {lam.max().item():.3g})")
    # Eigenvalues at rounding level are exact zeros: keeping sqrt(1e-17) would let the starting
    # point's least-squares correction use a direction that is not really there.
    zero = 10 * K.shape[0] * torch.finfo(torch.float64).eps * max(lam.abs().max().item(), 1e-300)
    A = U * torch.where(lam > zero, lam, torch.zeros_like(lam)).sqrt()
    # Points of zero variance (the zero input without biases) get exactly g_i = 0, not rounding
    # noise whose sign would be a coin flip.
    A[K.diagonal() <= zero] = 0.0
    return A


def _initial_states(A, s, pos, m, n_chains, gen, max_tries=4096):
    """Feasible starting states ``(n_chains, n)``: sign-corrected prior draws (module docstring)."""
    n = A.shape[0]
    w = torch.randn((n_chains, n), generator=gen, dtype=A.dtype, device=A.device)
    g0 = w @ A.T
    if m == 0:
        return g0
    A_S = A[:m]
    target = s * g0[:, :m].abs()
    dz = (target - g0[:, :m]) @ torch.linalg.pinv(A_S).T
    g = (w + dz) @ A.T
    # A start must clear S's thresholds by more than rounding: with a singular K_SS the
    # least-squares correction can give signs that are rounding noise (e.g. conflicting duplicates).
    margin = 1e-6 * (A_S * A_S).sum(dim=1).sqrt()
    clear = lambda v: ((v > 0) == pos) & ((v.abs() > margin) | (margin == 0))  # noqa: E731
    feasible = clear(g[:, :m]).all(dim=1)
    tries = 0
    while not feasible.all() and tries < max_tries:  # K_SS singular: fall back to prior draws
        cand = torch.randn((n_chains, n), generator=gen, dtype=A.dtype, device=A.device) @ A.T
        ok = clear(cand[:, :m]).all(dim=1) & ~feasible
        g[ok] = cand[ok]
        feasible |= ok
        tries += n_chains
    if not feasible.all():
        raise ValueError("no starting point reproduces S: the sign-corrected draw failed (K_SS is singular) "
                         f"and {tries} prior draws per chain did not fit S; P(S) may be 0 (e.g. identical "
                         "inputs with different labels)")
    return g


def _check_labels(y_train, n_train: int, n: int) -> torch.Tensor:
    n_train = check_int("n_train", n_train, minimum=0)
    if n_train > n:
        raise ValueError(f"n_train must be <= the kernel size {n}, got n_train={n_train}")
    y = torch.as_tensor(y_train)
    if y.shape != (n_train,):
        raise ValueError(f"y_train must have shape ({n_train},), got {tuple(y.shape)}")
    if y.numel() and not ((y == 0) | (y == 1)).all():
        raise ValueError(f"y_train must hold 0/1 labels, got values {sorted(set(y.tolist()))[:5]}")
    return y


def ess_sample(
    K,
    y_train,
    n_train: int,
    *,
    n_samples: int,
    n_chains: int = 4,
    burn_in: int = 200,
    thin: int = 1,
    seed: int,
    max_shrink: int = 200,
    device: str | torch.device = "cpu",
    diagnostics: bool = True,
) -> EssResult:
    """Elliptical slice sampling of ``g ~ N(0, K)`` constrained to reproduce S; functions on E.

    Parameters
    ----------
    K : tensor or array, shape (n, n)
        Kernel on S + E, S's ``n_train`` points first, then E's ``k = n - n_train`` in E's order.
    y_train : tensor or array of 0/1, shape (n_train,)
    n_train : int
        m, the size of S (0: no constraint, plain GP prior sampling).
    n_samples : int
        Kept states in all; each chain keeps ``ceil(n_samples / n_chains)``.
    n_chains : int
        Independent chains, run vectorised; the random stream depends on it.
    burn_in, thin : int
        Steps discarded at the start of each chain; keep every ``thin``-th state after them.
    seed : int
        All randomness comes from ``make_generator(seed, "ess")``.
    max_shrink : int
        Bracket shrinkages allowed per step before ``FloatingPointError`` (the feasible arc
        around the current state always has positive length, so hitting this means trouble).
    diagnostics : bool
        Compute arviz R-hat and bulk ESS over the E bits (needs arviz; ~1 s to import).
    """
    device = check_device(device)
    A = kernel_factor(K).to(device)
    n = A.shape[0]
    y = _check_labels(y_train, n_train, n).to(device)
    for name, value, low in (("n_samples", n_samples, 1), ("n_chains", n_chains, 1), ("burn_in", burn_in, 0),
                             ("thin", thin, 1), ("seed", seed, 0), ("max_shrink", max_shrink, 1)):
        check_int(name, value, minimum=low)
    m, k = n_train, n - n_train
    if k == 0:
        raise ValueError(f"K must have test points after the {n_train} training points, got size {n}")
    t0 = time.perf_counter()
    gen = make_generator(seed, "ess", device=device)
    s, pos = (2 * y - 1).to(torch.float64), y == 1
    g = _initial_states(A, s, pos, m, n_chains, gen)
    n_kept = math.ceil(n_samples / n_chains)
    kept = torch.empty((n_chains, n_kept, k), dtype=torch.uint8, device=device)
    proposals = 0
    n_steps = burn_in + n_kept * thin
    for step in range(n_steps):
        nu = torch.randn((n_chains, n), generator=gen, dtype=torch.float64, device=device) @ A.T
        theta = torch.rand(n_chains, generator=gen, dtype=torch.float64, device=device) * _TWO_PI
        lo, hi = theta - _TWO_PI, theta.clone()
        active = torch.ones(n_chains, dtype=torch.bool, device=device)
        new = g.clone()
        for _ in range(max_shrink):
            prop = g * torch.cos(theta)[:, None] + nu * torch.sin(theta)[:, None]
            ok = active & ((prop[:, :m] > 0) == pos).all(dim=1)
            proposals += int(active.sum())
            new[ok] = prop[ok]
            active &= ~ok
            if not active.any():
                break
            neg = theta < 0
            lo = torch.where(active & neg, theta, lo)
            hi = torch.where(active & ~neg, theta, hi)
            u = torch.rand(n_chains, generator=gen, dtype=torch.float64, device=device)
            theta = torch.where(active, lo + u * (hi - lo), theta)
        else:
            raise FloatingPointError(f"elliptical slice sampling: {int(active.sum())} chain(s) found no "
                                     f"feasible point after max_shrink={max_shrink} shrinkages at step {step}")
        g = new
        if step >= burn_in and (step - burn_in) % thin == 0:
            kept[:, (step - burn_in) // thin] = (g[:, m:] > 0).to(torch.uint8)
    bits = kept.cpu().numpy()
    seconds = time.perf_counter() - t0
    counts = FunctionCounts.from_bits(bits.reshape(-1, k))
    rhat_max, ess_min = _bit_diagnostics(bits) if diagnostics else (math.nan, math.nan)
    return EssResult(bits, counts, n_chains, n_kept, burn_in, thin, proposals / (n_steps * n_chains),
                     rhat_max, ess_min, seconds, int(seed))


def _bit_diagnostics(bits: np.ndarray) -> tuple[float, float]:
    """Max R-hat and min bulk ESS (arviz) over the E bits that vary across kept samples."""
    import arviz as az  # slow to import (seconds): only when diagnostics are asked for

    flat = bits.reshape(-1, bits.shape[2])
    varying = flat.min(axis=0) != flat.max(axis=0)
    if not varying.any() or bits.shape[1] < 4:
        return math.nan, math.nan
    data = az.convert_to_dataset({"bit": bits[:, :, varying].astype(np.float64)})
    # A bit constant within each chain but not across chains has zero within-chain variance: arviz
    # divides by it and returns R-hat = inf (the chains disagree and none moves), the right answer.
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.asarray(az.rhat(data)["bit"])
        ess = np.asarray(az.ess(data, method="bulk")["bit"])
    return float(np.nanmax(rhat)), float(np.nanmin(ess))


def ess_posterior(arch, split, n_samples: int, *, seed: int, n_chains: int = 4, burn_in: int = 200,
                  thin: int = 1, K=None, device: str | torch.device = "cpu", **kwargs) -> EssResult:
    """ESS of the NNGP of ``arch`` on ``split`` (S first, then E); pass ``K`` to reuse a kernel
    (default :func:`nngp.kernel_for` on ``split.x_all()``). Other keywords go to :func:`ess_sample`."""
    device = check_device(device)
    if K is None:
        K = kernel_for(arch, split.x_all(), input_shape=split.input_shape).K
    return ess_sample(K, split.y_train, split.n_train, n_samples=n_samples, n_chains=n_chains,
                      burn_in=burn_in, thin=thin, seed=seed, device=device, **kwargs)
