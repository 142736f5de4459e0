"""Sharpness measures against independent computations on tiny networks, in float64: the exact
Hessian of the lone ``nn.Module`` (``torch.autograd.functional.hessian``), its eigenvalues
(``torch.linalg.eigvalsh``) and a box-constrained maximiser (scipy's L-BFGS-B)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from sampler import FCN, make_generator
from sampler.sharpness import (MeasureSpec, epsilon_sharpness, gauss_newton_trace, hessian_trace, measure_all, rescale,
                               rescaling_factors, top_eigenvalue)

D, N_EX = 3, 12


def _setup(seed=0, members=3, arch=None):
    arch = arch or FCN(depth=2, width=4, activation="relu", sigma_w=1.5, sigma_b=0.3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_EX, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (N_EX,), generator=g)
    net = arch.network((D,), dtype=torch.float64)
    params = net.init([make_generator(seed, "init", i) for i in range(members)])
    return arch, net, params, x, y


def _lone_loss(net, params, j, x, y):
    """Member ``j`` as a plain module; its mean logistic loss as a function of one flat vector."""
    module = net.member(params, j)
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def loss(flat):
        ps, a = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            ps[n] = flat[a:a + k].reshape(s)
            a += k
        out = torch.func.functional_call(module, ps, (x,))
        return F.binary_cross_entropy_with_logits(out, y.double())

    return loss, flat0


def _exact_hessian(net, params, j, x, y):
    loss, flat0 = _lone_loss(net, params, j, x, y)
    return torch.autograd.functional.hessian(loss, flat0)


def test_hutchinson_within_its_error_of_the_exact_trace():
    arch, net, params, x, y = _setup()
    mean, se = hessian_trace(net, params, x, y, loss="ce", probes=400, generator=torch.Generator().manual_seed(1))
    for j in range(3):
        exact = float(torch.trace(_exact_hessian(net, params, j, x, y)))
        assert se[j] > 0
        assert abs(float(mean[j]) - exact) <= 4 * float(se[j]), (j, float(mean[j]), exact, float(se[j]))


@pytest.mark.parametrize("activation, loss", [("relu", "ce"), ("tanh", "ce"), ("tanh", "mse")])
def test_gauss_newton_trace_matches_the_jacobian(activation, loss):
    arch, net, params, x, y = _setup(seed=7, arch=FCN(depth=2, width=4, activation=activation, sigma_b=0.3))
    got = gauss_newton_trace(net, params, x, y, loss=loss)
    for j in range(3):
        module = net.member(params, j)
        _, flat0 = _lone_loss(net, params, j, x, y)
        names = [n for n, _ in module.named_parameters()]
        shapes = [p.shape for _, p in module.named_parameters()]

        def outputs(flat):
            ps, a = {}, 0
            for n, s in zip(names, shapes):
                ps[n] = flat[a:a + math.prod(s)].reshape(s)
                a += math.prod(s)
            return torch.func.functional_call(module, ps, (x,))

        jac = torch.autograd.functional.jacobian(outputs, flat0)  # (n, N)
        o = outputs(flat0)
        curv = torch.sigmoid(o) * (1 - torch.sigmoid(o)) if loss == "ce" else torch.full_like(o, 2.0)
        assert float(got[j]) == pytest.approx(float((curv[:, None] * jac**2).sum() / len(o)), rel=1e-10)
        if activation == "relu":  # the output is linear in each single parameter: tr H = tr GN
            assert float(got[j]) == pytest.approx(float(torch.trace(_exact_hessian(net, params, j, x, y))), rel=1e-9)


def test_top_eigenvalue_matches_eigvalsh():
    arch, net, params, x, y = _setup(seed=2)
    n = sum(p[0].numel() for p in params)  # 41: Lanczos to the full dimension is exact
    eig = top_eigenvalue(net, params, x, y, loss="ce", iterations=n, generator=torch.Generator().manual_seed(0))
    short = top_eigenvalue(net, params, x, y, loss="ce", iterations=8, generator=torch.Generator().manual_seed(0))
    for j in range(3):
        evals = torch.linalg.eigvalsh(_exact_hessian(net, params, j, x, y))
        top = float(evals[-1])
        assert float(eig.value[j]) == pytest.approx(top, rel=1e-8, abs=1e-10)
        assert bool(eig.converged[j])
        # a Ritz value never exceeds the top eigenvalue, and some eigenvalue lies within its residual
        assert float(short.value[j]) <= top + 1e-10
        assert float((evals - short.value[j]).abs().min()) <= float(short.residual[j]) + 1e-10


def test_top_eigenvalue_breakdown_on_a_low_rank_hessian():
    # a linear model on 2 examples under mse: H = 2 X^T X / n has rank 2, so Lanczos breaks down
    arch = FCN(depth=0, width=1, sigma_w=1.0, sigma_b=0.1)
    net = arch.network((D,), dtype=torch.float64)
    params = net.init([make_generator(0, "init", 0)])
    x = torch.randn(2, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 1])
    eig = top_eigenvalue(net, params, x, y, loss="mse", iterations=10, generator=torch.Generator().manual_seed(0))
    xa = torch.cat([x, torch.ones(2, 1, dtype=torch.float64)], 1)
    exact = float(torch.linalg.eigvalsh(2 * xa.T @ xa / 2)[-1])
    assert int(eig.iterations[0]) <= 3 and bool(eig.converged[0])
    assert float(eig.value[0]) == pytest.approx(exact, rel=1e-9)


def test_epsilon_sharpness_nonnegative_and_nondecreasing():
    arch, net, params, x, y = _setup(seed=3)
    values = [epsilon_sharpness(net, params, x, y, loss="ce", epsilon=eps) for eps in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)]
    stacked = torch.stack(values)
    assert (stacked >= 0).all()
    assert (stacked[1:] >= stacked[:-1] * (1 - 1e-9)).all(), stacked


def test_epsilon_sharpness_against_lbfgsb():
    """The box maximum by scipy's L-BFGS-B (several starts) bounds the projected ascent from above (up
    to its own tolerance), and the ascent gets most of it."""
    arch, net, params, x, y = _setup(seed=4)
    eps = 1e-2
    ours = epsilon_sharpness(net, params, x, y, loss="ce", epsilon=eps, steps=50)
    for j in range(3):
        loss, w0 = _lone_loss(net, params, j, x, y)
        base = float(loss(w0))
        bound = (eps * (w0.abs() + 1)).numpy()

        def neg(d):
            t = torch.tensor(d, requires_grad=True)
            v = loss(w0 + t)
            (g,) = torch.autograd.grad(v, t)
            return -float(v.detach()), -g.numpy()

        rng = np.random.default_rng(j)
        corner = -np.sign(neg(np.zeros_like(bound))[1]) * bound  # the first-order maximiser
        starts = [np.zeros_like(bound), corner] + [rng.uniform(-bound, bound) for _ in range(3)]
        best = max(-minimize(neg, d0, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound))).fun
                   for d0 in starts)
        ref = 100 * (best - base) / (1 + base)
        assert ref > 0
        assert float(ours[j]) <= ref * (1 + 1e-3) + 1e-12, (j, float(ours[j]), ref)
        assert float(ours[j]) >= 0.9 * ref, (j, float(ours[j]), ref)


def test_member_measures_equal_the_lone_network():
    arch, net, params, x, y = _setup(seed=5, members=4)
    spec = MeasureSpec(probes=6, iterations=7, ascent_steps=5, rescale_alpha=3.0)
    together = measure_all(net, params, x, y, spec, generator=[torch.Generator().manual_seed(10 + j) for j in range(4)])
    for j in range(4):
        alone = measure_all(net, [p[j:j + 1] for p in params], x, y, spec,
                            generator=[torch.Generator().manual_seed(10 + j)])
        assert set(alone) == set(together) == set(spec.names())
        for k, v in alone.items():
            np.testing.assert_allclose(together[k][j], v[0], rtol=1e-9, atol=1e-12, err_msg=k)


def test_rescaling_keeps_the_function_and_moves_the_hessian_as_predicted():
    arch, net, params, x, y = _setup(seed=6)
    alpha = 5.0
    scaled = rescale(arch, params, alpha)
    x_far = torch.randn(50, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    for xx in (x, x_far):
        torch.testing.assert_close(net.apply(scaled, xx), net.apply(params, xx), rtol=1e-12, atol=1e-12)
    factors = rescaling_factors(arch, alpha, len(params))
    assert factors[:3] == [1 / alpha, 1 / alpha, alpha] and set(factors[3:]) == {1.0}
    d = torch.cat([torch.full((p[0].numel(),), f, dtype=torch.float64) for p, f in zip(params, factors)])
    n = d.numel()
    eig = top_eigenvalue(net, scaled, x, y, loss="ce", iterations=n, generator=torch.Generator().manual_seed(0))
    trace, se = hessian_trace(net, scaled, x, y, loss="ce", probes=300, generator=torch.Generator().manual_seed(1))
    for j in range(3):
        h = _exact_hessian(net, params, j, x, y)
        predicted = h / d[:, None] / d[None, :]  # w' = D w  =>  H' = D^-1 H D^-1
        torch.testing.assert_close(_exact_hessian(net, scaled, j, x, y), predicted, rtol=1e-9, atol=1e-11)
        assert float(eig.value[j]) == pytest.approx(float(torch.linalg.eigvalsh(predicted)[-1]), rel=1e-8)
        assert abs(float(trace[j]) - float(torch.trace(predicted))) <= 4 * float(se[j]), \
            (j, float(trace[j]), float(torch.trace(predicted)), float(se[j]))


def test_bad_input_is_refused():
    arch, net, params, x, y = _setup()
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_sharpness(net, params, x, y, loss="ce", epsilon=0.0)
    with pytest.raises(ValueError, match="rescale_alpha"):
        rescaling_factors(FCN(depth=2, width=4, activation="tanh"), 2.0, 6)
    with pytest.raises(ValueError, match="measure"):
        MeasureSpec(measures=("flatness",))
    with pytest.raises(TypeError, match="generator"):
        hessian_trace(net, params, x, y, loss="ce", generator=[torch.Generator()])
