import json
import math
import random

import numpy as np
import pytest
import torch

import sampler
from sampler.mcmc import (isolated_rng, mcmc_functions, run_nuts, summarize, to_inference_data,
                          write_diagnostics)
from sampler.prior import iter_prior_outputs


def linreg_model(X, y, tau, noise):
    import pyro
    import pyro.distributions as dist

    beta = pyro.sample("beta", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), tau).to_event(1))
    pyro.sample("y", dist.Normal(X @ beta, noise).to_event(1), obs=y)


def test_nuts_recovers_bayesian_linear_regression_posterior(tmp_path):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(15, 2, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.5 * torch.randn(15, generator=gen, dtype=torch.float64)
    tau, noise = 1.0, 0.5
    cov = torch.linalg.inv(X.T @ X / noise ** 2 + torch.eye(2, dtype=torch.float64) / tau ** 2)
    mean = cov @ X.T @ y / noise ** 2
    run = run_nuts(linreg_model, model_args=(X, y, tau, noise), n_samples=250, n_warmup=150, n_chains=4, seed=3)
    assert run.samples["beta"].shape == (4, 250, 2)
    idata = to_inference_data(run)
    summary = summarize(idata)
    for i in range(2):
        row = summary.loc[f"beta[{i}]"]
        assert abs(row["mean"] - mean[i].item()) < 5 * row["mcse_mean"]
        assert abs(row["sd"] - cov[i, i].sqrt().item()) < 5 * row["mcse_sd"]
        assert row["r_hat"] < 1.05
    csv, js, png = write_diagnostics(idata, summary, tmp_path / "diag", trace_vars=["beta"])
    info = json.loads(js.read_text())
    assert info["rhat_max"] < 1.05 and info["n_chains"] == 4 and info["n_draws"] == 250
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "beta[0]" in csv.read_text()


def test_isolated_rng_restores_caller_state_and_seeds_reproducibly():
    seed = torch.initial_seed()
    np.random.seed(5)
    random.seed(7)
    before = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with isolated_rng(42):
        a = torch.rand(3), np.random.rand(), random.random()
    with isolated_rng(42):
        b = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert torch.equal(before[0], torch.random.get_rng_state()) and torch.initial_seed() == seed
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def tiny_problem():
    split = sampler.load_split("boolean", n_train=2, n_test=3, seed=0, target="majority")
    arch = sampler.FCN(depth=1, width=3, activation="tanh", sigma_w=1.0, sigma_b=0.5)
    return arch, split


def test_network_posterior_runs_counts_and_writes_diagnostics(tmp_path):
    arch, split = tiny_problem()
    kw = dict(n_samples=25, n_warmup=25, temperature=0.2, max_tree_depth=3)
    res = mcmc_functions(arch, split, seed=0, out_dir=tmp_path, n_chains=2, **kw)
    assert res.counts.n_runs == 50 and 0 < res.counts.n_fit <= 50 and res.counts.k == 3
    fits = np.asarray(res.idata.posterior["fits_S"]).ravel()
    assert fits.sum() == res.counts.n_fit
    assert set(res.idata.posterior.data_vars) >= {"layers_0_weight_z", "readout_bias_z", "log_lik", "f_E"}
    assert {p.name for p in res.files} == {"summary.csv", "diagnostics.json", "trace.png"}
    info = json.loads((tmp_path / "diagnostics.json").read_text())
    assert info["n_fit"] == res.counts.n_fit and info["temperature"] == 0.2
    # chain c's seed does not depend on n_chains: one chain reproduces chain 0 exactly
    again = mcmc_functions(arch, split, seed=0, n_chains=1, **kw)
    np.testing.assert_array_equal(np.asarray(again.idata.posterior["f_E"])[0], np.asarray(res.idata.posterior["f_E"])[0])


def weighted_prior(arch, split, T, n):
    """Independent reference for the tempered posterior: ``n`` prior samples' outputs and their
    weights, the likelihood prod_i sigmoid((2 y_i - 1) f(x_i) / T), and P(fits S) under it."""
    out = torch.cat(list(iter_prior_outputs(arch, split.x_all(), n, seed=9))).double()
    s = (2 * split.y_train - 1).double()
    w = torch.nn.functional.logsigmoid(s * out[:, :2] / T).sum(1).exp()
    fits = ((out[:, :2] > 0) == (split.y_train == 1)).all(1)
    return out, w, ((w * fits).sum() / w.sum()).item()


def test_network_posterior_matches_importance_weighted_prior_fast():
    """The fast version of the independent check below, which `make test` runs (issue 15: the only
    independent check of NUTS over weights was `slow` and never ran). Reference: 10^5 prior samples
    weighted by the tempered likelihood. Measured: NUTS P(fits S) 0.255 against 0.286 (T = 0.3;
    T = 1 would give 0.133, T = 0.1 0.613), 200 draws. Tolerance: 4 binomial standard errors with
    the effective sample size taken as half the draws, plus 0.02."""
    arch, split = tiny_problem()
    T = 0.3
    res = mcmc_functions(arch, split, seed=1, n_samples=100, n_warmup=40, n_chains=2, temperature=T,
                         max_tree_depth=3)
    _, _, p_fit = weighted_prior(arch, split, T, 100_000)
    draws = np.asarray(res.idata.posterior["fits_S"], dtype=float)
    n_eff = draws.size / 2
    assert abs(draws.mean() - p_fit) < 4 * math.sqrt(p_fit * (1 - p_fit) / n_eff) + 0.02


@pytest.mark.slow
def test_network_posterior_matches_importance_weighted_prior():
    arch, split = tiny_problem()
    T = 0.3
    res = mcmc_functions(arch, split, seed=1, n_samples=400, n_warmup=300, n_chains=4, temperature=T,
                         max_tree_depth=5)
    out, w, p_fit = weighted_prior(arch, split, T, 400_000)
    draws = np.asarray(res.idata.posterior["fits_S"], dtype=float)  # (chain, draw)
    se = draws.mean(1).std(ddof=1) / math.sqrt(draws.shape[0]) + 0.01
    assert abs(draws.mean() - p_fit) < 5 * se
    ones = (out[:, 2:] > 0).double()
    p_first_e = ((w * ones[:, 0]).sum() / w.sum()).item()
    f_e = np.asarray(res.idata.posterior["f_E"])[..., 0] > 0
    se = f_e.mean(1).std(ddof=1) / math.sqrt(f_e.shape[0]) + 0.01
    assert abs(f_e.mean() - p_first_e) < 5 * se


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_chains=0), ValueError, "n_chains"),
    (dict(seed=-2), ValueError, "seed"),
    (dict(arch="fcn"), TypeError, "arch must be"),
    (dict(split=[1, 2]), TypeError, "split must be"),
])
def test_bad_input_gives_named_errors(kwargs, exc, match):
    arch, split = tiny_problem()
    args = dict(arch=arch, split=split, n_samples=5, n_warmup=5, n_chains=1, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mcmc_functions(**args)
