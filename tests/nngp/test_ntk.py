"""nngp.ntk: the analytic FCN NTK against independent references (closed forms written here in numpy,
2-d Gauss-Hermite quadrature, a hand-written NTK-parameterised network) and the empirical NTK."""

import math

import numpy as np
import pytest
import torch
from scipy import special

import nngp
import sampler
from nngp.ntk import empirical_ntk, ntk


def _x(n=5, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _relu_one_hidden(x, sw, sb, width, parameterization):
    """One hidden relu layer, written out (Cho & Saul's arc-cosine kernels of order 0 and 1)."""
    x = x.numpy()
    d = x.shape[1]
    G1 = x @ x.T / d
    S1 = sb ** 2 + sw ** 2 * G1
    q = np.diag(S1)
    rho = np.clip(S1 / np.sqrt(np.outer(q, q)), -1, 1)
    t = np.arccos(rho)
    k1 = np.sqrt(np.outer(q, q)) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)  # E[relu relu]
    k0 = (np.pi - t) / (2 * np.pi)  # E[step step]
    if parameterization == "ntk":
        # d f / d omega_1 etc.: layer 2 sees (sw^2 k1 + sb^2), layer 1 (sw^2 G1 + sb^2) sw^2 k0
        return (sw ** 2 * k1 + sb ** 2) + (sw ** 2 * G1 + sb ** 2) * sw ** 2 * k0
    # standard: d f / d W_2 = h (sum over width units: width * k1), d f / d b_2 = 1,
    # d f / d W_1 = v_i step_i x (v_i^2 ~ sw^2 / width, summed: sw^2 k0 <x, x'>), d f / d b_1 = v_i step_i
    return width * k1 + 1.0 + sw ** 2 * k0 * (d * G1 + 1.0)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_one_hidden_relu_layer_matches_the_arc_cosine_closed_forms(parameterization):
    x = _x()
    arch = sampler.FCN(depth=1, width=300, activation="relu", sigma_w=1.3, sigma_b=0.4)
    want = _relu_one_hidden(x, 1.3, 0.4, 300, parameterization)
    got = ntk(arch, x, parameterization=parameterization).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_one_hidden_erf_layer_matches_gauss_hermite_quadrature():
    """E[erf(u) erf(v)] and E[erf'(u) erf'(v)] by 2-d Gauss-Hermite quadrature (80 x 80 nodes)."""
    x = _x(3, 4, seed=1)
    sw, sb = 1.2, 0.3
    arch = sampler.FCN(depth=1, width=10, activation="erf", sigma_w=sw, sigma_b=sb)
    got = ntk(arch, x, parameterization="ntk").numpy()
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    xs = x.numpy()
    S1 = sb ** 2 + sw ** 2 * xs @ xs.T / xs.shape[1]
    want = np.zeros_like(S1)
    for i in range(3):
        for j in range(3):
            L = np.linalg.cholesky(np.array([[S1[i, i], S1[i, j]], [S1[i, j], S1[j, j]]]) + 1e-15 * np.eye(2))
            u = L[0, 0] * z[:, None] + 0 * z[None, :]
            v = L[1, 0] * z[:, None] + L[1, 1] * z[None, :]
            W = np.outer(w, w)
            e = np.sum(W * special.erf(u) * special.erf(v))
            de = np.sum(W * (2 / np.sqrt(np.pi)) ** 2 * np.exp(-u ** 2 - v ** 2))
            want[i, j] = (sw ** 2 * e + sb ** 2) + S1[i, j] * sw ** 2 * de
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_hand_written_ntk_parameterised_network_averages_to_the_ntk_parameterisation():
    """J J^T of ``f = v . relu(sw / sqrt(d) U x + sb b) / sqrt(n) * sw + sb c`` in unit Gaussian
    parameters, by autograd, averaged over 400 networks: within 5 standard errors of ``ntk(...)``."""
    x = _x(4, 3, seed=2)
    sw, sb, n, d = 1.1, 0.5, 64, 3
    gen = torch.Generator().manual_seed(3)
    thetas = []
    for _ in range(400):
        U = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True)
        v = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True)
        c = torch.randn((), generator=gen, dtype=torch.float64, requires_grad=True)
        f = (torch.relu(x @ U.T * sw / math.sqrt(d) + sb * b) @ v) * sw / math.sqrt(n) + sb * c
        J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(fi, (U, b, v, c), retain_graph=True)])
                         for fi in f])
        thetas.append(J @ J.T)
    t = torch.stack(thetas)
    mean, se = t.mean(0), t.std(0) / math.sqrt(len(thetas))
    want = ntk(sampler.FCN(depth=1, width=n, activation="relu", sigma_w=sw, sigma_b=sb), x, parameterization="ntk")
    assert float(((mean - want).abs() / se).max()) < 5


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_empirical_ntk_averages_to_the_analytic_one(activation, parameterization):
    """Depth 1: the mean over initialisations is the analytic NTK at any width (within 5 standard
    errors). Depth 2 at width 256: within 5 standard errors plus 3% of the largest entry (the
    finite-width mean differs by O(1/width))."""
    x = _x(5, 4, seed=4)
    for depth, width, slack in [(1, 64, 0.0), (2, 256, 0.03)]:
        arch = sampler.FCN(depth=depth, width=width, activation=activation, sigma_w=1.2, sigma_b=0.2)
        A = ntk(arch, x, parameterization=parameterization)
        E, se = empirical_ntk(arch, x, n_init=48 if depth == 2 else 256, seed=0, parameterization=parameterization,
                              return_stderr=True)
        assert torch.all((E - A).abs() <= 5 * se + slack * A.abs().max()), (depth, float(((E - A).abs() / se).max()))


