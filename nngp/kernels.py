"""Analytic NNGP kernels of the architecture specs in :mod:`sampler.architectures`.

The kernel of a spec is the covariance of its scalar output over random parameters, in the
infinite-width limit, under the parameterisation of the finite networks (``W ~ N(0,
sigma_w**2 / fan_in)``, ``b ~ N(0, sigma_b**2)``). Writing ``sw2 = sigma_w**2`` and ``sb2 =
sigma_b**2``:

FCN with ``depth`` hidden layers (inputs ``x`` of dimension ``d``)::

    K_0(x, x') = sb2 + sw2 * <x, x'> / d                  # first pre-activations
    K_{l+1}    = sb2 + sw2 * E[phi(u) phi(v)],  (u, v) ~ N(0, [[K_l(x,x), K_l(x,x')], [., K_l(x',x')]])

applied ``depth`` times (the last application is the readout). ``E[phi(u) phi(v)]`` is the
arc-cosine kernel of order 1 for relu (Cho & Saul 2009) and Williams' (1997) arcsine kernel for
erf. tanh has no closed form: use :func:`nngp.empirical_kernel`.

CNN (stride 1, zero 'same' padding as ``nn.Conv2d(padding=k // 2)``, ``depth`` conv layers with
an activation after each): with ``A`` the k x k average over offsets, counting the zero padding
(an out-of-image position contributes 0 to the sum and the division is always by ``k**2``,
because the fan-in ``C * k**2`` counts padded taps too)::

    S_1(p, p')     = sb2 + sw2 * A[ mean_c x_c(.) x'_c(.) ](p, p')
    S_{l+1}(p, p') = sb2 + sw2 * A[ E[phi phi'] ](p, p')       # A shifts p and p' together
    flatten readout: K = sb2 + sw2 * mean_p E[phi phi'](p, p)
    gap readout:     K = sb2 + sw2 * mean_{p, p'} E[phi phi'](p, p')

The flatten readout needs only same-position covariances (cost O(H W) per pair of inputs); the
global-average-pooling readout needs all pairs of positions (cost O((H W)**2 k**2) per pair),
about H*W times more: for 28 x 28 images that is hundreds of times slower.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from sampler.checks import check_device, check_real_array
from sampler.architectures import CNN, FCN, Architecture

TWO_PI = 2.0 * math.pi


def as_float64(name: str, x, *, device=None) -> torch.Tensor:
    """``x`` (tensor or array of shape (n, d)) as a float64 tensor; checks shape and finiteness."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, d), got {type(x).__name__}")
    where = device if device is not None else (x.device if isinstance(x, torch.Tensor) else "cpu")
    check_real_array(name, x, ndim=2)  # strings, complex, half precision, NaN/inf, empty
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (shape (n, d) with d >= 1), got shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.to(dtype=torch.float64, device=where)


def relu_expectation(c: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """``E[relu(u) relu(v)]`` for ``(u, v) ~ N(0, [[q1, c], [c, q2]])`` (broadcasting).

    Cho & Saul's arc-cosine kernel of order 1:
    ``sqrt(q1 q2) (sin t + (pi - t) cos t) / (2 pi)`` with ``cos t = c / sqrt(q1 q2)``.
    """
    return _relu_inplace(c.clone(), q1, q2)


def _relu_inplace(c: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    # in place on c: the kernel of 10^4 inputs is memory-bound, temporaries cost time
    tiny = torch.finfo(c.dtype).tiny
    norm = torch.sqrt(q1) * torch.sqrt(q2)
    rho = c.div_(norm.clamp_min(tiny)).clamp_(-1.0, 1.0)  # q == 0 implies c == 0, so rho = 0 there
    theta = torch.arccos(rho)
    out = torch.sin(theta)
    out.addcmul_(theta.neg_().add_(math.pi), rho)
    return out.mul_(norm).mul_(1.0 / TWO_PI)


def relu_expectation_diag(q: torch.Tensor) -> torch.Tensor:
    """``E[relu(u)^2] = q / 2`` for ``u ~ N(0, q)``."""
    return 0.5 * q


def erf_expectation(c: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """``E[erf(u) erf(v)] = (2/pi) arcsin(2c / sqrt((1 + 2 q1)(1 + 2 q2)))`` (Williams 1997)."""
    return (2.0 / math.pi) * torch.arcsin((2.0 * c / torch.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2))).clamp(-1.0, 1.0))


def erf_expectation_diag(q: torch.Tensor) -> torch.Tensor:
    """``E[erf(u)^2] = (2/pi) arcsin(2q / (1 + 2q))``."""
    return (2.0 / math.pi) * torch.arcsin(2.0 * q / (1.0 + 2.0 * q))


_EXPECTATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (relu_expectation, relu_expectation_diag),
    "erf": (erf_expectation, erf_expectation_diag),
}


