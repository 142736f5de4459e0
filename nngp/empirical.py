"""Monte Carlo NNGP kernels: the output covariance of many random finite networks.

Works for any architecture, through its protocol (``arch.network``): draw members, apply them,
accumulate. Two estimators with the same expectation, the finite-width output covariance
``E[f(x) f(x')]``:

``readout``
    Integrates the readout layer out analytically: for one random network with readout inputs
    ``h(x)`` (fan-in ``n``), ``E_readout[f(x) f(x')] = sigma_b**2 + sigma_w**2 <h(x), h(x')> / n``.
    Averaging this over networks has a variance about ``n`` times smaller than averaging
    ``f(x) f(x')``. Needs a network that names its readout's inputs (``Network.features``: FCN,
    CNN, LSTM).
``outputs``
    The plain average of ``f(x) f(x')`` over networks (the definition; high variance).

``auto`` (default) is ``readout`` where the network names its readout's inputs, else ``outputs``.
Networks whose first layer is a dense map of the flattened input (``Architecture.dense_first_layer``,
the FCN) with the standard initialisation see the ``n`` inputs only through their span, of dimension
``r <= min(n, d)``: with ``V`` ``(d, r)`` an orthonormal basis of it (:func:`sampler.span_basis`),
``x W^T = (x V) (W V)^T`` and ``W V`` has independent ``N(0, sigma_w^2 / d)`` entries, so each network's
first weight is drawn directly as ``(fan_out, r)`` (``span=None``: where ``r < d``): the same
distribution, ``d / r`` times fewer random numbers and first-layer multiply-adds (120 MNIST points:
6.5x), other numbers for a seed than ``span=False``.

At finite width the expectation differs from the infinite-width (analytic) kernel by O(1/width)
once there are two or more nonlinear layers; with one hidden layer it is exactly the NNGP kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sampler.checks import check_choice, check_device, check_int
from sampler import span_basis
from sampler.architectures import Architecture
from sampler.seeding import make_generator

from .kernels import as_float64, has_analytic_kernel, kernel

DEFAULT_MC_SAMPLES = 2048
"""Random networks in the Monte Carlo kernel of :func:`kernel_for` when no closed form exists."""
#: Activations (members x inputs x units) per chunk of networks.
_CHUNK_ELEMENTS = 1 << 24


def empirical_kernel(
    arch: Architecture,
    x,
    *,
    n_samples: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    estimator: str = "auto",
    dtype: torch.dtype = torch.float32,
    return_stderr: bool = False,
    span: bool | None = None,
):
    """Monte Carlo kernel ``E[f(x_i) f(x_j)]`` over ``n_samples`` random networks of ``arch``.

    Parameters
    ----------
    x : tensor or array, shape (n, d)
        Flattened inputs.
    n_samples : int
        Number of random networks (>= 2).
    seed : int
        Seed of the networks' parameters (keyword-only; the global RNG is not touched). The
        networks are ``Network.draw`` from ``make_generator(seed, "nngp.empirical_kernel")``.
    input_shape : tuple of int, optional
        Shape of one example (default ``(d,)``; CNNs need ``(C, H, W)``).
    batch_size : int
        Inputs per forward pass (memory).
    device : str or torch.device
        Where the networks run; the result comes back on the CPU.
    estimator : {"auto", "readout", "outputs"}
        See the module docstring; all estimate the same finite-width covariance.
    dtype : torch.dtype
        Of the networks' forward passes; sums are accumulated in float64.

    span : bool or None
        Draw the first layer in the span of ``x`` (module docstring): None where it applies and
        ``r < d``, True wherever it applies (``ValueError`` where not), False never.

    Returns
    -------
    torch.Tensor, float64, shape (n, n)
        Or ``(kernel, stderr)`` (entrywise Monte Carlo standard error) with ``return_stderr=True``.
    """
    device = check_device(device)
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a sampler architecture spec, got {type(arch).__name__}")
    n_samples = check_int("n_samples", n_samples, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("estimator", estimator, ("auto", "readout", "outputs"))
    x64 = as_float64("x", x)
    n, d = x64.shape
    shape = (d,) if input_shape is None else tuple(int(s) for s in input_shape)
    if math.prod(shape) != d:
        raise ValueError(f"input_shape {input_shape!r} does not match the input dimension d={d}")
    if span is not None and not isinstance(span, bool):
        raise TypeError(f"span must be None (automatic), True or False, got {span!r}")
    applies = arch.dense_first_layer and arch.standard_init
    if span and not applies:
        raise ValueError(f"span=True needs a dense first layer on the flattened input with the standard "
                         f"initialisation, which the {arch.kind!r} architecture does not have; use span=None or False")
    basis = span_basis(x64) if (applies and span is not False) else None
    if basis is not None and span is None and basis.shape[1] >= d:
        basis = None
    first_scale = 1.0
    if basis is not None:  # the (r,)-input network draws its first weight with fan-in r; the prior's is d
        net = arch.network((basis.shape[1],), dtype=dtype, device=device)
        first_scale = math.sqrt(basis.shape[1] / d)
        x64 = x64 @ basis
    else:
        net = arch.network(shape, dtype=dtype, device=device)
    if estimator == "auto":
        estimator = "outputs" if net.features is None else "readout"
    if estimator == "readout" and net.features is None:
        raise ValueError(f"estimator='readout' needs the inputs of the network's readout, which the {arch.kind!r} "
                         f"architecture does not name; use estimator='outputs' (the plain average of f(x) f(x'))")
    xd = x64.to(device=device, dtype=dtype)
    gen = make_generator(seed, "nngp.empirical_kernel", device=device)
    acc = torch.zeros(n, n, dtype=torch.float64, device=device)
    acc2 = torch.zeros(n, n, dtype=torch.float64, device=device) if return_stderr else None
    per_chunk = max(1, min(n_samples, _CHUNK_ELEMENTS // max(1, n * max(net.units, x64.shape[1]))))
    with torch.no_grad():
        for done in range(0, n_samples, per_chunk):
            params = net.draw(min(per_chunk, n_samples - done), generator=gen)
            if first_scale != 1.0:
                params[0].mul_(first_scale)
            if estimator == "readout":
                h = torch.cat([net.features(params[:-2], xd[i:i + batch_size]) for i in range(0, n, batch_size)], 1).to(torch.float64)
                per_net = arch.sigma_b ** 2 + arch.sigma_w ** 2 * (h @ h.transpose(1, 2)) / h.shape[-1]  # type: ignore[attr-defined]
            else:
                f = torch.cat([net.apply(params, xd[i:i + batch_size]) for i in range(0, n, batch_size)], 1).to(torch.float64)
                per_net = f.unsqueeze(2) * f.unsqueeze(1)
            acc.add_(per_net.sum(0))
            if acc2 is not None:
                acc2.add_((per_net * per_net).sum(0))
    return mc_mean(acc, acc2, n_samples, "the Monte Carlo kernel", symmetrise=True)


def mc_mean(acc: torch.Tensor, acc2: torch.Tensor | None, n: int, what: str, *, symmetrise: bool = False):
    """The Monte Carlo mean ``acc / n`` of ``n`` draws, on the CPU, and with ``acc2`` (the sum of squares)
    its standard error per entry (the unbiased variance over ``n``); ``FloatingPointError`` naming ``what``
    where it is not finite. The Monte Carlo NNGP kernel and the empirical NTK share it."""
    mean = acc / n
    if symmetrise:
        mean = 0.5 * (mean + mean.T)
    if not torch.isfinite(mean).all():
        raise FloatingPointError(f"{what} has non-finite entries (overflowing activations?)")
    if acc2 is None:
        return mean.cpu()
    var = (acc2 / n - mean * mean).clamp_min(0.0) * (n / (n - 1))
    return mean.cpu(), (var / n).sqrt().cpu()


@dataclass(frozen=True)
class KernelEstimate:
    """The NNGP kernel an estimator uses, and how it was obtained.

    Attributes
    ----------
    K : torch.Tensor, float64, shape (n, n)
        The kernel on the given inputs (CPU unless computed analytically on a device).
    stderr : torch.Tensor or None, float64, shape (n, n)
        Monte Carlo standard error of each entry; None for an analytic kernel.
    n_samples : int
        Random networks averaged (0 for an analytic kernel).
    method : {"analytic", "monte-carlo"}
    """

    K: torch.Tensor
    stderr: torch.Tensor | None
    n_samples: int
    method: str

    def info(self) -> dict:
        """Flat facts for reports: method, samples, largest standard error relative to the diagonal."""
        out = {"kernel_method": self.method, "kernel_samples": self.n_samples}
        if self.stderr is not None:
            scale = self.K.diagonal().abs().max().clamp_min(torch.finfo(torch.float64).tiny)
            out["kernel_max_rel_stderr"] = float(self.stderr.max() / scale)
        return out


def kernel_for(
    arch: Architecture,
    x,
    *,
    input_shape: tuple[int, ...] | None = None,
    n_samples: int = DEFAULT_MC_SAMPLES,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> KernelEstimate:
    """The NNGP kernel of any architecture: analytic where a closed form exists, else Monte Carlo.

    The one place the P_B side gets its kernel (``train_posterior``, ``log_ps``, ``ess_posterior``
    and the estimators of the application route through it).

    Parameters
    ----------
    arch : sampler.Architecture
        A spec with a registered closed form (FCN / CNN with relu or erf): :func:`nngp.kernel`
        (infinite width). Anything else (tanh, LSTM, ``sampler.Module``, a registered spec of
        one's own): :func:`empirical_kernel` over ``n_samples`` random finite networks of the
        same spec (``estimator="auto"``), with its standard error per entry.
    x : tensor or array, shape (n, d)
    input_shape : tuple of int, optional
        Shape of one example (CNN, LSTM over images, modules).
    n_samples : int
        Random networks of the Monte Carlo kernel (>= 2; ignored when analytic).
    seed : int
        Seed of the Monte Carlo networks (keyword-only; the global RNG is not touched).
    device : optional
        Where to compute; the Monte Carlo kernel comes back on the CPU.
    """
    device = check_device(device, allow_none=True)
    if has_analytic_kernel(arch):
        return KernelEstimate(kernel(arch, x, input_shape=input_shape, device=device), None, 0, "analytic")
    K, se = empirical_kernel(arch, x, n_samples=n_samples, seed=seed, input_shape=input_shape,
                             device=device or "cpu", dtype=torch.float64, return_stderr=True)
    return KernelEstimate(K, se, n_samples, "monte-carlo")
