"""Sharpness of trained networks, every member of an ensemble at once.

Pure functions over the architecture protocol (:mod:`sampler.ensemble`): ``net`` is a
:class:`~sampler.Network`, ``params`` stacked members ``(E, *shape)``, the loss is each member's mean
:func:`~sampler.ensemble.pointwise_loss` on the training set ``x`` ``(n, d)``, ``y`` ``(n,)`` 0/1
(the :class:`~sampler.TrainSpec`'s loss). Members never mix (block-diagonal Hessian of the summed
losses), so every measure of member ``j`` is the measure of the lone network ``j``.

Measures (:data:`MEASURES`):

- :func:`epsilon_sharpness` -- Keskar et al. (2017) as Zhang et al. (2021) use it: the largest loss
  increase in the box ``|delta_i| <= epsilon (|w_i| + 1)``, found by projected gradient ascent with
  sign steps, reported as ``100 (max loss - loss) / (1 + loss)`` (dimensionless, >= 0).
- :func:`hessian_trace` -- Hutchinson's estimator ``E[v^T H v]`` with Rademacher probes, and its
  standard error over the probes.
- :func:`top_eigenvalue` -- the largest (algebraic) Hessian eigenvalue by Lanczos with full
  reorthogonalisation, with the Ritz residual ``||H s - theta s||`` and a convergence flag.
- :func:`gauss_newton_trace` -- the exact trace of the Gauss-Newton matrix (per-example output
  gradients times the loss curvature ``p (1 - p)``): cheap, no probes.

Rescaling (Dinh et al. 2017): for a relu FCN, ``W1/alpha, b1/alpha, W2*alpha`` is the same function
(positive homogeneity) with another Hessian. :func:`rescale` applies an architecture's factors
(:func:`rescaling_factors`, a registry keyed by spec type: :func:`register_rescaling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .architectures import FCN, Architecture
from .checks import check_choice, check_float, check_int
from .ensemble import LOSSES, Network, member_grads, member_hvp, pointwise_loss
from .seeding import make_generator


# --- helpers ---------------------------------------------------------------------------------------
def member_loss(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                loss: str) -> torch.Tensor:
    """Each member's mean loss on ``(x, y)``: ``(E,)``."""
    return pointwise_loss(net.apply(list(params), x), y, loss).mean(-1)


def _flat(ps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stacked tensors ``(E, *shape)`` -> one ``(E, N)`` matrix per member row."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in ps], dim=1)


def _unflat(v: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, a = [], 0
    for p in like:
        n = p[0].numel()
        out.append(v[:, a:a + n].reshape(p.shape))
        a += n
    return out


def _generators(generator, e: int) -> list[torch.Generator]:
    """One CPU generator per member: ``generator`` a list of ``E`` (member ``j`` draws from its own,
    so its numbers do not depend on the other members) or one shared by all."""
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * e
    if len(gens) != e or not all(isinstance(g, torch.Generator) for g in gens):
        raise TypeError(f"generator must be a torch.Generator or a list of {e} (one per member), got {generator!r}")
    return gens


def _draw(gens: Sequence[torch.Generator], shape: tuple[int, ...], rademacher: bool) -> torch.Tensor:
    """``(E, *shape)`` float64: member ``j``'s block from ``gens[j]`` (Rademacher +-1 or standard normal)."""
    if rademacher:
        return torch.stack([torch.randint(0, 2, shape, generator=g).double() * 2 - 1 for g in gens])
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])


def _tile(params: Sequence[torch.Tensor], times: int) -> list[torch.Tensor]:
    """``times`` copies of the ensemble, copy-major: row ``c * E + j`` is member ``j``."""
    return [p.repeat(times, *([1] * (p.dim() - 1))) for p in params]