def _expectations(arch) -> tuple[Callable, Callable] | None:
    return _EXPECTATIONS.get(arch.activation)


class AnalyticKernel:
    """A closed-form NNGP kernel of one spec type (subclass it and :func:`register_kernel` it).

    :func:`kernel` computes ``variances(arch, x, shape)`` (per-input variances of every layer, the
    output's last) of each input once, then ``block(arch, x1, x2, q1s, q2s, shape) -> (n1, n2)`` on
    pairs of ``block_size`` inputs; the diagonal is ``diag`` (``(n,)``). ``supports(arch)`` says
    whether the spec (its activation) has the closed form; ``shape`` checks one example's shape.
    """

    def supports(self, arch) -> bool:
        return _expectations(arch) is not None

    def shape(self, arch, input_shape, d: int) -> tuple[int, ...]:
        return (d,)

    def variances(self, arch, x, shape) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def block(self, arch, x1, x2, q1s, q2s, shape) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def diag(self, arch, x, shape) -> torch.Tensor:
        return self.variances(arch, x, shape)[-1]

    def block_size(self, arch, shape) -> int:
        return 2048


class SpecRegistry:
    """Closed forms keyed by architecture spec type: a spec finds the first one registered along its
    class's MRO (a subclass inherits its parent's unless it registers its own), which may still decline
    it (``supports``). The NNGP kernels here and the NTKs of :mod:`nngp.ntk` are two of them."""

    def __init__(self):
        self._impls: dict[type, Any] = {}

    def register(self, spec_cls: type):
        """Class decorator: an instance of the decorated class serves every spec of type ``spec_cls``."""
        def deco(cls):
            self._impls[spec_cls] = cls()
            return cls
        return deco

    def __iter__(self):
        """The spec types registered."""
        return iter(self._impls)

    def lookup(self, arch):
        """The implementation serving ``arch``, or None."""
        impl = next((self._impls[c] for c in type(arch).__mro__ if c in self._impls), None)
        return impl if impl is not None and impl.supports(arch) else None


_KERNELS = SpecRegistry()


def register_kernel(spec_cls: type):
    """Class decorator: the :class:`AnalyticKernel` subclass it decorates is the closed form of
    every spec of type ``spec_cls`` (and its subclasses)."""
    return _KERNELS.register(spec_cls)


def _analytic(arch) -> AnalyticKernel | None:
    return _KERNELS.lookup(arch)


def has_analytic_kernel(arch: Architecture) -> bool:
    """Whether :func:`kernel` has a closed form for ``arch`` (FCN or CNN with relu or erf)."""
    return _analytic(arch) is not None


def _require(arch) -> AnalyticKernel:
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a sampler architecture spec, got {type(arch).__name__}")
    impl = _analytic(arch)
    if impl is None:
        what = (f"activation {arch.activation!r}" if any(isinstance(arch, c) for c in _KERNELS)  # type: ignore[attr-defined]
                else f"the {arch.kind} architecture")
        raise ValueError(f"{what} has no closed-form NNGP kernel here (closed forms: "
                         f"{sorted(c.kind for c in _KERNELS)} with activation in {sorted(_EXPECTATIONS)}); use "
                         f"nngp.kernel_for(arch, x, ...) or nngp.empirical_kernel(arch, x, n_samples=..., seed=..., "
                         f"input_shape=...) for a Monte Carlo kernel over random finite networks")
    return impl


