"""Orthant probabilities: EP, Genz and minimax tilting against exact values and each other."""

import math

import numpy as np
import pytest
import torch
from scipy import special

import nngp
import sampler
from nngp.ep import ep_orthant


def _biv(r):
    return torch.tensor([[1.0, r], [r, 1.0]], dtype=torch.float64)


def test_one_dimension_is_exact():
    K = torch.tensor([[2.5]], dtype=torch.float64)
    for y, mean in [(1, 0.7), (0, 0.7), (1, -3.0), (0, 40.0)]:
        res = nngp.orthant(K, [y], mean=[mean])
        s = 2 * y - 1
        assert res.log_prob == pytest.approx(special.log_ndtr(s * mean / math.sqrt(2.5)), rel=1e-9)
        assert res.converged and res.method == "exact" and res.stderr == 0.0


def test_independent_coordinates_are_exact():
    K = torch.diag(torch.tensor([1.0, 0.5, 3.0, 2.0], dtype=torch.float64))
    mean = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 0])
    s = 2 * y.double() - 1
    exact = float(special.log_ndtr((s * mean / torch.sqrt(torch.diagonal(K))).numpy()).sum())
    assert nngp.log_orthant(K, y, mean=mean) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("r", [-0.8, 0.3, 0.95, 0.99, 1 - 1e-6, 1 - 1e-9, -(1 - 1e-9)])
def test_bivariate_is_sheppard_exactly_whatever_the_method(r):
    """Guards (issue 26): EP was off Sheppard's formula by 0.08-0.12 nats at rho = 0.99 .. 1 - 1e-9."""
    exact_pp = math.log(0.25 + math.asin(r) / (2 * math.pi))  # Sheppard's formula
    exact_pm = math.log(0.25 - math.asin(r) / (2 * math.pi))
    for y, exact in [([1, 1], exact_pp), ([0, 0], exact_pp), ([1, 0], exact_pm)]:
        for method, seed in (("ep", None), ("genz", 0), ("tilting", 1)):
            res = nngp.orthant(_biv(r), y, method=method, seed=seed)
            assert res.log_prob == pytest.approx(exact, rel=1e-10, abs=1e-12) and res.method == "exact"
            assert res.converged and res.stderr == 0.0


def test_bivariate_with_a_mean_against_scipy():
    """n = 2 with a mean: the one-dimensional integral against scipy's bivariate normal CDF."""
    from scipy import stats

    rng = np.random.default_rng(26)
    for _ in range(12):
        a = rng.normal(size=(2, 2))
        K, y, mean = a @ a.T + 0.05 * np.eye(2), rng.integers(0, 2, 2), rng.normal(scale=1.5, size=2)
        s = 2.0 * y - 1.0
        want = math.log(stats.multivariate_normal.cdf(np.zeros(2), mean=-s * mean, cov=K * np.outer(s, s),
                                                      abseps=0.0, releps=1e-12))
        assert nngp.log_orthant(K, y, mean=mean) == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_rank_one_kernel_is_an_interval_of_one_gaussian():
    """Guards (issue 26): on K = v v^T with consistent signs EP did not converge in 200 iterations and
    returned -1.32 where the answer is ln(1/2)."""
    v = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1, 1.5], dtype=torch.float64)
    K = torch.outer(v, v)
    assert nngp.orthant(K, (v > 0).long()).log_prob == pytest.approx(math.log(0.5), rel=1e-12)
    assert nngp.orthant(K, (v < 0).long()).log_prob == pytest.approx(math.log(0.5), rel=1e-12)
    # g = mean + v z: with this mean, g_1 > 0 asks z > -0.8 and g_3 > 0 asks z > 0.4 (the others: z < ...)
    mean = torch.tensor([0.8, 0.0, -0.2, 0.0, 0.0, 0.0], dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 1, 0, 1])
    assert nngp.log_orthant(K, y, mean=mean) == pytest.approx(math.log(special.ndtr(-0.4)), rel=1e-12)
    with pytest.warns(RuntimeWarning, match="exactly 0"):
        assert nngp.log_orthant(K, torch.tensor([1, 1, 1, 1, 1, 1])) == -math.inf