def test_one_network_ntk_approaches_the_analytic_one_as_one_over_sqrt_width():
    """The relative error of the NTK of a pair of networks (NTK parameterisation, depth 2), averaged
    over 10 pairs: width x16 shrinks it by about sqrt(16) = 4 (measured 3.8-7.0 over seeds with 6
    pairs); asserted between 2.5 and 8."""
    x = _x(5, 4, seed=5)

    def err(width):
        arch = sampler.FCN(depth=2, width=width, activation="relu", sigma_w=1.0, sigma_b=0.1)
        A = ntk(arch, x, parameterization="ntk")
        errs = []
        for s in range(10):
            E = empirical_ntk(arch, x, n_init=2, seed=s, parameterization="ntk")  # mean of 2 networks
            errs.append(float((E - A).norm() / A.norm()))
        return float(np.mean(errs))

    ratio = err(32) / err(512)
    assert 2.5 < ratio < 8, ratio


def test_standard_ntk_grows_linearly_with_width_and_scales_as_the_parameterisations_say():
    x = _x(4, 3, seed=6)
    th = {w: ntk(sampler.FCN(depth=2, width=w, activation="erf", sigma_w=1.0, sigma_b=0.3), x) for w in (10, 20, 40)}
    # the standard NTK is affine in the width (hidden fan-ins), exactly
    torch.testing.assert_close(th[40] - th[20], 2 * (th[20] - th[10]), rtol=1e-10, atol=1e-12)
    # with sigma_w = 1, sigma_b = 1 and fan_in = 1 everywhere the two parameterisations coincide
    x1 = _x(4, 1, seed=7)
    arch = sampler.FCN(depth=2, width=1, activation="relu", sigma_w=1.0, sigma_b=1.0)
    torch.testing.assert_close(ntk(arch, x1), ntk(arch, x1, parameterization="ntk"), rtol=1e-12, atol=1e-12)


def test_ntk_is_symmetric_psd_and_cross_blocks_agree():
    x = _x(7, 4, seed=8)
    arch = sampler.FCN(depth=3, width=50, activation="relu", sigma_w=1.4, sigma_b=0.1)
    T = ntk(arch, x)
    assert torch.equal(T, T.T) and float(torch.linalg.eigvalsh(T)[0]) > -1e-9 * float(T.max())
    torch.testing.assert_close(ntk(arch, x[:3], x[3:]), T[:3, 3:], rtol=1e-9, atol=1e-12)


def test_empirical_ntk_serves_any_architecture_and_errors_are_one_line():
    cnn = sampler.CNN(depth=1, channels=4, kernel_size=3, activation="relu")
    x = _x(3, 16, seed=9)
    E = empirical_ntk(cnn, x, n_init=3, seed=0, input_shape=(1, 4, 4))
    assert E.shape == (3, 3) and torch.allclose(E, E.T) and float(torch.linalg.eigvalsh(E)[0]) > -1e-9
    assert not nngp.has_analytic_ntk(cnn)
    theta, se = nngp.ntk_for(cnn, x, input_shape=(1, 4, 4), n_init=3)
    assert se is not None and theta.shape == (3, 3)
    with pytest.raises(ValueError, match="empirical_ntk"):
        ntk(sampler.FCN(depth=1, width=4, activation="tanh"), x)
    with pytest.raises(ValueError, match="parameterization"):
        ntk(sampler.FCN(depth=1, width=4), x, parameterization="mean-field")
    with pytest.raises(ValueError, match="n_init"):
        empirical_ntk(cnn, x, n_init=1, seed=0, input_shape=(1, 4, 4))
