"""The array dataset (``[data] dataset = "arrays"``): the user's own arrays on disk, validated."""

import numpy as np
import pytest
import torch

from sampler.data import load_arrays
from sgdbayes.case import DataConfig, split_for


def _split_arrays(rng, m=10, k=4, d=6):
    return {"x_train": rng.normal(size=(m, d)), "y_train": rng.integers(0, 2, m),
            "x_test": rng.normal(size=(k, d)), "y_test": rng.integers(0, 2, k)}


def test_npz_split_is_used_in_order_and_npy_folder_pool_is_split_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    a = _split_arrays(rng)
    np.savez(tmp_path / "s.npz", **a)
    split = load_arrays(tmp_path / "s.npz", n_train=8, n_test=4)
    torch.testing.assert_close(split.x_train, torch.as_tensor(a["x_train"][:8], dtype=torch.float32))
    assert split.y_test.tolist() == a["y_test"].tolist() and split.input_shape == (6,)
    folder = tmp_path / "pool"
    folder.mkdir()
    np.save(folder / "x.npy", rng.normal(size=(30, 2, 3)))
    np.save(folder / "y.npy", rng.integers(0, 4, 30))  # 4 classes: binarised (half: 2, 3 -> 1)
    s0 = split_for(DataConfig(dataset="arrays", path=str(folder), n_train=10, n_test=5, seed=0))
    s1 = split_for(DataConfig(dataset="arrays", path=str(folder), n_train=10, n_test=5, seed=1))
    assert s0.input_shape == (2, 3) and set(s0.y_train.tolist()) <= {0, 1}
    assert not torch.equal(s0.x_train, s1.x_train)


@pytest.mark.parametrize("change,error,match", [
    ({"y_train": np.array([0, 1, 2, 0, 1, 0, 1, 0, 1, 0])}, ValueError, r"s.npz.*y_train must hold labels in \{0, 1\}"),
    ({"x_test": np.full((4, 6), np.nan)}, ValueError, r"s.npz.*x_test"),
    ({"x_test": np.zeros((4, 5))}, ValueError, r"s.npz.*same example shape"),
    ({"y_test": np.zeros(3)}, ValueError, r"s.npz.*key 'y_test' must have one label per row"),
])
def test_bad_arrays_are_rejected_naming_file_and_key(tmp_path, change, error, match):
    a = {**_split_arrays(np.random.default_rng(1)), **change}
    np.savez(tmp_path / "s.npz", **a)
    with pytest.raises(error, match=match):
        load_arrays(tmp_path / "s.npz", n_train=8, n_test=3)


def test_missing_and_malformed_files_say_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder at .*nope.npz"):
        load_arrays(tmp_path / "nope.npz", n_train=2, n_test=2)
    np.savez(tmp_path / "w.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=r"must hold arrays named \['x_train'.*got \['a'\]"):
        load_arrays(tmp_path / "w.npz", n_train=2, n_test=2)
    np.savez(tmp_path / "s.npz", **_split_arrays(np.random.default_rng(2)))
    with pytest.raises(ValueError, match="key 'x_train' has 10 rows, data.n_train = 11"):
        load_arrays(tmp_path / "s.npz", n_train=11, n_test=2)
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="no x.npy in that folder"):
        load_arrays(tmp_path / "d", n_train=2, n_test=2)
    with pytest.raises(ValueError, match="data.path is required for dataset 'arrays'"):
        DataConfig(dataset="arrays")


# --- issue 26: files that broke inside numpy, each now one line naming the file and what was expected ---
def _files(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, **_split_arrays(np.random.default_rng(3)))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    objects = tmp_path / "objects"
    objects.mkdir()
    for k, v in _split_arrays(np.random.default_rng(4)).items():
        np.save(objects / f"{k}.npy", v.astype(object) if k == "x_train" else v, allow_pickle=True)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((5, 3)))
    empty_npy = tmp_path / "emptynpy"
    empty_npy.mkdir()
    for k, v in _split_arrays(np.random.default_rng(5)).items():
        np.save(empty_npy / f"{k}.npy", v)
    (empty_npy / "y_test.npy").write_bytes(b"")
    return {"empty": (empty, r"empty.npz'? is not a readable .npz file: it is empty \(0 bytes\); expected an .npz"),
            "truncated": (truncated, r"truncated.npz'? is not a readable .npz file: it is not a complete .npz \(zip\) "
                                     r"archive: truncated or damaged"),
            "objects": (objects, r"objects'?: x_train.npy is not a readable .npy array: it holds object arrays"),
            "plain": (plain, r"plain.npy'? holds a single .npy array of shape \(5, 3\); expected an .npz file"),
            "empty .npy": (empty_npy, r"emptynpy'?: y_test.npy is not a readable .npy array: it is empty")}


@pytest.mark.parametrize("which", ["empty", "truncated", "objects", "plain", "empty .npy"])
def test_unreadable_array_files_are_one_line_naming_the_file(tmp_path, which):
    """Guards (issue 26): EOFError, BadZipFile, numpy's allow_pickle message and a TypeError about a
    context manager, none naming data.path or saying what was expected."""
    path, match = _files(tmp_path)[which]
    with pytest.raises(ValueError, match=match) as info:
        load_arrays(path, n_train=4, n_test=2)
    assert "\n" not in str(info.value) and "data.path" in str(info.value)


@pytest.mark.parametrize("path", [None, "", 3])
def test_a_missing_path_is_named(path):
    """Guards (issue 26): load_arrays(path=None) raised pathlib's TypeError."""
    with pytest.raises(TypeError, match=r"data.path must be the path of an .npz file .*, got"):
        load_arrays(path, n_train=4, n_test=2)


def test_a_pickle_payload_is_never_executed(tmp_path):
    """A pickle whose loading would run code (here: create a file) is refused unloaded."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("payload.npz", "payload.npy"):
        (tmp_path / name).write_bytes(pickle.dumps(Payload()))
        with pytest.raises(ValueError, match=f"{name}'? .*(pickle|object arrays)"):
            load_arrays(tmp_path / name, n_train=4, n_test=2)
    folder = tmp_path / "folder"
    folder.mkdir()
    for k, v in _split_arrays(np.random.default_rng(6)).items():
        np.save(folder / f"{k}.npy", v)
    (folder / "x_train.npy").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="x_train.npy is not a readable .npy array"):
        load_arrays(folder, n_train=4, n_test=2)
    assert not marker.exists()
