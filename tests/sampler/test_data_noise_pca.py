"""Label noise (exact count of flipped labels, seeded) and the PCA-projected pool (against scikit-learn)."""

import numpy as np
import pytest
import torch

import sampler
from sampler.data import corrupt_labels, flip_labels, load_pool, pca_pool, split_pool


@pytest.fixture(scope="module")
def split():
    return sampler.load_split("digits", n_train=200, n_test=50, seed=3)


@pytest.mark.parametrize("fraction", [0.0, 0.15, 0.2, 0.333, 1.0])
def test_label_noise_flips_exactly_the_stated_number(split, fraction):
    noisy = flip_labels(split, fraction, seed=7)
    changed = (noisy.y_train != split.y_train).nonzero().flatten().numpy()
    assert len(changed) == round(fraction * split.n_train)
    np.testing.assert_array_equal(changed, noisy.flipped_index)
    assert torch.equal(noisy.y_test, split.y_test) and torch.equal(noisy.x_train, split.x_train)
    assert torch.equal(noisy.x_test, split.x_test)


def test_label_noise_same_seed_same_flips_other_seed_other_flips(split):
    a, b, c = (flip_labels(split, 0.2, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.y_train, b.y_train)
    assert not np.array_equal(a.flipped_index, c.flipped_index)
    assert "40 of S's labels flipped" in a.summary()


def test_label_noise_differs_from_corruption_which_replaces_by_random_bits(split):
    # corruption draws new bits, so only about half of the chosen labels change
    corrupted = corrupt_labels(split, 1.0, seed=0)
    assert 0.3 < float((corrupted.y_train != split.y_train).double().mean()) < 0.7
    assert bool((flip_labels(split, 1.0, seed=0).y_train != split.y_train).all())


@pytest.mark.parametrize("bad,match", [(-0.1, "label_noise"), (1.5, "label_noise")])
def test_label_noise_errors(split, bad, match):
    with pytest.raises(ValueError, match=match):
        flip_labels(split, bad, seed=0)


def test_pca_pool_matches_scikit_learn_whitened_pca():
    from sklearn.decomposition import PCA
    pool = load_pool("digits")
    got = pca_pool(pool, 10)
    ref = PCA(n_components=10, whiten=True, svd_solver="full").fit_transform(pool.x.astype(np.float64))
    # sklearn whitens with the unbiased variance (N - 1); ours with N; components agree up to sign
    ref = ref * np.sqrt(pool.size / (pool.size - 1))
    signs = np.sign((got.x * ref).sum(0))
    np.testing.assert_allclose(got.x, ref * signs, rtol=1e-4, atol=1e-4)
    assert got.input_shape == (10,) and got.x.dtype == np.float32
    np.testing.assert_allclose(got.x.astype(np.float64).var(0), 1.0, rtol=1e-5)
    # same split seed, same S and E as without the projection
    a, b = split_pool(pool, n_train=30, n_test=10, seed=4), split_pool(got, n_train=30, n_test=10, seed=4)
    np.testing.assert_array_equal(a.train_index, b.train_index)
    assert torch.equal(a.y_test, b.y_test)


@pytest.mark.parametrize("dim,match", [(0, "pca_dim"), (65, "pca_dim must be <= min")])
def test_pca_pool_errors(dim, match):
    with pytest.raises(ValueError, match=match):
        pca_pool(load_pool("digits"), dim)
