"""The architecture protocol: many networks of one architecture as stacked parameters.

A :class:`Network` (``arch.network(input_shape)``) is what neural-tangents calls ``(init_fn,
apply_fn)`` for one architecture on one input shape. An ensemble of ``E`` members is a list of
tensors, one per parameter (``Network.names``, ``Network.shapes``), each ``(E, *shape)``: row ``j``
of every tensor is member ``j``, and member ``j``'s outputs depend on row ``j`` only, so the
gradient of the *sum* of member losses is every member's own gradient.

``apply`` is the spec's hand-batched forward pass where it names one (FCN, CNN, LSTM; measured
much faster than vmap on CPU, benchmarks/sgd_ensemble.py), otherwise ``torch.func.vmap`` over
``functional_call`` of the module (buffers are shared constants; a random op is an error). Training, prior
sampling, Monte Carlo kernels, MCMC and :func:`member_grads` / :func:`member_hvp` go through it.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_device
from .architectures import Architecture, _check_input_shape, check_arch, draw_standard, init_standard_, readout

LOSSES = ("ce", "mse")


class Network:
    """One architecture on one input shape (``Split.input_shape``, before flattening): initialise
    and apply stacked members, in ``dtype`` on ``device``.

    Attributes
    ----------
    names, shapes : tuple
        Parameter names and shapes (without the ensemble dimension), in ``named_parameters()`` order;
        ``n_params`` their total size per member.
    module : torch.nn.Module
        The architecture's module on ``device`` (its own parameters are not used by :meth:`apply`).
    features : callable or None
        The spec's ``_batched_features`` (None: :meth:`apply` goes through vmap).
    units : int
        Activations per example of the widest layer, roughly (for memory budgets).
    """

    def __init__(self, arch: Architecture, input_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        check_arch(arch)
        self.arch = arch
        self.input_shape = _check_input_shape(input_shape)
        self.dtype = dtype
        self.device = check_device(device)
        # initialisation always draws on the CPU (the same numbers on every device), then copies
        self._cpu = arch.make(self.input_shape).to(dtype=dtype).requires_grad_(False)
        self.module = self._cpu if self.device.type == "cpu" else copy.deepcopy(self._cpu).to(self.device)
        named = list(self._cpu.named_parameters())
        self.names = tuple(n for n, _ in named)
        self.shapes = tuple(tuple(p.shape) for _, p in named)
        self.n_params = sum(math.prod(s) for s in self.shapes)
        #: the standard rule's scale of each parameter (None for a spec with its own initialisation)
        self.stds = arch.parameter_stds(self._cpu) if arch.standard_init else None
        self.features = arch._batched_features(self.input_shape)
        self._fast_training = arch._training_fast_path()
        image = math.prod(self.input_shape[1:]) if len(self.input_shape) == 3 else 1
        self.units = max(s[0] if s else 1 for s in self.shapes) * image

    # init ------------------------------------------------------------------------------------------
    def init(self, generators: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Members ``(E, *shape)`` drawn one by one: member ``i`` holds exactly the values of
        ``arch.build(input_shape, generator=generators[i], dtype=dtype)`` (CPU generators; one
        appearing several times draws its members in sequence)."""
        staged = [torch.empty((len(generators), *s), dtype=self.dtype) for s in self.shapes]
        for t, gen in enumerate(generators):
            if self.stds is not None:  # the standard rule with the scales computed once (arch.init_ would redo them)
                init_standard_(self._cpu, self.stds, gen)
            else:
                self.arch.init_(self._cpu, gen)
            for buf, p in zip(staged, self._cpu.parameters()):
                buf[t].copy_(p)
        return [b.to(self.device) for b in staged]

    def draw(self, n: int, *, generator: torch.Generator) -> list[torch.Tensor]:
        """``n`` members from one generator, the fast way: with the standard initialisation each
        parameter of all members is one ``(n, *shape)`` draw (:func:`~sampler.architectures.draw_standard`,
        nothing drawn for a zero scale); otherwise members one after another (:meth:`init`). The same
        distribution as :meth:`init`, another random stream."""
        if not self.arch.standard_init:
            return self.init([generator] * n)
        ps = draw_standard(self.shapes, self.stds, n, generator=generator, dtype=self.dtype)
        return [p.to(self.device) for p in ps]

    def member(self, params: Sequence[torch.Tensor], j: int) -> nn.Module:
        """Member ``j`` as a plain torch module (a copy, on the CPU, no grad)."""
        module = copy.deepcopy(self._cpu)
        with torch.no_grad():
            for p, q in zip(module.parameters(), params):
                p.copy_(q[j].detach().cpu())
        return module

    # apply -----------------------------------------------------------------------------------------
    def apply(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member: ``params`` ``(E, *shape)``; ``x`` ``(n, d)`` seen by all members
        or ``(E, B, d)``, member ``j`` seeing ``x[j]``. Returns ``(E, n)`` or ``(E, B)``."""
        params = list(params)
        if self.features is None:
            return self.apply_vmap(params, x)
        return readout(self.features(params[:-2], x), params[-2], params[-1])

    def apply_vmap(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` as ``torch.func.vmap`` of ``functional_call`` of :attr:`module` (the generic path)."""
        module, names = self.module, self.names

        def one(ps, xx):
            return torch.func.functional_call(module, dict(zip(names, ps)), (xx,))

        return torch.func.vmap(one, in_dims=(0, None if x.dim() == 2 else 0), randomness="error")(tuple(params), x)

    def forward_train(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, Callable]:
        """Outputs ``(E, B)`` (detached) on per-member batches ``x`` ``(E, B, d)``, and ``backward(grad_out)``
        giving the per-member gradients for ``grad_out`` ``(E, B)`` = d(member loss)/d(its outputs),
        through the spec's hand-written backward pass where it has one (FCN relu), else autograd."""
        params = list(params)
        if self._fast_training is not None:
            return self._fast_training(params, x)
        out = self.apply(params, x)
        return out.detach(), lambda g: list(torch.autograd.grad(out, params, grad_outputs=g))


# losses and per-member derivatives ---------------------------------------------------------------
def pointwise_loss(outputs: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss of each output against its 0/1 label, same shape as ``outputs``.

    ``ce``: ``softplus(o) - y*o`` (BCE with logits); ``mse``: ``(o - (2y - 1))**2``.
    """
    y = labels.to(outputs.dtype).expand_as(outputs)
    if loss == "ce":
        return F.binary_cross_entropy_with_logits(outputs, y, reduction="none")
    return (outputs - (2 * y - 1)) ** 2


def _summed_loss(net: Network, x, y, loss: str) -> Callable:
    def total(params):
        return pointwise_loss(net.apply(list(params), x), y, loss).mean(-1).sum()
    return total


def member_grads(net: Network, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                 loss: str) -> list[torch.Tensor]:
    """Gradient of each member's mean loss (:func:`pointwise_loss`) on its examples, by ``torch.func.grad``
    through :meth:`Network.apply`: ``params`` ``(E, *shape)``, ``x`` ``(n, d)`` (shared) or ``(E, B, d)``,
    0/1 labels ``y`` ``(n,)`` or ``(E, B)``. Row ``j`` of each returned ``(E, *shape)`` is member ``j``'s."""
    check_choice("loss", loss, LOSSES)
    return list(torch.func.grad(_summed_loss(net, x, y, loss))(tuple(params)))


def member_hvp(net: Network, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], x: torch.Tensor,
               y: torch.Tensor, *, loss: str) -> list[torch.Tensor]:
    """Hessian-vector products of each member's mean loss: row ``j`` is ``H_j v_j``.

    Forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``); ``v`` is shaped like
    ``params``. Members never mix, so the Hessian of the summed losses is block diagonal.
    Arguments as :func:`member_grads`. Returns tensors ``(E, *shape)``.
    """
    check_choice("loss", loss, LOSSES)
    grad = torch.func.grad(_summed_loss(net, x, y, loss))
    return list(torch.func.jvp(grad, (tuple(params),), (tuple(v),))[1])