@pytest.mark.parametrize("z", [41.0, 1e2, 1e3, 1e4])
def test_extreme_means_give_a_finite_log_probability(z):
    """Guards (issue 26): a mean of +1e4 with the opposite label raised FloatingPointError ('non-finite
    site parameters'). n = 1 and 2 are closed forms; n = 3 reduces the far-off constraint (its tail,
    by Gauss-Laguerre quadrature) to orthant problems of the other two, checked here against a
    one-dimensional adaptive quadrature of the same conditional problems."""
    from scipy import integrate

    from nngp.orthant_exact import exact_log_orthant

    assert nngp.log_orthant(np.eye(1), [0], mean=[z]) == pytest.approx(special.log_ndtr(-z), rel=1e-12)
    K2 = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    # the bulk of the mass sits at g_1 = 0-, where g_2 ~ N(0.3 - 0.5 z, 0.75): the second factor matters
    two = nngp.log_orthant(K2, [0, 1], mean=[z, 0.3])
    assert math.isfinite(two) and two < special.log_ndtr(-z) + special.log_ndtr((0.3 - 0.5 * z) / math.sqrt(0.75)) + 1
    K3 = torch.tensor([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]], dtype=torch.float64)
    y3, m3 = torch.tensor([0, 1, 1]), torch.tensor([z, 0.0, 0.2], dtype=torch.float64)
    got = nngp.orthant(K3, y3, mean=m3)
    assert math.isfinite(got.log_prob) and got.converged

    k = K3[1:, 0]
    cond_K = K3[1:, 1:] - torch.outer(k, k)

    def log_integrand(g1):  # log N(g1; z, 1) + log P[rest | g1] for g1 < 0, less the constant -z^2/2 - log(2 pi)/2
        return -0.5 * g1 * g1 + g1 * z + exact_log_orthant(cond_K, y3[1:].double(), m3[1:] + k * (g1 - z))

    top = log_integrand(0.0)
    val, _ = integrate.quad(lambda g: math.exp(log_integrand(g) - top), -50.0 / z, 0.0, epsabs=0, epsrel=1e-10,
                            points=[-1.0 / z, -0.1 / z])
    assert got.log_prob == pytest.approx(top + math.log(val) - 0.5 * z * z - 0.5 * math.log(2 * math.pi), rel=1e-9)


def test_far_tail_truncated_variance_is_accurate():
    """The truncated normal's variance far in the tail (EP's site update) against 60-digit arithmetic:
    1 - r (z + r) loses every digit there (relative error eps z^4)."""
    mp = pytest.importorskip("mpmath")
    from nngp.ep import truncated_moments

    mp.mp.dps = 60
    for z in (-10.0, -49.0, -51.0, -200.0, -1e4):
        a = mp.mpf(-z)
        lam = mp.npdf(a) / (mp.erfc(a / mp.sqrt(2)) / 2)
        want = float(1 + a * lam - lam ** 2)
        _, _, var = truncated_moments(torch.tensor([z], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                                      torch.tensor([1.0], dtype=torch.float64))
        assert float(var) == pytest.approx(want, rel=1e-9)


def _nngp_problem(dataset, n, seed, random_labels):
    kw = {"target": "majority"} if dataset == "boolean" else {}
    split = sampler.load_split(dataset, n_train=n - 5, n_test=5, seed=seed, **kw)
    K = nngp.kernel(sampler.FCN(), split.x_all())
    y = torch.cat([split.y_train, split.y_test])
    if random_labels:
        y = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    return K, y


# Measured on these problems (n = 12, 20): |EP - Genz| from 0.0009 to 0.013 in log.
@pytest.mark.parametrize("dataset,n,random_labels", [("mnist", 20, False), ("mnist", 12, True),
                                                     ("boolean", 20, False), ("boolean", 12, True)])
def test_ep_and_tilting_against_genz_on_nngp_kernels(dataset, n, random_labels):
    K, y = _nngp_problem(dataset, n, 0, random_labels)
    g = nngp.orthant(K, y, method="genz", seed=0, maxpts=200_000, repeats=3)
    ep = nngp.orthant(K, y, method="ep")
    t = nngp.orthant(K, y, method="tilting", seed=0, n_samples=5000)
    assert ep.converged and t.converged
    assert abs(ep.log_prob - g.log_prob) < 0.03, (ep.log_prob, g.log_prob)
    assert abs(t.log_prob - g.log_prob) < 5 * math.hypot(t.stderr, g.stderr), (t.log_prob, t.stderr, g.log_prob)
    assert t.stderr < 0.05 and g.stderr < 0.01
    assert t.upper_bound >= g.log_prob - 5 * g.stderr


def test_sequential_equals_parallel_and_batched_equals_looped():
    K, y = _nngp_problem("mnist", 15, 1, False)
    par = ep_orthant(K, y)
    seq = ep_orthant(K, y, updates="sequential", damping=1.0)
    assert par.converged and seq.converged
    assert float(par.log_z) == pytest.approx(float(seq.log_z), abs=1e-6)
    torch.testing.assert_close(par.mean, seq.mean, rtol=1e-5, atol=1e-6)
    ys = torch.stack([y, 1 - y, torch.ones_like(y)])
    batched = ep_orthant(K, ys)
    looped = torch.stack([ep_orthant(K, yi).log_z for yi in ys])
    torch.testing.assert_close(batched.log_z, looped, rtol=0, atol=1e-7)


def test_tilting_is_reproducible_and_scales():
    K, y = _nngp_problem("mnist", 60, 2, False)
    a = nngp.orthant(K, y, method="tilting", seed=5, n_samples=2000)
    b = nngp.orthant(K, y, method="tilting", seed=5, n_samples=2000)
    assert a == b
    ep = nngp.orthant(K, y)
    assert a.converged and a.stderr < 0.05
    assert abs(a.log_prob - ep.log_prob) < 0.5  # EP is close, not exact, at n = 60
    assert a.upper_bound >= a.log_prob - 5 * a.stderr


def test_duplicate_inputs_psd_kernel():
    # two identical inputs: K is singular; consistent labels work, the B-form EP needs no jitter
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.cat([x, x[:1]])
    K = nngp.kernel(sampler.FCN(), x)
    y = torch.tensor([1, 0, 1, 1, 0, 1, 1])
    res = nngp.orthant(K, y)
    assert res.converged and math.isfinite(res.log_prob)
    less = nngp.orthant(K[:6, :6], y[:6])  # the duplicate adds no constraint (and is dropped)
    assert res.log_prob == pytest.approx(less.log_prob, abs=1e-12)
    t = nngp.orthant(K, y, method="tilting", seed=0, n_samples=2000)
    assert abs(t.log_prob - less.log_prob) < 5 * t.stderr + 0.05
    y_bad = y.clone()
    y_bad[-1] = 0
    with pytest.warns(RuntimeWarning, match="exactly 0"):
        assert nngp.log_orthant(K, y_bad) == -math.inf
    # singular without duplicates (rank 2): EP still runs, the tilting estimator asks for jitter
    A = torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.7, 0.7], [1.0, -0.5]], dtype=torch.float64)
    K3 = A @ A.T
    y3 = torch.tensor([1, 1, 1, 1])
    assert math.isfinite(nngp.orthant(K3, y3).log_prob)
    with pytest.raises(np.linalg.LinAlgError, match="jitter"):
        nngp.orthant(K3, y3, method="tilting", seed=0)


