"""Ensembles of networks of one architecture, as stacked parameters with a batched forward pass.

An ensemble of ``E`` networks is a list of tensors, one per parameter of the architecture's torch
module (in ``module.named_parameters()`` order), each of shape ``(E, *shape)``: row ``j`` of every
tensor is member ``j``. :class:`EnsembleNet` evaluates all members at once:

- FCN: :func:`sampler.architectures.fcn_forward`, batched matmuls over the ensemble dimension;
- CNN: one grouped convolution (``groups=E``) per layer, then a batched matmul readout;
- LSTM: the LSTM cell written with batched matmuls (same parameter layout and gate order
  ``i, f, g, o`` as ``torch.nn.LSTM``), one step at a time (``torch.func.vmap`` has no
  batching rule for ``aten::lstm``);
- anything else (``sampler.Module``, the user's own networks): ``torch.func.vmap`` over
  ``torch.func.functional_call`` of the module, parameters stacked along dimension 0 and buffers
  shared (constants), then autograd through the vmapped call (``randomness="error"``: a random
  op in a module is an error, see ``sampler.architectures.Module``).

The hand-batched paths exist because, measured on CPU (benchmarks/sgd_ensemble.py), one
autograd pass through batched matmuls over the summed member losses is much faster than vmap.
Members never mix: the outputs of member ``j`` depend on row ``j`` of the parameters only, so
gradients of the *sum* of member losses are the per-member gradients.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn

from .architectures import Architecture, CNNNet, FCNNet, LSTMNet, fcn_forward
from .seeding import make_generator


class EnsembleNet:
    """Batched evaluation and initialisation of ensembles of one architecture.

    Parameters
    ----------
    arch : Architecture
        The spec (FCN, CNN, LSTM or any spec whose ``build`` returns a module).
    input_shape : tuple of int
        Shape of one example before flattening (``Split.input_shape``).
    dtype : torch.dtype
        Of parameters and computations (float32 by default; float64 for exact tests).
    device : str or torch.device
        Where the ensemble lives.

    Notes
    -----
    Member ``j`` initialised for run ``i`` with :meth:`init_` holds exactly the parameter values
    of ``arch.build(input_shape, generator=make_generator(seed, "init", i), dtype=dtype)``:
    initialisation always draws on the CPU (the same numbers on every device), then copies.
    """

    def __init__(self, arch: Architecture, input_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        if not isinstance(arch, Architecture):
            raise TypeError(f"arch must be an Architecture spec (FCN, CNN, LSTM, Module), got {type(arch).__name__}")
        self.arch = arch
        self.input_shape = tuple(input_shape)
        self.dtype = dtype
        self.device = torch.device(device)
        # Built once on the CPU and re-initialised in place for each run: arch.init_ is what
        # arch.build calls, so the values are those of a freshly built network.
        self.template = arch.build(self.input_shape, generator=make_generator(0, "template"), dtype=dtype)
        for p in self.template.parameters():
            p.requires_grad_(False)
        named = list(self.template.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.n_params = sum(math.prod(s) for s in self.shapes)
        # Hand-written backward for FCNs with relu (the paper's networks): autograd's graph
        # bookkeeping was ~30% of a small-ensemble step (benchmarks/sgd_ensemble.py, Boolean).
        self._manual_backward = isinstance(self.template, FCNNet) and arch.activation == "relu"  # type: ignore[attr-defined]
        if isinstance(self.template, FCNNet):
            self._forward = self._fcn
        elif isinstance(self.template, CNNNet):
            self._forward = self._cnn
        elif isinstance(self.template, LSTMNet):
            self._forward = self._lstm
        else:
            self._forward = self._vmap

    # parameters ----------------------------------------------------------------------------
    def zeros(self, size: int) -> list[torch.Tensor]:
        """``size`` members of zeros: list of leaf tensors ``(size, *shape)`` requiring grad."""
        return [torch.zeros((size, *s), dtype=self.dtype, device=self.device, requires_grad=True)
                for s in self.shapes]

    def init_(self, params: Sequence[torch.Tensor], slots: Sequence[int], runs: Sequence[int], *, seed: int) -> None:
        """Initialise member ``slots[t]`` for run ``runs[t]`` in place (``make_generator(seed, "init", run)``)."""
        if len(slots) != len(runs):
            raise ValueError(f"slots and runs must have the same length, got {len(slots)} and {len(runs)}")
        if not len(slots):
            return
        staged = [torch.empty((len(slots), *s), dtype=self.dtype) for s in self.shapes]
        for t, run in enumerate(runs):
            self.arch.init_(self.template, make_generator(seed, "init", int(run)))
            for buf, p in zip(staged, self.template.parameters()):
                buf[t].copy_(p)
        index = torch.as_tensor(list(slots), dtype=torch.long, device=self.device)
        with torch.no_grad():
            for p, buf in zip(params, staged):
                p.index_copy_(0, index, buf.to(self.device, non_blocking=True))

    def member(self, params: Sequence[torch.Tensor], j: int) -> nn.Module:
        """Member ``j`` as a plain torch module (a copy, on the CPU, no grad)."""
        module = copy.deepcopy(self.template)
        with torch.no_grad():
            for p, q in zip(module.parameters(), params):
                p.copy_(q[j].detach().cpu())
        return module

    # evaluation ----------------------------------------------------------------------------
    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member.

        Parameters
        ----------
        params : list of tensors ``(E, *shape)``
        x : tensor ``(E, B, d)`` (member ``j`` sees ``x[j]``) or ``(n, d)`` (all members see it)

        Returns
        -------
        tensor ``(E, B)`` or ``(E, n)``
        """
        return self._forward(list(params), x)

    # training ------------------------------------------------------------------------------
    def forward_train(self, params: Sequence[torch.Tensor], x: torch.Tensor):
        """Outputs ``(E, B)`` of every member on its own minibatch ``x`` ``(E, B, d)``, and what
        :meth:`backward` needs.

        FCNs with relu keep their activations for the hand-written backward pass (no autograd
        graph is built); every other network records an autograd graph.
        """
        params = list(params)
        if self._manual_backward:
            acts = [x]
            with torch.no_grad():
                out = self._fcn(params, x, acts)
            return out, acts
        out = self._forward(params, x)
        return out.detach(), out

    def backward(self, params: Sequence[torch.Tensor], cache, grad_out: torch.Tensor) -> list[torch.Tensor]:
        """Per-member parameter gradients, given ``grad_out`` ``(E, B)`` = d(member j's loss)/d(its outputs).

        ``cache`` is the second value :meth:`forward_train` returned for the same ``params``.
        Returns tensors shaped like ``params``. Members never mix, so each member's gradient is
        its own loss's.
        """
        params = list(params)
        if not self._manual_backward:
            return list(torch.autograd.grad(cache, params, grad_outputs=grad_out))
        return _fcn_relu_backward(params, cache, grad_out)

    def _fcn(self, params, x, acts: list | None = None):
        # acts, if given, receives each hidden layer's activations (for the hand-written backward)
        return fcn_forward(params, x, self.arch.activation, acts)  # type: ignore[attr-defined]

    def _cnn(self, params, x):
        net: CNNNet = self.template  # type: ignore[assignment]
        e = params[0].shape[0]
        c, hh, ww = net.input_shape
        if x.dim() == 2:
            n = x.shape[0]
            h = x.reshape(n, 1, c, hh, ww).expand(n, e, c, hh, ww).reshape(n, e * c, hh, ww)
        else:
            n = x.shape[1]
            h = x.reshape(e, n, c, hh, ww).transpose(0, 1).reshape(n, e * c, hh, ww)
        for i, conv in enumerate(net.convs):
            w, b = params[2 * i], params[2 * i + 1]
            h = net._phi(nn.functional.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1),
                                              padding=conv.padding, groups=e))
        co = net.convs[-1].out_channels
        if net.readout_kind == "flatten":
            h = h.reshape(n, e, co * hh * ww).transpose(0, 1)
        else:
            h = h.reshape(n, e, co, hh * ww).mean(-1).transpose(0, 1)
        w, b = params[-2], params[-1]
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)).squeeze(-1)

    def _lstm(self, params, x):
        net: LSTMNet = self.template  # type: ignore[assignment]
        w_ih, w_hh, b_ih, b_hh, w_out, b_out = params
        e, hidden = w_hh.shape[0], w_hh.shape[2]
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(e, -1, -1)
        n = x.shape[1]
        if len(net.input_shape) == 3:
            c, hh, ww = net.input_shape
            seq = x.reshape(e, n, c, hh, ww).permute(0, 1, 3, 2, 4).reshape(e, n, hh, c * ww)
        else:
            seq = x.reshape(e, n, net.steps, 1)
        steps, feats = seq.shape[2], seq.shape[3]
        # Input projections of all steps in one batched matmul.
        xin = torch.baddbmm((b_ih + b_hh).unsqueeze(1), seq.reshape(e, n * steps, feats), w_ih.transpose(1, 2))
        xin = xin.reshape(e, n, steps, 4 * hidden)
        h = x.new_zeros(e, n, hidden)
        cell = x.new_zeros(e, n, hidden)
        w_hh_t = w_hh.transpose(1, 2)
        for t in range(steps):
            gates = torch.baddbmm(xin[:, :, t], h, w_hh_t)
            i, f, g, o = gates.chunk(4, dim=-1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(cell)
        return torch.baddbmm(b_out.unsqueeze(1), h, w_out.transpose(1, 2)).squeeze(-1)

    def _vmap(self, params, x):
        names = self.names
        module = self.template

        def one(ps, xx):
            return torch.func.functional_call(module, dict(zip(names, ps)), (xx,))

        return torch.func.vmap(one, in_dims=(0, None if x.dim() == 2 else 0))(tuple(params), x)

    def forward_vmap(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` through ``torch.func.vmap`` of the module (a reference and a fallback)."""
        return self._vmap(list(params), x)


def _fcn_relu_backward(params: list[torch.Tensor], acts: list[torch.Tensor], grad_out: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of an FCN ensemble with relu from its activations (pure function).

    Parameters
    ----------
    params : list of tensors
        ``[W_1 (E, h_1, d), b_1 (E, h_1), ..., W_out (E, 1, h_L), b_out (E, 1)]``.
    acts : list of tensors
        ``[x (E, B, d), relu(z_1) (E, B, h_1), ..., relu(z_L) (E, B, h_L)]``.
    grad_out : tensor ``(E, B)``
        Gradient of each member's loss with respect to its outputs.

    Returns
    -------
    list of tensors shaped like ``params``.

    Notes
    -----
    Choices measured at 1 thread (E = 256, B = 8, d = 7, h = 40): the readout's weight gradient
    as a broadcast product and sum (47 us) rather than a bmm with one output row (125 us);
    the relu derivative with ``aten::threshold_backward``, autograd's own kernel (23 us), where
    ``masked_fill_`` / ``torch.where`` with a boolean mask took 420-460 us; a weight gradient
    with fewer output columns than rows is computed transposed, since MKL's small gemms with
    narrow outputs were 3x slower ((E, 40, 7): 352 us; (E, 7, 40): 106 us).
    """
    grads: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    with torch.no_grad():
        g = grad_out.unsqueeze(-1)  # (E, B, 1)
        grads[-2] = (g * acts[-1]).sum(1, keepdim=True)
        grads[-1] = g.sum(1)
        delta = g * params[-2]  # d loss / d relu(z_L): (E, B, h_L)
        for i in range(len(params) // 2 - 2, -1, -1):
            dz = torch.ops.aten.threshold_backward(delta, acts[i + 1], 0)
            w = params[2 * i]
            if w.shape[1] > w.shape[2]:
                grads[2 * i] = torch.bmm(acts[i].transpose(1, 2), dz).transpose(1, 2)
            else:
                grads[2 * i] = torch.bmm(dz.transpose(1, 2), acts[i])
            grads[2 * i + 1] = dz.sum(1)
            if i:
                delta = torch.bmm(dz, w)
    return grads
