"""Monte Carlo NNGP kernels: the output covariance of many random finite networks.

Works for any architecture spec (LSTM and tanh included). Two estimators with the same
expectation, the finite-width output covariance ``E[f(x) f(x')]``:

``readout`` (default)
    Integrates the readout layer out analytically: for one random network with penultimate
    features ``h(x)`` (the input of its ``readout`` layer, fan-in ``n``),
    ``E_readout[f(x) f(x')] = sigma_b**2 + sigma_w**2 <h(x), h(x')> / n``. Averaging this over
    networks has a variance about ``n`` times smaller than averaging ``f(x) f(x')``.
``outputs``
    The plain average of ``f(x) f(x')`` over networks (the definition; high variance).

At finite width the expectation differs from the infinite-width (analytic) kernel by O(1/width)
once there are two or more nonlinear layers; with one hidden layer it is exactly the NNGP kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sampler._checks import check_choice, check_int
from sampler.architectures import FCN, Architecture, Module, draw_standard, fcn_features, fcn_param_shapes
from sampler.ensemble import EnsembleNet
from sampler.seeding import derive_seed, make_generator

from .kernels import as_float64, has_analytic_kernel, kernel

DEFAULT_MC_SAMPLES = 2048
"""Random networks in the Monte Carlo kernel of :func:`kernel_for` when no closed form exists."""


def _penultimate(net: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Inputs of ``net.readout`` for all rows of ``x`` (computed in batches), shape (n, fan_in)."""
    feats: list[torch.Tensor] = []
    handle = net.readout.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                net(x[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(feats)


def _fcn_features_batched(arch: FCN, x: torch.Tensor, n_nets: int, gen: torch.Generator) -> torch.Tensor:
    """Penultimate features of ``n_nets`` independent FCNs at once, shape (n_nets, n, width).

    The hidden layers of ``n_nets`` networks drawn as one tensor per parameter
    (``sampler.architectures.draw_standard``, the rule of ``arch.build``) and evaluated by the
    one batched FCN forward pass, so that many narrow networks cost one batched matmul.
    """
    shapes = fcn_param_shapes(x.shape[1], arch.depth, arch.width)[:-2]  # the readout is integrated out
    params = draw_standard(shapes, n_nets, sigma_w=arch.sigma_w, sigma_b=arch.sigma_b, generator=gen,
                           dtype=x.dtype, skip_zero=True)
    return fcn_features(params, x, arch.activation)


def empirical_kernel(
    arch: Architecture,
    x,
    *,
    n_samples: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    estimator: str = "readout",
    vectorized: bool = True,
    dtype: torch.dtype = torch.float32,
    return_stderr: bool = False,
):
    """Monte Carlo kernel ``E[f(x_i) f(x_j)]`` over ``n_samples`` random networks of ``arch``.

    Parameters
    ----------
    arch : sampler.Architecture
        Any spec (FCN, CNN, LSTM, any activation; ``sampler.Module``, whose networks' outputs are
        averaged, ``estimator="outputs"``).
    x : tensor or array, shape (n, d)
        Flattened inputs.
    n_samples : int
        Number of random networks.
    seed : int
        Seed of the networks' parameters (keyword-only; the global RNG is not touched).
    input_shape : tuple of int, optional
        Shape of one example (default ``(d,)``; CNNs need ``(C, H, W)``).
    batch_size : int
        Inputs per forward pass (memory).
    device : str or torch.device
        Where the networks run; the result comes back on the CPU.
    estimator : {"readout", "outputs"}
        See the module docstring; both estimate the same finite-width covariance.
    vectorized : bool
        For FCNs, draw many networks as one batched tensor per layer (same distribution as
        ``arch.build``, different random stream). Other specs always loop over ``arch.build``.
    dtype : torch.dtype
        Of the networks' forward passes; sums are accumulated in float64.
    return_stderr : bool
        Also return the entrywise Monte Carlo standard error (needs two more (n, n) buffers).

    Returns
    -------
    torch.Tensor, float64, shape (n, n)
        Or ``(kernel, stderr)`` with ``return_stderr=True``.
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a sampler architecture spec, got {type(arch).__name__}")
    n_samples = check_int("n_samples", n_samples, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("estimator", estimator, ("readout", "outputs"))
    x64 = as_float64("x", x)
    n, d = x64.shape
    shape = (d,) if input_shape is None else tuple(int(s) for s in input_shape)
    if math.prod(shape) != d:
        raise ValueError(f"input_shape {input_shape!r} does not match the input dimension d={d}")
    xd = x64.to(device=device, dtype=dtype)
    gen = make_generator(seed, "nngp.empirical_kernel", device=device)
    acc = torch.zeros(n, n, dtype=torch.float64, device=device)
    acc2 = torch.zeros(n, n, dtype=torch.float64, device=device) if return_stderr else None
    sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2  # type: ignore[attr-defined]

    def add(per_net: torch.Tensor) -> None:  # per_net: (b, n, n) estimates from b networks
        acc.add_(per_net.sum(0))
        if acc2 is not None:
            acc2.add_((per_net * per_net).sum(0))

    def from_features(h: torch.Tensor) -> torch.Tensor:  # h: (b, n, fan_in)
        h = h.to(torch.float64)
        if estimator == "readout":
            return sb2 + sw2 * (h @ h.transpose(1, 2)) / h.shape[-1]
        # draw the readout explicitly (the init rule of arch.build): f = h w^T + b
        w, b = draw_standard(fcn_param_shapes(h.shape[-1], 0, 1), h.shape[0], sigma_w=arch.sigma_w,  # type: ignore[attr-defined]
                             sigma_b=arch.sigma_b, generator=gen, dtype=torch.float64)  # type: ignore[attr-defined]
        f = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        return f @ f.transpose(1, 2)

    done = 0
    if estimator == "readout" and isinstance(arch, Module):
        raise ValueError("estimator='readout' needs the network's readout layer, which a sampler.Module does not "
                         "name; use estimator='outputs' (the plain average of f(x) f(x'))")
    if vectorized and isinstance(arch, FCN) and arch.depth > 0:
        per_chunk = max(1, min(n_samples, 2 ** 24 // max(1, n * max(arch.width, d))))
        with torch.no_grad():
            while done < n_samples:
                b = min(per_chunk, n_samples - done)
                add(from_features(_fcn_features_batched(arch, xd, b, gen)))
                done += b
    elif isinstance(arch, Module):
        # no separable readout: the outputs themselves, of networks vmapped in chunks; network t is
        # the one the SGD engine would start run t from with seed derive_seed(seed, "nngp.empirical_kernel")
        ens = EnsembleNet(arch, shape, dtype=dtype, device=device)
        mc_seed = derive_seed(seed, "nngp.empirical_kernel")
        per_chunk = max(1, min(n_samples, 256))
        with torch.no_grad():
            while done < n_samples:
                b = min(per_chunk, n_samples - done)
                params = [p.detach() for p in ens.zeros(b)]
                ens.init_(params, list(range(b)), list(range(done, done + b)), seed=mc_seed)
                f = torch.cat([ens.forward(params, xd[i:i + batch_size]) for i in range(0, n, batch_size)], 1)
                f = f.to(torch.float64)
                add(f.unsqueeze(2) * f.unsqueeze(1))
                done += b
    else:
        # built (and checked) once, then re-drawn in place: arch.build is construction + arch.init_,
        # so network t holds the values arch.build would give from the same generator state
        net = arch.build(shape, generator=gen, dtype=dtype, device=device)
        for t in range(n_samples):
            if t:
                arch.init_(net, gen)
            add(from_features(_penultimate(net, xd, batch_size).unsqueeze(0)))
    mean = acc / n_samples
    mean = 0.5 * (mean + mean.T)
    if not torch.isfinite(mean).all():
        raise FloatingPointError("the Monte Carlo kernel has non-finite entries (overflowing activations?)")
    if not return_stderr:
        return mean.cpu()
    var = (acc2 / n_samples - mean * mean).clamp_min(0.0) * (n_samples / (n_samples - 1))
    return mean.cpu(), (var / n_samples).sqrt().cpu()


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
        FCN / CNN with relu or erf: :func:`nngp.kernel` (infinite width). Anything else (tanh,
        LSTM, ``sampler.Module``): :func:`empirical_kernel` over ``n_samples`` random finite
        networks of the same spec (``readout`` estimator where the readout can be integrated
        out, the outputs' average for a ``Module``), with its standard error per entry.
    x : tensor or array, shape (n, d)
    input_shape : tuple of int, optional
        Shape of one example (CNN, LSTM over images, modules).
    n_samples : int
        Random networks of the Monte Carlo kernel (>= 2; ignored when analytic).
    seed : int
        Seed of the Monte Carlo networks (keyword-only; the global RNG is not touched).
    device : optional
        Where to compute; the Monte Carlo kernel comes back on the CPU.

    Returns
    -------
    KernelEstimate
    """
    if has_analytic_kernel(arch):
        return KernelEstimate(kernel(arch, x, input_shape=input_shape, device=device), None, 0, "analytic")
    est = "outputs" if isinstance(arch, Module) else "readout"
    K, se = empirical_kernel(arch, x, n_samples=n_samples, seed=seed, input_shape=input_shape,
                             device=device or "cpu", estimator=est, dtype=torch.float64, return_stderr=True)
    return KernelEstimate(K, se, n_samples, "monte-carlo")
