import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import sampler
from sampler.data import Split
from sampler.functions import strings_to_bits
from sampler.prior import binomial_summary, iter_prior_outputs, sample_prior
from sampler.store import ShardError


def make_split(x_train, y_train, x_test, input_shape=None):
    x_train = torch.as_tensor(np.asarray(x_train, np.float32))
    x_test = torch.as_tensor(np.asarray(x_test, np.float32))
    y_train = torch.as_tensor(np.asarray(y_train, np.int64))
    return Split(x_train, y_train, x_test, torch.zeros(len(x_test), dtype=torch.int64),
                 tuple(input_shape or (x_train.shape[1],)), "test", "target", 0, "test",
                 np.arange(len(x_train)), np.arange(len(x_test)))


def orthant(cov, signs):
    """P[sign(g_i) == signs_i for all i], g ~ N(0, cov), by scipy's Genz integrator."""
    d = np.diag(signs.astype(float))
    return multivariate_normal(mean=np.zeros(len(signs)), cov=d @ cov @ d, abseps=1e-7,
                               releps=1e-7).cdf(np.zeros(len(signs)))


@pytest.mark.parametrize("method", ["weights", "preactivations"])
def test_linear_model_matches_exact_orthant_probabilities(method):
    # depth 0: f(x) = w.x + b is Gaussian with covariance sigma_w^2/d x x^T + sigma_b^2 (exact P_B).
    x = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]], np.float64)
    arch = sampler.FCN(depth=0, width=1, sigma_w=1.3, sigma_b=0.4)
    split = make_split(x[:1], [1], x[1:])
    cov = 1.3 ** 2 / 3 * x @ x.T + 0.4 ** 2
    n = 200_000
    res = sample_prior(arch, split, n, seed=3, progress=False, method=method)
    p_s = orthant(cov[:1, :1], np.array([1]))
    assert abs(res.fit_fraction - p_s) < 5 * math.sqrt(p_s * (1 - p_s) / n)
    for f in ["000", "111", "101"]:
        signs = np.concatenate([[1], 2 * strings_to_bits([f])[0].astype(int) - 1])
        p = orthant(cov, signs)  # P(S and f)
        assert abs(res[f] / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6, f


@pytest.mark.parametrize("method", ["weights", "preactivations"])
def test_constant_functions_match_plain_loop_over_arch_build(method):
    # 1 hidden layer, 3 inputs: the vectorised sampler against an independent loop over arch.build.
    x = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 1]], np.float32)
    arch = sampler.FCN(depth=1, width=5, activation="relu", sigma_w=1.5, sigma_b=0.3)
    split = make_split(x[:1], [0], x[1:])
    n_vec, n_loop = 100_000, 4000
    res = sample_prior(arch, split, n_vec, seed=11, progress=False, method=method)
    gen = torch.Generator().manual_seed(12345)
    xs = torch.from_numpy(x)
    loop = {"0000": 0, "1111": 0}
    fits = 0
    with torch.no_grad():
        for _ in range(n_loop):
            out = arch.build((3,), generator=gen)(xs)
            if out[0] > 0:
                continue
            fits += 1
            f = "".join("1" if v > 0 else "0" for v in out[1:].tolist())
            if f in loop:
                loop[f] += 1
    p_loop = fits / n_loop
    assert abs(res.fit_fraction - p_loop) < 5 * math.sqrt(p_loop * (1 - p_loop) * (1 / n_loop + 1 / n_vec))
    for f, c in loop.items():
        p1, p2 = c / n_loop, res[f] / n_vec  # joint P(S and f)
        pbar = (c + res[f]) / (n_loop + n_vec)
        assert abs(p1 - p2) < 5 * math.sqrt(pbar * (1 - pbar) * (1 / n_loop + 1 / n_vec)), f
    assert res["0000"] > 0.1 * n_vec  # the constant function is the most likely one


