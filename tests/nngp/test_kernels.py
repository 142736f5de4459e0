"""Analytic NNGP kernels against independent references: numerical integration, closed forms at
depth 1 written out here, and Monte Carlo kernels of random finite networks."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

import nngp
import sampler
from nngp.kernels import erf_expectation, relu_expectation


def _gauss_expectation(kind, q1, q2, c):
    """E[phi(u) phi(v)] by 1-d quadrature over u of the closed-form E[phi(v) | u] (independent of
    the 2-d closed forms under test)."""
    s = math.sqrt(max(q2 - c * c / q1, 0.0))

    def inner(u):
        m = c / q1 * u
        if kind == "relu":
            return max(u, 0.0) * (m * special.ndtr(m / s) + s * math.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi))
        return math.erf(u) * math.erf(m / math.sqrt(1 + 2 * s * s))

    dens = lambda u: inner(u) * math.exp(-u * u / (2 * q1)) / math.sqrt(2 * math.pi * q1)  # noqa: E731
    lim = 12 * math.sqrt(q1)
    val, _ = integrate.quad(dens, -lim, lim, points=[0.0], epsabs=1e-13, epsrel=1e-11, limit=200)
    return val


@pytest.mark.parametrize("q1,q2,c", [(1.0, 1.0, 0.3), (0.7, 2.0, -0.9), (1.5, 0.4, 0.75)])
def test_activation_expectations_match_quadrature(q1, q2, c):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    relu = _gauss_expectation("relu", q1, q2, c)
    erf = _gauss_expectation("erf", q1, q2, c)
    assert float(relu_expectation(t(c), t(q1), t(q2))) == pytest.approx(relu, rel=1e-8, abs=1e-10)
    assert float(erf_expectation(t(c), t(q1), t(q2))) == pytest.approx(erf, rel=1e-8, abs=1e-10)


def _x(n=7, d=12, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fcn_depth1_closed_forms():
    x = _x().numpy()
    sw, sb = 1.3, 0.2
    q = sb ** 2 + sw ** 2 * (x * x).sum(1) / x.shape[1]
    c = sb ** 2 + sw ** 2 * x @ x.T / x.shape[1]
    qq = np.sqrt(np.outer(q, q))
    theta = np.arccos(np.clip(c / qq, -1, 1))
    relu = sb ** 2 + sw ** 2 * qq / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    erf = sb ** 2 + sw ** 2 * 2 / np.pi * np.arcsin(2 * c / np.sqrt(np.outer(1 + 2 * q, 1 + 2 * q)))
    for act, ref in [("relu", relu), ("erf", erf)]:
        K = nngp.kernel(sampler.FCN(depth=1, width=8, activation=act, sigma_w=sw, sigma_b=sb), torch.from_numpy(x))
        assert K.dtype == torch.float64
        np.testing.assert_allclose(K.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_depth0_is_linear_kernel():
    x = _x()
    K = nngp.kernel(sampler.FCN(depth=0, sigma_w=2.0, sigma_b=0.5), x)
    torch.testing.assert_close(K, 0.25 + 4.0 * x @ x.T / x.shape[1])


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_kernel_invariances(act):
    arch = sampler.FCN(depth=3, width=8, activation=act, sigma_w=1.4, sigma_b=0.1)
    x = _x(30)
    K = nngp.kernel(arch, x)
    torch.testing.assert_close(K, K.T, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(K)[0]) > -1e-10
    torch.testing.assert_close(nngp.kernel(arch, x, block_size=7), K, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nngp.kernel(arch, x[:10], x[10:]), K[:10, 10:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nngp.kernel_diag(arch, x), torch.diagonal(K), rtol=1e-12, atol=0)
    torch.testing.assert_close(nngp.kernel(arch, x.numpy()), K)  # numpy input


def _check_mc(K, E, se, bias):
    """|E - K| <= 5 standard errors + an allowance ``bias * |K|`` for finite width."""
    excess = (E - K).abs() - (5 * se + bias * K.abs())
    assert float(excess.max()) <= 0, f"max excess {float(excess.max()):.3g}"


@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_fcn_depth1_equals_finite_width_covariance(act):
    # one hidden layer: the readout-integrated covariance of a finite net IS the NNGP kernel
    arch = sampler.FCN(depth=1, width=256, activation=act, sigma_w=1.2, sigma_b=0.3)
    x = _x(6, 10)
    E, se = nngp.empirical_kernel(arch, x, n_samples=60, seed=3, return_stderr=True, dtype=torch.float64)
    if act == "tanh":
        with pytest.raises(ValueError, match="empirical_kernel"):
            nngp.kernel(arch, x)
        # Gauss-Hermite reference for tanh at depth 1
        xs, ws = np.polynomial.hermite_e.hermegauss(80)
        xn = x.numpy()
        q = 0.09 + 1.44 * (xn * xn).sum(1) / 10
        c = 0.09 + 1.44 * xn @ xn.T / 10
        ref = np.zeros_like(c)
        for i in range(6):
            for j in range(6):
                l21 = c[i, j] / math.sqrt(q[i])
                l22 = math.sqrt(max(q[j] - l21 ** 2, 0))
                u = math.sqrt(q[i]) * xs[:, None]
                v = l21 * xs[:, None] + l22 * xs[None, :]
                ref[i, j] = (np.tanh(u) * np.tanh(v) * ws[:, None] * ws[None, :]).sum() / (2 * math.pi)
        K = torch.from_numpy(0.09 + 1.44 * ref)
    else:
        K = nngp.kernel(arch, x)
    _check_mc(K, E, se, 1e-9)


@pytest.mark.parametrize("span", [True, False])
def test_fcn_monte_carlo_in_the_span_of_the_inputs(span):
    """n = 5 points in d = 40 (span of dimension 5): the first layer drawn in the span (span=True) and in
    input coordinates (span=False) both match the closed form at depth 1 within Monte Carlo error;
    the span path draws other numbers (it is taken)."""
    arch = sampler.FCN(depth=1, width=256, activation="relu", sigma_w=1.2, sigma_b=0.3)
    x = _x(5, 40, seed=2)
    E, se = nngp.empirical_kernel(arch, x, n_samples=60, seed=3, return_stderr=True, dtype=torch.float64, span=span)
    _check_mc(nngp.kernel(arch, x), E, se, 1e-9)
    auto = nngp.empirical_kernel(arch, x, n_samples=60, seed=3, dtype=torch.float64)
    assert torch.equal(auto, E) == span
    with pytest.raises(ValueError, match="span=True"):
        nngp.empirical_kernel(sampler.LSTM(hidden=2), x, n_samples=2, seed=0, span=True)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_fcn_depth2_against_wide_networks(act):
    arch = sampler.FCN(depth=2, width=512, activation=act, sigma_w=1.3, sigma_b=0.2)
    x = _x(5, 10)
    E, se = nngp.empirical_kernel(arch, x, n_samples=48, seed=1, return_stderr=True)
    # finite-width bias is O(1/width); 4/width bounds it comfortably at these scales
    _check_mc(nngp.kernel(arch, x), E, se, 4 / 512)


def test_outputs_estimator_agrees():
    arch = sampler.FCN(depth=1, width=64, activation="relu")
    x = _x(4, 6)
    E, se = nngp.empirical_kernel(arch, x, n_samples=3000, seed=0, estimator="outputs", return_stderr=True)
    _check_mc(nngp.kernel(arch, x), E, se, 1e-9)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_cnn_depth1_equals_finite_width_covariance(readout):
    shape = (2, 4, 5)
    arch = sampler.CNN(depth=1, channels=24, kernel_size=3, activation="relu", readout=readout,
                       sigma_w=1.2, sigma_b=0.2)
    x = _x(5, math.prod(shape), seed=2) - 0.3
    E, se = nngp.empirical_kernel(arch, x, n_samples=40, seed=0, input_shape=shape, return_stderr=True,
                                  dtype=torch.float64)
    K = nngp.kernel(arch, x, input_shape=shape)
    _check_mc(K, E, se, 1e-9)
    torch.testing.assert_close(nngp.kernel_diag(arch, x, input_shape=shape), torch.diagonal(K))


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_cnn_depth2_against_wide_networks(readout):
    shape = (1, 4, 4)
    arch = sampler.CNN(depth=2, channels=128, kernel_size=3, activation="erf", readout=readout,
                       sigma_w=1.5, sigma_b=0.1)
    x = _x(4, 16, seed=5)
    E, se = nngp.empirical_kernel(arch, x, n_samples=30, seed=0, input_shape=shape, return_stderr=True)
    _check_mc(nngp.kernel(arch, x, input_shape=shape), E, se, 4 / 128)


def test_cnn_flatten_of_1x1_images_is_fcn():
    # 1x1 images, kernel size 1: the CNN is an FCN with width = channels
    x = _x(6, 3)
    cnn = sampler.CNN(depth=2, channels=5, kernel_size=1, readout="flatten", sigma_w=1.1, sigma_b=0.2)
    fcn = sampler.FCN(depth=2, width=5, sigma_w=1.1, sigma_b=0.2)
    torch.testing.assert_close(nngp.kernel(cnn, x, input_shape=(3, 1, 1)), nngp.kernel(fcn, x))


def test_unsupported_and_bad_inputs():
    x = _x(3, 4)
    with pytest.raises(ValueError, match="empirical_kernel"):
        nngp.kernel(sampler.LSTM(hidden=4), x)
    with pytest.raises(ValueError, match="input_shape"):
        nngp.kernel(sampler.CNN(), x)
    with pytest.raises(ValueError, match="shape"):
        nngp.kernel(sampler.FCN(), x[0])
    with pytest.raises(ValueError, match="columns"):
        nngp.kernel(sampler.FCN(), x, x[:, :2])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nngp.kernel(sampler.FCN(), bad)


def test_empirical_lstm_and_seeding():
    arch = sampler.LSTM(hidden=8)
    x = _x(4, 5)
    K1 = nngp.empirical_kernel(arch, x, n_samples=5, seed=7, input_shape=(5,))
    K2 = nngp.empirical_kernel(arch, x, n_samples=5, seed=7, input_shape=(5,))
    torch.testing.assert_close(K1, K2, rtol=0, atol=0)
    assert K1.dtype == torch.float64 and K1.shape == (4, 4)
    torch.testing.assert_close(K1, K1.T)
    assert float(torch.linalg.eigvalsh(K1)[0]) > -1e-8
    with pytest.raises(ValueError, match="n_samples"):
        nngp.empirical_kernel(arch, x, n_samples=1, seed=0)


def test_zero_input_relu_is_finite():
    x = torch.zeros(2, 4, dtype=torch.float64)
    K = nngp.kernel(sampler.FCN(depth=2, sigma_b=0.0), x)
    assert torch.equal(K, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("bad, error, words", [
    (torch.zeros(4, 0), ValueError, "must not be empty"),
    (np.array([["a", "b"]]), TypeError, "must hold real numbers"),
    (torch.ones(3, 2, dtype=torch.complex64), TypeError, "must be real"),
    (torch.ones(3, 2).half(), TypeError, "float32 or float64"),
    ([[1.0, 2.0]], TypeError, "torch.Tensor or numpy array"),
])
def test_kernel_names_bad_inputs(bad, error, words):
    with pytest.raises(error, match=words):
        nngp.kernel(sampler.FCN(), bad)
