"""One check of a network before any training: does it build, run and give usable outputs on the data?

A user's module (``[arch] kind = "module"``, or a registered spec) can fail in ways that otherwise
surface deep inside training as a long traceback, or not at all: a factory or a forward pass that
raises, random numbers drawn in the forward pass (torch.func's "randomness error mode"), integer or
detached outputs (autograd's "does not require grad"), NaN at initialisation (every run "diverges"),
or outputs that ignore the input or never change sign (every run ends at one function).
:func:`check_network` runs the network once, as training will (:class:`sampler.Network`, stacked
members, the same ``apply``), on a few members and a slice of the data, and turns each of those
into one ``ValueError``/``TypeError`` line that says what is wrong and what to do.
"""

from __future__ import annotations

import torch

from .architectures import Architecture, _first_line, check_arch_split
from .checks import check_int
from .data import Split
from .seeding import make_generator

__all__ = ["check_network", "N_MEMBERS", "MAX_POINTS"]

#: Members drawn by the check: with 16, a network whose outputs have a random sign is called
#: "one sign everywhere" with probability about 2 ** -15 even on a single input.
N_MEMBERS = 16
#: Inputs of S (and as many of E, halved) the members are run on.
MAX_POINTS = 128

_RANDOM = ("draws random numbers in its forward pass (torch.func.vmap refused a random operation), so it "
           "is not one function of its parameters: P_SGD(f|S) and P_B(f|S) are defined for a network whose "
           "outputs are a deterministic function of its parameters. Remove the random operation (noise, "
           "F.dropout with training=True, torch.rand*), or draw the noise once in the factory and keep it as a "
           "buffer (self.register_buffer('noise', ...))")


def check_network(arch: Architecture, split: Split, *, n_members: int = N_MEMBERS, max_points: int = MAX_POINTS,
                  seed: int = 0) -> None:
    """Raise one ``ValueError`` / ``TypeError`` line if ``arch`` cannot be trained on ``split``.

    Builds ``arch.network(split.input_shape)``, draws ``n_members`` members (generators derived
    from ``seed``) and applies them, as training does, to the first ``max_points`` inputs of S
    and ``max_points // 2`` of E. Refused: building or the forward pass raising (the cause
    named), random operations in the forward pass, outputs that are not floating point or do not
    depend on the parameters through autograd, NaN or inf outputs, outputs constant over the
    inputs for every member (the input is ignored), and outputs of one sign on every input for
    every member (an output activation: f = 1{output > 0} would be one function).

    Parameters
    ----------
    arch : Architecture
    split : Split
    n_members, max_points : int
        Members drawn and inputs of S used (at least 1 each).
    seed : int
        Seed of the members' generators (the check draws nothing from global RNGs).
    """
    check_arch_split(arch, split)
    n_members = check_int("n_members", n_members, minimum=1)
    max_points = check_int("max_points", max_points, minimum=1)
    try:
        net = arch.network(split.input_shape)
    except (ValueError, TypeError):
        raise  # the spec's own one-line errors (a Module's name its factory)
    except Exception as exc:  # a user's spec: say where it failed, keep the cause chained
        raise ValueError(f"building the network raised {_first_line(exc)}") from exc
    params = [p.requires_grad_(True) for p in net.init([make_generator(seed, "network-check", i)
                                                        for i in range(n_members)])]
    x = torch.cat([split.x_train[:max_points], split.x_test[:max(1, max_points // 2)]]).to(net.dtype)
    try:
        out = net.apply(params, x)
    except Exception as exc:
        if "randomness" in str(exc) and "vmap" in str(exc):
            raise ValueError(f"the network {_RANDOM}") from exc
        raise ValueError(f"its forward pass on {x.shape[0]} inputs of the data (shape ({x.shape[0]}, "
                         f"{', '.join(map(str, split.input_shape))})) raised {_first_line(exc)}") from exc
    if not out.is_floating_point():
        raise TypeError(f"its outputs are {out.dtype}, not floating point: SGD needs a real-valued output to "
                        f"take gradients of (no argmax, rounding, comparison or .long() in the forward pass; the "
                        f"label is 1{{output > 0}}, taken by the tool)")
    if not out.requires_grad:
        raise ValueError("its outputs do not depend on its parameters through autograd (detached, or computed "
                         "under torch.no_grad), so SGD cannot train it; return the output of its layers as it is")
    out = out.detach()
    finite = torch.isfinite(out).all(dim=1)
    if not finite.all():
        j = int((~finite).nonzero()[0])
        raise ValueError(f"its outputs at initialisation are NaN or inf for {int((~finite).sum())} of {n_members} "
                         f"members checked (member {j}: {out[j][~torch.isfinite(out[j])][0].item()}), so every run "
                         f"would diverge: look for log/sqrt/division of values that can be 0 or negative, or "
                         f"overflow; or lower sigma_w")
    distinct = bool((x != x[:1]).any())
    if distinct and bool((out.amax(dim=1) == out.amin(dim=1)).all()):
        raise ValueError(f"its output does not depend on the input: each of the {n_members} members checked gives "
                         f"one constant on all {x.shape[0]} inputs, so every run is one function (check that the "
                         f"forward pass uses its input)")
    for sign, never in ((1, "negative"), (-1, "positive")):
        if bool((sign * out >= 0).all()):
            raise ValueError(f"its outputs at initialisation are never {never} ({n_members} members, {x.shape[0]} "
                             f"inputs): the function is 1{{output > 0}}, so the network needs a signed output "
                             f"(remove an output activation such as ReLU, sigmoid, softplus or exp; the tool "
                             f"applies the loss's own link)")
