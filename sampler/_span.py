"""Training in the span of the split's inputs: a private fast path of the ensemble engine.

A network whose first layer is a dense map of the flattened input (``Architecture.dense_first_layer``:
the FCN) sees its inputs only through ``X W^T``, ``W`` ``(fan_out, d)``. Training and evaluation
touch only the ``n = m + k`` points of the split (S and E), whose rows span a subspace of dimension
``r <= min(n, d)``. Let ``V`` ``(d, r)`` be an orthonormal basis of it (so ``X = X V V^T``). Then

- ``X W^T = (X V) (W V)^T``: the network with first weight ``W V`` ``(fan_out, r)`` on the inputs
  ``X V`` ``(n, r)`` computes the same outputs on S and E;
- the first-layer gradient ``delta^T X_batch`` lies in the span, so with a rotation-equivariant
  rule (:data:`sampler.optimizers.ROTATION_EQUIVARIANT`: SGD, with or without momentum; updates
  linear in the gradients) ``W V`` evolves exactly as the ``(fan_out, r)`` weight trained on ``X V``
  and ``W (I - V V^T)`` never changes;
- the standard initialisation ``W ~ N(0, sigma_w^2 / d)`` is drawn as the full path draws it and
  then projected, so each run starts from the same network and ends at the same function up to
  rounding (float64: ~1e-12; float32: the rare output within rounding of 0 may flip).

The first layer's arithmetic (forward, backward, optimiser step, minibatch gather) falls by
``d / r``: 784 / 120 = 6.5x on the default experiment. Further, the basis is rotated so that its
first ``r_S`` columns span S alone: the gradient has no component along the other ``r - r_S``
directions (those E adds), so training steps and the accuracy checks on S use only the first
``r_S`` columns of the first weight (100 of 120 on the default run; ~5% less CPU time there) and
the rest keep their initial values, which the outputs on E still use. Adam, Adagrad, RMSprop and Adadelta scale
each coordinate by its own history, which a rotation changes: they keep the full path. A caller
that looks at the parameters during training (``on_step``) gets the full path too. Whole trained
members (``keep_members``) are rebuilt in input coordinates, ``W = W_0 (I - V V^T) + (W V) V^T``
with ``W_0`` the run's initial weight drawn again from its generator.

Elsewhere: prior sampling by pre-activations (:mod:`sampler.preactivations`) already draws the first
layer in the span (its input factor has the numerical rank of the points, ``r <= min(n, d + 1)``
columns), so nothing is left to gain there; the ``"weights"`` prior sampler stays in input
coordinates on purpose (it is the plain reference the pre-activation sampler is tested against, and
drawing ``W`` in full is its cost whatever is done after). The Monte Carlo NNGP kernel
(:func:`nngp.empirical_kernel`) draws the first weight directly in the span (only the distribution
matters there, not the individual draws): on the default split, FCN 2x64 tanh, 2048 networks, 1.75x
less CPU time (the second layer then dominates).

:func:`span_allowed` is the one place the decision is made; :func:`first_layer` applies it and
returns the :class:`FirstLayer` the engine trains through (the full path is the same interface).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .architectures import Architecture
from .optimizers import ROTATION_EQUIVARIANT

_EPS64 = torch.finfo(torch.float64).eps
FIRST_LAYERS = ("span", "full")


def span_basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``V`` ``(d, r)`` (float64, CPU) of the span of the rows of ``x`` ``(n, d)``.

    From the SVD of ``x`` in float64: right singular vectors of the singular values above
    ``s_max * max(n, d) * eps_float64`` (LAPACK's usual numerical-rank tolerance), so ``r`` is the
    numerical rank and ``|x - x V V^T|`` is of that order relative to ``s_max``. At least one
    column (``r >= 1``), also for an all-zero ``x``. The tolerance is float64's whatever ``x``'s
    dtype, so that the span holds the points to float64 rounding and training in it stays exact:
    float32 points that lie near a subspace only up to their own rounding count at full rank
    (the rank deficiencies of real data, duplicates and always-zero pixels, are exact).
    """
    x64 = x.detach().to(device="cpu", dtype=torch.float64).reshape(x.shape[0], -1)
    _, s, vh = torch.linalg.svd(x64, full_matrices=False)
    if s.numel() == 0:
        return torch.eye(x64.shape[1], 1, dtype=torch.float64)
    keep = s > s[0] * max(x64.shape) * _EPS64
    keep[0] = True
    return vh[keep].T.contiguous()


