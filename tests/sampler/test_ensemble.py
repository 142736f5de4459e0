"""Batched ensemble forward == each member's own torch module; initialisation == arch.build."""

import pytest
import torch

import sampler
from sampler.ensemble import EnsembleNet
from sampler.seeding import make_generator

D64 = torch.float64

CASES = [
    ("fcn-relu", sampler.FCN(depth=2, width=6, activation="relu"), (5,)),
    ("fcn-erf", sampler.FCN(depth=1, width=4, activation="erf"), (5,)),
    ("fcn-tanh-linear", sampler.FCN(depth=0, width=4, activation="tanh"), (5,)),
    ("cnn-flatten", sampler.CNN(depth=2, channels=3, kernel_size=3), (2, 4, 5)),
    ("cnn-gap", sampler.CNN(depth=1, channels=3, kernel_size=3, readout="gap"), (1, 4, 4)),
    ("lstm-flat", sampler.LSTM(hidden=5), (6,)),
    ("lstm-image", sampler.LSTM(hidden=4), (2, 3, 4)),
]


def _ensemble(arch, shape, runs, seed=3):
    net = EnsembleNet(arch, shape, dtype=D64)
    params = net.zeros(len(runs))
    net.init_(params, list(range(len(runs))), runs, seed=seed)
    return net, params


@pytest.mark.parametrize("name,arch,shape", CASES, ids=[c[0] for c in CASES])
def test_init_matches_build(name, arch, shape):
    runs = [4, 0, 11]
    net, params = _ensemble(arch, shape, runs)
    for j, run in enumerate(runs):
        ref = arch.build(shape, generator=make_generator(3, "init", run), dtype=D64)
        for p, q in zip(ref.parameters(), params):
            assert torch.equal(p, q[j])


@pytest.mark.parametrize("name,arch,shape", CASES, ids=[c[0] for c in CASES])
def test_batched_forward_matches_members(name, arch, shape):
    runs = [2, 7, 5, 1]
    net, params = _ensemble(arch, shape, runs)
    d = torch.Size(shape).numel()
    g = torch.Generator().manual_seed(0)
    x_each = torch.randn(len(runs), 6, d, generator=g, dtype=D64)
    x_shared = torch.randn(9, d, generator=g, dtype=D64)
    out_each = net.forward(params, x_each)
    out_shared = net.forward(params, x_shared)
    assert out_each.shape == (len(runs), 6) and out_shared.shape == (len(runs), 9)
    for j in range(len(runs)):
        member = net.member(params, j)
        torch.testing.assert_close(out_each[j], member(x_each[j]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out_shared[j], member(x_shared), rtol=1e-12, atol=1e-12)
    if not name.startswith("lstm"):  # torch.func.vmap has no batching rule for aten::lstm
        torch.testing.assert_close(net.forward_vmap(params, x_each), out_each, rtol=1e-12, atol=1e-12)


def test_gradient_of_summed_losses_is_per_member():
    arch = sampler.FCN(depth=2, width=5)
    net, params = _ensemble(arch, (4,), [0, 1, 2])
    x = torch.randn(3, 7, 4, dtype=D64, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(net.forward(params, x).square().mean(1).sum(), params)
    for j in range(3):
        member = net.member(params, j)
        member.requires_grad_(True)
        ref = torch.autograd.grad(member(x[j]).square().mean(), list(member.parameters()))
        for g_ens, g_ref in zip(grads, ref):
            torch.testing.assert_close(g_ens[j], g_ref, rtol=1e-12, atol=1e-14)


def test_rejects_non_architecture():
    with pytest.raises(TypeError, match="arch must be an Architecture"):
        EnsembleNet("fcn", (3,))


@pytest.mark.parametrize("name,arch,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_backward_matches_each_members_autograd(name, arch, shape, seed):
    """forward_train + backward (hand-written for relu FCNs) == autograd through each member's module."""
    runs = [3, 0, 8]
    net, params = _ensemble(arch, shape, runs, seed=seed)
    d = torch.Size(shape).numel()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(runs), 5, d, generator=g, dtype=D64)
    upstream = torch.randn(len(runs), 5, generator=g, dtype=D64)
    out, cache = net.forward_train(params, x)
    grads = net.backward(params, cache, upstream)
    assert [tuple(t.shape) for t in grads] == [tuple(p.shape) for p in params]
    for j in range(len(runs)):
        member = net.member(params, j)
        member.requires_grad_(True)
        y = member(x[j])
        torch.testing.assert_close(out[j], y.detach(), rtol=1e-12, atol=1e-12)
        ref = torch.autograd.grad(y, list(member.parameters()), grad_outputs=upstream[j])
        for g_ens, g_ref in zip(grads, ref):
            torch.testing.assert_close(g_ens[j], g_ref, rtol=1e-11, atol=1e-13)


def test_relu_fcn_uses_hand_written_backward_and_wide_first_layer():
    """Both weight-gradient orientations of the hand-written pass (d < width and d > width)."""
    for d, width in ((3, 7), (9, 4)):
        arch = sampler.FCN(depth=3, width=width)
        net, params = _ensemble(arch, (d,), [1, 2])
        assert net._manual_backward
        x = torch.randn(2, 4, d, dtype=D64, generator=torch.Generator().manual_seed(d))
        out, cache = net.forward_train(params, x)
        assert isinstance(cache, list)  # activations, not an autograd graph
        grads = net.backward(params, cache, torch.ones(2, 4, dtype=D64))
        ref = torch.autograd.grad(net.forward(params, x).sum(), params)
        for a, b in zip(grads, ref):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