# --- epsilon-sharpness ----------------------------------------------------------------------------
def epsilon_sharpness(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                      loss: str, epsilon: float = 1e-4, steps: int = 20) -> torch.Tensor:
    """Keskar's epsilon-sharpness of each member, ``(E,)``, dimensionless (a percentage).

    ``100 (max_{delta in C} L(w + delta) - L(w)) / (1 + L(w))`` over the box ``C = {|delta_i| <=
    epsilon (|w_i| + 1)}``. The maximum is found by projected gradient ascent from ``delta = 0``
    with sign steps of ``2.5 * bound / steps`` (each step clipped back into the box), keeping the
    largest loss seen; so the value is >= 0 and a lower bound of the true maximum.

    Parameters
    ----------
    epsilon : float
        Relative half-width of the box (> 0; Zhang et al. use 1e-4).
    steps : int
        Ascent steps (>= 1), one gradient of every member each.
    """
    check_float("epsilon", epsilon, minimum=0.0, strict_minimum=True)
    steps = check_int("steps", steps, minimum=1)
    check_choice("loss", loss, LOSSES)
    params = [p.detach() for p in params]
    bound = [epsilon * (p.abs() + 1) for p in params]
    with torch.no_grad():
        base = member_loss(net, params, x, y, loss=loss)
    best = base.clone()
    delta = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        w = [p + d for p, d in zip(params, delta)]
        g = member_grads(net, w, x, y, loss=loss)
        delta = [torch.maximum(torch.minimum(d + 2.5 * b / steps * gi.sign(), b), -b)
                 for d, b, gi in zip(delta, bound, g)]
        with torch.no_grad():
            best = torch.maximum(best, member_loss(net, [p + d for p, d in zip(params, delta)], x, y, loss=loss))
    return 100 * (best - base) / (1 + base)


