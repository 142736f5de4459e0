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
        assert res.converged and res.method == "ep" and math.isnan(res.stderr)


def test_independent_coordinates_are_exact():
    K = torch.diag(torch.tensor([1.0, 0.5, 3.0, 2.0], dtype=torch.float64))
    mean = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 0])
    s = 2 * y.double() - 1
    exact = float(special.log_ndtr((s * mean / torch.sqrt(torch.diagonal(K))).numpy()).sum())
    assert nngp.log_orthant(K, y, mean=mean) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("r", [-0.8, 0.3, 0.95])
def test_bivariate_against_sheppard(r):
    exact_pp = math.log(0.25 + math.asin(r) / (2 * math.pi))  # Sheppard's formula
    exact_pm = math.log(0.25 - math.asin(r) / (2 * math.pi))
    for y, exact in [([1, 1], exact_pp), ([0, 0], exact_pp), ([1, 0], exact_pm)]:
        # EP is approximate; measured error up to 0.05 (r = 0.95, equal signs)
        assert nngp.log_orthant(_biv(r), y) == pytest.approx(exact, abs=0.1)
        g = nngp.orthant(_biv(r), y, method="genz", seed=0)
        assert g.log_prob == pytest.approx(exact, abs=1e-4)
        t = nngp.orthant(_biv(r), y, method="tilting", seed=1, n_samples=4000)
        assert abs(t.log_prob - exact) < 5 * t.stderr + 1e-12
        assert t.upper_bound >= exact - 1e-9


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
