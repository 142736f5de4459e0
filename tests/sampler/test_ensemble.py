"""The architecture protocol (sampler.ensemble.Network): init == arch.build, apply == independent
references per member, hand-batched == vmap of functional_call, fast backward == autograd, and the
per-member gradients and Hessian-vector products against a lone module's exact Hessian."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sampler
from sampler.ensemble import Network, member_grads, member_hvp
from sampler.seeding import make_generator

D64 = torch.float64
MLP = sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 2, "width": 3})

CASES = [
    ("fcn-relu", sampler.FCN(depth=2, width=6, activation="relu"), (5,)),
    ("fcn-erf", sampler.FCN(depth=1, width=4, activation="erf"), (5,)),
    ("fcn-tanh-linear", sampler.FCN(depth=0, width=4, activation="tanh"), (5,)),
    ("cnn-flatten", sampler.CNN(depth=2, channels=3, kernel_size=3), (2, 4, 5)),
    ("cnn-gap", sampler.CNN(depth=1, channels=3, kernel_size=3, readout="gap", activation="tanh"), (1, 4, 4)),
    ("lstm-flat", sampler.LSTM(hidden=5), (6,)),
    ("lstm-image", sampler.LSTM(hidden=4), (2, 3, 4)),
    ("module-standard", sampler.Module(factory="sgdbayes.examples:resnet", kwargs={"width": 4, "hidden": 3}), (6,)),
    ("module-own-init", sampler.Module(factory="sgdbayes.examples:attention", kwargs={"dim": 4, "tokens": 3},
                                       init="module"), (2, 3, 2)),
]
IDS = [c[0] for c in CASES]


def _members(arch, shape, runs, seed=3):
    net = arch.network(shape, dtype=D64)
    return net, net.init([make_generator(seed, "init", r) for r in runs])


def _reference(arch, shape, ps, x):
    """One member's outputs written out with torch's own layers (independent of sampler's forwards)."""
    if isinstance(arch, sampler.FCN):
        phi = {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh}[arch.activation]
        h = x
        for i in range(0, len(ps) - 2, 2):
            h = phi(F.linear(h, ps[i], ps[i + 1]))
        return F.linear(h, ps[-2], ps[-1]).squeeze(-1)
    if isinstance(arch, sampler.CNN):
        phi = {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh}[arch.activation]
        h = x.reshape(-1, *shape)
        for i in range(0, len(ps) - 2, 2):
            h = phi(F.conv2d(h, ps[i], ps[i + 1], padding=arch.kernel_size // 2))
        h = h.flatten(1) if arch.readout == "flatten" else h.mean((2, 3))
        return F.linear(h, ps[-2], ps[-1]).squeeze(-1)
    if isinstance(arch, sampler.LSTM):
        lstm = nn.LSTM(ps[0].shape[1], arch.hidden, batch_first=True).double()
        with torch.no_grad():
            for name, p in zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], ps[:4]):
                getattr(lstm, name).copy_(p)
        if len(shape) == 3:
            seq = x.reshape(-1, *shape).permute(0, 2, 1, 3).reshape(x.shape[0], shape[1], -1)
        else:
            seq = x.unsqueeze(-1)
        with torch.no_grad():
            return F.linear(lstm(seq)[0][:, -1], ps[-2], ps[-1]).squeeze(-1)
    return None  # a user's module: its own forward is the reference


@pytest.mark.parametrize("name,arch,shape", CASES, ids=IDS)
def test_init_matches_build(name, arch, shape):
    runs = [4, 0, 11]
    net, params = _members(arch, shape, runs)
    assert net.names == tuple(n for n, _ in arch.build(shape, generator=make_generator(0)).named_parameters())
    assert [tuple(p.shape) for p in params] == [(3, *s) for s in net.shapes]
    for j, run in enumerate(runs):
        ref = arch.build(shape, generator=make_generator(3, "init", run), dtype=D64)
        for p, q in zip(ref.parameters(), params):
            assert torch.equal(p, q[j])


@pytest.mark.parametrize("name,arch,shape", CASES, ids=IDS)
def test_apply_matches_independent_references_and_vmap(name, arch, shape):
    runs = [2, 7, 5, 1]
    net, params = _members(arch, shape, runs)
    d = math.prod(shape)
    g = torch.Generator().manual_seed(0)
    x_each = torch.randn(len(runs), 6, d, generator=g, dtype=D64)
    x_shared = torch.randn(9, d, generator=g, dtype=D64)
    out_each, out_shared = net.apply(params, x_each), net.apply(params, x_shared)
    assert out_each.shape == (len(runs), 6) and out_shared.shape == (len(runs), 9)
    for j in range(len(runs)):
        member = net.member(params, j)
        for x, out in ((x_each[j], out_each[j]), (x_shared, out_shared[j])):
            ref = _reference(arch, shape, [p[j] for p in params], x)
            torch.testing.assert_close(out, member(x) if ref is None else ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(member(x), out, rtol=1e-12, atol=1e-12)
    # the hand-batched paths against the generic one
    torch.testing.assert_close(net.apply_vmap(params, x_each), out_each, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.apply_vmap(params, x_shared), out_shared, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,arch,shape", CASES, ids=IDS)
def test_training_backward_matches_autograd_of_the_generic_path(name, arch, shape):
    """forward_train + backward (hand-written for relu FCNs) == autograd through vmap(functional_call)."""
    runs = [3, 0, 8]
    net, params = _members(arch, shape, runs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(runs), 5, math.prod(shape), generator=g, dtype=D64)
    upstream = torch.randn(len(runs), 5, generator=g, dtype=D64)
    leaves = [p.clone().requires_grad_() for p in params]
    out, backward = net.forward_train(leaves, x)
    grads = backward(upstream)
    ref_out = net.apply_vmap(leaves, x)
    ref = torch.autograd.grad(ref_out, leaves, grad_outputs=upstream)
    torch.testing.assert_close(out, ref_out.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_relu_fcn_takes_the_hand_written_backward_in_both_orientations():
    for d, width in ((3, 7), (9, 4)):  # weight gradients computed directly and transposed
        net, params = _members(sampler.FCN(depth=3, width=width), (d,), [1, 2])
        x = torch.randn(2, 4, d, dtype=D64, generator=torch.Generator().manual_seed(d))
        out, backward = net.forward_train(params, x)
        assert not out.requires_grad and backward.func.__name__ == "_fcn_relu_backward"
        leaves = [p.clone().requires_grad_() for p in params]
        ref = torch.autograd.grad(net.apply_vmap(leaves, x).sum(), leaves)
        for a, b in zip(backward(torch.ones(2, 4, dtype=D64)), ref):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_draw_follows_the_standard_rule_and_skips_zero_scales():
    arch = sampler.FCN(depth=1, width=300, sigma_w=1.4, sigma_b=0.0)
    net = arch.network((50,))
    params = net.draw(40, generator=make_generator(0, "x"))
    w, b = params[0], params[1]
    assert torch.equal(b, torch.zeros_like(b))
    # sample variance of N Gaussians: relative standard error sqrt(2 / N); 5 of them
    rel = float(w.double().pow(2).mean() / (1.4 ** 2 / 50))
    assert abs(rel - 1) < 5 * math.sqrt(2 / w.numel())
    again = net.draw(40, generator=make_generator(0, "x"))
    assert all(torch.equal(p, q) for p, q in zip(params, again))
    # a module with its own initialisation draws members one after another from the one generator
    own = sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 1, "width": 3}, init="module")
    onet = own.network((4,), dtype=D64)
    drawn = onet.draw(2, generator=make_generator(1, "y"))
    gen = make_generator(1, "y")
    for j in range(2):
        ref = own.build((4,), generator=gen, dtype=D64)
        assert all(torch.equal(p, q[j]) for p, q in zip(ref.parameters(), drawn))


def _lone_loss(arch, shape, flat, x, y, loss):
    """Mean loss of one network built with the parameters in ``flat`` (an independent path: a plain
    nn.Module through torch.func.functional_call, not sampler's stacked apply)."""
    module = arch.build(shape, generator=make_generator(0), dtype=D64)
    names = [n for n, _ in module.named_parameters()]
    sizes = [p.numel() for p in module.parameters()]
    shapes = [p.shape for p in module.parameters()]
    ps = {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
    out = torch.func.functional_call(module, ps, (x,))
    yf = y.to(D64)
    if loss == "ce":
        return F.binary_cross_entropy_with_logits(out, yf)
    return F.mse_loss(out, 2 * yf - 1)


@pytest.mark.parametrize("arch,shape", [(sampler.FCN(depth=2, width=3, activation="tanh"), (4,)),
                                        (sampler.FCN(depth=1, width=3), (4,)), (MLP, (4,)),
                                        (sampler.LSTM(hidden=2), (3,))], ids=["fcn-tanh", "fcn-relu", "module", "lstm"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_member_grads_and_hvp_against_a_lone_modules_exact_hessian(arch, shape, loss):
    runs = [5, 1, 9]
    net, params = _members(arch, shape, runs)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(len(runs), 6, math.prod(shape), generator=g, dtype=D64)
    y = (torch.rand(len(runs), 6, generator=g) > 0.5).long()
    v = [torch.randn(p.shape, generator=g, dtype=D64) for p in params]
    grads = member_grads(net, params, x, y, loss=loss)
    hv = member_hvp(net, params, v, x, y, loss=loss)
    for j in range(len(runs)):
        flat = torch.cat([p[j].reshape(-1) for p in params])
        f = lambda t: _lone_loss(arch, shape, t, x[j], y[j], loss)  # noqa: E731
        ref_g = torch.autograd.functional.jacobian(f, flat)
        ref_h = torch.autograd.functional.hessian(f, flat)
        torch.testing.assert_close(torch.cat([t[j].reshape(-1) for t in grads]), ref_g, rtol=1e-10, atol=1e-12)
        vj = torch.cat([t[j].reshape(-1) for t in v])
        torch.testing.assert_close(torch.cat([t[j].reshape(-1) for t in hv]), ref_h @ vj, rtol=1e-10, atol=1e-12)
    shared = member_grads(net, params, x[0], y[0], loss=loss)  # shared inputs: every member on x[0]
    torch.testing.assert_close(shared[0][0], grads[0][0], rtol=1e-12, atol=1e-14)


def test_bad_inputs_name_the_parameter():
    with pytest.raises(TypeError, match="arch must be an Architecture"):
        Network("fcn", (3,))
    net, params = _members(sampler.FCN(depth=1, width=2), (3,), [0])
    with pytest.raises(ValueError, match="loss must be one of"):
        member_grads(net, params, torch.zeros(2, 3, dtype=D64), torch.zeros(2), loss="hinge")
