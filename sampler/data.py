"""Dataset pools, binarisation and seeded train/test splits.

A *pool* is a labelled set of examples ``x`` of shape ``(N, *input_shape)`` with integer class
labels. It is binarised (``half``: class >= ceil(C/2) -> 1; ``parity``: class % 2) and split by
a seed into a training set S of size m and a test set E of size k; E's order is fixed by the
split (docs/DESIGN.md).

Input scaling: image pixels are divided by their maximum possible value (255 for MNIST,
Fashion-MNIST and CIFAR-10, 16 for scikit-learn's digits) so they lie in [0, 1]; Ionosphere's
features are used as given (already in [-1, 1]); Boolean inputs are bits in {0, 1}. Inputs are
stored flattened, ``(n, d)`` with ``d = prod(input_shape)``; ``Split.input_shape`` says how to
unflatten them (``(C, H, W)`` for images).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .checks import check_choice, check_float, check_int, check_real_array
from .functions import check_bitstring
from .seeding import derive_seed

DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits", "ionosphere", "boolean")
BINARIZATIONS = ("half", "parity")
BOOLEAN_N = 7
BOOLEAN_TARGETS = ("parity", "majority", "constant", "first-bit", "alternating", "weight6")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Pool:
    """A labelled pool of examples of the dataset ``name``.

    Attributes
    ----------
    x : np.ndarray, float32, shape (N, d)
        Flattened, scaled inputs.
    labels : np.ndarray, int64, shape (N,)
        Class labels ``0..n_classes-1`` (for ``boolean``, already 0/1 target bits).
    source : str
        Where the pool was read from (a path or a description).
    """

    name: str
    x: np.ndarray
    labels: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    source: str

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Split:
    """A training set S and a test set E drawn from one pool.

    Attributes
    ----------
    x_train : torch.Tensor, float32, shape (m, d)
    y_train : torch.Tensor, int64 in {0, 1}, shape (m,)
    x_test : torch.Tensor, float32, shape (k, d)
    y_test : torch.Tensor, int64 in {0, 1}, shape (k,)
        E in the fixed order that defines functions as bitstrings.
    input_shape : tuple of int
        Shape of one example before flattening, e.g. ``(1, 28, 28)``.
    dataset, binarize, seed, source
        Provenance: dataset name, binarisation, split seed, where the pool came from.
    train_index, test_index : np.ndarray of int64
        Positions of S and E in the pool.
    corrupted_index : np.ndarray of int64
        Positions in S whose labels were replaced by random bits (see :func:`corrupt_labels`).
    flipped_index : np.ndarray of int64
        Positions in S whose labels were flipped, ``y -> 1 - y`` (label noise, :func:`flip_labels`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    dataset: str
    binarize: str
    seed: int
    source: str
    train_index: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    corrupted_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    flipped_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def __post_init__(self):
        for name in ("x_train", "x_test"):
            x = getattr(self, name)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"Split.{name} must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
            check_real_array(f"Split.{name}", x, ndim=2)
            if not x.is_floating_point():
                raise TypeError(f"Split.{name} must be a floating-point tensor, got {x.dtype}")
        for name in ("y_train", "y_test"):
            y = getattr(self, name)
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                got = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise TypeError(f"Split.{name} must be an int64 tensor of shape (n,), got {got}")
            bad = ~((y == 0) | (y == 1))
            if bool(bad.any()):
                raise ValueError(f"Split.{name} must hold labels in {{0, 1}}, got {int(y[bad][0])} "
                                 f"(at position {int(bad.nonzero()[0, 0])}); binarise the labels first")
        for x, y, what in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"Split.x_{what} and Split.y_{what} must have the same length, got "
                                 f"{x.shape[0]} and {y.shape[0]}")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(f"Split.x_train and Split.x_test must have the same width d, got "
                             f"{self.x_train.shape[1]} and {self.x_test.shape[1]}")
        shape = tuple(self.input_shape) if isinstance(self.input_shape, (tuple, list)) else None
        if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape) \
                or math.prod(shape) != self.x_train.shape[1]:
            raise ValueError(f"Split.input_shape must be a tuple of positive ints whose product is d = "
                             f"{self.x_train.shape[1]}, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)

    @classmethod
    def from_arrays(cls, x_train, y_train, x_test, y_test, *, input_shape: tuple[int, ...] | None = None,
                    name: str = "arrays") -> "Split":
        """A split of the user's own data.

        Parameters
        ----------
        x_train, y_train : arrays or tensors, shapes (m, d) / (m, *input_shape) and (m,)
            Training inputs (real, finite; stored as float32) and labels in {0, 1} (bool or integers).
        x_test, y_test : shapes (k, d) / (k, *input_shape) and (k,)
            The test set E, in the order that defines functions as bitstrings.
        input_shape : tuple of int, optional
            Shape of one example (e.g. ``(1, 28, 28)`` for a CNN); default the inputs' own
            trailing shape, or ``(d,)`` for 2-d inputs.
        name : str
            Recorded as the split's dataset name.
        """
        xs, ys = [], []
        for xname, x, yname, y in (("x_train", x_train, "y_train", y_train), ("x_test", x_test, "y_test", y_test)):
            xa = check_real_array(xname, x)
            if xa.ndim < 2:
                raise ValueError(f"{xname} must have shape (n, d) or (n, *input_shape), got shape {xa.shape}")
            ya = check_real_array(yname, y, ndim=1)
            if ya.shape[0] != xa.shape[0]:
                raise ValueError(f"{yname} must have one label per row of {xname} ({xa.shape[0]}), got {ya.shape[0]}")
            if not np.isin(ya, (0, 1)).all():
                bad = ya[~np.isin(ya, (0, 1))][0].item()
                raise ValueError(f"{yname} must hold labels in {{0, 1}}, got {bad!r}; binarise the labels first")
            xs.append(xa)
            ys.append(ya)
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise ValueError(f"x_train and x_test must have the same example shape, got {xs[0].shape[1:]} "
                             f"and {xs[1].shape[1:]}")
        shape = tuple(int(v) for v in (input_shape if input_shape is not None else xs[0].shape[1:]))
        flat = [torch.from_numpy(np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)) for x in xs]
        labels = [torch.from_numpy(y.astype(np.int64)) for y in ys]
        m, k = flat[0].shape[0], flat[1].shape[0]
        return cls(flat[0], labels[0], flat[1], labels[1], shape, name, "given", 0, "user arrays",
                   np.arange(m, dtype=np.int64), np.arange(m, m + k, dtype=np.int64))

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def test_target(self) -> str:
        """E's true labels as a bitstring (the zero-error function)."""
        return "".join(str(int(v)) for v in self.y_test.tolist())

    def x_all(self) -> torch.Tensor:
        """S then E stacked, shape ``(m + k, d)``."""
        return torch.cat([self.x_train, self.x_test])

    def summary(self) -> str:
        """A short human-readable description of the split."""
        m, k = self.n_train, self.n_test
        return "\n".join([
            f"dataset     {self.dataset}  ({self.source})",
            f"binarize    {self.binarize}",
            f"split seed  {self.seed}",
            f"input shape {self.input_shape}  (d = {self.x_train.shape[1]})",
            f"train S     m = {m}, class 1 share {self.y_train.float().mean().item():.3f}",
            f"test E      k = {k}, class 1 share {self.y_test.float().mean().item():.3f}",
            f"corrupted   {len(self.corrupted_index)} of S's labels replaced by random bits",
            f"flipped     {len(self.flipped_index)} of S's labels flipped (label noise)",
        ])


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its stored dtype (uint8)."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            data = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a truncated or damaged .gz
        raise ValueError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, shorter than its {ndim}-dimension header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):
        raise ValueError(f"{path} is truncated or corrupt: its header says {dims} ({math.prod(dims)} values) but it "
                         f"holds {arr.size}")
    return arr.reshape(dims)


