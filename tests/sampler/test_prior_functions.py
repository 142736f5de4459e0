"""The m = 0 prior sampler against an independent sampler of random weights (numpy, written here)."""

import numpy as np
import pytest

import sampler
from analysis.stats import homogeneity
from sampler.data import boolean_inputs
from sampler.prior_functions import sample_prior_functions

X = boolean_inputs()[:16].astype(np.float64)  # 16 points: 2^16 possible functions, a few hundred likely


def numpy_weights_sampler(arch, x, n, seed):
    """Functions of ``n`` FCNs whose weights are drawn directly (standard parameterisation)."""
    rng = np.random.default_rng(seed)
    phi = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[arch.activation]
    h = np.broadcast_to(x, (n, *x.shape))
    sizes = [x.shape[1]] + [arch.width] * arch.depth + [1]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0, arch.sigma_w / np.sqrt(a), size=(n, a, b))
        z = h @ w + rng.normal(0, arch.sigma_b, size=(n, 1, b))
        h = phi(z) if i < arch.depth else z
    return (h[..., 0] > 0).astype(np.uint8)


def _table(counts_a, counts_b):
    fa = dict(zip(counts_a.strings(), counts_a.counts))
    fb = dict(zip(counts_b.strings(), counts_b.counts))
    keys = sorted(set(fa) | set(fb))
    return [fa.get(k, 0) for k in keys], [fb.get(k, 0) for k in keys]


@pytest.mark.parametrize("arch", [sampler.FCN(depth=2, width=8, activation="relu", sigma_w=2.0, sigma_b=0.5),
                                  sampler.FCN(depth=1, width=16, activation="tanh", sigma_w=3.0, sigma_b=0.3)],
                         ids=["relu", "tanh"])
def test_same_distribution_as_drawing_weights(arch):
    n = 20_000
    ours = sample_prior_functions(arch, X, n, seed=1, progress=False)
    theirs = sampler.packed.PackedCounts.from_bits(numpy_weights_sampler(arch, X, n, seed=2))
    a, b = _table(ours, theirs)
    test = homogeneity(a, b)
    assert test.dof >= 10  # enough cells for the test to mean something
    assert test.pvalue > 1e-3, test  # a false alarm once in 1000 seeds; a wrong sampler fails at p ~ 0


def test_reproducible_and_independent_of_batch_size():
    arch = sampler.FCN(depth=2, width=8, sigma_w=1.5, sigma_b=0.5)
    a = sample_prior_functions(arch, X, 3000, seed=4, progress=False)
    b = sample_prior_functions(arch, X, 3000, seed=4, batch_size=97, progress=False)
    c = sample_prior_functions(arch, X, 3000, seed=5, progress=False)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.counts, b.counts)
    assert not (a.n_functions == c.n_functions and np.array_equal(a.counts, c.counts)
                and np.array_equal(a.codes, c.codes))
    assert a.k == 16 and a.n_samples == 3000


def test_bad_input():
    arch = sampler.FCN(depth=1, width=4)
    with pytest.raises(ValueError, match="n_samples"):
        sample_prior_functions(arch, X, 0, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"x must have shape \(k, d\)"):
        sample_prior_functions(arch, X[0], 10, seed=0, progress=False)
