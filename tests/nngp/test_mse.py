"""nngp.mse: the gradient-descent-on-MSE ensemble Gaussian and GP regression, against independent
references (the issue's closed form, scipy's expm, Euler integration of the function-space flow,
numpy solves), and against reality: wide FCNs trained by full-batch gradient descent with the
project's own loss and engine pieces."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats

import nngp
import sampler
from nngp.mse import flow_time, gd_mse_ensemble, gp_regression, targets
from sampler.sgd import member_loss_grads
from sampler.functions import outputs_to_strings
from sampler.seeding import make_generator


def _problem(m=6, k=4, seed=0):
    split = sampler.load_split("boolean", n_train=m, n_test=k, seed=seed, target="majority")
    arch = sampler.FCN(depth=1, width=256, activation="relu", sigma_w=1.0, sigma_b=0.2)
    x = split.x_all()
    return split, arch, nngp.kernel(arch, x), nngp.ntk(arch, x)


def test_time_zero_is_the_prior_and_infinite_time_is_the_issues_closed_form():
    split, arch, K, T = _problem()
    Y = targets(split.y_train)
    m = split.n_train
    g0 = gd_mse_ensemble(K, T, Y, n_train=m, time=0.0)
    torch.testing.assert_close(g0.cov, K, rtol=0, atol=1e-14)
    assert float(g0.mean.abs().max()) == 0.0
    g = gd_mse_ensemble(K, T, Y, n_train=m)
    Ti = torch.linalg.inv(T[:m, :m])
    TEX, KXE = T[m:, :m], K[:m, m:]
    cov = K[m:, m:] + TEX @ Ti @ K[:m, :m] @ Ti @ TEX.T - (TEX @ Ti @ KXE + (TEX @ Ti @ KXE).T)
    mean_e, cov_e = g.test()
    torch.testing.assert_close(cov_e, cov, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(mean_e, TEX @ Ti @ Y, rtol=1e-8, atol=1e-10)
    mean_s, cov_s = g.train()  # trained to the end: the targets, exactly
    torch.testing.assert_close(mean_s, Y, rtol=0, atol=1e-8)
    assert float(cov_s.abs().max()) < 1e-8 * float(K.max())
    # a long finite time approaches the limit
    late = gd_mse_ensemble(K, T, Y, n_train=m, time=200.0 / float(torch.linalg.eigvalsh(T[:m, :m])[0]))
    torch.testing.assert_close(late.cov, g.cov, rtol=1e-6, atol=1e-8)


def test_finite_time_matches_expm_and_euler_integration_of_the_flow():
    split, arch, K, T = _problem(seed=1)
    Y = targets(split.y_train)
    m, n = split.n_train, K.shape[0]
    tau = 0.3 / float(torch.linalg.eigvalsh(T[:m, :m])[-1]) * 10
    g = gd_mse_ensemble(K, T, Y, n_train=m, time=tau)
    # expm reference: A = T_ZX T^-1 (I - expm(-tau T_XX))
    Tn, Kn = T.numpy(), K.numpy()
    A = Tn[:, :m] @ np.linalg.solve(Tn[:m, :m], np.eye(m) - linalg.expm(-tau * Tn[:m, :m]))
    B = np.eye(n)
    B[:, :m] -= A
    np.testing.assert_allclose(g.mean.numpy(), A @ Y.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(g.cov.numpy(), B @ Kn @ B.T, rtol=1e-7, atol=1e-10)
    # Euler steps of df_Z/dt = -T_ZX (f_X - Y) on the mean and on the map from f_0
    steps = 20000
    h = tau / steps
    mu, Bt = np.zeros(n), np.eye(n)
    for _ in range(steps):
        mu = mu - h * Tn[:, :m] @ (mu[:m] - Y.numpy())
        Bt = Bt - h * Tn[:, :m] @ Bt[:m]
    np.testing.assert_allclose(g.mean.numpy(), mu, atol=2e-3)
    np.testing.assert_allclose(g.cov.numpy(), Bt @ Kn @ Bt.T, atol=2e-3 * float(K.max()))


def test_flow_time_and_its_checks():
    assert flow_time(0.01, 100, 20) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr"):
        flow_time(0.0, 10, 5)
    with pytest.raises(TypeError, match="steps"):
        flow_time(0.1, 1.5, 5)


def _precomputed_kernel_class():
    from sklearn.gaussian_process.kernels import Kernel

    class Precomputed(Kernel):
        """A fixed kernel matrix; inputs are row indices into it (one column)."""

        def __init__(self, matrix):
            self.matrix = matrix

        def __call__(self, X, Y=None, eval_gradient=False):
            i = X[:, 0].astype(int)
            j = i if Y is None else Y[:, 0].astype(int)
            return self.matrix[np.ix_(i, j)]

        def diag(self, X):
            return np.diag(self.matrix)[X[:, 0].astype(int)]

        def is_stationary(self):
            return False

    return Precomputed


def _Precomputed(matrix):
    return _precomputed_kernel_class()(matrix)


def test_gp_regression_matches_numpy_and_the_cg_path_matches_cholesky():
    split, arch, K, _ = _problem(m=12, k=5, seed=2)
    Y = targets(split.y_train)
    m = split.n_train
    g = gp_regression(K, Y, n_train=m, noise=0.05)
    Kn = K.numpy()
    A = Kn[:m, :m] + 0.05 * np.eye(m)
    np.testing.assert_allclose(g.mean.numpy(), Kn[:, :m] @ np.linalg.solve(A, Y.numpy()), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.cov.numpy(), Kn - Kn[:, :m] @ np.linalg.solve(A, Kn[:m]), rtol=1e-9, atol=1e-12)
    test_only = gp_regression(K, Y, n_train=m, noise=0.05, joint=False)  # k + 1 right-hand sides
    assert test_only.n_train == 0
    torch.testing.assert_close(test_only.mean, g.test()[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(test_only.cov, g.test()[1], rtol=1e-12, atol=1e-14)
    cg = gp_regression(K, Y, n_train=m, noise=0.05, solver="cg", cg_tol=1e-10)
    torch.testing.assert_close(cg.mean, g.mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(cg.cov, g.cov, rtol=1e-6, atol=1e-8)
    # scikit-learn's GP regression on the same kernel (a precomputed kernel looked up by input index)
    from sklearn.gaussian_process import GaussianProcessRegressor

    gpr = GaussianProcessRegressor(_Precomputed(Kn), alpha=0.05, optimizer=None)
    idx = np.arange(K.shape[0], dtype=float)[:, None]
    gpr.fit(idx[:m], Y.numpy())
    mean, cov = gpr.predict(idx[m:], return_cov=True)
    np.testing.assert_allclose(g.test()[0].numpy(), mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g.test()[1].numpy(), cov, rtol=1e-7, atol=1e-9)


def test_bad_input_is_named():
    split, arch, K, T = _problem()
    Y = targets(split.y_train)
    with pytest.raises(ValueError, match="theta"):
        gd_mse_ensemble(K, T[:3, :3], Y, n_train=6)
    with pytest.raises(ValueError, match="Y must"):
        gd_mse_ensemble(K, T, Y[:2], n_train=6)
    with pytest.raises(ValueError, match="noise"):
        gp_regression(K, Y, n_train=6, noise=0.0)
    with pytest.raises(ValueError, match="singular"):
        gd_mse_ensemble(K, torch.ones_like(T), Y, n_train=6)
    with pytest.raises(ValueError, match="0/1"):
        targets(torch.tensor([0, 2]))


# --- against reality: wide networks trained by full-batch gradient descent on the mean squared error ----
def _train_ensemble(arch, split, *, n_members, lr, steps, seed):
    """``n_members`` networks of ``arch`` (initialised as the sgd engine does), each trained by
    ``steps`` full-batch gradient-descent steps on the project's mean squared error, through the
    training engine's own pieces (``Network.forward_train``, ``member_loss_grads``); float64. Their
    outputs on E, (n_members, k)."""
    net = arch.network(split.input_shape, dtype=torch.float64)
    params = net.init([make_generator(seed, "init", i) for i in range(n_members)])
    xb = split.x_train.to(torch.float64).expand(n_members, -1, -1).contiguous()
    y = split.y_train.expand(n_members, -1)
    for _ in range(steps):
        out, backward = net.forward_train(params, xb)
        for p, g in zip(params, backward(member_loss_grads(out, y, "mse"))):
            p.sub_(lr * g)
    with torch.no_grad():
        return net.apply(params, split.x_test.to(torch.float64))


def _ntk_test_block(arch, split, tau):
    x = split.x_all()
    g = gd_mse_ensemble(nngp.kernel(arch, x), nngp.ntk(arch, x), targets(split.y_train), n_train=split.n_train,
                        time=tau)
    return g.test()


def test_wide_networks_trained_by_gradient_descent_follow_the_ntk_gaussian():
    """FCN 7-2048-1 (relu), Boolean m = 8, k = 4, lr = 0.4 / width, 50 full-batch steps, 200 networks:
    the sample mean on E is within 4 standard errors + 0.02 of the NTK Gaussian's at flow time
    2 lr steps / m, the sample covariance within 0.03 entrywise (entries ~0.07; Monte Carlo error
    ~0.007, finite-width deviation O(1/sqrt(width)): 0.006 measured with 400 networks), and the
    mean is closer to that time's than to half or twice it (the lr mapping, eta = 2 lr)."""
    split = sampler.load_split("boolean", n_train=8, n_test=4, seed=1, target="majority")
    width, steps = 2048, 50
    arch = sampler.FCN(depth=1, width=width, activation="relu", sigma_w=1.0, sigma_b=0.1)
    lr = 0.4 / width
    out = _train_ensemble(arch, split, n_members=200, lr=lr, steps=steps, seed=0)
    tau = flow_time(lr, steps, split.n_train)
    mean, cov = _ntk_test_block(arch, split, tau)
    emp, se = out.mean(0), out.std(0) / math.sqrt(out.shape[0])
    assert torch.all((emp - mean).abs() <= 4 * se + 0.02), (emp, mean, se)
    assert float((torch.cov(out.T) - cov).abs().max()) < 0.03, (torch.cov(out.T), cov)
    z2 = {c: float((((emp - _ntk_test_block(arch, split, c * tau)[0]) / se) ** 2).sum()) for c in (0.5, 1.0, 2.0)}
    assert z2[1.0] < min(z2[0.5], z2[2.0]), z2