def _find(directory: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for candidate in (directory / stem, directory / (stem + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _missing(dataset: str, files: list[str], where: list[Path], hint: str = "") -> FileNotFoundError:
    places = ", ".join(str(w) for w in where) or "(no folder given: pass data_dir)"
    return FileNotFoundError(
        f"dataset {dataset!r} needs the files {files} (optionally .gz); looked in: {places}. {hint}".strip())


def _idx_pool(name: str, images: Path, labels: Path, source: str) -> Pool:
    x = read_idx(images)
    y = read_idx(labels).astype(np.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels")
    x = x.reshape(x.shape[0], -1).astype(np.float32) / 255.0
    return Pool(name, x, y, 10, (1, 28, 28), source)


def _idx_from_dir(name: str, directory: Path) -> Pool | None:
    """The training IDX files of ``directory`` if there, else its test (t10k) files, else None."""
    for part in ("train", "t10k"):
        images = _find(directory, [f"{part}-images-idx3-ubyte", f"{part}-images.idx3-ubyte"])
        labels = _find(directory, [f"{part}-labels-idx1-ubyte", f"{part}-labels.idx1-ubyte"])
        if images and labels:
            return _idx_pool(name, images, labels, str(directory))
    return None


def _mnist(data_dir: Path | None) -> Pool:
    if data_dir is not None:
        pool = _idx_from_dir("mnist", data_dir)
        if pool is None:
            raise _missing("mnist", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"], [data_dir],
                           "Leave data_dir empty to use the MNIST test split that ships with sgd-bayes.")
        return pool
    shipped = resources.files("sampler") / "data"
    with resources.as_file(shipped) as folder:
        folder = Path(folder)
        return _idx_pool("mnist", folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz",
                         "MNIST test split shipped with sgd-bayes (CC BY-SA 3.0)")


def _fashion(data_dir: Path | None) -> Pool:
    where = [d for d in (data_dir, FASHION_MNIST_SYSTEM_DIR) if d is not None]
    for directory in where:
        if directory.is_dir():
            pool = _idx_from_dir("fashion-mnist", directory)
            if pool is not None:
                return pool
    raise _missing("fashion-mnist", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"], where,
                   "On Debian, `apt-get install dataset-fashion-mnist` puts them in "
                   f"{FASHION_MNIST_SYSTEM_DIR}.")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``(n, 3072)`` uint8 and labels ``(n,)``; a truncated or
    damaged file is a ValueError naming it."""
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except (EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"{path} is truncated or not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
                         f"download it again") from None
    if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: data of shape {x.shape} (expected (n, 3072)), "
                         f"labels of shape {y.shape}")
    return x, y


def _cifar10(data_dir: Path | None) -> Pool:
    names = [f"data_batch_{i}" for i in range(1, 6)]
    where = [] if data_dir is None else [data_dir, data_dir / "cifar-10-batches-py"]
    for directory in where:
        if all((directory / n).is_file() for n in names):
            xs, ys = zip(*(_cifar_batch(directory / n) for n in names))
            x = np.concatenate(xs).astype(np.float32) / 255.0
            return Pool("cifar10", x, np.concatenate(ys), 10, (3, 32, 32), str(directory))
    raise _missing("cifar10", names, where, "Point data_dir at the CIFAR-10 'python version' folder.")


def _digits() -> Pool:
    from sklearn.datasets import load_digits  # slow to import: only for this dataset

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    return Pool("digits", x, bunch.target.astype(np.int64), 10, (1, 8, 8), "scikit-learn bundled digits")


def _ionosphere(data_dir: Path | None) -> Pool:
    stems = ["ionosphere.data", "ionosphere.csv"]
    where = [] if data_dir is None else [data_dir]
    path = next((d / stem for d in where for stem in stems if (d / stem).is_file()), None)
    if path is not None:
        rows = [line.strip().split(",") for line in path.read_text().splitlines() if line.strip()]
        try:
            x = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float32)
        except ValueError as exc:
            raise ValueError(f"{path}: expected 34 numeric columns then a 'g'/'b' label ({exc})") from exc
        classes = sorted({r[-1] for r in rows})
        if len(classes) != 2:
            raise ValueError(f"{path}: expected 2 classes in the last column, found {classes}")
        y = np.array([classes.index(r[-1]) for r in rows], dtype=np.int64)
        return Pool("ionosphere", x, y, 2, (x.shape[1],), str(path))
    raise _missing("ionosphere", stems, where, "The UCI Ionosphere CSV: 34 features then 'g' or 'b'.")


def boolean_inputs(n: int = BOOLEAN_N) -> np.ndarray:
    """All ``2**n`` inputs of ``n`` bits, row i is the binary expansion of i (MSB first), float32 0/1."""
    idx = np.arange(2 ** n)
    return ((idx[:, None] >> np.arange(n - 1, -1, -1)) & 1).astype(np.float32)


def boolean_target(target: str, *, n: int = BOOLEAN_N) -> str:
    """A named Boolean target (``parity``, ``majority``, ``constant``, ``first-bit``,
    ``alternating``, ``weight6``) or a ``2**n``-character bitstring, as the bitstring over all inputs."""
    size = 2 ** n
    if not isinstance(target, str):
        raise TypeError(f"target must be a {size}-character bitstring or one of {list(BOOLEAN_TARGETS)}, "
                        f"got {type(target).__name__}")
    if target in BOOLEAN_TARGETS:
        x = boolean_inputs(n).astype(int)
        ones = x.sum(1)
        bits = {
            "parity": ones % 2,
            "majority": (ones > n / 2).astype(int),
            "constant": np.zeros(size, dtype=int),
            "first-bit": x[:, 0],
            "alternating": np.arange(size) % 2,
            "weight6": (ones >= 6).astype(int),  # 1 on inputs with >= 6 ones: 8 of 128 for n = 7 (LZ 49)
        }[target]
        return "".join(map(str, bits))
    if set(target) <= {"0", "1"} and target:
        return check_bitstring("target", target, length=size)
    raise ValueError(f"target must be a {size}-character bitstring or one of {list(BOOLEAN_TARGETS)}, "
                     f"got {target[:40]!r}")


def _boolean(target: str) -> Pool:
    bits = boolean_target(target)
    y = np.frombuffer(bits.encode(), dtype=np.uint8).astype(np.int64) - ord("0")
    return Pool("boolean", boolean_inputs(), y, 2, (BOOLEAN_N,), f"all 2^{BOOLEAN_N} inputs, target {bits[:16]}...")


def load_pool(dataset: str, *, data_dir: str | os.PathLike | None = None, target: str | None = None) -> Pool:
    """The labelled pool of ``dataset``.

    ``data_dir`` is the folder holding the dataset's files where it does not ship: for ``mnist`` an
    empty value uses the shipped MNIST test split (10,000 images), a folder with the training IDX
    files those (60,000). ``target``: see :func:`load_split`.
    """
    check_choice("dataset", dataset, DATASETS)
    if data_dir in ("", None):
        folder = None
    elif not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got {data_dir!r} ({type(data_dir).__name__})")
    else:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data_dir={str(data_dir)!r} is not a folder")
    if target is not None and dataset != "boolean":
        raise ValueError(f"target is only for dataset='boolean', got target with dataset={dataset!r}")
    if dataset == "boolean":
        return _boolean("parity" if target is None else target)
    if dataset == "digits":
        return _digits()
    return {"mnist": _mnist, "fashion-mnist": _fashion, "cifar10": _cifar10, "ionosphere": _ionosphere}[dataset](folder)


def binarize_labels(labels: np.ndarray, n_classes: int, how: str) -> np.ndarray:
    """0/1 labels from class labels: ``half`` (class >= ceil(C/2) -> 1) or ``parity`` (class % 2)."""
    check_choice("binarize", how, BINARIZATIONS)
    labels = np.asarray(labels, dtype=np.int64)
    if how == "half":
        return (labels >= math.ceil(n_classes / 2)).astype(np.int64)
    return (labels % 2).astype(np.int64)


def split_pool(pool: Pool, *, n_train: int, n_test: int, seed: int, binarize: str = "half") -> Split:
    """Seeded disjoint split of ``pool`` into S (``n_train``) and E (``n_test``)."""
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    check_choice("binarize", binarize, BINARIZATIONS)
    if n_train + n_test > pool.size:
        raise ValueError(f"n_train + n_test must be <= the pool size {pool.size} of {pool.name!r}, "
                         f"got n_train + n_test = {n_train} + {n_test} = {n_train + n_test}")
    rng = np.random.default_rng(derive_seed(seed, "split", pool.name))
    order = rng.permutation(pool.size)
    train_idx, test_idx = order[:n_train], order[n_train:n_train + n_test]
    y = pool.labels if pool.name == "boolean" else binarize_labels(pool.labels, pool.n_classes, binarize)
    as_x = lambda idx: torch.from_numpy(np.ascontiguousarray(pool.x[idx]))  # noqa: E731
    as_y = lambda idx: torch.from_numpy(np.ascontiguousarray(y[idx]))  # noqa: E731
    return Split(as_x(train_idx), as_y(train_idx), as_x(test_idx), as_y(test_idx), pool.input_shape,
                 pool.name, binarize if pool.name != "boolean" else "target", seed, pool.source,
                 train_idx.astype(np.int64), test_idx.astype(np.int64))


def load_split(
    dataset: str,
    *,
    n_train: int = 1000,
    n_test: int = 100,
    seed: int = 0,
    binarize: str = "half",
    data_dir: str | os.PathLike | None = None,
    target: str | None = None,
) -> Split:
    """Load ``dataset``, binarise its labels and split it by ``seed`` into S and E.

    Parameters
    ----------
    dataset : str
        One of ``mnist`` (ships), ``fashion-mnist``, ``cifar10``, ``digits`` (ships with
        scikit-learn), ``ionosphere``, ``boolean`` (all 128 inputs of 7 bits).
    n_train, n_test : int
        Sizes m of S and k of E; ``m + k`` must not exceed the pool.
    seed : int
        Split seed: the same seed gives the same S and E in the same order.
    binarize : {"half", "parity"}
        Ignored for ``boolean``, whose labels are the target's bits. ``data_dir``: see :func:`load_pool`.
    target : str, optional
        ``boolean`` only: a 128-character bitstring or a name (``parity``, ``majority``, ...;
        default ``parity``).
    """
    pool = load_pool(dataset, data_dir=data_dir, target=target)
    return split_pool(pool, n_train=n_train, n_test=n_test, seed=seed, binarize=binarize)


def corrupt_labels(split: Split, fraction: float, *, seed: int) -> Split:
    """A copy of ``split`` in which ``round(fraction * m)`` positions of S, chosen uniformly without
    replacement, get a label drawn uniformly from {0, 1} (so about half of them change); E keeps its
    true labels, so the test error still measures generalisation. The positions are recorded in
    ``corrupted_index``; same seed, same corruption."""
    fraction = check_float("corrupt_fraction", fraction, minimum=0.0, maximum=1.0)
    seed = check_int("seed", seed, minimum=0)
    m = split.n_train
    n_replace = int(round(fraction * m))
    rng = np.random.default_rng(derive_seed(seed, "corrupt", split.dataset))
    where = np.sort(rng.choice(m, size=n_replace, replace=False)).astype(np.int64)
    y = split.y_train.clone()
    y[torch.from_numpy(where)] = torch.from_numpy(rng.integers(0, 2, size=n_replace).astype(np.int64))
    return replace(split, y_train=y, corrupted_index=where)


def flip_labels(split: Split, fraction: float, *, seed: int) -> Split:
    """Label noise: a copy of ``split`` in which exactly ``round(fraction * m)`` positions of S, chosen
    uniformly without replacement, have their label flipped (``y -> 1 - y``); E keeps its true labels.
    The positions are recorded in ``flipped_index``; same seed, same flips. (Unlike
    :func:`corrupt_labels`, every chosen label changes.)"""
    fraction = check_float("label_noise", fraction, minimum=0.0, maximum=1.0)
    seed = check_int("seed", seed, minimum=0)
    m = split.n_train
    rng = np.random.default_rng(derive_seed(seed, "label-noise", split.dataset))
    where = np.sort(rng.choice(m, size=int(round(fraction * m)), replace=False)).astype(np.int64)
    y = split.y_train.clone()
    index = torch.from_numpy(where)
    y[index] = 1 - y[index]
    return replace(split, y_train=y, flipped_index=where)


def pca_pool(pool: Pool, dim: int) -> Pool:
    """``pool`` projected onto its ``dim`` leading principal components, each scaled to unit variance.

    The projection is fitted on the whole pool (unsupervised: centred inputs, eigenvectors of their
    ``d x d`` covariance in float64, each signed so that its largest-magnitude entry is positive);
    the result's inputs are ``(N, dim)`` float32 with ``input_shape = (dim,)``. The pool keeps its
    name, so a split seed picks the same S and E with or without the projection.
    """
    d = int(pool.x.shape[1])
    dim = check_int("pca_dim", dim, minimum=1)
    if dim > min(d, pool.size):
        raise ValueError(f"pca_dim must be <= min(d, N) = {min(d, pool.size)} for {pool.name!r} (d = {d}, "
                         f"N = {pool.size}), got pca_dim={dim}")
    x = pool.x.astype(np.float64)
    centred = x - x.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / pool.size)
    values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
    if values[-1] <= 0:
        raise ValueError(f"pca_dim must be <= the rank of {pool.name!r}'s inputs, got pca_dim={dim} "
                         f"(component {dim} has variance {values[-1]:.3g})")
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(0), np.arange(dim)])
    z = (centred @ vectors / np.sqrt(values)).astype(np.float32)
    return replace(pool, x=z, input_shape=(dim,),
                   source=f"{pool.source}; projected on its {dim} leading principal components, whitened")


ARRAY_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
ARRAY_POOL_KEYS = ("x", "y")


#: What numpy raises on a file that is not what ``np.load`` expects (empty, truncated, damaged).
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
_EXPECTED = (f"an .npz file (numpy.savez) or a folder of .npy files with arrays {', '.join(ARRAY_SPLIT_KEYS)} "
             f"(a split) or x, y (a pool)")


def _why(exc: BaseException, file: Path) -> str:
    """What was wrong with ``file``, from numpy's error, in words."""
    text = str(exc)
    if "allow_pickle" in text:
        return "it holds object arrays or a pickle, which are not loaded (they could run code); save plain numeric arrays"
    if isinstance(exc, EOFError) or (file.is_file() and file.stat().st_size == 0):
        return "it is empty (0 bytes)"
    if isinstance(exc, zipfile.BadZipFile):
        return f"it is not a complete .npz (zip) archive: truncated or damaged ({text})"
    return f"{type(exc).__name__}: {text}"


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Arrays by name from an ``.npz`` file, or from the ``<name>.npy`` files of a folder; a file that
    is not one is a ``ValueError`` naming it and what was expected (pickles are never loaded)."""
    if path.is_dir():
        names = ARRAY_SPLIT_KEYS if (path / "x_train.npy").is_file() else ARRAY_POOL_KEYS
        out = {}
        for name in names:
            f = path / f"{name}.npy"
            if not f.is_file():
                raise FileNotFoundError(f"data.path {str(path)!r}: no {name}.npy in that folder (a folder of arrays "
                                        f"holds {', '.join(k + '.npy' for k in ARRAY_SPLIT_KEYS)}, or x.npy and y.npy)")
            try:
                out[name] = np.load(f, allow_pickle=False)
            except _UNREADABLE as exc:
                raise ValueError(f"data.path {str(path)!r}: {f.name} is not a readable .npy array: "
                                 f"{_why(exc, f)}") from None
            if not isinstance(out[name], np.ndarray):
                raise ValueError(f"data.path {str(path)!r}: {f.name} is an .npz archive, expected one .npy array")
        return out
    if not path.is_file():
        raise FileNotFoundError(f"data.path: no file or folder at {str(path)!r} (absolute: {path.resolve()})")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"data.path {str(path)!r} holds a single .npy array of shape {loaded.shape}; expected "
                             f"{_EXPECTED}")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except _UNREADABLE as exc:
        if str(exc).startswith("data.path"):
            raise
        raise ValueError(f"data.path {str(path)!r} is not a readable .npz file: {_why(exc, path)}; expected "
                         f"{_EXPECTED}") from None


def load_arrays(path: str | os.PathLike, *, n_train: int, n_test: int, seed: int = 0, binarize: str = "half",
                input_shape: tuple[int, ...] | None = None) -> Split:
    """The user's own arrays on disk as a split (``[data] dataset = "arrays"``, ``path = ...``).

    Parameters
    ----------
    path : path
        An ``.npz`` file, or a folder of ``.npy`` files, holding either ``x_train``, ``y_train``,
        ``x_test``, ``y_test`` (a given split: its first ``n_train`` / ``n_test`` rows are used,
        in order; labels must be in {0, 1}), or ``x`` and ``y`` (a pool split by ``seed``
        like the built-in pools; integer class labels are binarised by ``binarize``).
        Inputs have shape ``(n, d)`` or ``(n, *input_shape)``.
    seed, binarize
        For a pool only: its split seed, and how class labels (more than two classes) are binarised.

    The split is validated as by :meth:`Split.from_arrays` (real, finite inputs; labels in
    {0, 1}); errors name the file and the key.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"data.path must be the path of {_EXPECTED}, got {path!r}")
    n_train = check_int("data.n_train", n_train, minimum=1)
    n_test = check_int("data.n_test", n_test, minimum=1)
    p = Path(path).expanduser()
    arrays = _read_arrays(p)
    where = f"data.path {str(p)!r}"
    if all(k in arrays for k in ARRAY_SPLIT_KEYS):
        for key, n in (("x_train", n_train), ("x_test", n_test)):
            ykey = "y" + key[1:]
            if np.ndim(arrays[key]) < 1 or np.ndim(arrays[ykey]) != 1 or len(arrays[ykey]) != len(arrays[key]):
                raise ValueError(f"{where}: key {ykey!r} must have one label per row of {key!r} "
                                 f"({np.shape(arrays[key])[:1]}), got shape {np.shape(arrays[ykey])}")
            if arrays[key].shape[0] < n:
                raise ValueError(f"{where}: key {key!r} has {arrays[key].shape[0]} rows, data.n_"
                                 f"{key[2:]} = {n} asked for more")
        try:
            return Split.from_arrays(arrays["x_train"][:n_train], arrays["y_train"][:n_train],
                                     arrays["x_test"][:n_test], arrays["y_test"][:n_test],
                                     input_shape=input_shape, name=f"arrays:{p.name}")
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    if not all(k in arrays for k in ARRAY_POOL_KEYS):
        raise ValueError(f"{where} must hold arrays named {list(ARRAY_SPLIT_KEYS)} (a split) or "
                         f"{list(ARRAY_POOL_KEYS)} (a pool split by seed), got {sorted(arrays)}")
    try:
        x = check_real_array("x", arrays["x"])
        y = check_real_array("y", arrays["y"], ndim=1)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{where}: key {exc}") from None
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: key 'x' must have shape (n, ...) with one row per label of 'y' "
                         f"({y.shape[0]}), got shape {x.shape}")
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError(f"{where}: key 'y' must hold integer class labels >= 0, got {y[(y < 0) | (y != np.round(y))][0]!r}")
    labels = y.astype(np.int64)
    shape = tuple(int(v) for v in (input_shape if input_shape is not None else x.shape[1:]))
    pool = Pool(f"arrays:{p.name}", np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32), labels,
                max(2, int(labels.max()) + 1), shape, str(p))
    return split_pool(pool, n_train=n_train, n_test=n_test, seed=seed, binarize=binarize)
