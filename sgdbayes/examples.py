"""Example factories for ``[arch] kind = "module"`` (``factory = "sgdbayes.examples:resnet"``, keyword
arguments in ``[arch.kwargs]``; ``configs/examples/``): ``factory(input_shape, **kwargs)`` returns a
module mapping ``(n, *input_shape)`` to ``(n, 1)``. They are small on purpose: each example config
finishes on a 2-core CPU in a few minutes, with a Monte Carlo NNGP kernel for the P_B estimators.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(input_shape: tuple[int, ...], *, depth: int = 2, width: int = 64, activation: str = "relu") -> nn.Module:
    """Fully connected network as a plain ``nn.Sequential``: the generic-path twin of ``sampler.FCN``,
    with its parameters' shapes and order, so under the standard initialisation run ``i`` starts from
    the same values (the tests and ``benchmarks/sgd_ensemble.py`` compare the two engines' paths)."""
    d = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_ins = [d] + [width] * (depth - 1) if depth > 0 else []
    for a in fan_ins:
        layers += [nn.Linear(a, width), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(width if depth else d, 1))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """``h + W_2 phi(W_1 h) / sqrt(2)`` on ``(n, width)``: a pre-activation residual block."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.inner = nn.Linear(width, hidden)
        self.outer = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h + self.outer(torch.relu(self.inner(torch.relu(h))))) * (1 / math.sqrt(2))


class ResNet(nn.Module):
    """A small residual network: ``(n, *input_shape)`` -> flatten -> ``Linear(d, width)`` -> ``blocks``
    x :class:`_Residual` -> ``relu`` -> ``Linear(width, 1)``, output ``(n, 1)``. The ``1/sqrt(2)`` per
    block keeps the output variance bounded in depth under the standard parameterisation."""

    def __init__(self, input_shape: tuple[int, ...], *, width: int = 32, blocks: int = 2, hidden: int = 32):
        super().__init__()
        self.embed = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.Sequential(*[_Residual(width, hidden) for _ in range(blocks)])
        self.readout = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(x.flatten(1)))
        return self.readout(torch.relu(h))


class RowAttention(nn.Module):
    """A tiny single-head self-attention network over an image's rows: ``(n, C, H, W)`` (or ``(n, d)``
    read as ``tokens`` rows) -> ``H`` tokens of ``C*W`` features -> ``Linear`` embedding of size ``dim``
    plus a learned position embedding -> one attention layer (softmax(Q K^T / sqrt(dim)) V, residual)
    -> ``relu`` -> mean over tokens -> ``Linear(dim, 1)``."""

    def __init__(self, input_shape: tuple[int, ...], *, dim: int = 16, tokens: int = 28):
        super().__init__()
        if len(input_shape) == 3:
            c, h, w = input_shape
            self.tokens, feats = h, c * w
        else:
            d = math.prod(input_shape)
            if d % tokens:
                raise ValueError(f"tokens must divide the input dimension d={d}, got tokens={tokens}")
            self.tokens, feats = tokens, d // tokens
        self.layout = tuple(input_shape)
        self.embed = nn.Linear(feats, dim)
        self.position = nn.Parameter(torch.zeros(self.tokens, dim))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.readout = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if len(self.layout) == 3:
            c, h, w = self.layout
            seq = x.reshape(n, c, h, w).permute(0, 2, 1, 3).reshape(n, h, c * w)
        else:
            seq = x.reshape(n, self.tokens, -1)
        t = self.embed(seq) + self.position
        scores = self.query(t) @ self.key(t).transpose(1, 2) / math.sqrt(t.shape[-1])
        t = t + torch.softmax(scores, dim=-1) @ self.value(t)
        return self.readout(torch.relu(t).mean(1))


resnet, attention = ResNet, RowAttention  # the factories configs name