def span_allowed(arch: Architecture, spec, *, on_step: Callable | None = None, measure: Callable | None = None,
                 rank: int | None = None, input_dim: int | None = None) -> tuple[bool, str]:
    """Whether training ``arch`` with ``spec`` (a ``TrainSpec``) in the span of the split's inputs is
    exact and, given ``rank`` and ``input_dim``, pays; ``(allowed, reason)``.

    Exactness (checked first; ``rank`` not needed): the architecture's first layer is dense on the
    flattened input, the optimiser is rotation-equivariant, and nothing observes the parameters
    in input coordinates during training (``on_step``). Profit (only when ``rank`` is given):
    ``rank < input_dim``. The reason names the first condition that fails, or why the span is used.
    A new condition (another hook that sees parameters or their coordinates) is one more entry in
    ``exact`` below.
    """
    exact = (
        (arch.dense_first_layer,
         f"the {arch.kind!r} architecture's first layer is not a dense map of the flattened input"),
        (spec.optimizer in ROTATION_EQUIVARIANT,
         f"optimizer {spec.optimizer!r} scales gradients per coordinate (not rotation-equivariant)"),
        (on_step is None, "an on_step callback sees the parameters in input coordinates"),
        (measure is None, "a measure of the trained members (sharpness) depends on the coordinates: the "
                          "box of epsilon-sharpness and the Hessian are those of the input-coordinate weights"),
    )
    for ok, why in exact:
        if not ok:
            return False, why
    if rank is None:
        return True, "exact: dense first layer, rotation-equivariant optimizer"
    if rank >= input_dim:
        return False, f"the split's inputs span all {input_dim} input dimensions (nothing to gain)"
    return True, f"the split's {input_dim}-dimensional inputs span {rank} dimensions"


@dataclass(frozen=True)
class FirstLayer:
    """How the engine feeds the first layer: in input coordinates (``"full"``) or in the span.

    Attributes
    ----------
    kind : {"span", "full"}
    input_dim : int
        ``d``, the flattened input size.
    rank : int or None
        ``r``, the dimension of the span of S and E (None when it was not computed).
    reason : str
        Why this path (from :func:`span_allowed`, or the caller's ``span=``).
    basis : torch.Tensor or None
        ``V`` ``(d, r)``, float64 on the CPU (``"span"`` only), its first ``train_rank`` columns a
        basis of the span of S alone.
    train_rank : int or None
        ``r_S <= r``, the dimension of the span of S: training steps and the accuracy checks on S
        use only those columns (the others, directions E adds, get no gradient and never change).
    """

    kind: str
    input_dim: int
    rank: int | None
    reason: str
    basis: torch.Tensor | None = field(default=None, repr=False, compare=False)
    train_rank: int | None = None

    def info(self) -> dict:
        """Shard info fields: ``first_layer``, ``span_rank``, ``input_dim``, ``first_layer_reason``."""
        return {"first_layer": self.kind, "span_rank": self.rank, "input_dim": self.input_dim,
                "first_layer_reason": self.reason}

    def bind(self, arch: Architecture, input_shape: tuple[int, ...], *, dtype: torch.dtype,
             device: torch.device) -> "BoundFirstLayer":
        """The path on one device and dtype: networks, input projection, initialisation, members."""
        return BoundFirstLayer(self, arch, tuple(input_shape), dtype, device)


def first_layer(arch: Architecture, spec, x_train: torch.Tensor, x_test: torch.Tensor, *,
                span: bool | None = None, on_step: Callable | None = None,
                measure: Callable | None = None) -> FirstLayer:
    """The engine's first-layer path for training ``arch`` with ``spec`` on a split's inputs.

    ``span``: None chooses (:func:`span_allowed`, exactness and profit); True asks for the span
    (``ValueError`` naming the reason where it is not exact; used even when ``r == d``, a rotation);
    False the full path.
    """
    if span is not None and not isinstance(span, bool):
        raise TypeError(f"span must be None (automatic), True or False, got {span!r}")
    d = x_train[0].numel() if x_train.shape[0] else x_test[0].numel()
    if span is False:
        return FirstLayer("full", d, None, "span=False was asked for")
    ok, why = span_allowed(arch, spec, on_step=on_step, measure=measure)
    if not ok:
        if span:
            raise ValueError(f"span=True needs exact training in the span of the inputs, but {why}; "
                             f"use span=None (automatic) or False")
        return FirstLayer("full", d, None, why)
    basis = span_basis(torch.cat([x_train.reshape(x_train.shape[0], -1), x_test.reshape(x_test.shape[0], -1)]))
    r = basis.shape[1]
    if span is None:
        ok, why = span_allowed(arch, spec, on_step=on_step, measure=measure, rank=r, input_dim=d)
        if not ok:
            return FirstLayer("full", d, r, why)
    else:
        why = f"span=True was asked for; the inputs span {r} of {d} dimensions"
    basis, r_train = _train_directions_first(basis, x_train.reshape(x_train.shape[0], -1))
    return FirstLayer("span", d, r, why, basis, r_train)