@pytest.mark.parametrize("method", ["weights", "preactivations"])
def test_output_second_moment_matches_the_nngp_recursion(method):
    # depth 1 relu: E f(x)^2 = sigma_b^2 + sigma_w^2 * q / 2, q = sigma_b^2 + sigma_w^2 |x|^2 / d.
    arch = sampler.FCN(depth=1, width=7, activation="relu", sigma_w=1.2, sigma_b=0.5)
    x = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    out = torch.cat(list(iter_prior_outputs(arch, x, 60_000, seed=2, method=method))).double()[:, 0]
    q = 0.25 + 1.44 * 6.0 / 4
    expect = 0.25 + 1.44 * q / 2
    se = out.pow(2).std().item() / math.sqrt(len(out))
    assert abs(out.pow(2).mean().item() - expect) < 5 * se
    assert abs(out.mean().item()) < 5 * out.std().item() / math.sqrt(len(out))


def boolean_split(m=16, k=24):
    return sampler.load_split("boolean", n_train=m, n_test=k, seed=1, target="constant")


@pytest.mark.parametrize("method", ["weights", "preactivations"])
def test_invariant_to_batch_and_shard_size(tmp_path, method):
    arch = sampler.FCN(depth=2, width=8, activation="tanh", sigma_w=1.0, sigma_b=0.1)
    split = boolean_split()
    kw = dict(seed=5, block_size=512, progress=False, method=method)
    a = sample_prior(arch, split, 3000, batch_size=100, **kw)
    b = sample_prior(arch, split, 3000, batch_size=512, **kw)
    c = sample_prior(arch, split, 3000, batch_size=64, run_folder=tmp_path / "r", shard_size=1024, **kw)
    assert a.n_fit > 0
    assert a == b == c


@pytest.mark.parametrize("method", ["weights", "preactivations"])
def test_first_samples_do_not_depend_on_n_samples(method):
    arch = sampler.FCN(depth=1, width=6, activation="erf")
    x = torch.rand(5, 3)
    short = torch.cat(list(iter_prior_outputs(arch, x, 300, seed=1, block_size=128, method=method)))
    long = torch.cat(list(iter_prior_outputs(arch, x, 700, seed=1, block_size=128, method=method)))
    torch.testing.assert_close(short, long[:300], rtol=0, atol=0)
    other = torch.cat(list(iter_prior_outputs(arch, x, 300, seed=2, block_size=128, method=method)))
    assert not torch.equal(short, other)


def test_run_folder_resumes_and_refuses_other_streams(tmp_path):
    arch = sampler.FCN(depth=1, width=8)
    split = boolean_split()
    kw = dict(block_size=256, shard_size=512, progress=False)
    full = sample_prior(arch, split, 2000, seed=0, run_folder=tmp_path, **kw)
    assert full == sample_prior(arch, split, 2000, seed=0, **kw)
    folder = sampler.RunFolder(tmp_path)
    assert folder.shard_indices("prior") == [0, 1, 2, 3]
    folder.shard_path("prior", 2).unlink()  # an interrupted run
    assert sample_prior(arch, split, 2000, seed=0, run_folder=tmp_path, **kw) == full
    assert sample_prior(arch, split, 1024, seed=0, run_folder=tmp_path, **kw) == sample_prior(arch, split, 1024,
                                                                                              seed=0, **kw)
    with pytest.raises(ShardError, match="written by another config"):
        sample_prior(arch, split, 2000, seed=1, run_folder=tmp_path, **kw)
    with pytest.raises(ShardError, match=r"000003\.parquet holds .*this run plans"):  # n_samples changed within a shard
        sample_prior(arch, split, 1900, seed=0, run_folder=tmp_path, **kw)


@pytest.mark.parametrize("arch", [sampler.LSTM(hidden=3), sampler.CNN(depth=1, channels=2)], ids=["lstm", "cnn"])
def test_weights_of_any_architecture_are_reproducible_and_blockwise(arch):
    split = boolean_split(m=2, k=4)
    if isinstance(arch, sampler.CNN):  # the 7 Boolean bits as a 1 x 1 x 7 image
        split = dataclasses.replace(split, input_shape=(1, 1, 7))
    a = sample_prior(arch, split, 60, seed=0, block_size=32, batch_size=7, progress=False)
    b = sample_prior(arch, split, 60, seed=0, block_size=32, batch_size=64, progress=False)
    assert a == b and a.n_runs == 60
    x = split.x_all()
    short = torch.cat(list(iter_prior_outputs(arch, x, 40, seed=1, block_size=32, input_shape=split.input_shape)))
    long = torch.cat(list(iter_prior_outputs(arch, x, 70, seed=1, block_size=32, input_shape=split.input_shape)))
    torch.testing.assert_close(short, long[:40], rtol=0, atol=0)


