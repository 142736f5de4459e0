"""The pre-activation prior sampler: exact factors for any rank, and the same distribution of
functions as the weight sampler (chi-square tests of homogeneity at level 1e-4, with a power check).
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

import sampler
from sampler import preactivations as pre
from sampler.prior import iter_prior_outputs, resolve_method, sample_prior
from sampler.seeding import make_generator

D64 = torch.float64
#: Level of every equivalence test: a correct sampler fails one with probability <= 1e-4
#: (66 such comparisons with the slow tests, 51 without: <= 6.6e-3 that any fails).
LEVEL = 1e-4


# --- factors ------------------------------------------------------------------------------------

def _cov(f: torch.Tensor) -> torch.Tensor:
    return f @ f.transpose(-1, -2)


@pytest.mark.parametrize("case", ["full", "duplicates", "n>d+1", "zeros-no-bias"])
def test_input_factor_reproduces_the_first_layer_covariance(case):
    g = torch.Generator().manual_seed(0)
    sigma_w, sigma_b = 1.3, 0.4
    if case == "full":
        x = torch.randn(5, 12, generator=g, dtype=D64)
    elif case == "duplicates":
        x = torch.randn(4, 12, generator=g, dtype=D64)[[0, 1, 1, 2, 3, 0]]
    elif case == "n>d+1":
        x = torch.randn(9, 3, generator=g, dtype=D64)
    else:
        x, sigma_b = torch.zeros(4, 3, dtype=D64), 0.0
    n, d = x.shape
    k = sigma_w ** 2 / d * x @ x.T + sigma_b ** 2
    factor = pre.input_factor(x, sigma_w, sigma_b)
    assert factor.dtype == D64 and factor.shape[0] == n
    assert 1 <= factor.shape[1] <= min(n, d + 1)
    torch.testing.assert_close(_cov(factor), k, rtol=0, atol=1e-13 * max(1.0, float(k.abs().max())))
    if case == "duplicates":
        assert factor.shape[1] == 4  # 4 distinct points: rank 4
        torch.testing.assert_close(factor[1], factor[2], rtol=0, atol=1e-14)


@pytest.mark.parametrize("case", ["full", "duplicates", "zero-rows", "n>fan_in+1"])
def test_compact_factor_is_exact_for_any_rank(case):
    g = torch.Generator().manual_seed(1)
    scale, sigma_b = 0.7, 0.2
    a = torch.relu(torch.randn(6, 5, 9, generator=g, dtype=D64))
    if case == "duplicates":
        a = a[:, [0, 1, 2, 2, 3]]
    elif case == "zero-rows":  # sigma_b = 0 and a point with every unit dead: K has a zero row
        a[:, 3] = 0.0
        sigma_b = 0.0
    elif case == "n>fan_in+1":
        a = a[..., :2]
    k = scale ** 2 * _cov(a) + sigma_b ** 2
    factor = pre.compact_factor(a, scale, sigma_b)
    assert factor.shape == (6, 5, 5) and factor.dtype == D64
    torch.testing.assert_close(_cov(factor), k, rtol=0, atol=1e-13)
    if case in ("zero-rows", "n>fan_in+1"):  # Cholesky cannot factor these: the QR branch did
        assert (torch.linalg.cholesky_ex(k)[1] != 0).all()


def test_layer_kind_cost_model():
    assert pre.layer_kind(14, 64, 64, True) == "compact"      # MNIST m + k = 14, hidden layer
    assert pre.layer_kind(14, 64, 1, True) == "direct"        # the scalar readout
    assert pre.layer_kind(14, 8, 8, True) == "direct"         # narrow: a Cholesky costs more than 72 normals
    assert pre.layer_kind(96, 40, 40, False) == "direct"      # Boolean: more points than fan-in
    assert pre.layer_kind(100, 512, 512, True) == "compact"


def test_plan_shapes_and_errors():
    x = torch.rand(5, 30)
    plan = pre.plan_fcn(sampler.FCN(depth=2, width=32, sigma_b=0.1), x)
    assert plan.kinds == ("compact", "direct")
    assert plan.noise_shapes == ((5, 32), (5, 32), (33, 1)) and plan.n_points == 5
    plan = pre.plan_fcn(sampler.FCN(depth=2, width=16, sigma_b=0.0), x, kinds=("direct", "compact"))
    assert plan.noise_shapes == ((5, 16), (16, 16), (5, 1))
    with pytest.raises(ValueError, match="kinds must name one kind per layer"):
        pre.plan_fcn(sampler.FCN(depth=2, width=4), x, kinds=("direct",))
    with pytest.raises(ValueError, match=r"kinds\[0\] must be one of"):
        pre.plan_fcn(sampler.FCN(depth=1, width=4), x, kinds=("weights",))
    with pytest.raises(TypeError, match="arch must be a sampler.FCN"):
        pre.plan_fcn(sampler.LSTM(hidden=3), x)


# --- the same distribution of functions ---------------------------------------------------------------

def _codes(out: torch.Tensor) -> np.ndarray:
    """Each sample's sign pattern on all n points (its function on S and E) as one integer."""
    bits = (out > 0).to(torch.int64).cpu()
    return (bits << torch.arange(bits.shape[1])).sum(1).numpy()


