"""nngp.kernel_for: analytic where a closed form exists, else the Monte Carlo kernel of the same module."""

import pytest
import torch

import nngp
import sampler


@pytest.fixture(scope="module")
def x():
    return sampler.load_split("digits", n_train=5, n_test=3, seed=0).x_all().double()


def test_analytic_where_a_closed_form_exists(x):
    arch = sampler.FCN(depth=2, width=8)
    est = nngp.kernel_for(arch, x)
    assert est.method == "analytic" and est.stderr is None and est.n_samples == 0
    torch.testing.assert_close(est.K, nngp.kernel(arch, x))


@pytest.mark.parametrize("arch", [sampler.FCN(depth=1, width=8, activation="tanh"), sampler.LSTM(hidden=3),
                                  sampler.Module(factory="sgdbayes.examples:resnet", kwargs={"width": 4})],
                         ids=["tanh", "lstm", "module"])
def test_monte_carlo_with_a_standard_error_per_entry_otherwise(x, arch):
    est = nngp.kernel_for(arch, x, n_samples=50, seed=1)
    n = x.shape[0]
    assert est.method == "monte-carlo" and est.n_samples == 50
    assert est.K.shape == est.stderr.shape == (n, n) and est.K.dtype == torch.float64
    assert torch.equal(est.K, est.K.T) and bool((est.stderr > 0).all())
    assert torch.linalg.eigvalsh(est.K).min() > -1e-8 * est.K.diagonal().max()
    assert set(est.info()) == {"kernel_method", "kernel_samples", "kernel_max_rel_stderr"}
    torch.testing.assert_close(nngp.kernel_for(arch, x, n_samples=50, seed=1).K, est.K)  # seeded


def test_monte_carlo_kernel_of_a_custom_fcn_module_converges_to_the_analytic_fcn_kernel(x):
    # One hidden layer: E[f(x) f(x')] over random finite networks *is* the NNGP kernel at any width
    # (first-layer pre-activations are exactly Gaussian), so the Monte Carlo average is unbiased for
    # it. Tolerance: every entry within 5 of its standard errors at each size, and those standard
    # errors shrink as 1/sqrt(samples) (16x samples: 4x smaller), so the bound tightens 4-fold.
    width = 16
    module = sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 1, "width": width}, sigma_b=0.3)
    exact = nngp.kernel(sampler.FCN(depth=1, width=width, sigma_b=0.3), x)
    stderrs = []
    for n_samples in (256, 4096):
        est = nngp.kernel_for(module, x, n_samples=n_samples, seed=3)
        z = (est.K - exact).abs() / est.stderr
        assert z.max() < 5, f"n_samples={n_samples}: max |z| = {z.max():.2f}"
        stderrs.append(float(est.stderr.mean()))
    assert 2.5 < stderrs[0] / stderrs[1] < 6.5, stderrs


def test_readout_and_outputs_estimators_agree_for_an_lstm(x):
    """Both Monte Carlo estimators through the protocol (readout integrated out from Network.features,
    or the outputs' plain average) estimate one covariance: each entry within 5 standard errors."""
    arch = sampler.LSTM(hidden=4, sigma_b=0.3)
    xs = x[:4, :16]
    a, se_a = nngp.empirical_kernel(arch, xs, n_samples=400, seed=1, dtype=torch.float64, estimator="readout",
                                    return_stderr=True)
    b, se_b = nngp.empirical_kernel(arch, xs, n_samples=4000, seed=2, dtype=torch.float64, estimator="outputs",
                                    return_stderr=True)
    assert float(((a - b).abs() / (se_a ** 2 + se_b ** 2).sqrt()).max()) < 5
    with pytest.raises(ValueError, match="estimator='readout' needs the inputs of the network's readout"):
        nngp.empirical_kernel(sampler.Module(factory="sgdbayes.examples:mlp"), xs, n_samples=2, seed=0,
                              estimator="readout")