# --- Hessian trace ----------------------------------------------------------------------------------
def hessian_trace(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                  loss: str, probes: int = 32, generator, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson's estimate of each member's Hessian trace and its standard error, both ``(E,)``
    (units of the loss per parameter squared).

    ``mean_p v_p^T H v_p`` over ``probes`` Rademacher vectors ``v_p`` (entries +-1; ``generator``: one
    CPU generator, or a list with one per member, member ``j`` drawing its probes from its own),
    each an unbiased estimate of ``tr H``; the standard error is the sample standard
    deviation over the probes divided by ``sqrt(probes)``. ``chunk`` probes are evaluated at once as
    copies of the ensemble (one batched Hessian-vector product of ``chunk * E`` members).
    """
    probes = check_int("probes", probes, minimum=2)
    chunk = check_int("chunk", chunk, minimum=1)
    params = [p.detach() for p in params]
    e, n = params[0].shape[0], sum(p[0].numel() for p in params)
    gens = _generators(generator, e)
    values = []
    for a in range(0, probes, chunk):
        c = min(chunk, probes - a)
        tiled = _tile(params, c)
        flat = _draw(gens, (c, n), rademacher=True).transpose(0, 1).reshape(c * e, n)  # copy-major, like _tile
        v = _unflat(flat.to(dtype=params[0].dtype, device=params[0].device), tiled)
        hv = member_hvp(net, tiled, v, x, y, loss=loss)
        quad = sum((vi * hi).reshape(c * e, -1).sum(1) for vi, hi in zip(v, hv))
        values.append(quad.reshape(c, e))
    q = torch.cat(values)  # (probes, E)
    return q.mean(0), q.std(0, correction=1) / math.sqrt(probes)


# --- Gauss-Newton trace --------------------------------------------------------------------------------
_GN_ELEMENTS = 1 << 24  # per-example gradient entries (examples x members x parameters) held at once


def gauss_newton_trace(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                       loss: str) -> torch.Tensor:
    """Trace of each member's Gauss-Newton matrix ``(1/n) sum_i l''(o_i) grad o_i grad o_i^T``, exactly:
    ``(1/n) sum_i l''(o_i) ||grad_w o_i||^2`` with ``l'' = p (1 - p)`` for ``ce`` (p the sigmoid of the
    output) and 2 for ``mse``; ``(E,)``. The per-example output gradients come from ``torch.func.vmap``
    over examples (in chunks of bounded memory). For relu networks, whose output is linear in each
    single parameter, it equals the Hessian trace."""
    check_choice("loss", loss, LOSSES)
    params = [p.detach() for p in params]
    e, n_par = params[0].shape[0], sum(p[0].numel() for p in params)
    with torch.no_grad():
        out = net.apply(params, x)  # (E, n)
    curv = torch.sigmoid(out) * torch.sigmoid(-out) if loss == "ce" else torch.full_like(out, 2.0)

    def grad_one(xi):  # every member's output gradient at one example: tensors (E, *shape)
        return torch.func.grad(lambda ps: net.apply(list(ps), xi[None]).sum())(tuple(params))

    chunk = max(1, _GN_ELEMENTS // max(1, e * n_par))
    sq = []
    for a in range(0, x.shape[0], chunk):
        g = torch.func.vmap(grad_one)(x[a:a + chunk])  # tensors (c, E, *shape)
        sq.append(sum(t.reshape(t.shape[0], e, -1).square().sum(-1) for t in g))  # (c, E)
    norms = torch.cat(sq).T  # (E, n)
    return (curv * norms).mean(1)


# --- top eigenvalue ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Eigen:
    """The top Hessian eigenvalue of each member, by Lanczos.

    Attributes
    ----------
    value : torch.Tensor, (E,)
        Largest Ritz value (units of the loss per parameter squared).
    residual : torch.Tensor, (E,)
        ``||H s - value s||`` of its Ritz vector ``s`` (unit norm): ``beta_k |s_k|``. By the
        Bauer-Fike bound for symmetric H, some eigenvalue lies within ``residual`` of ``value``.
    converged : torch.Tensor of bool, (E,)
        ``residual <= tol * max(|value|, 1e-12)``, or the Krylov space became invariant (breakdown).
    iterations : torch.Tensor of int64, (E,)
        Lanczos steps taken (fewer than asked where a member's Krylov space became invariant).
    """

    value: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor


def top_eigenvalue(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                   loss: str, iterations: int = 20, generator, tol: float = 1e-3) -> Eigen:
    """Largest Hessian eigenvalue of each member by Lanczos with full reorthogonalisation
    (:class:`Eigen`). All members step together (one batched Hessian-vector product per step); a
    member whose next Lanczos vector vanishes (``beta < 1e-10 * ||T||``: its Krylov space is
    invariant, the Ritz values exact) stops there. At most ``min(iterations, N)`` steps, N the
    parameters per member. The start vector is Gaussian from ``generator`` (one CPU generator, or
    one per member as in :func:`hessian_trace`).
    """
    iterations = check_int("iterations", iterations, minimum=1)
    check_float("tol", tol, minimum=0.0, strict_minimum=True)
    params = [p.detach() for p in params]
    e, n = params[0].shape[0], sum(p[0].numel() for p in params)
    dtype, dev = params[0].dtype, params[0].device
    k_max = min(iterations, n)
    q = _draw(_generators(generator, e), (n,), rademacher=False).to(dtype=dtype, device=dev)
    q = q / q.norm(dim=1, keepdim=True)
    basis = [q]
    alphas = torch.zeros(e, k_max, dtype=torch.float64)
    betas = torch.zeros(e, k_max, dtype=torch.float64)
    steps = torch.full((e,), k_max, dtype=torch.int64)
    alive = torch.ones(e, dtype=torch.bool)
    for j in range(k_max):
        w = _flat(member_hvp(net, params, _unflat(basis[j], params), x, y, loss=loss))
        alpha = (w * basis[j]).sum(1)
        w = w - alpha[:, None] * basis[j]
        if j > 0:
            w = w - betas[:, j - 1].to(dtype=dtype, device=dev)[:, None] * basis[j - 1]
        stack = torch.stack(basis, 1)  # (E, j + 1, N): full reorthogonalisation, twice
        for _ in range(2):
            w = w - torch.einsum("ejn,ej->en", stack, torch.einsum("ejn,en->ej", stack, w))
        beta = w.norm(dim=1)
        alphas[:, j] = torch.where(alive, alpha.double().cpu(), torch.zeros(()))
        betas[:, j] = torch.where(alive, beta.double().cpu(), torch.zeros(()))
        scale = alphas[:, :j + 1].abs().amax(1) + betas[:, :j + 1].abs().amax(1)
        broke = alive & (betas[:, j] <= 1e-10 * torch.clamp(scale, min=1e-300))
        steps[broke] = j + 1
        alive &= ~broke
        if j + 1 == k_max or not alive.any():
            break
        live = alive.to(dev)[:, None]
        basis.append(torch.where(live, w / torch.clamp(beta, min=1e-300)[:, None], torch.zeros_like(w)))
    values, residuals = torch.empty(e, dtype=torch.float64), torch.empty(e, dtype=torch.float64)
    for i in range(e):
        k = int(steps[i])
        t = torch.diag(alphas[i, :k]) + torch.diag(betas[i, :k - 1], 1) + torch.diag(betas[i, :k - 1], -1)
        theta, s = torch.linalg.eigh(t)
        values[i] = theta[-1]
        residuals[i] = betas[i, k - 1].abs() * s[-1, -1].abs()
    converged = (residuals <= tol * torch.clamp(values.abs(), min=1e-12)) | (steps < k_max)
    return Eigen(values, residuals, converged, steps)


# --- rescaling ---------------------------------------------------------------------------------------
_RESCALINGS: dict[type, Callable[[Architecture, float, int], list[float]]] = {}


def register_rescaling(spec_type: type):
    """Decorator: ``fn(arch, alpha, n_params) -> factors`` (one float per parameter tensor, in
    ``Network.names`` order) giving a function-preserving rescaling of ``spec_type``; ``fn`` raises
    ``ValueError`` for specs of that type that have none."""
    def decorate(fn):
        _RESCALINGS[spec_type] = fn
        return fn
    return decorate


@register_rescaling(FCN)
def _fcn_rescaling(arch: FCN, alpha: float, n_params: int) -> list[float]:
    if arch.activation != "relu" or arch.depth < 1:
        raise ValueError(f"rescale_alpha needs a relu FCN with depth >= 1 (positive homogeneity), got "
                         f"{arch.describe()}")
    return [1 / alpha, 1 / alpha, alpha] + [1.0] * (n_params - 3)


def rescaling_factors(arch: Architecture, alpha: float, n_params: int) -> list[float]:
    """Per-parameter-tensor factors of the function-preserving rescaling by ``alpha`` of ``arch``
    (relu FCN: ``W1/alpha, b1/alpha, W2*alpha``, the rest unchanged). ``ValueError`` for an
    architecture without one."""
    check_float("alpha", alpha, minimum=0.0, strict_minimum=True)
    fn = _RESCALINGS.get(type(arch))
    if fn is None:
        raise ValueError(f"rescale_alpha: architecture kind {arch.kind!r} has no function-preserving rescaling; "
                         f"rescalable: {sorted(t.kind for t in _RESCALINGS)} (relu, depth >= 1)")
    return fn(arch, alpha, n_params)


def check_rescalable(arch: Architecture) -> None:
    """Raise ``ValueError`` now if ``arch`` cannot be rescaled (before any training)."""
    rescaling_factors(arch, 2.0, 2 * getattr(arch, "depth", 0) + 2)


def rescale(arch: Architecture, params: Sequence[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    """The stacked members rescaled by ``alpha`` (:func:`rescaling_factors`): the same function."""
    factors = rescaling_factors(arch, alpha, len(params))
    return [p * f for p, f in zip(params, factors)]


# --- all measures at once -----------------------------------------------------------------------------
#: The measures by name; ``measure_all`` computes those asked for.
MEASURES = ("epsilon_sharpness", "hessian_trace", "top_eigenvalue", "gauss_newton_trace")
_COMPANIONS = {"hessian_trace": ["hessian_trace_se"], "top_eigenvalue": ["top_eigenvalue_converged"]}


@dataclass(frozen=True)
class MeasureSpec:
    """What :func:`measure_all` computes.

    Attributes
    ----------
    measures : tuple of str
        Names from :data:`MEASURES`.
    loss : {"ce", "mse"}
        The training loss.
    epsilon : float
        Box half-width of :func:`epsilon_sharpness` (relative, > 0).
    ascent_steps : int
        Its gradient-ascent steps.
    probes : int
        Rademacher probes of :func:`hessian_trace` (>= 2).
    iterations : int
        Lanczos steps of :func:`top_eigenvalue`.
    rescale_alpha : float or None
        Also measure every member rescaled by ``alpha`` (``rescaled_<measure>``), and record
        ``rescaled_output_change``: the largest |change| of its outputs on S and E.
    seed : int
        Seeds the probes and Lanczos start vectors (with the run index: see :func:`make_measure`).
    """

    measures: tuple[str, ...] = MEASURES
    loss: str = "ce"
    epsilon: float = 1e-4
    ascent_steps: int = 20
    probes: int = 32
    iterations: int = 20
    rescale_alpha: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.measures:
            raise ValueError(f"measures must name at least one of {list(MEASURES)}, got none")
        for m in self.measures:
            check_choice("measure", m, MEASURES)
        check_choice("loss", self.loss, LOSSES)
        check_float("epsilon", self.epsilon, minimum=0.0, strict_minimum=True)
        check_int("ascent_steps", self.ascent_steps, minimum=1)
        check_int("probes", self.probes, minimum=2)
        check_int("iterations", self.iterations, minimum=1)
        if self.rescale_alpha is not None:
            check_float("rescale_alpha", self.rescale_alpha, minimum=0.0, strict_minimum=True)

    def names(self) -> tuple[str, ...]:
        """Columns :func:`measure_all` returns (``top_eigenvalue_converged``, ``hessian_trace_se``
        beside their measure; ``rescaled_*`` with ``rescale_alpha``)."""
        own = []
        for m in self.measures:
            own += [m] + _COMPANIONS.get(m, [])
        if self.rescale_alpha is None:
            return tuple(own)
        return tuple(own) + tuple(f"rescaled_{m}" for m in own) + ("rescaled_output_change",)


def measure_all(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, spec: MeasureSpec,
                *, generator, x_other: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Every measure of ``spec`` for every member: ``{name: (E,) float64 array}``
    (:meth:`MeasureSpec.names`). ``generator``: one CPU generator or one per member (then member
    ``j``'s numbers are those of the lone network ``j`` with ``generator[j]``). With
    ``spec.rescale_alpha``, ``rescaled_output_change`` is the largest |output change| on ``x`` and
    ``x_other`` (e.g. the test set E; ``(n', d)``)."""
    out: dict[str, np.ndarray] = {}

    def run(ps, prefix):
        for m in spec.measures:
            if m == "epsilon_sharpness":
                v = epsilon_sharpness(net, ps, x, y, loss=spec.loss, epsilon=spec.epsilon, steps=spec.ascent_steps)
                out[prefix + m] = v.double().cpu().numpy()
            elif m == "gauss_newton_trace":
                out[prefix + m] = gauss_newton_trace(net, ps, x, y, loss=spec.loss).double().cpu().numpy()
            elif m == "hessian_trace":
                v, se = hessian_trace(net, ps, x, y, loss=spec.loss, probes=spec.probes, generator=generator)
                out[prefix + m], out[prefix + m + "_se"] = v.double().cpu().numpy(), se.double().cpu().numpy()
            else:
                eig = top_eigenvalue(net, ps, x, y, loss=spec.loss, iterations=spec.iterations, generator=generator)
                out[prefix + m] = eig.value.numpy()
                out[prefix + m + "_converged"] = eig.converged.double().numpy()

    run(params, "")
    if spec.rescale_alpha is not None:
        scaled = rescale(net.arch, params, spec.rescale_alpha)
        run(scaled, "rescaled_")
        xs = x if x_other is None else torch.cat([x, x_other.to(x)])
        with torch.no_grad():
            change = (net.apply(scaled, xs) - net.apply(list(params), xs)).abs().amax(1)
        out["rescaled_output_change"] = change.double().cpu().numpy()
    return out


def make_measure(arch: Architecture, split, spec: MeasureSpec, *, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu", block: int = 32
                 ) -> Callable[[np.ndarray, Sequence[torch.Tensor]], dict]:
    """``measure(runs, params) -> {name: (E,) array}``: :func:`measure_all` on the training set of
    ``split`` in ``dtype`` (float64 by default: epsilon = 1e-4 changes the loss by ~1e-6 of itself),
    for the engine's ``measure`` hook (:func:`sampler.sgd.iter_runs`). Run ``i`` draws its probes
    and start vectors from ``make_generator(spec.seed, "sharpness", i)`` (the first, unrescaled
    measures first), so its measures are a pure function of its parameters and ``(seed, i)``; with
    ``rescale_alpha`` also ``rescaled_output_change`` (max |output change| on S and E). Members are
    measured ``block`` at a time (memory: Hutchinson holds ``8 * block`` copies of the parameters;
    on the CPU small blocks cost no more per member), with the same results as all at once."""
    block = check_int("block", block, minimum=1)
    if spec.rescale_alpha is not None:
        check_rescalable(arch)
    net = arch.network(split.input_shape, dtype=dtype, device=device)
    x = split.x_train.to(device=device, dtype=dtype)
    y = split.y_train.to(device)
    x_test = split.x_test.to(device=device, dtype=dtype)

    def measure(runs, params):
        parts = []
        for a in range(0, len(runs), block):
            ps = [p[a:a + block].detach().to(device=device, dtype=dtype) for p in params]
            gen = [make_generator(spec.seed, "sharpness", int(r)) for r in runs[a:a + block]]
            parts.append(measure_all(net, ps, x, y, spec, generator=gen, x_other=x_test))
        return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}

    return measure