def test_block_outputs_are_the_networks_own_outputs():
    """Sample j of a block is Network.draw's member j evaluated by arch.build's module (independent
    of the batched apply)."""
    from sampler.prior import block_outputs
    from sampler.seeding import make_generator

    arch = sampler.LSTM(hidden=3, sigma_b=0.0)
    x = torch.rand(5, 4)
    out = block_outputs(arch, x, (4,), 2, 6, seed=7, block_size=8, batch_size=4, device="cpu")
    net = arch.network((4,))
    params = net.draw(8, generator=make_generator(7, "prior", 2))
    for j in range(6):
        torch.testing.assert_close(out[j], net.member(params, j)(x), rtol=1e-6, atol=1e-6)


def test_result_statistics_and_no_acceptance():
    arch = sampler.FCN(depth=1, width=4)
    split = sampler.load_split("boolean", n_train=64, n_test=8, seed=0, target="parity")
    res = sample_prior(arch, split, 1000, seed=0, progress=False)
    s = binomial_summary(res.n_fit, res.n_runs)
    assert res.n_fit == 0 and s["log_p_s"] == -math.inf and s["log_p_s_se"] == math.inf
    lo, hi = s["p_s_interval"]
    assert lo == 0.0 and 0 < hi < 0.004  # Clopper-Pearson: 1 - 0.025^(1/1000) = 0.0037
    ok = sample_prior(arch, boolean_split(m=2, k=4), 4000, seed=0, progress=False)
    s = binomial_summary(ok.n_fit, ok.n_runs)
    p = s["acceptance_rate"]
    assert 0 < p < 1 and p == ok.fit_fraction and s["p_s_se"] == pytest.approx(math.sqrt(p * (1 - p) / 4000))
    assert s["p_s_interval"][0] < p < s["p_s_interval"][1]
    assert s["log_p_s"] == pytest.approx(math.log(p)) and s["log_p_s_se"] == pytest.approx(s["p_s_se"] / p)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=1.5), TypeError, "n_samples"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(block_size=100, shard_size=150), ValueError, "shard_size must be a multiple"),
    (dict(arch="fcn"), TypeError, "arch must be"),
    (dict(split=None), TypeError, "split must be"),
])
def test_bad_input_gives_named_errors(kwargs, exc, match):
    args = dict(arch=sampler.FCN(depth=1, width=4), split=boolean_split(), n_samples=10, seed=0, progress=False)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sample_prior(**args)


def test_weight_sampler_of_an_lstm_matches_networks_built_one_by_one_in_distribution():
    """The weight sampler draws a block's members stacked (Network.draw), a random stream unlike
    building one module per sample; the functions on all points must come from one distribution
    (chi-square homogeneity, analysis.homogeneity, level 1e-4)."""
    from analysis.stats import homogeneity
    from sampler.seeding import make_generator

    arch = sampler.LSTM(hidden=3, sigma_w=1.5, sigma_b=0.5)
    x = boolean_split(m=3, k=3).x_all()
    n = 4000
    stacked = torch.cat(list(iter_prior_outputs(arch, x, n, seed=4, block_size=1024)))
    gen = make_generator(11, "reference")
    with torch.no_grad():
        built = torch.stack([arch.build((7,), generator=gen)(x) for _ in range(n)])
    codes = [((o > 0).long() << torch.arange(x.shape[0])).sum(1) for o in (stacked, built)]
    counts = [torch.bincount(c, minlength=2 ** x.shape[0]).numpy() for c in codes]
    test = homogeneity(*counts)
    assert test.dof >= 5 and test.pvalue > 1e-4, test
