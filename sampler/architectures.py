"""Architecture specs: frozen, validated descriptions that build finite torch networks.

Each spec builds a network for a given single-example ``input_shape`` and names its NNGP kernel
(see ``nngp.kernel``). The networks take *flattened* inputs of shape ``(n, d)``, the layout of
``sampler.Split``, reshape them internally and return one scalar output per example, shape ``(n,)``.

Parameterisation (DESIGN.md, "standard"): every weight ``W ~ N(0, sigma_w**2 / fan_in)``, every
bias ``b ~ N(0, sigma_b**2)``, no output activation. Parameters are drawn from an explicit
``torch.Generator`` in the order of ``module.parameters()``, so a network is a pure function of
its spec, its input shape and its generator's state.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ._checks import check_choice, check_float, check_int
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
    """Prior standard deviation of one parameter tensor: the project's one initialisation rule.

    Parameters
    ----------
    name : str
        The parameter's name in ``module.named_parameters()``; a name whose last part starts with
        ``bias`` is a bias, anything else a weight.
    shape : tuple of int
        The parameter's shape (without any ensemble dimension); a weight's ``fan_in`` is the
        product of all its dimensions but the first (1 for a vector).
    sigma_w, sigma_b : float
        Weight and bias scales of the standard parameterisation (dimensionless).

    Returns
    -------
    float
        ``sigma_b`` for a bias, ``sigma_w / sqrt(fan_in)`` for a weight.
    """
    if name.rsplit(".", 1)[-1].startswith("bias"):
        return sigma_b
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return sigma_w / math.sqrt(fan_in)


def init_standard_(module: nn.Module, sigma_w: float, sigma_b: float, generator: torch.Generator) -> nn.Module:
    """Draw every parameter of ``module`` in place, in ``module.named_parameters()`` order.

    Each parameter is ``N(0, 1)`` noise of its shape times :func:`standard_std` (weights
    ``N(0, sigma_w**2 / fan_in)``, biases ``N(0, sigma_b**2)``). Returns ``module``.
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            p.copy_(noise * standard_std(name, tuple(p.shape), sigma_w, sigma_b))
    return module


def draw_standard(named_shapes, n: int, *, sigma_w: float, sigma_b: float, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, skip_zero: bool = False) -> list[torch.Tensor | None]:
    """Parameters of ``n`` networks at once, stacked: the rule of :func:`init_standard_`.

    Parameters
    ----------
    named_shapes : sequence of (str, tuple of int)
        Name and shape of each parameter, in drawing order (e.g. :func:`fcn_param_shapes`).
    n : int
        Networks.
    generator : torch.Generator
        Source of the noise (keyword-only); the tensors live on its device.
    skip_zero : bool
        Give ``None`` (and draw nothing) for parameters whose standard deviation is 0.

    Returns
    -------
    list of tensors ``(n, *shape)`` (or None)
        Parameter ``i`` is ``N(0, 1)`` noise drawn as one tensor, times :func:`standard_std`.
    """
    out: list[torch.Tensor | None] = []
    for name, shape in named_shapes:
        std = standard_std(name, tuple(shape), sigma_w, sigma_b)
        if skip_zero and std == 0:
            out.append(None)
            continue
        noise = torch.randn((n, *shape), generator=generator, dtype=dtype, device=generator.device)
        out.append(noise.mul_(std))
    return out


