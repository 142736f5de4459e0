"""Neural tangent kernels: analytic (FCN, relu and erf) and empirical (any architecture).

The NTK of a network with parameters ``theta`` is ``Theta(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p``;
gradient descent on a squared loss moves the outputs along it. Unlike the NNGP kernel it depends
on the *parameterisation*, because a rescaling of a parameter rescales its gradient:

``standard`` (the project's, :mod:`sampler.architectures`; the default here)
    ``W ~ N(0, sigma_w**2 / fan_in)`` and ``b ~ N(0, sigma_b**2)`` are the trained parameters.
    ``Theta`` grows linearly with the width (a hidden weight matrix has ``fan_in`` times more
    entries than its gradient scale shrinks), so it is computed at the spec's own ``width``, and a
    stable learning rate is ``O(1 / width)``. This is the NTK of the networks the ``sgd`` estimator
    trains, so its time scale is the SGD learning rate's (see :mod:`nngp.mse`).
``ntk``
    ``W = sigma_w / sqrt(fan_in) * omega``, ``b = sigma_b * beta`` with ``omega, beta ~ N(0, 1)``
    trained (Jacot et al. 2018): a width-independent limit, the usual NTK recursion.

The FCN's NTK, layer by layer (``L = depth`` hidden layers, layer ``L + 1`` the readout; ``Sigma^l``
the NNGP recursion of :mod:`nngp.kernels`, ``G_1 = <x, x'> / d``, ``G_l = E[phi(u) phi(v)]`` under
``Sigma^{l-1}``, ``Sigma-dot^l = E[phi'(u) phi'(v)]`` under ``Sigma^l``)::

    P_l      = prod_{l'=l..L} sigma_w**2 * Sigma-dot^{l'}          (P_{L+1} = 1)
    ntk      : Theta = sum_l (sigma_w**2 G_l + sigma_b**2) P_l       (= Theta^{L+1} of the recursion
                                                                   Theta^{l+1} = Sigma^{l+1} + sigma_w**2 Theta^l Sigma-dot^l)
    standard : Theta = sum_l (fan_in_l G_l + 1) P_l                  (fan_in_1 = d, else width)

(a weight of layer l contributes ``fan_in_l / sigma_w**2`` times its NTK-parameterisation term, a bias
``1 / sigma_b**2`` times; both are the leading order in the width). ``E[phi' phi']`` is the
arc-cosine kernel of order 0 for relu, ``(pi - arccos rho) / (2 pi)``, and
``4 / (pi sqrt((1 + 2 q1)(1 + 2 q2) - 4 c**2))`` for erf.

:func:`empirical_ntk` is ``J J^T`` of random finite networks through the architecture protocol
(``torch.func.jacrev`` vectorised over stacked members), averaged over initialisations with a
standard error per entry, like :func:`nngp.empirical_kernel` for the NNGP: it serves every
architecture (CNN, LSTM, a user's module). A CNN's analytic NTK is not implemented (the empirical
one works for it).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from sampler.architectures import FCN, Architecture
from sampler.checks import check_choice, check_device, check_int
from sampler.seeding import make_generator

from .empirical import mc_mean
from .kernels import SpecRegistry, _FCNKernel, _expectations, as_float64

PARAMETERIZATIONS = ("standard", "ntk")
#: Jacobian entries (members x inputs x parameters) held at once by :func:`empirical_ntk`.
_CHUNK_ELEMENTS = 1 << 24


# --- E[phi'(u) phi'(v)] -----------------------------------------------------------------------------
def relu_derivative_expectation(c: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """``E[step(u) step(v)] = (pi - arccos(c / sqrt(q1 q2))) / (2 pi)`` for ``(u, v) ~ N(0, [[q1, c], [c, q2]])``
    (Cho & Saul's arc-cosine kernel of order 0; broadcasting). 1/4 where a variance is 0."""
    norm = torch.sqrt(q1 * q2)
    rho = torch.where(norm > 0, c / norm.clamp_min(torch.finfo(c.dtype).tiny), torch.zeros_like(c)).clamp(-1.0, 1.0)
    return (math.pi - torch.arccos(rho)) / (2.0 * math.pi)


def relu_derivative_expectation_diag(q: torch.Tensor) -> torch.Tensor:
    """``E[step(u)**2] = 1/2`` for ``u ~ N(0, q)``, q > 0."""
    return torch.full_like(q, 0.5)


def erf_derivative_expectation(c: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """``E[erf'(u) erf'(v)] = 4 / (pi sqrt((1 + 2 q1)(1 + 2 q2) - 4 c**2))`` (``erf'(u) = 2 exp(-u**2) / sqrt(pi)``)."""
    return 4.0 / (math.pi * torch.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2) - 4.0 * c * c))


def erf_derivative_expectation_diag(q: torch.Tensor) -> torch.Tensor:
    """``E[erf'(u)**2] = 4 / (pi sqrt(1 + 4 q))``."""
    return 4.0 / (math.pi * torch.sqrt(1.0 + 4.0 * q))


