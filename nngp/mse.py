"""Gaussian distributions of functions from squared-loss training at infinite width (pure maths).

Two objects, both Gaussian on the points ``Z`` = the m training inputs ``X`` then the test points:

:func:`gd_mse_ensemble`
    Infinitely wide networks trained by gradient flow on the squared loss from random
    initialisations (Lee et al. 2019, "Wide neural networks of any depth evolve as linear models
    under gradient descent"; neural-tangents' ``predict.gradient_descent_mse_ensemble``). With NNGP
    kernel ``K``, NTK ``Theta`` and ``M(tau) = Theta_XX^-1 (I - exp(-tau Theta_XX))``, the outputs at
    flow time ``tau`` are linear in the initial function ``f_0 ~ GP(0, K)``::

        f_tau(Z) = f_0(Z) + Theta_ZX M (Y - f_0(X)) = B f_0(Z) + A Y,   A = Theta_ZX M,   B = I - A P_X

    so they are Gaussian with mean ``A Y`` and covariance ``B K_ZZ B^T``. At ``tau = inf`` the
    test block is the issue's ``K_EE + Theta_EX Theta^-1 K_XX Theta^-1 Theta_XE - (Theta_EX Theta^-1
    K_XE + transpose)`` with mean ``Theta_EX Theta^-1 Y``, and the training block is exactly ``Y``
    (variance 0). ``M`` is computed from the eigendecomposition of ``Theta_XX``, with
    ``(1 - exp(-lambda tau)) / lambda`` written as ``-expm1(-lambda tau) / lambda`` (exact for small
    ``lambda tau``).

    Time: for the loss ``(1 / (2N)) sum_i (f(x_i) - y_i)**2`` and learning rate ``eta``, gradient
    descent for ``t`` steps is flow time ``tau = eta t / N``. The ``sgd`` estimator's ``loss = "mse"``
    is the *mean* ``(1/m) sum (f - y)**2`` (twice that loss with N = m): full-batch gradient descent
    with learning rate ``lr`` for ``steps`` steps is ``tau = 2 lr steps / m``
    (:func:`flow_time`), in the parameterisation in which ``lr`` is applied (standard, for
    ``sampler``'s networks: use the standard-parameterisation NTK, :func:`nngp.ntk`).

:func:`gp_regression`
    The NNGP posterior with a Gaussian likelihood of variance ``noise`` (GP regression on the
    targets): mean ``K_ZX (K_XX + noise I)^-1 Y``, covariance ``K_ZZ - K_ZX (K_XX + noise I)^-1 K_XZ``,
    by a Cholesky factorisation (small m) or by gpytorch's linear-operator solves (preconditioned
    conjugate gradients, what gpytorch's exact GP uses above its Cholesky size; large m, GPU).

Targets are the squared loss's ``Y = 2 y - 1`` in {-1, +1} (:func:`targets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sampler.checks import check_choice, check_device, check_float, check_int

SOLVERS = ("auto", "cholesky", "cg")
#: ``solver="auto"`` factorises K_XX by Cholesky up to this m, and uses conjugate gradients above.
CHOLESKY_MAX_M = 4000


@dataclass(frozen=True)
class GaussianOnPoints:
    """A Gaussian on the m training points then the test points.

    Attributes
    ----------
    mean : torch.Tensor, float64, shape (n,)
    cov : torch.Tensor, float64, shape (n, n)
        Output units (the targets are +-1).
    n_train : int
        m: the first m entries are the training points.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    n_train: int

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, cov)`` of the test block, shapes (k,) and (k, k)."""
        m = self.n_train
        return self.mean[m:], self.cov[m:, m:]

    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, cov)`` of the training block, shapes (m,) and (m, m)."""
        m = self.n_train
        return self.mean[:m], self.cov[:m, :m]


def targets(y) -> torch.Tensor:
    """The squared loss's targets ``2 y - 1`` (float64) of 0/1 labels ``y`` (shape (m,))."""
    y = torch.as_tensor(y)
    if y.dim() != 1 or not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"y must be a 1-d array of 0/1 labels, got shape {tuple(y.shape)} with values "
                         f"{sorted(set(y.reshape(-1).tolist()))[:5]}")
    return 2.0 * y.to(torch.float64) - 1.0


