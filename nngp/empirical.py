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

import torch

from sampler._checks import check_choice, check_int
from sampler.architectures import FCN, Architecture, draw_standard, fcn_features, fcn_param_shapes
from sampler.seeding import make_generator

from .kernels import as_float64


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
        Any spec (FCN, CNN, LSTM; any activation).
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
    if vectorized and isinstance(arch, FCN) and arch.depth > 0:
        per_chunk = max(1, min(n_samples, 2 ** 24 // max(1, n * max(arch.width, d))))
        with torch.no_grad():
            while done < n_samples:
                b = min(per_chunk, n_samples - done)
                add(from_features(_fcn_features_batched(arch, xd, b, gen)))
                done += b
    else:
        for _ in range(n_samples):
            net = arch.build(shape, generator=gen, dtype=dtype, device=device)
            add(from_features(_penultimate(net, xd, batch_size).unsqueeze(0)))
    mean = acc / n_samples
    mean = 0.5 * (mean + mean.T)
    if not torch.isfinite(mean).all():
        raise FloatingPointError("the Monte Carlo kernel has non-finite entries (overflowing activations?)")
    if not return_stderr:
        return mean.cpu()
    var = (acc2 / n_samples - mean * mean).clamp_min(0.0) * (n_samples / (n_samples - 1))
    return mean.cpu(), (var / n_samples).sqrt().cpu()