def fcn_param_shapes(d_in: int, depth: int, width: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of :class:`FCNNet`'s parameters, in ``named_parameters()`` order.

    ``[("layers.0.weight", (width, d_in)), ("layers.0.bias", (width,)), ...,
    ("readout.weight", (1, width)), ("readout.bias", (1,))]``.
    """
    sizes = [d_in] + [width] * depth
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes += [(f"layers.{i}.weight", (b, a)), (f"layers.{i}.bias", (b,))]
    return shapes + [("readout.weight", (1, sizes[-1])), ("readout.bias", (1,))]


def _affine(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``h W^T + b`` per member: ``h`` ``(n, fan_in)`` shared or ``(E, B, fan_in)``; ``w`` ``(E, fan_out,
    fan_in)``; ``b`` ``(E, fan_out)`` or None. Returns ``(E, n or B, fan_out)``."""
    if h.dim() == 2:  # shared inputs: one broadcast matmul, no per-member copy of x
        out = torch.matmul(h, w.transpose(1, 2))
        return out if b is None else out + b.unsqueeze(1)
    if b is None:
        return torch.bmm(h, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def fcn_features(params, x: torch.Tensor, activation: str, acts: list | None = None) -> torch.Tensor:
    """Last hidden layer of ``E`` FCNs with stacked parameters (the inputs of their readouts).

    Parameters
    ----------
    params : sequence of tensors
        ``[W_1 (E, h_1, d), b_1 (E, h_1), ..., W_L (E, h_L, h_{L-1}), b_L (E, h_L)]``, hidden
        layers only; a bias may be None (no bias).
    x : tensor
        ``(n, d)``, seen by every member, or ``(E, B, d)``, member ``j`` sees ``x[j]``.
    activation : {"relu", "erf", "tanh"}
    acts : list, optional
        Receives each hidden layer's activations, first to last.

    Returns
    -------
    tensor ``(E, n, h_L)`` or ``(E, B, h_L)``; ``x`` itself when there are no hidden layers.
    """
    phi = activation_fn(activation)
    h = x
    for i in range(0, len(params), 2):
        h = phi(_affine(h, params[i], params[i + 1]))
        if acts is not None:
            acts.append(h)
    return h


def fcn_forward(params, x: torch.Tensor, activation: str, acts: list | None = None) -> torch.Tensor:
    """Outputs of ``E`` FCNs with stacked parameters: the project's one FCN forward pass.

    Parameters
    ----------
    params : sequence of tensors
        :func:`fcn_features`'s hidden layers followed by the readout ``W_out (E, 1, h_L)``,
        ``b_out (E, 1)`` (or None): the order of :func:`fcn_param_shapes`, each with a leading
        ensemble dimension.
    x : tensor ``(n, d)`` (shared) or ``(E, B, d)`` (one batch per member)
    activation : {"relu", "erf", "tanh"}
    acts : list, optional
        Receives each hidden layer's activations (for a hand-written backward pass).

    Returns
    -------
    tensor ``(E, n)`` or ``(E, B)``
        Member ``j``'s outputs depend on row ``j`` of the parameters only.
    """
    h = fcn_features(params[:-2], x, activation, acts)
    return _affine(h, params[-2], params[-1]).squeeze(-1)


@dataclass(frozen=True)
class Architecture:
    """Common base of the architecture specs; ``kind`` names the subclass."""

    kind: ClassVar[str] = ""

    def build(
        self,
        input_shape: tuple[int, ...],
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> nn.Module:
        """A freshly initialised network for examples of shape ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one example before flattening, e.g. ``(1, 28, 28)`` or ``(7,)``.
        generator : torch.Generator
            Source of the initialisation (keyword-only; no global RNG is used). It must live on
            ``device``.
        dtype, device
            Of the parameters.

        Returns
        -------
        torch.nn.Module
            Maps ``(n, d)`` inputs, ``d = prod(input_shape)``, to ``(n,)`` outputs.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        shape = _check_input_shape(input_shape)
        module = self._make(shape).to(device=device, dtype=dtype)
        return self.init_(module, generator)

    def init_(self, module: nn.Module, generator: torch.Generator) -> nn.Module:
        """Draw the parameters of ``module`` (built by this spec) in place from ``generator``.

        The built-in specs use the standard parameterisation (:func:`init_standard_`); the
        ``module`` spec may use the module's own initialisation instead. Returns ``module``.
        """
        return init_standard_(module, self.sigma_w, self.sigma_b, generator)  # type: ignore[attr-defined]

    def _make(self, input_shape: tuple[int, ...]) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict with a ``kind`` key (for configs and manifests)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def describe(self) -> str:
        """A short human-readable description, e.g. ``FCN 2x512 relu (sigma_w=1, sigma_b=0.0357)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class FCN(Architecture):
    """Fully connected network: ``depth`` hidden layers of ``width`` units, scalar readout.

    Attributes
    ----------
    depth : int
        Number of hidden layers (>= 0; 0 is a linear model).
    width : int
        Units per hidden layer.
    activation : {"relu", "erf", "tanh"}
    sigma_w, sigma_b : float
        Weight and bias scales of the standard parameterisation (dimensionless).
    """

    kind: ClassVar[str] = "fcn"
    depth: int = 2
    width: int = 512
    activation: str = "relu"
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        check_int("depth", self.depth, minimum=0)
        check_int("width", self.width, minimum=1)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_float("sigma_w", self.sigma_w, minimum=0.0, strict_minimum=True)
        check_float("sigma_b", self.sigma_b, minimum=0.0)

    def _make(self, input_shape):
        return FCNNet(math.prod(input_shape), self.depth, self.width, self.activation)

    def describe(self) -> str:
        return (f"FCN {self.depth}x{self.width} {self.activation} "
                f"(sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g})")


@dataclass(frozen=True)
class CNN(Architecture):
    """Convolutional network: ``depth`` conv layers (stride 1, 'same' padding), scalar readout.

    Attributes
    ----------
    depth : int
        Number of convolutional layers (>= 1).
    channels : int
        Channels of every conv layer.
    kernel_size : int
        Odd spatial filter size.
    activation : {"relu", "erf", "tanh"}
    readout : {"flatten", "gap"}
        Dense readout of the flattened feature map, or global average pooling then a dense
        readout. The NNGP kernel with ``gap`` couples all pairs of pixels and costs far more
        (about H*W times) per kernel entry than ``flatten``.
    sigma_w, sigma_b : float
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
        check_float("sigma_w", self.sigma_w, minimum=0.0, strict_minimum=True)
        check_float("sigma_b", self.sigma_b, minimum=0.0)

    def _make(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"CNN needs image inputs of shape (channels, height, width), got input_shape={input_shape}")
        return CNNNet(input_shape, self.depth, self.channels, self.kernel_size, self.activation, self.readout)

    def describe(self) -> str:
        return (f"CNN {self.depth}x{self.channels}ch k{self.kernel_size} {self.activation} {self.readout} "
                f"(sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g})")


@dataclass(frozen=True)
class LSTM(Architecture):
    """Single-layer LSTM over a sequence, readout of the last hidden state.

    Images ``(C, H, W)`` are read row by row (``H`` steps of ``C*W`` features); flat inputs
    ``(d,)`` as ``d`` steps of one feature.

    Attributes
    ----------
    hidden : int
        Hidden units.
    sigma_w, sigma_b : float
    """

    kind: ClassVar[str] = "lstm"
    hidden: int = 64
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        check_int("hidden", self.hidden, minimum=1)
        check_float("sigma_w", self.sigma_w, minimum=0.0, strict_minimum=True)
        check_float("sigma_b", self.sigma_b, minimum=0.0)

    def _make(self, input_shape):
        return LSTMNet(input_shape, self.hidden)

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


def _thaw(value):
    """The inverse of :func:`_freeze` for a frozen kwargs table (tuples stay tuples inside)."""
    return {k: v for k, v in value}


def factory_name(factory) -> str:
    """``"package.module:qualname"`` of a callable (what a config would write for it)."""
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__name__)}"


def resolve_factory(factory) -> Callable:
    """The callable a ``module`` spec's ``factory`` names.

    Parameters
    ----------
    factory : str or callable
        ``"package.module:function"`` (``function`` may be dotted, e.g. ``Class.method``), or the
        callable itself.

    Raises
    ------
    ValueError
        Naming ``arch.factory``, what was expected and what came (bad form, a module that does not
        import, an attribute that does not exist or is not callable).
    """
    if callable(factory):
        return factory
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise ValueError(f"arch.factory must be 'package.module:function' (or a callable in Python), got {factory!r}")
    mod_name, attr = factory.split(":")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"arch.factory {factory!r}: cannot import module {mod_name!r} "
                         f"({type(exc).__name__}: {exc}); is it installed or on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"arch.factory {factory!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"arch.factory {factory!r} must name a callable, got a {type(obj).__name__}")
    return obj


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


@dataclass(frozen=True)
class Module(Architecture):
    """Any ``torch.nn.Module`` a factory builds: the user's own network as an architecture.

    Attributes
    ----------
    factory : str or callable
        ``"package.module:function"``, or in Python the callable itself. It is called as
        ``factory(input_shape, **kwargs)`` and returns a module mapping ``(n, *input_shape)`` to
        ``(n,)`` or ``(n, 1)`` (one scalar output per example, no output activation). A callable
        that is importable by its ``module:qualname`` is stored as that string (so specs compare,
        hash, pickle and go into configs and Ray tasks by name); any other callable (a lambda, a
        local function) works in Python calls but :meth:`to_dict` refuses it, so it cannot be
        written into a config, a run folder or a Ray task.
    kwargs : mapping
        Keyword arguments of the factory (a ``[arch.kwargs]`` table in a config); stored frozen
        as a sorted tuple of ``(key, value)`` pairs.
    init : {"standard", "module"}
        ``standard``: every parameter drawn by the project's rule (:func:`init_standard_`, a
        name ending in ``bias`` is a bias, anything else a weight with ``fan_in`` = product of
        its dimensions but the first) from the run's generator. ``module``: the module's own
        initialisation (whatever the factory and torch's ``reset_parameters`` draw), made
        deterministic by building it inside :func:`sampler.seeding.forked_torch_rng` seeded with a
        63-bit integer drawn from the run's generator; the global RNG is restored (state and
        initial seed) afterwards.
    sigma_w, sigma_b : float
        Scales of ``standard`` (unused by ``module``).

    Notes
    -----
    What P_SGD and P_B mean needs a network that is one deterministic function of its parameters:
    batch normalisation (output depends on the minibatch, and on running statistics) and dropout
    with ``p > 0`` (random output) are refused when the module is built, naming the layer, before
    any training; so are torch's fused recurrent layers (no vmap rule). Other buffers (masks,
    positional tables) are constants shared by every member. LayerNorm / GroupNorm are per-example
    and supported; under ``standard`` their gains are drawn like 1-d weights (``N(0, sigma_w^2)``),
    so prefer ``init = "module"`` for networks with normalisation layers.
    """

    kind: ClassVar[str] = "module"
    factory: Any = ""
    kwargs: Any = ()
    init: str = "standard"
    sigma_w: float = 1.0
    sigma_b: float = 0.0357

    def __post_init__(self):
        f = self.factory
        if callable(f):
            name = factory_name(f)
            try:
                same = "<" not in name and resolve_factory(name) is f
            except ValueError:
                same = False
            if same:
                object.__setattr__(self, "factory", name)
        else:
            resolve_factory(f)
        kw = self.kwargs
        if isinstance(kw, Mapping):
            object.__setattr__(self, "kwargs", _freeze(kw))
        elif not (isinstance(kw, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in kw)):
            raise TypeError(f"arch.kwargs must be a table (mapping) of keyword arguments, got {kw!r}")
        check_choice("arch.init", self.init, MODULE_INITS)
        check_float("sigma_w", self.sigma_w, minimum=0.0, strict_minimum=True)
        check_float("sigma_b", self.sigma_b, minimum=0.0)

    @property
    def importable(self) -> bool:
        """Whether the factory is named by a string (can go into configs, run folders, Ray)."""
        return isinstance(self.factory, str)

    def _construct(self, input_shape: tuple[int, ...]) -> nn.Module:
        name = self.factory if self.importable else factory_name(self.factory)
        net = resolve_factory(self.factory)(tuple(input_shape), **_thaw(self.kwargs))
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
            module(torch.zeros(2, math.prod(input_shape)))
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

    def to_dict(self) -> dict[str, Any]:
        if not self.importable:
            raise ValueError(f"arch.factory {factory_name(self.factory)!r} is not importable by name (a lambda "
                             f"or a local function): define it at module level of an importable module and "
                             f"pass 'package.module:function' to write it into a config, a run folder or a "
                             f"Ray task")
        return {"kind": self.kind, "factory": self.factory, "kwargs": _thaw(self.kwargs), "init": self.init,
                "sigma_w": self.sigma_w, "sigma_b": self.sigma_b}

    def describe(self) -> str:
        name = self.factory if self.importable else factory_name(self.factory)
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        init = f"sigma_w={self.sigma_w:g}, sigma_b={self.sigma_b:g}" if self.init == "standard" else "own init"
        return f"module {name}({kw}) ({init})"


ARCHITECTURES: dict[str, type[Architecture]] = {"fcn": FCN, "cnn": CNN, "lstm": LSTM, "module": Module}


def make_architecture(kind: str, **fields) -> Architecture:
    """The spec of ``kind`` (``fcn``, ``cnn``, ``lstm``, ``module``) built from keyword ``fields``."""
    check_choice("arch.kind", kind, ARCHITECTURES)
    cls = ARCHITECTURES[kind]
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in fields:
        if key not in valid:
            from ._checks import did_you_mean
            raise ValueError(f"unknown field {key!r} for architecture {kind!r}; valid fields: "
                             f"{sorted(valid)}{did_you_mean(key, valid)}")
    return cls(**fields)


class FCNNet(nn.Module):
    """The finite FCN; ``layers[i]`` are hidden layers, ``readout`` the scalar output layer."""

    def __init__(self, d_in: int, depth: int, width: int, activation: str):
        super().__init__()
        sizes = [d_in] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(sizes[-1], 1)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # attribute access (not .parameters()) so that torch.func.functional_call's tensors are used
        params = [t.unsqueeze(0) for layer in (*self.layers, self.readout) for t in (layer.weight, layer.bias)]
        return fcn_forward(params, x.reshape(x.shape[0], -1), self.activation)[0]


class CNNNet(nn.Module):
    def __init__(self, input_shape, depth, channels, kernel_size, activation, readout):
        super().__init__()
        c, h, w = input_shape
        self.input_shape = tuple(input_shape)
        ins = [c] + [channels] * (depth - 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, channels, kernel_size, padding=kernel_size // 2) for a in ins)
        self.readout_kind = readout
        self.readout = nn.Linear(channels * h * w if readout == "flatten" else channels, 1)
        self._phi = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], *self.input_shape)
        for conv in self.convs:
            h = self._phi(conv(h))
        h = h.flatten(1) if self.readout_kind == "flatten" else h.mean(dim=(2, 3))
        return self.readout(h).squeeze(-1)


def sequence_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(steps, features)`` in which an LSTM reads one example of ``input_shape``."""
    if len(input_shape) == 3:
        c, h, w = input_shape
        return h, c * w
    return math.prod(input_shape), 1


class LSTMNet(nn.Module):
    def __init__(self, input_shape, hidden):
        super().__init__()
        self.steps, self.features = sequence_shape(tuple(input_shape))
        self.input_shape = tuple(input_shape)
        self.lstm = nn.LSTM(self.features, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.input_shape) == 3:
            c, h, w = self.input_shape
            seq = x.reshape(x.shape[0], c, h, w).permute(0, 2, 1, 3).reshape(x.shape[0], h, c * w)
        else:
            seq = x.reshape(x.shape[0], self.steps, 1)
        out, _ = self.lstm(seq)
        return self.readout(out[:, -1]).squeeze(-1)