@pytest.mark.slow
def test_function_counts_of_wide_networks_agree_with_p_ntk():
    """4000 networks (width 2048, lr = 0.4 / width, 100 steps): their sign patterns on E (k = 4) against
    the NTK Gaussian's orthant probabilities (tilting), chi-square goodness of fit p > 1e-3."""
    split = sampler.load_split("boolean", n_train=8, n_test=4, seed=1, target="majority")
    width, steps = 2048, 100
    arch = sampler.FCN(depth=1, width=width, activation="relu", sigma_w=1.0, sigma_b=0.1)
    lr = 0.4 / width
    out = torch.cat([_train_ensemble(arch, split, n_members=500, lr=lr, steps=steps, seed=s) for s in range(8)])
    mean, cov = _ntk_test_block(arch, split, flow_time(lr, steps, split.n_train))
    funcs = outputs_to_strings(out)
    counts = {f: funcs.count(f) for f in set(funcs)}
    patterns = [format(i, "04b") for i in range(16)]
    p = np.array([math.exp(nngp.orthant(cov, torch.tensor([int(c) for c in f]), mean=mean, method="tilting",
                                        seed=0, n_samples=20000).log_prob) for f in patterns])
    p = p / p.sum()
    obs = np.array([counts.get(f, 0) for f in patterns], dtype=float)
    keep = p * len(funcs) >= 5
    exp_ = p[keep] * len(funcs)
    obs_k = obs[keep]
    chi2 = float(((obs_k - exp_ * obs_k.sum() / exp_.sum()) ** 2 / (exp_ * obs_k.sum() / exp_.sum())).sum())
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3