def homogeneity_pvalue(a: np.ndarray, b: np.ndarray, *, min_pooled: int = 10) -> float:
    """Chi-square test that two samples of labels come from the same distribution.

    Labels seen fewer than ``min_pooled`` times in both samples together are pooled into one
    cell (chosen from the pooled counts only, so the test stays valid), which keeps every
    expected count >= 5 for equal sample sizes.
    """
    keys, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    ca = np.bincount(inverse[:len(a)], minlength=len(keys))
    cb = np.bincount(inverse[len(a):], minlength=len(keys))
    big = ca + cb >= min_pooled
    table = np.array([np.append(ca[big], ca[~big].sum()), np.append(cb[big], cb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False)[1])


def weight_outputs(arch, x, n, seed):
    return torch.cat(list(iter_prior_outputs(arch, x, n, seed=seed, method="weights")))


def preactivation_outputs(arch, x, n, seed, kinds=None):
    """The fast sampler through its pure functions (``kinds`` forces a way to draw each layer)."""
    x = x.to(torch.float32)
    plan = pre.plan_fcn(arch, x, kinds=kinds)
    noise = pre.draw_noise(plan, n, generator=make_generator(seed, "test-preactivations"))
    return pre.outputs_from_noise(plan, noise, batch_size=1000)


N_SAMPLES = 40_000  # per sampler; the power checks below reject at p < 1e-20 with this many


def boolean_x(m, k):
    return sampler.load_split("boolean", n_train=m, n_test=k, seed=0, target="majority").x_all()


def mnist_x(m=2, k=3):
    return sampler.load_split("mnist", n_train=m, n_test=k, seed=0).x_all()


def arch_of(activation, depth):
    return sampler.FCN(depth=depth, width=8, activation=activation, sigma_w=1.0, sigma_b=0.5)


GRID = [(act, depth) for act in ("relu", "erf", "tanh") for depth in (0, 1, 2, 3)]
# MNIST's weight sampler draws 784 x 8 numbers per network: a third of the grid in the default suite.
MNIST_FAST = [("relu", 2), ("erf", 1), ("tanh", 3)]
MNIST = [pytest.param(a, d, marks=() if (a, d) in MNIST_FAST else pytest.mark.slow) for a, d in GRID]


def _assert_same_distribution(arch, x, seed):
    """The weight sampler against the pre-activation sampler with its own plan and with every layer
    forced 'compact' (per-network factors: Cholesky, or QR where K is singular)."""
    a = _codes(weight_outputs(arch, x, N_SAMPLES, seed))
    for kinds in (None, ("compact",) * arch.depth) if arch.depth else (None,):
        p = homogeneity_pvalue(a, _codes(preactivation_outputs(arch, x, N_SAMPLES, seed + 1, kinds)))
        assert p > LEVEL, f"{arch.describe()}, kinds={kinds}: the samplers' functions differ, chi-square p = {p:.3g}"


@pytest.mark.parametrize("m, k", [(3, 3), (8, 8)])
@pytest.mark.parametrize("activation, depth", GRID)
def test_same_functions_boolean(activation, depth, m, k):
    # n = 6 < fan_in + 1 = 9: compact factors by Cholesky; n = 16 > 9: every K is singular, QR
    x = boolean_x(m, k)
    _assert_same_distribution(arch_of(activation, depth), x, seed=10 * m + depth)


@pytest.mark.parametrize("activation, depth", MNIST)
def test_same_functions_mnist(activation, depth):
    x = mnist_x()  # n = 5 points of 784 pixels: a rank-5 first-layer factor instead of 785 x 8 weights
    _assert_same_distribution(arch_of(activation, depth), x, seed=40 + depth)


def test_the_equivalence_test_rejects_a_wrong_variance(monkeypatch):
    """Power: the statistic above rejects (p far below the level) samplers with a wrong variance."""
    x = mnist_x()
    arch = arch_of("relu", 2)
    a = _codes(weight_outputs(arch, x, N_SAMPLES, 0))
    # the weight variance 1.5 times too large in every layer (the bias variance right)
    wrong = dataclasses.replace(arch, sigma_w=math.sqrt(1.5))
    assert homogeneity_pvalue(a, _codes(preactivation_outputs(wrong, x, N_SAMPLES, 1))) < 1e-20
    # the bias variance forgotten in the per-network factors of later layers only
    right = pre.compact_factor
    monkeypatch.setattr(pre, "compact_factor", lambda a_, scale, sigma_b: right(a_, scale, 0.0))
    compact = ("compact", "compact")
    assert homogeneity_pvalue(a, _codes(preactivation_outputs(arch, x, N_SAMPLES, 1, compact))) < LEVEL
    monkeypatch.undo()
    assert homogeneity_pvalue(a, _codes(preactivation_outputs(arch, x, N_SAMPLES, 1, compact))) > LEVEL


@pytest.mark.parametrize("dataset", ["mnist", "boolean"])
def test_prior_sampling_counts_agree_between_methods(dataset):
    """Through the public API: functions on E of the samples that fit S, and the non-fitting ones."""
    if dataset == "mnist":
        split = sampler.load_split("mnist", n_train=3, n_test=4, seed=1)
    else:
        split = sampler.load_split("boolean", n_train=4, n_test=6, seed=1, target="majority")
    arch = sampler.FCN(depth=2, width=16, activation="relu", sigma_w=1.0, sigma_b=0.3)
    n = 40_000
    w = sample_prior(arch, split, n, seed=0, method="weights", progress=False)
    p = sample_prior(arch, split, n, seed=0, method="preactivations", progress=False)
    assert w.n_fit > 500
    labels = [np.repeat(np.array(list(c) + ["not fit"]), [c[f] for f in c] + [c.n_runs - c.n_fit])
              for c in (w, p)]
    assert homogeneity_pvalue(*labels) > LEVEL


# --- seeding, resuming and errors ----------------------------------------------------------------------

def test_preactivation_stream_is_block_seeded_and_batch_independent(tmp_path):
    arch = sampler.FCN(depth=2, width=16, activation="tanh", sigma_b=0.2)
    split = sampler.load_split("mnist", n_train=4, n_test=5, seed=0)
    x = split.x_all()
    kw = dict(seed=3, block_size=256, method="preactivations")
    short = torch.cat(list(iter_prior_outputs(arch, x, 300, batch_size=7, **kw)))
    long = torch.cat(list(iter_prior_outputs(arch, x, 700, batch_size=100, **kw)))
    torch.testing.assert_close(short, long[:300], rtol=0, atol=0)
    weights = torch.cat(list(iter_prior_outputs(arch, x, 300, seed=3, block_size=256, method="weights")))
    assert not torch.equal(short, weights)
    auto = torch.cat(list(iter_prior_outputs(arch, x, 300, seed=3, block_size=256)))
    torch.testing.assert_close(auto, short, rtol=0, atol=0)  # "auto" is "preactivations" for an FCN
    kw = dict(seed=5, block_size=512, progress=False)
    a = sample_prior(arch, split, 3000, batch_size=100, **kw)
    b = sample_prior(arch, split, 3000, batch_size=512, run_folder=tmp_path, shard_size=1024, **kw)
    assert a == b and a.n_fit > 0
    sampler.RunFolder(tmp_path).shard_path("prior", 1).unlink()  # an interrupted run resumes
    assert sample_prior(arch, split, 3000, run_folder=tmp_path, shard_size=1024, **kw) == a
    with pytest.raises(ValueError, match="written by another config"):  # shards remember the sampler
        sample_prior(arch, split, 3000, run_folder=tmp_path, shard_size=1024, method="weights", **kw)


def test_duplicate_points_get_the_same_sign():
    # a split whose points repeat: every network must give repeated points the same output sign
    x = mnist_x(3, 3)[[0, 1, 2, 2, 3, 4, 0, 5]]
    for kinds in (None, ("compact", "compact")):
        out = preactivation_outputs(sampler.FCN(depth=2, width=16, sigma_b=0.1), x, 20_000, 0, kinds)
        assert torch.equal(out[:, 2] > 0, out[:, 3] > 0) and torch.equal(out[:, 0] > 0, out[:, 6] > 0)


def test_method_errors_name_the_parameter():
    split = sampler.load_split("boolean", n_train=2, n_test=4, seed=0, target="majority")
    with pytest.raises(ValueError, match="method must be one of"):
        sample_prior(sampler.FCN(depth=1, width=4), split, 10, seed=0, method="weight", progress=False)
    with pytest.raises(ValueError, match="method='preactivations' samples FCNs only, got arch kind 'lstm'"):
        sample_prior(sampler.LSTM(hidden=3), split, 10, seed=0, method="preactivations", progress=False)
    assert resolve_method(sampler.LSTM(hidden=3), "auto") == "weights"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu_distribution():
    x = mnist_x()
    arch = arch_of("relu", 2)
    cpu = _codes(weight_outputs(arch, x, N_SAMPLES, 0))
    cuda = torch.cat(list(iter_prior_outputs(arch, x, N_SAMPLES, seed=1, device="cuda")))
    assert cuda.device.type == "cuda"
    assert homogeneity_pvalue(cpu, _codes(cuda)) > LEVEL
