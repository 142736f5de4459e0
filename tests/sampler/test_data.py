import dataclasses
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sampler
from sampler.data import (binarize_labels, boolean_inputs, boolean_target, corrupt_labels, load_pool,
                          read_idx)


def test_shipped_mnist_is_the_real_test_split():
    pool = load_pool("mnist")
    assert pool.x.shape == (10_000, 784) and pool.input_shape == (1, 28, 28)
    # Label counts published with the data (../shared/data/mnist/README.md).
    assert np.bincount(pool.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert pool.x.min() == 0.0 and pool.x.max() == 1.0 and pool.x.dtype == np.float32


def test_shipped_files_match_published_checksums():
    folder = Path(sampler.__file__).parent / "data"
    sums = {"t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert "CC BY-SA" in (folder / "MNIST-LICENSE.md").read_text()


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_split_is_deterministic_disjoint_and_typed(seed):
    a = sampler.load_split("mnist", n_train=500, n_test=100, seed=seed)
    b = sampler.load_split("mnist", n_train=500, n_test=100, seed=seed)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not set(a.train_index) & set(a.test_index)
    assert a.x_train.shape == (500, 784) and a.x_test.shape == (100, 784)
    assert a.y_train.dtype == torch.int64 and a.x_train.dtype == torch.float32
    assert set(a.y_train.unique().tolist()) <= {0, 1}
    c = sampler.load_split("mnist", n_train=500, n_test=100, seed=seed + 1)
    assert not np.array_equal(a.test_index, c.test_index)


def test_half_binarisation_maps_digits_0_4_to_0_and_5_9_to_1():
    pool = load_pool("mnist")
    split = sampler.load_split("mnist", n_train=200, n_test=50, seed=3)
    digits = pool.labels[split.train_index]
    assert torch.equal(split.y_train, torch.from_numpy((digits >= 5).astype(np.int64)))
    assert binarize_labels(np.arange(10), 10, "parity").tolist() == [0, 1] * 5
    assert binarize_labels(np.arange(3), 3, "half").tolist() == [0, 0, 1]  # ceil(3/2) = 2


def test_boolean_system():
    x = boolean_inputs()
    assert x.shape == (128, 7) and len({tuple(r) for r in x}) == 128
    parity = boolean_target("parity")
    assert parity == "".join(str(int(r.sum()) % 2) for r in x)
    split = sampler.load_split("boolean", n_train=64, n_test=64, seed=0, target="parity")
    assert split.n_train == 64 and split.n_test == 64 and split.input_shape == (7,)
    assert sorted(split.train_index.tolist() + split.test_index.tolist()) == list(range(128))
    target = "01" * 64
    s2 = sampler.load_split("boolean", n_train=32, n_test=96, seed=1, target=target)
    assert s2.y_test.tolist() == [int(target[i]) for i in s2.test_index]
    with pytest.raises(ValueError, match="length 128"):
        sampler.load_split("boolean", n_train=32, n_test=32, seed=0, target="0101")


def test_digits_ships():
    split = sampler.load_split("digits", n_train=100, n_test=50, seed=0)
    assert split.input_shape == (1, 8, 8) and split.x_train.shape == (100, 64)
    assert 0.0 <= split.x_train.min() and split.x_train.max() <= 1.0


@pytest.mark.parametrize("dataset, expected", [
    ("cifar10", "data_batch_1"), ("ionosphere", "ionosphere.data"), ("fashion-mnist", "train-images-idx3-ubyte"),
])
def test_pointed_at_datasets_name_missing_files(tmp_path, dataset, expected, monkeypatch):
    monkeypatch.setattr("sampler.data.FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        sampler.load_split(dataset, n_train=10, n_test=10, seed=0, data_dir=tmp_path)
    assert expected in str(err.value) and str(tmp_path) in str(err.value)


def test_mnist_data_dir_without_files_is_named_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        sampler.load_split("mnist", n_train=10, n_test=10, seed=0, data_dir=tmp_path)


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_is_read_for_fashion_mnist(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(30, 28, 28))
    labels = rng.integers(0, 10, size=30)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    split = sampler.load_split("fashion-mnist", n_train=20, n_test=10, seed=0, data_dir=tmp_path)
    np.testing.assert_allclose(split.x_train[0].numpy(), imgs[split.train_index[0]].ravel() / 255.0, rtol=1e-6)


def test_ionosphere_csv(tmp_path):
    rows = [",".join(["0.5"] * 34 + ["g" if i % 3 else "b"]) for i in range(40)]
    (tmp_path / "ionosphere.data").write_text("\n".join(rows))
    split = sampler.load_split("ionosphere", n_train=30, n_test=10, seed=0, data_dir=tmp_path)
    assert split.input_shape == (34,)


def test_cifar10_batches(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, size=(4, 3072)).astype(np.uint8), b"labels": list(range(4))}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    split = sampler.load_split("cifar10", n_train=10, n_test=5, seed=0, data_dir=tmp_path)
    assert split.input_shape == (3, 32, 32) and split.x_train.shape == (10, 3072)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_train=-5), "n_train must be >= 1, got n_train=-5"),
    (dict(n_train=9990, n_test=100), "n_train \\+ n_test must be <= the pool size 10000"),
    (dict(binarize="thirds"), "binarize must be one of"),
])
def test_bad_split_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sampler.load_split("mnist", **{"n_train": 10, "n_test": 10, "seed": 0, **kwargs})


