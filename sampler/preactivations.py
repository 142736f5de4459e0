"""Exact prior sampling of an FCN's outputs on n points by drawing pre-activations, not weights.

Given the activations ``A`` ``(n, fan_in)`` of one layer on the n points, the next layer's
pre-activations ``Z = A W^T + 1 b^T`` (standard parameterisation, ``W ~ N(0, sigma_w**2 /
fan_in)``, ``b ~ N(0, sigma_b**2)``) have independent columns, each ``N(0, K)`` with

    K = sigma_w**2 / fan_in * A A^T + sigma_b**2 * 1 1^T        (n x n).

So ``Z = F G`` for *any* factor ``F`` ``(n, q)`` with ``F F^T = K`` and ``G`` ``(q, width)`` of
independent ``N(0, 1)``: the same distribution of ``Z``, hence of the network's function on the
n points, as drawing the weights. The weights are one such factor, ``F = [sigma_w / sqrt(fan_in)
A, sigma_b 1]`` with ``q = fan_in + 1``; when ``n`` is smaller than that, an ``(n, n)`` factor
draws ``n * width`` numbers instead of ``(fan_in + 1) * width``. Drawing the random numbers, not
the arithmetic, is what prior sampling spends its time on (MNIST, d = 784, n = 14), so:

- **first layer** (``A = x``, the same for every network): one factor, computed once in float64
  from the SVD of ``F`` and truncated to its numerical rank ``r <= min(n, d + 1)`` (see
  :func:`input_factor`); then each network costs ``r * width`` normals;
- **later layers** (``A`` differs per network): per layer, the cheaper by :func:`layer_kind` of
  ``direct`` (``F`` itself: the weights' arithmetic, ``fan_in + 1`` rows of noise) and
  ``compact`` (an ``(n, n)`` factor of ``K`` per network, :func:`compact_factor`, ``n`` rows).

Exactness and rank deficiency
-----------------------------
``K`` is often singular: duplicate points, ``n > fan_in + 1``, relu rows of zeros. The factors
here never need ``K`` to be invertible:

- :func:`input_factor`: SVD of ``F`` (not of ``K``, whose condition number is the square), keeping
  singular values above ``s_max * max(n, q) * eps_float64``; what is dropped changes ``K`` by at
  most that squared (relative ~1e-28), and the reconstruction error is checked (``<= 1e-10``
  relative, else ``FloatingPointError``).
- :func:`compact_factor`: Cholesky of ``K`` in float64 where it succeeds (backward stable: ``L L^T =
  K + E``, ``|E| ~ n eps_64 |K|``; on an exactly singular ``K`` it may succeed with pivots of
  order ``sqrt(eps_64)`` ~ 1e-8 relative, below the float32 resolution of the outputs), and where
  it fails, Householder QR of ``F^T`` (``F F^T = R^T R``, backward stable row by row for any rank,
  no jitter). Nothing is added to the diagonal.

The result is the same distribution of functions as drawing weights (tests compare the two with
chi-square tests), not the same individual draws for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import check_choice, check_int
from .architectures import FCN

#: Cost of drawing one N(0, 1) number in float32 multiply-adds, measured on 2 CPU cores
#: (torch.randn ~8 ns per number, a small batched matmul ~0.05 ns per multiply-add).
RANDN_FLOPS = 160.0
#: Fixed cost per network of a 'compact' layer (LAPACK calls for a small Cholesky, ~3 us), in normals.
COMPACT_OVERHEAD = 400.0
LAYER_KINDS = ("direct", "compact")
_EPS64 = torch.finfo(torch.float64).eps


def layer_kind(n: int, fan_in: int, width: int, bias: bool) -> str:
    """The cheaper way to draw a layer's pre-activations on ``n`` points (a CPU cost model).

    ``direct`` draws ``(fan_in + bias) * width`` normals and multiplies them by the activations;
    ``compact`` draws ``n * width`` normals after a float64 Gram matrix and Cholesky per network.
    Costs are counted in normals (:data:`RANDN_FLOPS` multiply-adds each, float64 at twice
    float32, :data:`COMPACT_OVERHEAD` per Cholesky); ``compact`` needs ``n < fan_in + bias``.
    E.g. MNIST n = 14 into a 64-wide layer: ``compact``; a scalar readout or a narrow layer
    (width 8): ``direct``.
    """
    q = fan_in + int(bias)
    if n >= q:
        return "direct"
    per_normal = 1 + 2 * n / RANDN_FLOPS  # drawing it and multiplying it into n rows
    direct = q * width * per_normal
    compact = COMPACT_OVERHEAD + (4 * n * n * q + 2 * n ** 3) / RANDN_FLOPS + n * width * per_normal
    return "compact" if compact < direct else "direct"


def input_factor(x: torch.Tensor, sigma_w: float, sigma_b: float) -> torch.Tensor:
    """Factor ``L`` ``(n, r)``, float64 on the CPU, of the first layer's covariance on the points ``x``
    ``(n, d)``: ``L L^T = sigma_w**2 / d * x x^T + sigma_b**2``, ``r >= 1`` the numerical rank (module
    docstring), at most ``min(n, d + 1)``. ``FloatingPointError`` if ``L L^T`` differs from the
    covariance by more than 1e-10 of its largest entry."""
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    n, d = x64.shape
    cols = [x64 * (sigma_w / math.sqrt(d))]
    if sigma_b > 0:
        cols.append(torch.full((n, 1), float(sigma_b), dtype=torch.float64))
    f = torch.cat(cols, dim=1)
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    keep = s > s[0] * max(f.shape) * _EPS64
    keep[0] = True  # at least one column (of zeros when x = 0 and sigma_b = 0)
    factor = u[:, keep] * s[keep]
    # a point whose pre-activations are exactly 0 in every network (x = 0 with sigma_b = 0) keeps exact zeros:
    # rounding in the SVD would otherwise give it outputs of +-1e-17 and a random sign where weights give 0
    factor[(f == 0).all(dim=1)] = 0.0
    k = f @ f.T
    err = float((factor @ factor.T - k).abs().max())
    scale = float(k.abs().max())
    if err > 1e-10 * scale:
        raise FloatingPointError(f"the first-layer factor reproduces the covariance only to {err:.3g} "
                                 f"(largest entry {scale:.3g})")
    return factor


def compact_factor(a: torch.Tensor, scale: float, sigma_b: float) -> torch.Tensor:
    """Per-network factors ``L`` ``(E, n, n)``, float64 on ``a``'s device, of ``scale**2 a a^T + sigma_b**2
    1 1^T`` for the activations ``a`` ``(E, n, fan_in)`` of ``E`` networks, ``scale = sigma_w / sqrt(fan_in)``.

    Cholesky factors where the Cholesky succeeds; otherwise ``R^T`` from a QR of ``[scale a,
    sigma_b 1]^T`` (zero-padded to ``n`` columns when the rank bound is below n). Exact for any
    rank (module docstring).
    """
    a64 = a.to(torch.float64)
    k = torch.baddbmm(a64.new_full((1, 1, 1), float(sigma_b) ** 2), a64, a64.transpose(1, 2), alpha=scale ** 2)
    factor, info = torch.linalg.cholesky_ex(k)
    bad = info != 0
    if bool(bad.any()):
        f = a64[bad] * scale
        if sigma_b > 0:
            f = torch.cat([f, f.new_full((*f.shape[:2], 1), float(sigma_b))], dim=2)
        r = torch.linalg.qr(f.transpose(1, 2), mode="r")[1]  # (nb, min(q, n), n)
        fix = f.new_zeros(f.shape[0], f.shape[1], f.shape[1])
        fix[:, :, :r.shape[1]] = r.transpose(1, 2)
        factor[bad] = fix
    return factor


@dataclass(frozen=True)
class FCNPlan:
    """How an FCN's pre-activations on ``n`` points are drawn, layer by layer.

    Attributes
    ----------
    first : tensor ``(n, r)``, float64, CPU
        :func:`input_factor` of the points.
    kinds : tuple of str
        ``"direct"`` or ``"compact"`` for each layer after the first (the readout last).
    noise_shapes : tuple of (int, int)
        Shape ``(rows, width)`` of each layer's random draws (:func:`draw_noise`), first layer included:
        ``(r, width)``; ``(fan_in + 1, width)`` (``fan_in`` without a bias) for ``direct``;
        ``(n, width)`` for ``compact``. A network costs ``sum(rows * width)`` normals.
    """

    arch: FCN
    first: torch.Tensor
    kinds: tuple[str, ...]
    noise_shapes: tuple[tuple[int, int], ...]

    @property
    def n_points(self) -> int:
        return int(self.first.shape[0])


def plan_fcn(arch: FCN, x: torch.Tensor, *, kinds=None) -> FCNPlan:
    """The :class:`FCNPlan` of ``arch`` on the points ``x`` ``(n, d)``.

    ``kinds`` (one of :data:`LAYER_KINDS` per layer after the first, readout last) overrides the
    cost model :func:`layer_kind`; both give the same distribution.
    """
    if not isinstance(arch, FCN):
        raise TypeError(f"arch must be a sampler.FCN for pre-activation sampling, got {type(arch).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (n, d), got shape {tuple(x.shape)}")
    n = x.shape[0]
    bias = arch.sigma_b > 0
    widths = [arch.width] * arch.depth + [1]
    if kinds is None:
        kinds = tuple(layer_kind(n, fan_in, w, bias) for fan_in, w in zip(widths[:-1], widths[1:]))
    kinds = tuple(kinds)
    if len(kinds) != arch.depth:
        raise ValueError(f"kinds must name one kind per layer after the first ({arch.depth}), got {len(kinds)}")
    for i, kind in enumerate(kinds):
        check_choice(f"kinds[{i}]", kind, LAYER_KINDS)
    first = input_factor(x, arch.sigma_w, arch.sigma_b)
    shapes = [(first.shape[1], widths[0])] + [(n if kind == "compact" else fan_in + int(bias), w)
                                              for kind, fan_in, w in zip(kinds, widths[:-1], widths[1:])]
    return FCNPlan(arch, first, kinds, tuple(shapes))


def draw_noise(plan: FCNPlan, size: int, *, generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """The random numbers of ``size`` networks: one tensor ``(size, rows, width)`` per layer.

    Drawn layer after layer from ``generator`` (on its device) as ``N(0, 1)``; a ``direct``
    layer's rows are then scaled to its weights and bias (``sigma_w / sqrt(fan_in)``, and
    ``sigma_b`` for the last row), once per call rather than once per evaluated batch.
    """
    check_int("size", size, minimum=0)
    noise = [torch.randn((size, *shape), generator=generator, dtype=dtype, device=generator.device)
             for shape in plan.noise_shapes]
    arch = plan.arch
    for kind, g in zip(plan.kinds, noise[1:]):
        if kind == "direct":
            fan_in = g.shape[1] - int(arch.sigma_b > 0)
            g[:, :fan_in].mul_(arch.sigma_w / math.sqrt(fan_in))
            g[:, fan_in:].mul_(arch.sigma_b)
    return noise


def evaluation_batch(plan: FCNPlan, size: int) -> int:
    """Networks per batched pass when the caller does not say: as many as keep one layer's
    activations within 2**22 floats (16 MiB in float32), at least 256, at most ``size``.

    Fewer, larger passes suffer far less when the cores are shared with other processes (each
    multi-threaded op then waits for a descheduled thread); the noise of ``size`` networks,
    already in memory, is of the same order as their activations.
    """
    width = max(w for _, w in plan.noise_shapes)
    return max(1, min(size, max(256, 2 ** 22 // (plan.n_points * width))))


def outputs_from_noise(plan: FCNPlan, noise: list[torch.Tensor], *, batch_size: int | None = None) -> torch.Tensor:
    """Outputs ``(size, n)`` on the plan's points of the networks whose noise is ``noise``.

    Network ``j`` depends on row ``j`` of every noise tensor only; ``batch_size`` networks are
    evaluated at once (memory ~ ``batch_size * n * width``; default :func:`evaluation_batch`),
    which does not change the values.
    """
    size = noise[0].shape[0]
    batch_size = evaluation_batch(plan, size) if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    first = plan.first.to(device=noise[0].device, dtype=noise[0].dtype)
    outs = [_outputs(plan, first, [g[lo:lo + batch_size] for g in noise]) for lo in range(0, size, batch_size)]
    return torch.cat(outs) if outs else noise[0].new_zeros(0, plan.n_points)


_IN_PLACE = {"relu": torch.relu_, "erf": torch.erf_, "tanh": torch.tanh_}


def _outputs(plan: FCNPlan, first: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
    arch = plan.arch
    phi_ = _IN_PLACE[arch.activation]  # in place: each z is used once
    sigma_b = arch.sigma_b
    # bmm of the expanded factor: ~4x faster than torch.matmul's broadcast of a 2-D operand here
    z = torch.bmm(first.expand(noise[0].shape[0], *first.shape), noise[0])  # (B, n, width)
    for kind, g in zip(plan.kinds, noise[1:]):
        fan_in = z.shape[-1]
        if kind == "compact":  # the activations feed only the float64 Gram matrix
            factor = compact_factor(phi_(z.to(torch.float64)), arch.sigma_w / math.sqrt(fan_in), sigma_b)
            z = torch.bmm(factor.to(z.dtype), g)
            continue
        a = phi_(z)  # 'direct': g holds the weights (rows :fan_in) and the bias (row fan_in), scaled
        z = torch.baddbmm(g[:, fan_in:], a, g[:, :fan_in]) if sigma_b > 0 else torch.bmm(a, g)
    return z.squeeze(-1)
