"""Architecture specs: frozen, validated descriptions of networks, and their batched forward passes.

A spec builds a network for one example's ``input_shape`` (:meth:`Architecture.build`) and gives
its protocol object (:meth:`Architecture.network`, a :class:`sampler.ensemble.Network`). Networks
map *flattened* inputs ``(n, d)`` (``sampler.Split``'s layout) to one scalar per example, ``(n,)``.
Parameters follow docs/DESIGN.md's standard rule (``W ~ N(0, sigma_w**2 / fan_in)``, ``b ~ N(0,
sigma_b**2)``), drawn from an explicit generator in ``named_parameters()`` order.

A new architecture is a frozen dataclass subclass of :class:`Architecture` with a ``kind``,
defaulted fields and ``_make(input_shape) -> nn.Module``, decorated with
:func:`register_architecture`: training, prior sampling and its Monte Carlo kernel then go through
``torch.func``. FCN, CNN and LSTM also name a hand-batched forward pass
(:meth:`Architecture._batched_features`), which their own modules run with one member.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .checks import check_choice, check_float, check_int, did_you_mean
from .data import Split
from .seeding import forked_torch_rng

ACTIVATIONS = ("relu", "erf", "tanh")


def activation_fn(name: str):
    """The elementwise activation called ``name`` (``relu``, ``erf`` or ``tanh``)."""
    check_choice("activation", name, ACTIVATIONS)
    return {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh}[name]


def _check_input_shape(input_shape) -> tuple[int, ...]:
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    for i, s in enumerate(input_shape):
        check_int(f"input_shape[{i}]", s, minimum=1)
    return tuple(int(s) for s in input_shape)


def standard_std(name: str, shape: tuple[int, ...], sigma_w: float, sigma_b: float) -> float:
    """Prior standard deviation of one parameter tensor by its name and shape alone (the rule for
    parameters no layer describes, :func:`parameter_stds`).

    A parameter whose name's last part starts with ``bias`` is a bias (``sigma_b``); anything else
    a weight, ``sigma_w / sqrt(fan_in)`` with ``fan_in`` the product of ``shape[1:]`` (1 for a vector).
    """
    if name.rsplit(".", 1)[-1].startswith("bias"):
        return sigma_b
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return sigma_w / math.sqrt(fan_in)


def _layer_fan_in(layer: nn.Module, pname: str, p: torch.Tensor) -> int | None | str:
    """What the layer that owns parameter ``pname`` says of it: its fan-in (a weight), ``None`` (a bias)
    or ``"unknown"`` (a layer type this rule does not know)."""
    if isinstance(layer, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.MultiheadAttention,
                          nn.LayerNorm, nn.GroupNorm)):
        if "bias" in pname:
            return None
        if isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed:
            return layer.out_channels // layer.groups * math.prod(layer.kernel_size)
        if isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
            return 1  # an elementwise scale
        return math.prod(p.shape[1:]) if p.dim() > 1 else 1  # (out, in, *kernel): torch's own layout
    return "unknown"


def parameter_stds(module: nn.Module, sigma_w: float, sigma_b: float) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """The standard rule's prior standard deviation of every parameter of ``module`` (in
    ``named_parameters()`` order), and the parameters whose role no layer tells.

    A parameter of a layer that knows its fan-in (``nn.Linear``, convolutions, ``nn.MultiheadAttention``;
    norm layers' scales count as weights of fan-in 1) is a weight ``N(0, sigma_w^2 / fan_in)`` or a bias
    ``N(0, sigma_b^2)``. Any other (an ``nn.Parameter`` of the user's own module) falls back to
    :func:`standard_std` (its name and shape), and is listed as ambiguous when that guess may be wrong: a
    matrix (used as ``x @ W`` its fan-in is ``shape[0]``, not ``shape[1:]``) or a vector not named
    ``bias*`` (a bias or a scale?).
    """
    owner = {}
    for mod_name, sub in module.named_modules():
        for pname, p in sub.named_parameters(recurse=False):
            owner[f"{mod_name}.{pname}" if mod_name else pname] = (sub, pname, p)
    stds, ambiguous = [], []
    for name, p in module.named_parameters():
        sub, pname, _ = owner[name]
        fan_in = _layer_fan_in(sub, pname, p)
        if fan_in == "unknown":
            stds.append(standard_std(name, tuple(p.shape), sigma_w, sigma_b))
            if p.dim() > 1 or not pname.startswith("bias"):
                ambiguous.append(f"{name} {tuple(p.shape)}")
        else:
            stds.append(sigma_b if fan_in is None else sigma_w / math.sqrt(fan_in))
    return tuple(stds), tuple(ambiguous)


def init_standard_(module: nn.Module, stds, generator: torch.Generator) -> nn.Module:
    """Draw every parameter of ``module`` in place, in ``named_parameters()`` order: ``N(0, 1)``
    noise of its shape (on its device, in its dtype) times its standard deviation in ``stds``
    (:meth:`Architecture.parameter_stds`). Returns ``module``."""
    with torch.no_grad():
        for (name, p), std in zip(module.named_parameters(), stds, strict=True):
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            p.copy_(noise * std)
    return module


def draw_standard(shapes, stds, n: int, *, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Parameters of ``n`` networks stacked, each parameter drawn as one ``(n, *shape)`` tensor.

    The rule of :func:`init_standard_` in another order (parameter by parameter over all networks);
    a parameter whose standard deviation is 0 draws nothing and is zeros. The tensors live on the
    generator's device.
    """
    out = []
    for shape, std in zip(shapes, stds, strict=True):
        if std == 0:
            out.append(torch.zeros((n, *shape), dtype=dtype, device=generator.device))
            continue
        out.append(torch.randn((n, *shape), generator=generator, dtype=dtype, device=generator.device).mul_(std))
    return out


# --- the batched forward passes of the built-in networks ------------------------------------------
# Parameters are stacked over E members: ``(E, *shape)``. Inputs are ``(n, d)`` (seen by every
# member) or ``(E, B, d)`` (member j sees x[j]). Member j's outputs depend on row j only.

def _affine(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h W^T + b`` per member: ``h`` ``(n, fan_in)`` shared or ``(E, B, fan_in)``; ``w`` ``(E,
    fan_out, fan_in)``; ``b`` ``(E, fan_out)``. Returns ``(E, n or B, fan_out)``."""
    if h.dim() == 2:  # shared inputs: one broadcast matmul, no per-member copy of x
        return torch.matmul(h, w.transpose(1, 2)) + b.unsqueeze(1)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def readout(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The scalar readout of features ``h`` ``(E, n, h)``: ``w`` ``(E, 1, h)``, ``b`` ``(E, 1)`` -> ``(E, n)``."""
    return _affine(h, w, b).squeeze(-1)


def fcn_features(params, x: torch.Tensor, *, activation: str, acts: list | None = None) -> torch.Tensor:
    """Last hidden layer ``(E, n, h_L)`` of FCNs: ``params`` ``[W_1 (E, h_1, d), b_1 (E, h_1), ...]``
    (hidden layers only); ``x`` itself when there are none. ``acts`` receives each hidden layer's
    activations (for the hand-written backward pass)."""
    phi = activation_fn(activation)
    h = x
    for i in range(0, len(params), 2):
        z = _affine(h, params[i], params[i + 1])  # a fresh tensor: relu in place saves an allocation (9x)
        h = z.relu_() if activation == "relu" else phi(z)
        if acts is not None:
            acts.append(h)
    return h


def cnn_features(params, x: torch.Tensor, *, input_shape, activation: str, pooling: str) -> torch.Tensor:
    """Readout inputs ``(E, n, h)`` of CNNs: one grouped convolution (``groups=E``) per layer, stride 1,
    'same' zero padding; ``params`` ``[K_1 (E, C, c, k, k), b_1 (E, C), ...]``; then the feature map
    flattened (``pooling="flatten"``, ``h = C*H*W``) or averaged over positions (``"gap"``, ``h = C``)."""
    phi = activation_fn(activation)
    e = params[0].shape[0]
    c, hh, ww = input_shape
    if x.dim() == 2:
        n = x.shape[0]
        h = x.reshape(n, 1, c, hh, ww).expand(n, e, c, hh, ww).reshape(n, e * c, hh, ww)
    else:
        n = x.shape[1]
        h = x.reshape(e, n, c, hh, ww).transpose(0, 1).reshape(n, e * c, hh, ww)
    for i in range(0, len(params), 2):
        w, b = params[i], params[i + 1]
        h = phi(nn.functional.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=w.shape[-1] // 2,
                                     groups=e))
    co = params[-2].shape[1]
    if pooling == "flatten":
        return h.reshape(n, e, co * hh * ww).transpose(0, 1)
    return h.reshape(n, e, co, hh * ww).mean(-1).transpose(0, 1)


def sequence_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(steps, features)`` in which an LSTM reads one example of ``input_shape``."""
    if len(input_shape) == 3:
        c, h, w = input_shape
        return h, c * w
    return math.prod(input_shape), 1


def lstm_features(params, x: torch.Tensor, *, input_shape) -> torch.Tensor:
    """Last hidden state ``(E, n, hidden)`` of single-layer LSTMs with ``torch.nn.LSTM``'s layout and gate
    order ``i, f, g, o``: ``params`` ``[W_ih (E, 4h, f), W_hh (E, 4h, h), b_ih (E, 4h), b_hh (E, 4h)]``.
    Written with batched matmuls, one step at a time (``torch.func.vmap`` has no rule for ``aten::lstm``)."""
    w_ih, w_hh, b_ih, b_hh = params
    e, hidden = w_hh.shape[0], w_hh.shape[2]
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(e, -1, -1)
    n = x.shape[1]
    steps, feats = sequence_shape(tuple(input_shape))
    if len(input_shape) == 3:  # images row by row
        c, hh, ww = input_shape
        x = x.reshape(e, n, c, hh, ww).permute(0, 1, 3, 2, 4)
    seq = x.reshape(e, n * steps, feats)
    # input projections of all steps in one batched matmul
    xin = torch.baddbmm((b_ih + b_hh).unsqueeze(1), seq, w_ih.transpose(1, 2)).reshape(e, n, steps, 4 * hidden)
    h = x.new_zeros(e, n, hidden)
    cell = x.new_zeros(e, n, hidden)
    w_hh_t = w_hh.transpose(1, 2)
    for t in range(steps):
        i, f, g, o = torch.baddbmm(xin[:, :, t], h, w_hh_t).chunk(4, dim=-1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell)
    return h


def _fcn_relu_backward(params: list[torch.Tensor], acts: list[torch.Tensor], grad_out: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of relu FCNs from their activations: the hand-written fast path of training.

    ``params`` ``[W_1 (E, h_1, d), b_1 (E, h_1), ..., W_out (E, 1, h_L), b_out (E, 1)]``; ``acts``
    ``[x (E, B, d), relu(z_1) (E, B, h_1), ..., relu(z_L) (E, B, h_L)]``; ``grad_out`` ``(E, B)`` the
    gradient of each member's loss with respect to its outputs. Returns tensors shaped like ``params``.

    Measured at 1 thread (E = 256, B = 8, d = 7, h = 40), against autograd's graph bookkeeping
    (~30% of a step): readout gradient as a broadcast product (47 us; bmm 125 us); relu derivative
    by ``aten::threshold_backward`` (23 us; ``where`` 420 us); narrow weight gradients transposed
    (MKL's narrow gemms 3x slower).
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


def _fcn_relu_training(params, x):
    """Outputs of relu FCNs on per-member batches and the activations :func:`_fcn_relu_backward` needs."""
    acts = [x]
    with torch.no_grad():
        out = readout(fcn_features(params[:-2], x, activation="relu", acts=acts), params[-2], params[-1])
    return out, functools.partial(_fcn_relu_backward, params, acts)


# --- specs ----------------------------------------------------------------------------------------

ARCHITECTURES: dict[str, type] = {}


def register_architecture(cls):
    """Class decorator: add a spec class to :data:`ARCHITECTURES` under its ``kind``.

    ``cls`` must be a frozen dataclass subclassing :class:`Architecture` with a non-empty ``kind``
    not taken by another class; the config's ``[arch] kind = "..."`` then builds it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Architecture) and dataclasses.is_dataclass(cls)
            and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"register_architecture needs a frozen dataclass subclass of sampler.Architecture, got {cls!r}")
    if not isinstance(cls.kind, str) or not cls.kind:
        raise ValueError(f"{cls.__qualname__}.kind must be a non-empty string, got {cls.kind!r}")
    old = ARCHITECTURES.get(cls.kind)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"architecture kind {cls.kind!r} is taken by {old.__module__}.{old.__qualname__}")
    ARCHITECTURES[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Architecture:
    """Common base of the architecture specs; ``kind`` names the subclass in configs.

    Subclasses implement ``_make(input_shape) -> nn.Module`` (the network mapping ``(n, d)`` to
    ``(n,)``, parameters not yet drawn) and may override :meth:`init_` (default: the standard
    rule with the spec's ``sigma_w`` and ``sigma_b``), :meth:`_batched_features` (a hand-batched
    forward pass), :meth:`_training_fast_path` and ``prior_method``.
    """

    kind: ClassVar[str] = ""
    #: The prior sampler ``method="auto"`` picks (``"weights"`` works for every architecture).
    prior_method: ClassVar[str] = "weights"

    def build(self, input_shape: tuple[int, ...], *, generator: torch.Generator, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu") -> nn.Module:
        """A network for examples of ``input_shape`` (e.g. ``(1, 28, 28)``) mapping ``(n, d)`` to ``(n,)``,
        drawn from ``generator`` (on ``device``) alone."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return self.init_(self.make(input_shape).to(device=device, dtype=dtype), generator)

    def make(self, input_shape: tuple[int, ...]) -> nn.Module:
        """The network's module with undrawn parameters (torch's own initialisation, run on a
        forked global RNG so that the caller's is untouched)."""
        shape = _check_input_shape(input_shape)
        with forked_torch_rng(0):
            return self._make(shape)

    def network(self, input_shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu"):
        """The protocol object of this architecture on ``input_shape``: a :class:`sampler.ensemble.Network`."""
        from .ensemble import Network  # ensemble imports this module

        return Network(self, input_shape, dtype=dtype, device=device)

    def init_(self, module: nn.Module, generator: torch.Generator) -> nn.Module:
        """Draw the parameters of ``module`` (built by this spec) in place from ``generator``."""
        return init_standard_(module, self.parameter_stds(module), generator)

    def parameter_stds(self, module: nn.Module) -> tuple[float, ...]:
        """The standard rule's standard deviation of each parameter of ``module`` (built by this spec), in
        ``named_parameters()`` order (:func:`parameter_stds`)."""
        return parameter_stds(module, self.sigma_w, self.sigma_b)[0]  # type: ignore[attr-defined]

    #: Whether :meth:`init_` is the standard rule (then many members can be drawn as stacked tensors).
    standard_init = True

    #: Whether the first parameter is a dense weight ``(fan_out, d)`` applied to the flattened input
    #: (``x W^T``), the input reaching the network through nothing else, and whether the spec on input
    #: shape ``(r,)`` is the same network with that weight ``(fan_out, r)``. Then training may run in the
    #: span of the split's inputs (:mod:`sampler._span`). FCN: yes; CNN (convolutions), LSTM (rows
    #: as a sequence) and user modules (unknown structure): no.
    dense_first_layer: ClassVar[bool] = False

    def _make(self, input_shape: tuple[int, ...]) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _make(input_shape) -> nn.Module")

    def _batched_features(self, input_shape: tuple[int, ...]) -> Callable | None:
        """``features(params, x) -> (E, n, h)``: the inputs of the readout (the last two parameters,
        ``(1, h)`` and ``(1,)``) for stacked parameters; None: no hand-batched path (``torch.func``)."""
        return None

    def _training_fast_path(self) -> Callable | None:
        """``forward(params, x (E, B, d)) -> (outputs, backward)`` with ``backward(grad_out) -> grads``
        replacing autograd in training, or None."""
        return None

    def source_files(self) -> tuple[Path, ...]:
        """Files of the user's own code this spec runs, whose content run folders fingerprint (a
        changed file is refused by name): the file defining a spec class outside this package;
        none for the built-ins."""
        name = type(self).__module__
        file = getattr(sys.modules.get(name), "__file__", None)
        if name.split(".")[0] == __name__.split(".")[0] or not file or not Path(file).is_file():
            return ()
        return (Path(file),)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict with a ``kind`` key (for configs and manifests)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def describe(self) -> str:
        """A short human-readable description."""
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self).items())
        return f"{self.kind}({fields})"


class _BatchedNet(nn.Module):
    """A built-in network: its forward pass is the spec's batched one with one member."""

    def __init__(self, features: Callable):
        super().__init__()
        self._features = features

    def _tensors(self) -> list[torch.Tensor]:  # attribute access, so that functional_call's tensors are used
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ps = [t.unsqueeze(0) for t in self._tensors()]
        return readout(self._features(ps[:-2], x.reshape(x.shape[0], -1)), ps[-2], ps[-1])[0]


class FCNNet(_BatchedNet):
    """The finite FCN; ``layers[i]`` are hidden layers, ``readout`` the scalar output layer."""

    def __init__(self, d_in: int, depth: int, width: int, activation: str):
        super().__init__(functools.partial(fcn_features, activation=activation))
        sizes = [d_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(sizes[-1], 1)
        self.activation = activation

    def _tensors(self):
        return [t for layer in (*self.layers, self.readout) for t in (layer.weight, layer.bias)]


class CNNNet(_BatchedNet):
    def __init__(self, input_shape, depth, channels, kernel_size, activation, pooling):
        super().__init__(functools.partial(cnn_features, input_shape=tuple(input_shape), activation=activation,
                                           pooling=pooling))
        c, h, w = input_shape
        ins = [c] + [channels] * (depth - 1)
        self.convs = nn.ModuleList(nn.Conv2d(a, channels, kernel_size, padding=kernel_size // 2) for a in ins)
        self.readout = nn.Linear(channels * h * w if pooling == "flatten" else channels, 1)

    def _tensors(self):
        return [t for layer in (*self.convs, self.readout) for t in (layer.weight, layer.bias)]


class _LSTMWeights(nn.Module):
    """``torch.nn.LSTM``'s parameters (names, shapes, order) without its fused kernel."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden, features))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden))


class LSTMNet(_BatchedNet):
    def __init__(self, input_shape, hidden):
        super().__init__(functools.partial(lstm_features, input_shape=tuple(input_shape)))
        self.lstm = _LSTMWeights(sequence_shape(tuple(input_shape))[1], hidden)
        self.readout = nn.Linear(hidden, 1)

    def _tensors(self):
        m = self.lstm
        return [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, self.readout.weight, self.readout.bias]


def _check_scales(spec) -> None:
    check_float("sigma_w", spec.sigma_w, minimum=0.0, strict_minimum=True)
    check_float("sigma_b", spec.sigma_b, minimum=0.0)


@register_architecture
@dataclass(frozen=True)
class FCN(Architecture):
    """Fully connected network: ``depth`` hidden layers of ``width`` units, scalar readout.

    ``depth >= 0`` (0: a linear model); ``sigma_w``, ``sigma_b``: the standard parameterisation's
    weight and bias scales (dimensionless; the same in every spec).
    """

    kind: ClassVar[str] = "fcn"
    prior_method: ClassVar[str] = "preactivations"
    dense_first_layer: ClassVar[bool] = True
    depth: int = 2
    width: int = 512
    activation: str = "relu"
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        check_int("depth", self.depth, minimum=0)
        check_int("width", self.width, minimum=1)
        check_choice("activation", self.activation, ACTIVATIONS)
        _check_scales(self)

    def _make(self, input_shape):
        return FCNNet(math.prod(input_shape), self.depth, self.width, self.activation)

    def _batched_features(self, input_shape):
        return functools.partial(fcn_features, activation=self.activation)

    def _training_fast_path(self):
        return _fcn_relu_training if self.activation == "relu" else None

    def describe(self) -> str:
        return (f"FCN {self.depth}x{self.width} {self.activation} "
                f"(sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g})")


@register_architecture
@dataclass(frozen=True)
class CNN(Architecture):
    """Convolutional network: ``depth`` conv layers (stride 1, 'same' padding), scalar readout.

    ``channels`` in every layer, odd ``kernel_size``. ``readout``: a dense readout of the
    flattened feature map, or (``"gap"``) of its global average pool; the NNGP kernel with ``gap``
    couples all pairs of pixels and costs about H*W times more per kernel entry than ``flatten``.
    """

    kind: ClassVar[str] = "cnn"
    depth: int = 2
    channels: int = 64
    kernel_size: int = 3
    activation: str = "relu"
    readout: str = "flatten"
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        check_int("depth", self.depth, minimum=1)
        check_int("channels", self.channels, minimum=1)
        check_int("kernel_size", self.kernel_size, minimum=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got kernel_size={self.kernel_size}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("readout", self.readout, ("flatten", "gap"))
        _check_scales(self)

    def _make(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"CNN needs image inputs of shape (channels, height, width), got input_shape={input_shape}")
        return CNNNet(input_shape, self.depth, self.channels, self.kernel_size, self.activation, self.readout)

    def _batched_features(self, input_shape):
        return functools.partial(cnn_features, input_shape=tuple(input_shape), activation=self.activation,
                                 pooling=self.readout)

    def describe(self) -> str:
        return (f"CNN {self.depth}x{self.channels}ch k{self.kernel_size} {self.activation} {self.readout} "
                f"(sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g})")


@register_architecture
@dataclass(frozen=True)
class LSTM(Architecture):
    """Single-layer LSTM over a sequence, readout of the last hidden state.

    Images ``(C, H, W)`` are read row by row (``H`` steps of ``C*W`` features); flat inputs
    ``(d,)`` as ``d`` steps of one feature; ``hidden`` units.
    """

    kind: ClassVar[str] = "lstm"
    hidden: int = 64
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        check_int("hidden", self.hidden, minimum=1)
        _check_scales(self)

    def _make(self, input_shape):
        return LSTMNet(input_shape, self.hidden)

    def _batched_features(self, input_shape):
        return functools.partial(lstm_features, input_shape=tuple(input_shape))

    def describe(self) -> str:
        return f"LSTM {self.hidden} (sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g})"


MODULE_INITS = ("standard", "module")


def _freeze(value):
    """``value`` made hashable: mappings -> sorted tuples of pairs, lists -> tuples (recursively)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def factory_name(factory) -> str:
    """``"package.module:qualname"`` of a callable (what a config would write for it)."""
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__name__)}"


def _declares_input_shape(factory: Callable, kwargs=()) -> bool:
    """Whether :func:`_call_factory` passes ``input_shape`` to ``factory``: it has a parameter of that name,
    or its first parameter is positional, required and not among ``kwargs`` (``def make(shape, width=8)``);
    a signature that cannot be read gets it, as documented."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    if "input_shape" in params:
        return True
    first = next(iter(params.values()), None)
    return (first is not None and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
            and first.default is first.empty and first.name not in dict(kwargs))


def _call_factory(factory: Callable, input_shape: tuple[int, ...], kwargs: dict) -> Any:
    """``factory(**kwargs)``, given ``input_shape`` only where it asks for it (:func:`_declares_input_shape`):
    as ``input_shape=`` where a keyword-only parameter has that name, else first."""
    if not _declares_input_shape(factory, kwargs):
        return factory(**kwargs)
    try:
        p = inspect.signature(factory).parameters.get("input_shape")
    except (TypeError, ValueError):
        p = None
    if p is not None and p.kind == p.KEYWORD_ONLY:
        return factory(**kwargs, input_shape=input_shape)
    return factory(input_shape, **kwargs)


#: Whether a Module spec imports its factory when it is made (the default: a bad name fails at once).
#: :func:`unresolved_factories` turns it off for the extent of a ``with`` block only: re-reading a finished
#: run folder's config needs no network and must not need the user's code on the path.
_RESOLVE_FACTORIES: contextvars.ContextVar[bool] = contextvars.ContextVar("resolve_factories", default=True)


@contextlib.contextmanager
def unresolved_factories():
    """Within the block, :class:`Module` specs keep their factory's name without importing it."""
    token = _RESOLVE_FACTORIES.set(False)
    try:
        yield
    finally:
        _RESOLVE_FACTORIES.reset(token)


def is_factory_file(factory) -> bool:
    """Whether a factory string names a Python file (``"./mynets.py:tanh_mlp"``) rather than a module."""
    return isinstance(factory, str) and ":" in factory and factory.rsplit(":", 1)[0].endswith(".py")


def _module_from_file(factory: str, path: str):
    """The module of the file ``path`` (absolute), loaded once per path and version (modification time and
    size) under a private name in ``sys.modules`` (as an import would: the same classes every time)."""
    if not Path(path).is_file():
        raise ValueError(f"arch.factory {factory!r}: no such file {path}")
    stat = Path(path).stat()  # a file changed since it was loaded is loaded again
    name = "_sgdbayes_factory_" + hashlib.blake2b(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode(),
                                                  digest_size=6).hexdigest()
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"arch.factory {factory!r}: running {path} raised {_first_line(exc)}") from exc
    return module


def resolve_factory(factory) -> Callable:
    """The callable ``factory`` names: ``"package.module:function"`` (``function`` may be dotted), a file
    ``"path/to/nets.py:function"`` (a path relative to the working directory here; configs make it
    relative to the config file), or the callable itself; otherwise a ``ValueError`` naming
    ``arch.factory`` and what went wrong."""
    if callable(factory):
        return factory
    if is_factory_file(factory):
        path, attr = factory.rsplit(":", 1)
        obj = _module_from_file(factory, str(Path(path).expanduser().resolve()))
        mod_name = path
    elif not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise ValueError(f"arch.factory must be 'package.module:function' or 'path/to/file.py:function' (or a "
                         f"callable in Python), got {factory!r}")
    else:
        mod_name, attr = factory.split(":")
        try:
            obj = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ValueError(f"arch.factory {factory!r}: cannot import module {mod_name!r} "
                             f"({type(exc).__name__}: {exc}); is it installed or on PYTHONPATH? (or name the file: "
                             f"factory = './{mod_name.replace('.', '/')}.py:{attr}')") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"arch.factory {factory!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"arch.factory {factory!r} must name a callable, got a {type(obj).__name__}")
    return obj


def _first_line(exc: BaseException) -> str:
    """``"Type: first line of its message"``: a cause in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _unsupported_layer(module: nn.Module) -> tuple[str, str] | None:
    """``(name, why)`` of the first layer whose network is not one deterministic function of its
    parameters (or that the vmap engine cannot batch), else None. See :class:`Module`."""
    for name, sub in module.named_modules():
        label = f"{name or '<root>'}' ({type(sub).__name__})"
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            return label, ("batch normalisation makes one input's output depend on the rest of its minibatch and "
                           "on running statistics (buffers), so a network is not one function f of its parameters "
                           "for P_SGD and P_B; use LayerNorm or GroupNorm (per example), or no normalisation")
        if isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.track_running_stats:
            return label, ("running statistics are state outside the parameters; use track_running_stats=False")
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
            return label, (f"dropout (p={sub.p:g}) makes the output random, and P_B and the function f are "
                           f"defined for deterministic networks; use p=0 or remove it")
        if isinstance(sub, nn.RNNBase):
            return label, ("torch.func.vmap has no batching rule for torch's fused recurrent layers; "
                           "use [arch] kind = 'lstm' (hand-batched) or write the cell with nn.Linear")
    return None


class ModuleNet(nn.Module):
    """A user's module behind the project's interface: flattened ``(n, d)`` inputs -> ``(n,)``.

    ``net`` receives ``x.reshape(n, *input_shape)`` and must return ``(n,)`` or ``(n, 1)``.
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], name: str):
        super().__init__()
        self.net = net
        self.input_shape = tuple(input_shape)
        self.factory_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x.reshape(x.shape[0], *self.input_shape))
        if out.dim() == 2 and out.shape[1] == 1:
            out = out.squeeze(-1)
        if out.dim() != 1 or out.shape[0] != x.shape[0]:
            raise ValueError(f"arch.factory {self.factory_name!r}: the module must map inputs of shape "
                             f"(n, *input_shape) = ({x.shape[0]}, {', '.join(map(str, self.input_shape))}) to "
                             f"outputs of shape (n,) or (n, 1), got {tuple(out.shape)}")
        return out