def _train_directions_first(basis: torch.Tensor, x_train: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``basis`` ``(d, r)`` rotated within its span so that its first ``r_S`` columns span the rows of
    ``x_train`` (their numerical rank, at least 1, by the tolerance of :func:`span_basis`); and ``r_S``."""
    a = x_train.detach().to(device="cpu", dtype=torch.float64) @ basis
    if a.shape[0] == 0:
        return basis, basis.shape[1]
    _, s, wh = torch.linalg.svd(a, full_matrices=True)
    r_train = max(1, int((s > s[0] * max(a.shape[0], basis.shape[0]) * _EPS64).sum())) if s.numel() else 1
    return (basis @ wh.T).contiguous(), r_train


class BoundFirstLayer:
    """A :class:`FirstLayer` on one device and dtype: what the engine trains through.

    ``net`` is the protocol object trained (the architecture on ``(r,)`` in the span, on the split's
    input shape otherwise); :meth:`inputs` maps the split's inputs to its inputs; :meth:`init` draws
    members exactly as the full path does and projects their first weight; :meth:`member` gives a
    trained member as a plain module in input coordinates.
    """

    def __init__(self, layer: FirstLayer, arch: Architecture, input_shape: tuple[int, ...], dtype: torch.dtype,
                 device: torch.device):
        self.layer = layer
        self.full = arch.network(input_shape, dtype=dtype, device=device)
        self._r_train = None
        if layer.kind == "full":
            self.net = self.full
            self._v = None
        else:
            self.net = arch.network((layer.rank,), dtype=dtype, device=device)
            self._v = layer.basis.to(device=device, dtype=dtype)
            if layer.train_rank is not None and layer.train_rank < layer.rank:
                self._r_train = layer.train_rank

    def trained(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The parameters training steps and checks on S use: the first weight's first ``r_S`` columns
        (a view: updating it in place updates ``params``), or ``params`` themselves."""
        if self._r_train is None:
            return list(params)
        return [params[0][..., :self._r_train], *params[1:]]

    def train_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Training inputs ``x`` ``(m, *input_shape)`` for :meth:`trained` parameters: :meth:`inputs`,
        its first ``r_S`` columns (the others are 0 to rounding: S lies in the first ``r_S`` directions)."""
        z = self.inputs(x)
        return z if self._r_train is None else z[:, :self._r_train].contiguous()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(n, *input_shape)`` as the trained network's inputs: flattened, or ``x V`` (computed in float64)."""
        flat = x.reshape(x.shape[0], -1)
        if self._v is None:
            return flat.to(self.full.device, self.full.dtype)
        return (flat.to(torch.float64) @ self.layer.basis).to(self.full.device, self.full.dtype)

    def init(self, generators: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Members as ``Network.init`` of the full network draws them, first weight projected: ``W V``."""
        params = self.full.init(generators)
        if self._v is not None:  # one product per member (bmm), so a member does not depend on how many are drawn
            params[0] = torch.bmm(params[0], self._v.expand(len(generators), -1, -1))
        return params

    def member(self, params: Sequence[torch.Tensor], j: int, generator: torch.Generator) -> torch.nn.Module:
        """Member ``j`` as a plain module in input coordinates (CPU, no grad). In the span, ``generator``
        (the run's initialisation generator, fresh) redraws ``W_0`` for the part outside the span."""
        if self._v is None:
            return self.full.member(params, j)
        v = self.layer.basis
        w0 = self.full.init([generator])[0][0].detach().cpu().to(torch.float64)
        wr = params[0][j].detach().cpu().to(torch.float64)
        w = (w0 - (w0 @ v) @ v.T + wr @ v.T).unsqueeze(0)
        return self.full.member([w.to(self.full.dtype), *(p[j:j + 1].detach() for p in params[1:])], 0)