def flow_time(lr: float, steps: int, m: int) -> float:
    """Flow time ``tau = 2 lr steps / m`` of ``steps`` full-batch gradient-descent steps with learning
    rate ``lr`` on the mean squared error ``(1/m) sum (f - y)**2`` over ``m`` examples."""
    lr = check_float("lr", lr, minimum=0.0, strict_minimum=True)
    steps = check_int("steps", steps, minimum=0)
    m = check_int("m", m, minimum=1)
    return 2.0 * lr * steps / m


def _square(name: str, A, n: int | None = None) -> torch.Tensor:
    if not isinstance(A, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, n), got {type(A).__name__}")
    A = torch.as_tensor(A, dtype=torch.float64)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or (n is not None and A.shape[0] != n):
        raise ValueError(f"{name} must be a square (n, n) matrix{'' if n is None else f' with n={n}'}, "
                         f"got shape {tuple(A.shape)}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} has non-finite entries")
    return A


def _check_targets(Y, m: int) -> torch.Tensor:
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if Y.shape != (m,) or not bool(torch.isfinite(Y).all()):
        raise ValueError(f"Y must be a finite vector of the m={m} training targets, got shape {tuple(Y.shape)}")
    return Y


def _check_m(m, n: int) -> int:
    return check_int("n_train", m, minimum=1, maximum=n)


def gd_mse_ensemble(K, theta, Y, *, n_train: int, time: float = math.inf, rcond: float = 1e-12) -> GaussianOnPoints:
    """The Gaussian of infinitely wide networks trained by gradient flow on the squared loss.

    Parameters
    ----------
    K : tensor or array, shape (n, n)
        NNGP kernel on the m training points then the test points.
    theta : tensor or array, shape (n, n)
        NTK on the same points, in the parameterisation of the learning rate (module docstring).
    Y : tensor or array, shape (m,)
        Training targets (``targets(y)`` for 0/1 labels).
    n_train : int
        m.
    time : float
        Flow time ``tau = eta t / N`` in the units of ``theta`` (``math.inf``: trained to the end;
        0: the prior ``N(0, K)``).
    rcond : float
        At ``time = inf`` the eigenvalues of ``Theta_XX`` below ``rcond * max`` are an error (a
        singular NTK has no unique infinite-time limit).

    Returns
    -------
    GaussianOnPoints
        Mean (n,) and covariance (n, n) of the trained outputs on all n points.
    """
    K = _square("K", K)
    n = K.shape[0]
    theta = _square("theta", theta, n)
    m = _check_m(n_train, n)
    Y = _check_targets(Y, m)
    if not (isinstance(time, float) and time == math.inf):
        time = check_float("time", time, minimum=0.0)
    lam, V = torch.linalg.eigh(0.5 * (theta[:m, :m] + theta[:m, :m].T))
    top = float(lam[-1])
    if top <= 0:
        raise ValueError("theta's training block must be positive definite, its largest eigenvalue is "
                         f"{top:.3g}")
    if math.isinf(time):
        if float(lam[0]) <= rcond * top:
            raise ValueError(f"theta's training block is singular (eigenvalues {float(lam[0]):.3g} .. {top:.3g}): "
                             f"the infinite-time limit is not unique; use a finite time")
        g = 1.0 / lam
    else:
        lam_c = lam.clamp_min(0.0)
        small = lam_c * time < 1e-300
        g = torch.where(small, torch.full_like(lam_c, time), -torch.expm1(-lam_c * time) / lam_c.clamp_min(1e-300))
    Mx = (V * g) @ V.T  # M(tau), (m, m)
    A = theta[:, :m] @ Mx  # (n, m)
    B = torch.eye(n, dtype=torch.float64)
    B[:, :m] -= A
    mean = A @ Y
    cov = B @ K @ B.T
    cov = 0.5 * (cov + cov.T)
    return GaussianOnPoints(mean, cov, m)


