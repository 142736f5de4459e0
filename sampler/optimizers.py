"""Optimisers for ensembles: the update rules of ``torch.optim``, applied per member.

Parameters are stacked ``(E, *shape)`` (see :mod:`sampler.ensemble`). Every rule here is
elementwise, like its ``torch.optim`` counterpart with default hyper-parameters, so applying it
to stacked tensors updates each member exactly as ``torch.optim`` would update that member
alone. We do not hand the stacked tensors to ``torch.optim`` itself because members start at
different times (a finished member is replaced by a new run): Adam's bias correction needs a
step count *per member*, and every member's state must be reset when its slot is reused.

Defaults (those of ``torch.optim``, torch 2.x):

========  =====================================================================
sgd       ``SGD(lr, momentum)``; dampening 0, no Nesterov
adam      ``Adam(lr)``; betas (0.9, 0.999), eps 1e-8
adagrad   ``Adagrad(lr)``; lr_decay 0, initial accumulator 0, eps 1e-10
adadelta  ``Adadelta(lr)``; rho 0.9, eps 1e-6
rmsprop   ``RMSprop(lr)``; alpha 0.99, eps 1e-8, no momentum, not centred
========  =====================================================================
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from .checks import check_choice, check_float

OPTIMIZERS = ("sgd", "adam", "adagrad", "adadelta", "rmsprop")

#: Rules whose update commutes with a rotation of the parameters: plain SGD and SGD with momentum
#: (``optimizer="sgd"``, any ``momentum``). Their update is linear in the gradients (the momentum
#: buffer is a linear combination of past gradients), so if ``W`` is trained on inputs ``X`` then
#: ``W V`` trains exactly as a weight on ``X V`` for any orthonormal ``V`` whose span holds the
#: rows of ``X`` (the first-layer gradient ``delta^T X`` lies in that span); an L2 weight decay
#: would keep this too (it shrinks the component outside the span, which ``X`` never sees).
#: Adam, Adagrad, RMSprop and Adadelta divide each coordinate by its own running scale, which
#: depends on the coordinate system: not rotation-equivariant. Used by the engine's span fast path
#: (:mod:`sampler._span`).
ROTATION_EQUIVARIANT = frozenset({"sgd"})

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAGRAD_EPS = 1e-10
ADADELTA_RHO = 0.9
ADADELTA_EPS = 1e-6
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8

@functools.lru_cache(maxsize=1 << 16)
def _power(base: float, step: int) -> float:
    # Python's float power, as torch.optim computes bias corrections (a tensor pow would round
    # differently in vectorised and scalar code, making members depend on the ensemble size).
    return base ** step


# State tensors each rule keeps per parameter.
_STATE = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adagrad": ("sum",),
          "adadelta": ("square_avg", "acc_delta"), "rmsprop": ("square_avg",)}


def check_rule(name: str, lr: float, momentum: float) -> tuple[str, float, float]:
    """``(name, lr, momentum)`` checked: a rule of :data:`OPTIMIZERS`, ``lr > 0``, momentum >= 0 for sgd only."""
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_float("lr", lr, minimum=0.0, strict_minimum=True)
    momentum = check_float("momentum", momentum, minimum=0.0)
    if momentum and name != "sgd":
        raise ValueError(f"momentum is only for optimizer 'sgd', got momentum={momentum} with optimizer={name!r}")
    return name, lr, momentum


def torch_optimizer(name: str, params, *, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser that :class:`EnsembleOptimizer` reproduces per member."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
           "rmsprop": torch.optim.RMSprop}[name]
    return cls(params, lr=lr)


class EnsembleOptimizer:
    """The ``torch.optim`` rule ``name`` applied to every member of stacked parameters ``(E, *shape)``
    (updated in place by :meth:`step`).

    State starts at zero, which is exactly ``torch.optim``'s first step: SGD's momentum buffer
    becomes ``0 * momentum + grad = grad``, and the accumulators start at 0 in every rule.
    """

    def __init__(self, name: str, params: Sequence[torch.Tensor], *, lr: float, momentum: float = 0.0):
        self.name, self.lr, self.momentum = check_rule(name, lr, momentum)
        size = params[0].shape[0]
        keys = _STATE[name] if (name != "sgd" or self.momentum) else ()
        self.state = {k: [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
                      for k in keys}
        # Per-member step count (Adam's bias correction).
        self.steps = torch.zeros(size, dtype=torch.int64)

    def reset(self, slots: torch.Tensor) -> None:
        """Zero the state of members ``slots`` (a long tensor), as for a fresh ``torch.optim``."""
        for tensors in self.state.values():
            for t in tensors:
                t.index_fill_(0, slots, 0.0)
        self.steps.index_fill_(0, slots.cpu(), 0)

    def keep(self, slots: torch.Tensor) -> None:
        """Keep only members ``slots`` (in that order), dropping the others' state."""
        self.state = {k: [t.index_select(0, slots) for t in ts] for k, ts in self.state.items()}
        self.steps = self.steps.index_select(0, slots.cpu())

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """Update ``params`` in place from their per-member gradients ``grads`` (same shapes)."""
        self.steps += 1
        lr = self.lr
        name = self.name
        if name == "sgd":
            if self.momentum:
                for p, g, buf in zip(params, grads, self.state["momentum_buffer"]):
                    buf.mul_(self.momentum).add_(g)
                    p.add_(buf, alpha=-lr)
            else:
                for p, g in zip(params, grads):
                    p.add_(g, alpha=-lr)
        elif name == "adam":
            b1, b2 = ADAM_BETAS
            steps = self.steps.tolist()
            step_size = torch.tensor([lr / (1 - _power(b1, s)) for s in steps], dtype=params[0].dtype)
            bc2_sqrt = torch.tensor([(1 - _power(b2, s)) ** 0.5 for s in steps], dtype=params[0].dtype)
            step_size, bc2_sqrt = step_size.to(params[0].device), bc2_sqrt.to(params[0].device)
            for p, g, m, v in zip(params, grads, self.state["exp_avg"], self.state["exp_avg_sq"]):
                shape = (-1,) + (1,) * (p.dim() - 1)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(ADAM_EPS)
                p.sub_(step_size.view(shape) * m / denom)
        elif name == "adagrad":
            for p, g, s in zip(params, grads, self.state["sum"]):
                s.addcmul_(g, g, value=1)
                p.addcdiv_(g, s.sqrt().add_(ADAGRAD_EPS), value=-lr)
        elif name == "adadelta":
            rho, eps = ADADELTA_RHO, ADADELTA_EPS
            for p, g, sq, acc in zip(params, grads, self.state["square_avg"], self.state["acc_delta"]):
                sq.mul_(rho).addcmul_(g, g, value=1 - rho)
                std = sq.add(eps).sqrt_()
                delta = acc.add(eps).sqrt_().div_(std).mul_(g)
                acc.mul_(rho).addcmul_(delta, delta, value=1 - rho)
                p.add_(delta, alpha=-lr)
        else:  # rmsprop
            alpha = RMSPROP_ALPHA
            for p, g, sq in zip(params, grads, self.state["square_avg"]):
                sq.mul_(alpha).addcmul_(g, g, value=1 - alpha)
                p.addcdiv_(g, sq.sqrt().add_(RMSPROP_EPS), value=-lr)