def test_input_checks():
    K = _biv(0.5)
    with pytest.raises(ValueError, match="did you mean 'genz'"):
        nngp.orthant(K, [1, 1], method="gens")
    with pytest.raises(ValueError, match="symmetric"):
        nngp.orthant(torch.tensor([[1.0, 0.5], [0.2, 1.0]]), [1, 1])
    with pytest.raises(ValueError, match="semi-definite"):
        nngp.orthant(torch.tensor([[1.0, 0.0, 0.9], [0.0, 1.0, 0.9], [0.9, 0.9, 1.0]]), [1, 1, 1])
    with pytest.raises(ValueError, match="semi-definite"):
        nngp.orthant(torch.tensor([[1.0, 2.0], [2.0, 1.0]]), [1, 1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        nngp.orthant(K, [1, -1])
    with pytest.raises(ValueError, match="n=2"):
        nngp.orthant(K, [1, 1, 0])
    with pytest.raises(ValueError, match="NaN"):
        nngp.orthant(torch.tensor([[float("nan")]]), [1])
    with pytest.raises(ValueError, match="seed"):
        nngp.orthant(K, [1, 1], method="tilting")
    with pytest.raises(ValueError, match="unknown option"):
        nngp.orthant(K, [1, 1], method="ep", n_samples=3)
    big = torch.eye(101, dtype=torch.float64)
    with pytest.raises(ValueError, match="n <= 100"):
        nngp.orthant(big, torch.ones(101), method="genz", seed=0)


def test_unconverged_ep_is_reported():
    K, y = _nngp_problem("mnist", 20, 0, False)
    res = nngp.orthant(K, y, max_iter=2)
    assert not res.converged and res.n_iter == 2 and res.max_change > 1e-6
    with pytest.warns(RuntimeWarning, match="did not converge"):
        nngp.log_orthant(K, y, max_iter=2)


def test_impossible_sign_pattern_under_singular_kernel_is_minus_infinity():
    K = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="probability is exactly 0"):
        assert nngp.log_orthant(K, [1, 1]) == -math.inf
    assert nngp.log_orthant(K, [1, 0]) > -1.0  # possible: P = 1/2
    # rank 2 in 3 dimensions, no collinear pair: g3 = g1 + g2 cannot be negative when g1, g2 > 0
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="probability is exactly 0"):
        assert nngp.log_orthant(A @ A.T, [1, 1, 0]) == -math.inf
    assert math.isfinite(nngp.log_orthant(A @ A.T, [1, 1, 1]))


def test_tiny_and_huge_kernels_give_the_scale_free_answer():
    K = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    exact = math.log(0.25 + math.asin(0.5 / math.sqrt(2.0)) / (2 * math.pi))  # Sheppard's formula
    values = [nngp.log_orthant(K * scale, [1, 1]) for scale in (1e-160, 1.0, 1e160)]
    assert max(values) - min(values) < 1e-12
    assert abs(values[1] - exact) < 2e-3  # EP's own error in two dimensions is ~5e-4 here
    with pytest.raises(ValueError, match="underflowed"):
        nngp.log_orthant(K * 1e-320, [1, 1])


@pytest.mark.parametrize("bad, error", [
    (torch.eye(2, dtype=torch.complex128), "K must be real"),
    (torch.eye(2).half(), "K must be float32 or float64"),
    (np.array([["a", "b"], ["c", "d"]]), "K must hold real numbers"),
])
def test_orthant_rejects_non_real_or_coarse_kernels(bad, error):
    with pytest.raises(TypeError, match=error):
        nngp.log_orthant(bad, [1, 1])
