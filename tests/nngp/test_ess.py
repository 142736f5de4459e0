import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from nngp.ess import ess_posterior, ess_sample, kernel_factor


def orthant(K, signs):
    """P[sign(g_i) == signs_i for all i], g ~ N(0, K), by scipy's Genz integrator."""
    d = np.diag(np.asarray(signs, float))
    return multivariate_normal(mean=np.zeros(len(signs)), cov=d @ K @ d, abseps=1e-7,
                               releps=1e-6).cdf(np.zeros(len(signs)))


def orthant3(K, signs):
    """Closed form for 3 dimensions: 1/8 + sum of arcsin(correlations) / (4 pi)."""
    d = np.diag(np.asarray(signs, float))
    C = d @ K @ d
    sd = np.sqrt(np.diag(C))
    R = C / np.outer(sd, sd)
    return 1 / 8 + (math.asin(R[0, 1]) + math.asin(R[0, 2]) + math.asin(R[1, 2])) / (4 * math.pi)


def relu_kernel(x, sigma_w=1.0, sigma_b=0.2):
    """Closed-form NNGP kernel of a 1-hidden-layer ReLU FCN (arc-cosine kernel of degree 1)."""
    d = x.shape[1]
    q = sigma_b ** 2 + sigma_w ** 2 * x @ x.T / d
    diag = np.sqrt(np.diag(q))
    cos = np.clip(q / np.outer(diag, diag), -1, 1)
    th = np.arccos(cos)
    return sigma_b ** 2 + sigma_w ** 2 * np.outer(diag, diag) * (np.sin(th) + (np.pi - th) * cos) / (2 * np.pi)


def random_psd(n, seed):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    return B @ B.T + 0.1 * np.eye(n)


def check_against_exact(K, y, m, res):
    """Each sign pattern of g_E | S: pooled frequency vs exact ratio of orthant probabilities.

    Tolerance: 5 standard errors from the spread of the per-chain frequencies (chains are
    independent, so this accounts for autocorrelation within chains).
    """
    k = K.shape[0] - m
    s_train = 2 * np.asarray(y) - 1
    p_s = orthant(K[:m, :m], s_train)
    for bits in itertools.product("01", repeat=k):
        f = "".join(bits)
        signs = np.concatenate([s_train, 2 * np.array(list(map(int, bits))) - 1])
        exact = orthant(K, signs) / p_s
        if K.shape[0] == 3:
            assert orthant(K, signs) == pytest.approx(orthant3(K, signs), abs=1e-6)
        per_chain = res.chain_frequencies(f)
        se = per_chain.std(ddof=1) / math.sqrt(len(per_chain))
        assert abs(per_chain.mean() - exact) < 5 * se + 2e-3, (f, per_chain.mean(), exact, se)


def test_one_constraint_two_test_points_random_kernel():
    K = random_psd(3, seed=0)
    res = ess_sample(K, [1], 1, n_samples=32 * 600, n_chains=32, burn_in=50, seed=1, diagnostics=False)
    assert res.test_bits.shape == (32, 600, 2)
    assert res.counts.n_fit == res.counts.n_runs == 32 * 600
    check_against_exact(K, [1], 1, res)


def test_two_constraints_arc_cosine_kernel():
    x = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    K = relu_kernel(x)
    res = ess_sample(K, [0, 1], 2, n_samples=32 * 600, n_chains=32, burn_in=50, seed=2, diagnostics=False)
    check_against_exact(K, [0, 1], 2, res)


def test_strongly_anticorrelated_constraints_and_thinning():
    # S's two points anti-correlated but both labelled 1: P(S) small, a thin feasible set.
    K = np.array([[1.0, -0.8, 0.3], [-0.8, 1.0, 0.0], [0.3, 0.0, 1.0]])
    assert orthant(K[:2, :2], [1, 1]) < 0.11
    res = ess_sample(K, [1, 1], 2, n_samples=32 * 400, n_chains=32, burn_in=50, thin=2, seed=3,
                     diagnostics=True)
    assert res.thin == 2 and res.proposals_per_step > 1
    assert res.rhat_max < 1.05
    check_against_exact(K, [1, 1], 2, res)