def gp_regression(K, Y, *, n_train: int, noise: float, solver: str = "auto", cg_tol: float = 1e-6,
                  device: str | torch.device = "cpu", joint: bool = True) -> GaussianOnPoints:
    """The posterior of latent GP values on all points given noisy training targets.

    Parameters
    ----------
    K : tensor or array, shape (n, n)
        NNGP kernel on the m training points then the test points.
    Y : tensor or array, shape (m,)
        Targets (``targets(y)``).
    n_train : int
        m.
    noise : float
        Variance of the Gaussian likelihood (> 0), output units squared.
    solver : {"auto", "cholesky", "cg"}
        ``cholesky``: exact factorisation of ``K_XX + noise I``. ``cg``: gpytorch's linear-operator
        solve with preconditioned conjugate gradients (``gpytorch.settings.max_cholesky_size(0)``)
        to tolerance ``cg_tol``; it scales past where a Cholesky does and runs on a GPU. ``auto``:
        Cholesky up to m = :data:`CHOLESKY_MAX_M`.
    device :
        Where the solve runs (float64); the result comes back on the CPU.
    joint : bool
        True: the posterior on the training and test points (``n`` right-hand sides); False: on the
        test points only (``k + 1`` right-hand sides, what large m needs; the result's ``n_train``
        is then 0).

    Returns
    -------
    GaussianOnPoints
        Latent posterior mean and covariance on all n points (or the k test points); its training
        block is not constrained to the targets' signs.
    """
    K = _square("K", K)
    n = K.shape[0]
    m = _check_m(n_train, n)
    Y = _check_targets(Y, m)
    noise = check_float("noise", noise, minimum=0.0, strict_minimum=True)
    check_choice("solver", solver, SOLVERS)
    device = check_device(device)
    if solver == "auto":
        solver = "cholesky" if m <= CHOLESKY_MAX_M else "cg"
    Kd = K.to(device)
    Kxx = Kd[:m, :m] + noise * torch.eye(m, dtype=torch.float64, device=Kd.device)
    first = 0 if joint else m  # the points the posterior is on: Z = all, or the test points
    rhs = torch.cat([Y.to(Kd.device)[:, None], Kd[:m, first:]], 1)  # (m, 1 + |Z|)
    if solver == "cholesky":
        L, info = torch.linalg.cholesky_ex(Kxx)
        if int(info) != 0:
            raise ValueError(f"K_XX + noise I is not positive definite (Cholesky failed at row {int(info)}); "
                             f"raise noise")
        sol = torch.cholesky_solve(rhs, L)
    else:
        sol = _cg_solve(Kxx, rhs, cg_tol)
    alpha, W = sol[:, 0], sol[:, 1:]  # (K_XX + s I)^-1 Y, (K_XX + s I)^-1 K_XZ
    mean = Kd[first:, :m] @ alpha
    cov = Kd[first:, first:] - Kd[first:, :m] @ W
    cov = 0.5 * (cov + cov.T)
    return GaussianOnPoints(mean.cpu(), cov.cpu(), m if joint else 0)


def _cg_solve(A: torch.Tensor, rhs: torch.Tensor, tol: float) -> torch.Tensor:
    """gpytorch's conjugate gradients (``linear_operator.utils.linear_cg``, the solver under its exact
    GP above ``max_cholesky_size``) on ``A X = rhs``, columns at once, to relative residual ``tol``.

    Its default ``eps = 1e-10``, added to CG's inner products, caps the attainable relative residual
    near 1e-5 (measured here on a 16 x 16 NNGP system: error 1.4e-4 whatever the tolerance): it is
    lowered to 1e-30, which reaches 1e-10.
    """
    from linear_operator.utils.linear_cg import linear_cg  # gpytorch's stack; slow to import

    scale = rhs.norm(dim=0, keepdim=True).clamp_min(torch.finfo(rhs.dtype).tiny)
    sol = linear_cg(A.matmul, rhs / scale, tolerance=tol, eps=1e-30, stop_updating_after=tol * 1e-3,
                    max_iter=max(1000, 10 * A.shape[0]), max_tridiag_iter=0)
    return sol * scale
