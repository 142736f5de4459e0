"""nngp.NNGPKernel inside a gpytorch ExactGP model."""

import gpytorch
import torch

import nngp
import sampler


class _Model(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, arch):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = nngp.NNGPKernel(arch)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_exact_gp_posterior_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(25, 6, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(1))
    xs = torch.rand(7, 6, generator=gen, dtype=torch.float64)
    arch = sampler.FCN(depth=2, width=8, activation="erf", sigma_w=1.5, sigma_b=0.3)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = 0.01
    model = _Model(x, y, lik, arch).double()
    model.eval()
    lik.eval()
    with torch.no_grad(), gpytorch.settings.fast_computations(False, False, False):
        pred = lik(model(xs))
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
        model.train()
        lik.train()
        value = mll(model(x), y)
    K = nngp.kernel(arch, x)
    Ks = nngp.kernel(arch, xs, x)
    noise = float(lik.noise.detach())
    A = K + noise * torch.eye(25, dtype=torch.float64)
    mean = Ks @ torch.linalg.solve(A, y)
    var = nngp.kernel_diag(arch, xs) - (Ks * torch.linalg.solve(A, Ks.T).T).sum(1) + noise
    torch.testing.assert_close(pred.mean, mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(pred.variance, var, rtol=1e-6, atol=1e-8)
    ref = torch.distributions.MultivariateNormal(torch.zeros(25, dtype=torch.float64), A).log_prob(y) / 25
    torch.testing.assert_close(value, ref, rtol=1e-6, atol=1e-8)


def test_kernel_module_diag_and_errors():
    arch = sampler.FCN(depth=1, activation="relu")
    k = nngp.NNGPKernel(arch)
    x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = k(x).to_dense()
    torch.testing.assert_close(full, nngp.kernel(arch, x))
    torch.testing.assert_close(k(x, diag=True), torch.diagonal(full))
    import pytest

    with pytest.raises(ValueError, match="empirical_kernel"):
        nngp.NNGPKernel(sampler.LSTM())
    with pytest.raises(ValueError, match="input_shape"):
        nngp.NNGPKernel(sampler.CNN())