def test_no_constraint_is_gp_prior_sampling():
    K = random_psd(3, seed=4)
    res = ess_sample(K, [], 0, n_samples=16 * 500, n_chains=16, burn_in=10, seed=0, diagnostics=False)
    assert res.proposals_per_step == 1.0  # every proposal is accepted
    for bits in itertools.product("01", repeat=3):
        f = "".join(bits)
        per_chain = res.chain_frequencies(f)
        exact = orthant(K, 2 * np.array(list(map(int, bits))) - 1)
        assert abs(per_chain.mean() - exact) < 5 * per_chain.std(ddof=1) / 4 + 2e-3


def test_singular_kernel_with_duplicate_inputs():
    # Points 0 and 1 are the same input: K is singular and g_0 == g_1 always.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    K = relu_kernel(x)
    res = ess_sample(K, [1], 1, n_samples=400, n_chains=4, burn_in=10, seed=0, diagnostics=False)
    assert res.test_bits[:, :, 0].all()  # the duplicate of a positive training point is positive
    with pytest.raises(ValueError, match="P\\(S\\) may be 0"):
        ess_sample(K, [1, 0], 2, n_samples=10, seed=0)


def test_zero_variance_point_reads_as_label_zero():
    # The zero input of a bias-free network has K_ii = 0: g_i = 0 is label 0, like the network.
    K = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, 1.0]])
    res = ess_sample(K, [0, 1], 2, n_samples=400, n_chains=4, burn_in=10, seed=0, diagnostics=False)
    assert res.counts.n_fit == 400
    res = ess_sample(K[::-1, ::-1].copy(), [0, 1], 2, n_samples=400, n_chains=4, burn_in=10, seed=0,
                     diagnostics=False)
    assert not res.test_bits.any()  # the zero-variance test point is exactly 0 -> bit 0, never noise
    with pytest.raises(ValueError, match="P\\(S\\) may be 0"):
        ess_sample(K, [1, 1], 2, n_samples=10, seed=0)


def test_same_seed_same_samples_and_seed_matters():
    K = random_psd(4, seed=5)
    a = ess_sample(K, [1, 0], 2, n_samples=200, seed=7, diagnostics=False)
    b = ess_sample(K, [1, 0], 2, n_samples=200, seed=7, diagnostics=False)
    c = ess_sample(K, [1, 0], 2, n_samples=200, seed=8, diagnostics=False)
    np.testing.assert_array_equal(a.test_bits, b.test_bits)
    assert not np.array_equal(a.test_bits, c.test_bits)


def test_ess_posterior_with_explicit_kernel_on_a_split():
    import sampler

    split = sampler.load_split("boolean", n_train=3, n_test=2, seed=0, target="majority")
    x = split.x_all().double().numpy()
    K = relu_kernel(x, sigma_w=1.0, sigma_b=0.1)
    res = ess_posterior(sampler.FCN(depth=1, width=8), split, 16 * 300, seed=0, n_chains=16, burn_in=30,
                        K=K, diagnostics=False)
    check_against_exact(K, split.y_train.numpy(), 3, res)


def test_kernel_factor_reproduces_kernel():
    K = random_psd(6, seed=1)
    A = kernel_factor(K)
    torch.testing.assert_close(A @ A.T, torch.as_tensor(K), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K, y, m, kwargs, exc, match", [
    (np.ones((2, 3)), [1], 1, {}, ValueError, "square"),
    (np.array([[1.0, 0.5], [0.4, 1.0]]), [1], 1, {}, ValueError, "symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), [1], 1, {}, ValueError, "positive semi-definite"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), [1], 1, {}, ValueError, "non-finite"),
    (np.eye(2), [1, 0], 1, {}, ValueError, "y_train must have shape"),
    (np.eye(2), [2], 1, {}, ValueError, "0/1 labels"),
    (np.eye(2), [1, 0], 2, {}, ValueError, "test points"),
    (np.eye(2), [1], 3, {}, ValueError, "n_train must be <="),
    (np.eye(2), [1], 1, {"n_chains": 0}, ValueError, "n_chains"),
    (np.eye(2), [1], 1, {"thin": 0}, ValueError, "thin"),
    (np.eye(2), [1], 1, {"n_samples": 2.0}, TypeError, "n_samples"),
])
def test_bad_input_gives_named_errors(K, y, m, kwargs, exc, match):
    args = dict(n_samples=10, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ess_sample(K, y, m, **args)