@register_architecture
@dataclass(frozen=True)
class Module(Architecture):
    """Any ``torch.nn.Module`` a factory builds: the user's own network as an architecture.

    Attributes
    ----------
    factory : str or callable
        ``"package.module:function"``, or in Python the callable itself, called as
        ``factory(input_shape, **kwargs)``; it returns a module mapping ``(n, *input_shape)`` to
        ``(n,)`` or ``(n, 1)`` (no output activation). A callable importable by its
        ``module:qualname`` is stored as that string (specs compare, hash, pickle and go into
        configs by name); any other (a lambda) works in Python but :meth:`to_dict` refuses it.
    kwargs : mapping
        The factory's keyword arguments (``[arch.kwargs]``), stored as sorted ``(key, value)`` pairs.
    init : {"standard", "module"}
        ``standard``: the project's rule (:func:`standard_std`) from the run's generator.
        ``module``: the module's own, built inside :func:`sampler.seeding.forked_torch_rng` seeded
        by a 63-bit integer drawn from the run's generator.

    P_SGD and P_B need a network that is one deterministic function of its parameters: batch
    normalisation and dropout with ``p > 0`` are refused when the module is built, naming the
    layer; so are torch's fused recurrent layers (no vmap rule). Other buffers are constants shared
    by every member. LayerNorm / GroupNorm are supported; under ``standard`` their gains are drawn
    like 1-d weights, so prefer ``init = "module"`` with normalisation layers.
    """

    kind: ClassVar[str] = "module"
    factory: Any = ""
    kwargs: Any = ()
    init: str = "standard"
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        f = self.factory
        if isinstance(f, nn.Module):
            cls = type(f)
            raise TypeError(f"arch.factory got a module instance ({cls.__name__}); pass what builds one: the class "
                            f"(sampler.Module(factory={cls.__name__}, kwargs={{...}})) or a function, or in a config "
                            f"factory = '{cls.__module__}:{cls.__qualname__}' (each network is built and initialised "
                            f"afresh)")
        if callable(f):
            name = factory_name(f)
            try:
                same = "<" not in name and resolve_factory(name) is f
            except ValueError:
                same = False
            if same:
                object.__setattr__(self, "factory", name)
        elif _RESOLVE_FACTORIES.get():
            resolve_factory(f)
        elif not isinstance(f, str) or f.count(":") < 1 or not all(f.rsplit(":", 1)):
            raise ValueError(f"arch.factory must be 'package.module:function' or 'path/to/file.py:function', got {f!r}")
        kw = self.kwargs
        if isinstance(kw, Mapping):
            object.__setattr__(self, "kwargs", _freeze(kw))
        elif not (isinstance(kw, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in kw)):
            raise TypeError(f"arch.kwargs must be a table (mapping) of keyword arguments, got {kw!r}")
        check_choice("arch.init", self.init, MODULE_INITS)
        _check_scales(self)

    @property
    def standard_init(self) -> bool:
        return self.init == "standard"

    @property
    def importable(self) -> bool:
        """Whether the factory is named by a string (can go into configs, run folders, Ray)."""
        return isinstance(self.factory, str)

    def _construct(self, input_shape: tuple[int, ...]) -> nn.Module:
        name = self.factory if self.importable else factory_name(self.factory)
        factory = resolve_factory(self.factory)
        try:
            net = _call_factory(factory, tuple(input_shape), dict(self.kwargs))
        except Exception as exc:  # the user's code: one line naming the call and the cause (chained)
            shape = [repr(tuple(input_shape))] if _declares_input_shape(factory, dict(self.kwargs)) else []
            args = ", ".join(shape + [f"{k}={v!r}" for k, v in self.kwargs])
            raise ValueError(f"arch.factory {name!r} raised {_first_line(exc)} when called as "
                             f"{name.split(':')[-1]}({args})") from exc
        if not isinstance(net, nn.Module):
            raise TypeError(f"arch.factory {name!r} must return a torch.nn.Module, got {type(net).__name__}")
        return ModuleNet(net, input_shape, name)

    def _make(self, input_shape):
        with forked_torch_rng(0):  # the construction's own draws leave the global RNG untouched
            module = self._construct(input_shape)
        bad = _unsupported_layer(module.net)
        if bad is not None:
            raise ValueError(f"arch.factory {module.factory_name!r}: layer '{bad[0]} is not supported: {bad[1]}")
        if not any(True for _ in module.parameters()):
            raise ValueError(f"arch.factory {module.factory_name!r}: the module has no parameters to train")
        with torch.no_grad():  # the output shape, checked once here rather than at the first step
            try:
                module(torch.zeros(2, math.prod(input_shape)))
            except ValueError:
                raise  # ModuleNet's own (output shape), naming the factory
            except Exception as exc:
                raise ValueError(f"arch.factory {module.factory_name!r}: the module's forward pass raised "
                                 f"{_first_line(exc)} on zeros of shape (2, {', '.join(map(str, input_shape))})"
                                 ) from exc
        if self.init == "standard":
            ambiguous = [a.removeprefix("net.") for a in parameter_stds(module, self.sigma_w, self.sigma_b)[1]]
            if ambiguous:
                warnings.warn(
                    f"arch.factory {module.factory_name!r}: init = 'standard' cannot tell the role of parameter(s) "
                    f"{', '.join(ambiguous)}: no layer that knows its fan-in (nn.Linear, a convolution, ...) owns "
                    f"them, so they are drawn by name and shape (a matrix as a weight of fan-in shape[1:], a vector "
                    f"not named bias* as a weight of fan-in 1); a matrix used as x @ W has fan-in shape[0]. Put "
                    f"them in nn.Linear, name biases bias*, or use init = 'module'", UserWarning, stacklevel=4)
        return module

    def init_(self, module: nn.Module, generator: torch.Generator) -> nn.Module:
        if self.init == "standard":
            return super().init_(module, generator)
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
        p0 = next(module.parameters())
        with forked_torch_rng(seed):
            fresh = self._construct(module.input_shape)
        with torch.no_grad():
            for (name, p), (name2, q) in zip(module.named_parameters(), fresh.named_parameters()):
                if name != name2 or p.shape != q.shape:
                    raise ValueError(f"arch.factory {module.factory_name!r} is not deterministic in its "
                                     f"structure: parameter {name} {tuple(p.shape)} vs {name2} {tuple(q.shape)}")
                p.copy_(q.to(dtype=p0.dtype))
        return module

    def source_files(self) -> tuple[Path, ...]:
        """The file of the factory's module (where it is a file)."""
        if not self.importable:
            return ()
        if is_factory_file(self.factory):
            path = Path(self.factory.rsplit(":", 1)[0]).expanduser().resolve()
            return (path,) if path.is_file() or _RESOLVE_FACTORIES.get() else ()
        try:  # found without running the module (a package's parents are imported)
            spec = importlib.util.find_spec(self.factory.split(":")[0])
        except (ImportError, ValueError):
            spec = None
        file = spec.origin if spec is not None else None
        return (Path(file),) if file and Path(file).is_file() else ()

    def to_dict(self) -> dict[str, Any]:
        if not self.importable:
            raise ValueError(f"arch.factory {factory_name(self.factory)!r} is not importable by name (a lambda "
                             f"or a local function): define it at module level of an importable module and "
                             f"pass 'package.module:function' to write it into a config, a run folder or a "
                             f"Ray task")
        return {"kind": self.kind, "factory": self.factory, "kwargs": dict(self.kwargs), "init": self.init,
                "sigma_w": self.sigma_w, "sigma_b": self.sigma_b}

    def describe(self) -> str:
        name = self.factory if self.importable else factory_name(self.factory)
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        init = f"sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g}" if self.init == "standard" else "own init"
        return f"module {name}({kw}) ({init})"


def check_arch(arch) -> None:
    """Raise ``TypeError`` unless ``arch`` is an :class:`Architecture` (a module instance is told what to pass)."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be an Architecture spec (FCN, CNN, LSTM, Module), got {type(arch).__name__}"
                        + ("; for your own torch.nn.Module pass sampler.Module(factory=<its class or a function that "
                           "builds it>)" if isinstance(arch, nn.Module) else ""))


def check_arch_split(arch, split) -> None:
    """Raise ``TypeError`` unless ``arch`` is an :class:`Architecture` and ``split`` a ``sampler.Split``."""
    check_arch(arch)
    if not isinstance(split, Split):
        raise TypeError(f"split must be a sampler.Split, got {type(split).__name__}")


def make_architecture(kind: str, **fields) -> Architecture:
    """The spec of ``kind`` (a key of :data:`ARCHITECTURES`) built from keyword ``fields``."""
    check_choice("arch.kind", kind, ARCHITECTURES)
    cls = ARCHITECTURES[kind]
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in fields:
        if key not in valid:
            raise ValueError(f"unknown field {key!r} for architecture {kind!r}; valid fields: "
                             f"{sorted(valid)}{did_you_mean(key, valid)}")
    return cls(**fields)