@register_kernel(FCN)
class _FCNKernel(AnalyticKernel):
    def variances(self, arch, x, shape):
        """``K_l(x, x)`` for l = 0..depth-1 (pre-activations), then the output's."""
        _, ediag = _expectations(arch)
        sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2
        q = sb2 + sw2 * (x * x).sum(1) / x.shape[1]
        out = [q]
        for _ in range(arch.depth):
            q = sb2 + sw2 * ediag(q)
            out.append(q)
        return out

    def block(self, arch, x1, x2, q1s, q2s, shape):
        e, _ = _expectations(arch)
        fn = _relu_inplace if arch.activation == "relu" else e
        sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2
        c = x1 @ x2.T
        c.mul_(sw2 / x1.shape[1]).add_(sb2)
        for layer in range(arch.depth):
            c = fn(c, q1s[layer][:, None], q2s[layer][None, :])
            c.mul_(sw2).add_(sb2)
        return c


def _avg_same(t: torch.Tensor, k: int) -> torch.Tensor:
    """k x k average with zero 'same' padding counted in the denominator, over the last two dims."""
    lead = t.shape[:-2]
    out = F.avg_pool2d(t.reshape(-1, 1, *t.shape[-2:]), k, stride=1, padding=k // 2, count_include_pad=True)
    return out.reshape(*lead, *t.shape[-2:])


def _avg_same_pairs(t: torch.Tensor, k: int) -> torch.Tensor:
    """``out(p, p') = mean_o t(p + o, p' + o)`` (zero outside) for ``t`` of shape (..., H, W, H, W)."""
    r = k // 2
    h, w = t.shape[-4], t.shape[-3]
    # avg_pool cannot shift two position pairs together; k*k shifted slice-adds do it exactly.
    pad = F.pad(t, (r, r, r, r, r, r, r, r))
    out = torch.zeros_like(t)
    for dy in range(k):
        for dx in range(k):
            out += pad[..., dy:dy + h, dx:dx + w, dy:dy + h, dx:dx + w]
    return out / (k * k)


@register_kernel(CNN)
class _CNNKernel(AnalyticKernel):
    def shape(self, arch, input_shape, d):
        if input_shape is None:
            raise ValueError("a CNN kernel needs input_shape=(channels, height, width) (e.g. split.input_shape)")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or math.prod(shape) != d:
            raise ValueError(f"input_shape must be (channels, height, width) with product d={d}, got {input_shape!r}")
        return shape

    def variances(self, arch, x, shape):
        """Per-input, per-position variances ``S_l(x, x)(p, p)``, l = 1..depth, each (n, H, W)."""
        _, ediag = _expectations(arch)
        sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2
        xi = x.reshape(-1, *shape)
        q = sb2 + sw2 * _avg_same((xi * xi).mean(1), arch.kernel_size)
        out = [q]
        for _ in range(arch.depth - 1):
            q = sb2 + sw2 * _avg_same(ediag(q), arch.kernel_size)
            out.append(q)
        return out

    def block(self, arch, x1, x2, q1s, q2s, shape):
        e, _ = _expectations(arch)
        sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2
        k = arch.kernel_size
        a, b = x1.reshape(-1, *shape), x2.reshape(-1, *shape)
        if arch.readout == "flatten":
            s = sb2 + sw2 * _avg_same(torch.einsum("ichw,jchw->ijhw", a, b) / shape[0], k)
            for layer in range(arch.depth):
                s = e(s, q1s[layer][:, None], q2s[layer][None, :])
                if layer < arch.depth - 1:
                    s = sb2 + sw2 * _avg_same(s, k)
            return sb2 + sw2 * s.mean(dim=(-2, -1))
        s = sb2 + sw2 * _avg_same_pairs(torch.einsum("ichw,jcuv->ijhwuv", a, b) / shape[0], k)
        for layer in range(arch.depth):
            s = e(s, q1s[layer][:, None, :, :, None, None], q2s[layer][None, :, None, None, :, :])
            if layer < arch.depth - 1:
                s = sb2 + sw2 * _avg_same_pairs(s, k)
        return sb2 + sw2 * s.mean(dim=(-4, -3, -2, -1))

    def diag(self, arch, x, shape):
        if arch.readout == "flatten":
            q = self.variances(arch, x, shape)[-1]
            return arch.sigma_b ** 2 + arch.sigma_w ** 2 * _expectations(arch)[1](q).mean(dim=(-2, -1))
        out = []  # gap couples positions: a block computation per input
        for i in range(x.shape[0]):
            q = self.variances(arch, x[i:i + 1], shape)
            out.append(self.block(arch, x[i:i + 1], x[i:i + 1], q, q, shape)[0, 0])
        return torch.stack(out) if out else x.new_zeros(0)

    def block_size(self, arch, shape):
        hw = shape[1] * shape[2]
        per_pair = hw * hw if arch.readout == "gap" else hw
        # keep each block's largest temporary near 2**24 float64 values (128 MiB)
        return max(1, int(math.sqrt(2 ** 24 / per_pair)))


def kernel(
    arch: Architecture,
    x1,
    x2=None,
    *,
    input_shape: tuple[int, ...] | None = None,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Analytic NNGP kernel of ``arch`` between inputs ``x1`` and ``x2``.

    Parameters
    ----------
    arch : sampler.Architecture with a registered closed form
        FCN with relu or erf; CNN (relu or erf) with ``flatten`` or ``gap`` readout. Anything else
        (tanh, LSTM, modules): the error says to use :func:`nngp.empirical_kernel`.
    x1 : tensor or array, shape (n1, d)
        Flattened inputs, as in ``sampler.Split``.
    x2 : tensor or array, shape (n2, d), optional
        Defaults to ``x1``; the result is then exactly symmetric and only blocks on or above
        the diagonal are computed.
    input_shape : tuple of int, optional
        Shape of one example; required for CNN (``(C, H, W)``), ignored for FCN.
    block_size : int, optional
        Inputs per block (memory grows with its square); a sensible default per architecture.
    device : optional
        Where to compute (default: ``x1``'s device). The result is returned on that device.

    Returns
    -------
    torch.Tensor, float64, shape (n1, n2)
        Covariance of the network's scalar output (dimensionless, output units squared).
    """
    device = check_device(device, allow_none=True)
    impl = _require(arch)
    x1 = as_float64("x1", x1, device=device)
    symmetric = x2 is None
    x2 = x1 if symmetric else as_float64("x2", x2, device=x1.device)
    d = x1.shape[1]
    if x2.shape[1] != d:
        raise ValueError(f"x1 and x2 must have the same number of columns, got {d} and {x2.shape[1]}")
    shape = impl.shape(arch, input_shape, d)
    bs = block_size if block_size is not None else impl.block_size(arch, shape)
    if not isinstance(bs, int) or bs < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    n1, n2 = x1.shape[0], x2.shape[0]
    q1 = impl.variances(arch, x1, shape)
    q2 = q1 if symmetric else impl.variances(arch, x2, shape)
    out = torch.empty(n1, n2, dtype=torch.float64, device=x1.device)
    for i in range(0, n1, bs):
        sl_i = slice(i, min(i + bs, n1))
        for j in range(i if symmetric else 0, n2, bs):
            sl_j = slice(j, min(j + bs, n2))
            kb = impl.block(arch, x1[sl_i], x2[sl_j], [q[sl_i] for q in q1], [q[sl_j] for q in q2], shape)
            if symmetric and j == i:
                kb = 0.5 * (kb + kb.T)  # rounding in the matmul breaks exact symmetry
            out[sl_i, sl_j] = kb
            if symmetric and j != i:
                out[sl_j, sl_i] = kb.T
    if symmetric:
        # exact diagonal from the variance recursion (arccos is ill-conditioned at correlation 1)
        out.diagonal().copy_(impl.diag(arch, x1, shape))
    if not torch.isfinite(out).all():
        raise FloatingPointError("the NNGP kernel has non-finite entries; check the inputs' scale")
    return out


def kernel_diag(arch: Architecture, x, *, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``K(x_i, x_i)`` for every row of ``x`` (shape (n,), float64), without the full matrix."""
    impl = _require(arch)
    x = as_float64("x", x)
    return impl.diag(arch, x, impl.shape(arch, input_shape, x.shape[1]))