_DERIVATIVES: dict[str, tuple[Callable, Callable]] = {
    "relu": (relu_derivative_expectation, relu_derivative_expectation_diag),
    "erf": (erf_derivative_expectation, erf_derivative_expectation_diag),
}


# --- registry ------------------------------------------------------------------------------------------
class AnalyticNTK:
    """A closed-form NTK of one spec type (subclass it and :func:`register_ntk` it).

    ``layers(arch, x1, x2)`` returns, per parameter layer, ``(fan_in, weight_term, bias_term)``
    with ``(n1, n2)`` terms that are the layer's weight and bias contributions in the NTK
    parameterisation divided by ``sigma_w**2`` and ``sigma_b**2`` (``G_l P_l`` and ``P_l``);
    :func:`ntk` combines them for either parameterisation. ``x2 is None`` means ``x2 = x1``
    (and an exact diagonal).
    """

    def supports(self, arch) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def layers(self, arch, x1, x2) -> list[tuple[int, torch.Tensor, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


_NTKS = SpecRegistry()


def register_ntk(spec_cls: type):
    """Class decorator: the :class:`AnalyticNTK` subclass it decorates is the closed-form NTK of
    every spec of type ``spec_cls`` (and its subclasses); as :func:`nngp.register_kernel`."""
    return _NTKS.register(spec_cls)


def _analytic_ntk(arch) -> AnalyticNTK | None:
    return _NTKS.lookup(arch)


def has_analytic_ntk(arch: Architecture) -> bool:
    """Whether :func:`ntk` has a closed form for ``arch`` (FCN with relu or erf)."""
    return _analytic_ntk(arch) is not None


@register_ntk(FCN)
class _FCNNTK(AnalyticNTK):
    def supports(self, arch):
        return arch.activation in _DERIVATIVES and _expectations(arch) is not None

    def layers(self, arch, x1, x2):
        e, ediag = _expectations(arch)
        de, dediag = _DERIVATIVES[arch.activation]
        sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2
        sym = x2 is None
        d = x1.shape[1]
        q1 = _FCNKernel().variances(arch, x1, None)  # Sigma^l(x, x), l = 1..depth+1
        q2 = q1 if sym else _FCNKernel().variances(arch, x2, None)
        G = x1 @ (x1 if sym else x2).T / d
        if sym:
            G.diagonal().copy_((x1 * x1).sum(1) / d)
        gs, sdots = [G], []
        for layer in range(arch.depth):
            S = sb2 + sw2 * G
            a, b = q1[layer][:, None], q2[layer][None, :]
            sdot, G = de(S, a, b), e(S, a, b)
            if sym:
                sdot.diagonal().copy_(dediag(q1[layer]))
                G.diagonal().copy_(ediag(q1[layer]))
            sdots.append(sdot)
            gs.append(G)
        fans = [d] + [arch.width] * arch.depth
        out = []
        P = torch.ones_like(G)
        for layer in range(arch.depth, -1, -1):  # readout first, then down to the first layer
            out.append((fans[layer], gs[layer] * P, P))
            if layer > 0:
                P = P * (sw2 * sdots[layer - 1])
        return out[::-1]


def _require_ntk(arch) -> AnalyticNTK:
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a sampler architecture spec, got {type(arch).__name__}")
    impl = _analytic_ntk(arch)
    if impl is None:
        raise ValueError(f"{arch.describe()} has no closed-form NTK here (closed forms: "
                         f"{sorted(c.kind for c in _NTKS)} with activation in {sorted(_DERIVATIVES)}); use "
                         f"nngp.empirical_ntk(arch, x, n_init=..., seed=...) (J J^T of random finite networks)")
    return impl


def ntk(arch: Architecture, x1, x2=None, *, parameterization: str = "standard") -> torch.Tensor:
    """Analytic NTK of ``arch`` between ``x1`` and ``x2``.

    Parameters
    ----------
    arch : sampler.FCN with activation relu or erf
    x1 : tensor or array, shape (n1, d)
    x2 : tensor or array, shape (n2, d), optional
        Defaults to ``x1`` (then the result is exactly symmetric with an exact diagonal).
    parameterization : {"standard", "ntk"}
        See the module docstring. ``standard`` is the NTK of the project's networks at the spec's
        width (it grows linearly with it); ``ntk`` is width-independent.

    Returns
    -------
    torch.Tensor, float64, shape (n1, n2)
        In output units squared per unit of parameter squared (``standard``), i.e. ``df df'``
        summed over parameters.
    """
    impl = _require_ntk(arch)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    x1 = as_float64("x1", x1)
    x2 = None if x2 is None else as_float64("x2", x2, device=x1.device)
    if x2 is not None and x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of columns, got {x1.shape[1]} and {x2.shape[1]}")
    sw2, sb2 = arch.sigma_w ** 2, arch.sigma_b ** 2  # type: ignore[attr-defined]
    out = None
    for fan_in, w_term, b_term in impl.layers(arch, x1, x2):
        term = (sw2 * w_term + sb2 * b_term) if parameterization == "ntk" else (fan_in * w_term + b_term)
        out = term if out is None else out + term
    if x2 is None:
        out = 0.5 * (out + out.T)
    if not torch.isfinite(out).all():
        raise FloatingPointError("the NTK has non-finite entries; check the inputs' scale")
    return out


# --- empirical ---------------------------------------------------------------------------------------
def empirical_ntk(
    arch: Architecture,
    x,
    *,
    n_init: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    parameterization: str = "standard",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    return_stderr: bool = False,
):
    """``E[J(x) J(x')^T]`` over ``n_init`` random finite networks of ``arch`` (any architecture).

    Each network's Jacobian of its outputs on ``x`` with respect to all its parameters is computed
    by ``torch.func.jacrev`` of the protocol's ``apply`` (``arch.network(input_shape)``),
    ``torch.func.vmap``-ed over a chunk of stacked members; ``J J^T`` is averaged over members.

    Parameters
    ----------
    x : tensor or array, shape (n, d)
    n_init : int
        Random initialisations (>= 2), drawn by ``Network.draw`` from
        ``make_generator(seed, "nngp.empirical_ntk")``.
    seed : int
    input_shape : tuple of int, optional
        One example's shape (default ``(d,)``).
    parameterization : {"standard", "ntk"}
        ``standard``: the gradient with respect to the parameters as they are stored. ``ntk``: each
        parameter tensor's squared Jacobian weighted by its prior variance
        (:meth:`sampler.Architecture.parameter_stds` squared), the gradient with respect to unit
        Gaussian parameters; needs the standard initialisation.
    device, dtype :
        Where and in which precision the networks run (float64 by default: the NTK is a sum of many
        products). The result comes back on the CPU in float64.
    return_stderr : bool
        Also return the entrywise Monte Carlo standard error of the mean.

    Returns
    -------
    torch.Tensor, float64, shape (n, n)  (or ``(mean, stderr)``)
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be a sampler architecture spec, got {type(arch).__name__}")
    n_init = check_int("n_init", n_init, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    device = check_device(device)
    x64 = as_float64("x", x)
    n, d = x64.shape
    shape = (d,) if input_shape is None else tuple(int(s) for s in input_shape)
    if math.prod(shape) != d:
        raise ValueError(f"input_shape {input_shape!r} does not match the input dimension d={d}")
    net = arch.network(shape, dtype=dtype, device=device)
    if parameterization == "ntk":
        if not arch.standard_init:
            raise ValueError(f"parameterization='ntk' needs the standard initialisation (sigma_w, sigma_b), which "
                             f"{arch.describe()} does not use; use parameterization='standard'")
        scales = [std ** 2 for std in net.stds]
    else:
        scales = [1.0] * len(net.shapes)
    xd = x64.to(device=device, dtype=dtype)
    gen = make_generator(seed, "nngp.empirical_ntk", device=device)

    def outputs(ps):  # one member's parameters -> its (n,) outputs
        return net.apply([p.unsqueeze(0) for p in ps], xd)[0]

    jac = torch.func.vmap(torch.func.jacrev(outputs))
    acc = torch.zeros(n, n, dtype=torch.float64, device=device)
    acc2 = torch.zeros_like(acc) if return_stderr else None
    per_chunk = max(1, min(n_init, _CHUNK_ELEMENTS // max(1, n * net.n_params)))
    for done in range(0, n_init, per_chunk):
        params = net.draw(min(per_chunk, n_init - done), generator=gen)
        js = jac(tuple(params))  # each (E, n, *shape)
        theta = None
        for j, s in zip(js, scales):
            if s == 0.0:
                continue
            flat = j.reshape(j.shape[0], n, -1).to(torch.float64)
            term = s * (flat @ flat.transpose(1, 2))
            theta = term if theta is None else theta + term
        theta = 0.5 * (theta + theta.transpose(1, 2))
        acc.add_(theta.sum(0))
        if acc2 is not None:
            acc2.add_((theta * theta).sum(0))
    return mc_mean(acc, acc2, n_init, "the empirical NTK")


def ntk_for(arch: Architecture, x, *, parameterization: str = "standard", input_shape=None, n_init: int = 64,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The NTK of any architecture: :func:`ntk` where a closed form exists (stderr None), else
    :func:`empirical_ntk` over ``n_init`` networks of the spec's own width (with its stderr)."""
    if has_analytic_ntk(arch):
        return ntk(arch, x, parameterization=parameterization), None
    return empirical_ntk(arch, x, n_init=n_init, seed=seed, input_shape=input_shape,
                         parameterization=parameterization, return_stderr=True)