def test_unknown_dataset_suggests_nearest():
    with pytest.raises(ValueError, match="did you mean 'mnist'"):
        sampler.load_split("mnsit", n_train=10, n_test=10, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_label_corruption_replaces_the_exact_fraction(fraction):
    split = sampler.load_split("mnist", n_train=200, n_test=20, seed=0)
    bad = corrupt_labels(split, fraction, seed=7)
    assert len(bad.corrupted_index) == round(fraction * 200) == len(set(bad.corrupted_index.tolist()))
    untouched = np.setdiff1d(np.arange(200), bad.corrupted_index)
    assert torch.equal(bad.y_train[untouched], split.y_train[untouched])
    assert torch.equal(bad.y_test, split.y_test)
    again = corrupt_labels(split, fraction, seed=7)
    assert torch.equal(again.y_train, bad.y_train)
    if fraction == 1.0:  # random labels: about half differ from the truth (binomial, 5 sigma)
        changed = int((bad.y_train != split.y_train).sum())
        assert abs(changed - 100) < 5 * np.sqrt(200 * 0.25)


# --- Split validates itself; the user's own arrays ------------------------------------------------
def _arrays(rng, m=6, k=3, d=4):
    return dict(x_train=rng.random((m, d)), y_train=rng.integers(0, 2, m), x_test=rng.random((k, d)),
                y_test=rng.integers(0, 2, k))


def test_split_from_arrays_round_trip():
    rng = np.random.default_rng(0)
    a = _arrays(rng)
    s = sampler.Split.from_arrays(**a)
    assert (s.n_train, s.n_test, s.input_shape) == (6, 3, (4,))
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    np.testing.assert_array_equal(s.y_test.numpy(), a["y_test"])
    img = sampler.Split.from_arrays(rng.random((5, 1, 2, 3)), [0, 1, 0, 1, 1], rng.random((2, 1, 2, 3)), [1, 0])
    assert img.input_shape == (1, 2, 3) and img.x_train.shape == (5, 6)


@pytest.mark.parametrize("change, error, words", [
    (dict(y_train=[0, 1, 2, 0, 1, 0]), ValueError, "y_train must hold labels in {0, 1}, got 2"),
    (dict(y_test=[0, 1]), ValueError, "y_test must have one label per row of x_test"),
    (dict(x_test=np.zeros((0, 4)), y_test=[]), ValueError, "x_test must not be empty"),
    (dict(x_train=np.full((6, 4), np.nan)), ValueError, "x_train holds NaN"),
    (dict(x_train=np.array([["a"] * 4] * 6)), TypeError, "x_train must hold real numbers"),
    (dict(x_train=np.ones((6, 4)) * 1j), TypeError, "x_train must be real"),
    (dict(x_test=np.ones((3, 5))), ValueError, "same example shape"),
])
def test_split_from_arrays_rejects_bad_input(change, error, words):
    a = _arrays(np.random.default_rng(1))
    a.update(change)
    with pytest.raises(error, match=re.escape(words)):
        sampler.Split.from_arrays(**a)


def test_hand_built_split_is_validated():
    s = sampler.load_split("boolean", n_train=8, n_test=4, seed=0, target="parity")
    with pytest.raises(ValueError, match=r"Split.y_train must hold labels in \{0, 1\}, got 2"):
        dataclasses.replace(s, y_train=torch.tensor([0, 2, 1, 0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="Split.x_train and Split.y_train must have the same length"):
        dataclasses.replace(s, y_train=s.y_train[:5])
    with pytest.raises(ValueError, match="Split.x_test must not be empty"):
        dataclasses.replace(s, x_test=s.x_test[:0], y_test=s.y_test[:0])
    with pytest.raises(ValueError, match="Split.input_shape"):
        dataclasses.replace(s, input_shape=(3,))


def test_load_split_names_a_bad_data_dir_and_takes_sizes_by_keyword():
    with pytest.raises(TypeError, match="data_dir must be a path"):
        sampler.load_split("mnist", n_train=5, n_test=5, data_dir=123)
    with pytest.raises(TypeError):
        sampler.load_split("mnist", 5, 5)  # sizes and seed are keyword-only
