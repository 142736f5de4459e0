"""A case: one split and one architecture on which every estimator of an experiment runs.

An experiment without a ``[sweep]`` has one case, named ``main``; a sweep has one case per point,
named after the keys the point sets (``target=weight6,n_train=32``). Estimators get the
:class:`Case` and read what they need from it (its split, its architecture); the split is loaded
once per process (:func:`split_for` is cached), so a worker running many shards of a case loads
the data once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from pydantic import Field, model_validator

import nngp
from sampler.architectures import Architecture
from sampler.data import BINARIZATIONS, DATASETS, Split, corrupt_labels, load_arrays, load_split
from sampler.seeding import make_generator

from .validation import SECTION


@pydantic.dataclasses.dataclass(frozen=True, kw_only=True, config=SECTION)
class DataConfig:
    """``[data]``, validated (pydantic): which split: ``sampler.load_split(dataset, n_train=, n_test=, seed=, ...)``.

    Attributes
    ----------
    dataset : str
        A pool of :data:`sampler.data.DATASETS`, or ``arrays``: the user's own arrays at ``path``
        (:func:`sampler.data.load_arrays`).
    n_train, n_test : int
        m = |S| and k = |E|.
    seed : int
        Split seed (and label-corruption seed).
    binarize : {"half", "parity"}
    data_dir : str
        Folder with the dataset's files ("" for the shipped data).
    target : str
        Boolean only: a target name (``constant``, ``weight6``, ...) or a 128-character bitstring.
    corrupt_fraction : float
        In [0, 1]: that fraction of S's labels replaced by random bits (seeded by ``seed``); E
        keeps its true labels.
    path : str
        ``arrays`` only: an ``.npz`` file or a folder of ``.npy`` files with keys ``x_train``,
        ``y_train``, ``x_test``, ``y_test`` (a given split) or ``x``, ``y`` (a pool split by seed).
    """

    dataset: Literal[DATASETS + ("arrays",)] = "mnist"
    n_train: int = Field(100, ge=1, strict=True)
    n_test: int = Field(20, ge=1, strict=True)
    seed: int = Field(0, ge=0, strict=True)
    binarize: Literal[BINARIZATIONS] = "half"
    data_dir: str = ""
    target: str = ""
    corrupt_fraction: float = Field(0.0, ge=0.0, le=1.0, strict=True)
    path: str = ""

    @model_validator(mode="after")
    def _keys_of_their_dataset(self):
        if self.dataset == "arrays" and not self.path:
            raise ValueError("data.path is required for dataset 'arrays' (an .npz file or a folder of .npy files)")
        if self.path and self.dataset != "arrays":
            raise ValueError(f"data.path is only for dataset 'arrays', got dataset={self.dataset!r}")
        if self.target and self.dataset != "boolean":
            raise ValueError(f"data.target is only for dataset 'boolean', got dataset={self.dataset!r}")
        return self


@functools.lru_cache(maxsize=8)
def split_for(data: DataConfig) -> Split:
    """The split ``data`` describes (label corruption included); cached per process, since every
    shard of a case needs the same split and loading MNIST costs about a second."""
    if data.dataset == "arrays":
        split = load_arrays(data.path, n_train=data.n_train, n_test=data.n_test, seed=data.seed,
                            binarize=data.binarize)
    else:
        split = load_split(data.dataset, n_train=data.n_train, n_test=data.n_test, seed=data.seed,
                           binarize=data.binarize, data_dir=data.data_dir or None,
                           target=(data.target or None) if data.dataset == "boolean" else None)
    if data.corrupt_fraction > 0:
        split = corrupt_labels(split, data.corrupt_fraction, seed=data.seed)
    return split


@dataclass(frozen=True)
class Case:
    """One point of an experiment.

    Attributes
    ----------
    name : str
        ``main`` without a sweep; otherwise the point's settings, e.g. ``width=64,depth=2``.
    settings : tuple of (key, value)
        The sweep keys this point sets (empty without a sweep).
    data : DataConfig
    arch : Architecture
    estimators : tuple of EstimatorSpec
        This point's estimators (a sweep may change their options), in config order.
    """

    name: str
    settings: tuple[tuple[str, Any], ...]
    data: DataConfig
    arch: Architecture
    estimators: tuple

    def split(self) -> Split:
        """The case's split (cached per process)."""
        return split_for(self.data)

    def estimator(self, label: str):
        """The :class:`~sgdbayes.config.EstimatorSpec` labelled ``label``."""
        for spec in self.estimators:
            if spec.label == label:
                return spec
        raise KeyError(f"case {self.name!r} has no estimator labelled {label!r}; it has "
                       f"{[s.label for s in self.estimators]}")


@functools.lru_cache(maxsize=2)
def case_kernel(arch: Architecture, data: DataConfig):
    """The NNGP kernel of a case on S then E, once per process: :func:`nngp.kernel_for` (analytic
    where a closed form exists, else Monte Carlo over ``nngp.DEFAULT_MC_SAMPLES`` random networks of
    the same spec, seed 0, with standard errors), an ``nngp.KernelEstimate`` of shape (m + k, m + k)."""
    split = split_for(data)
    return nngp.kernel_for(arch, split.x_all(), input_shape=split.input_shape)


# bytes of the P_B side per kernel entry: the kernel, its standard error and EP's working copies
_KERNEL_COPIES = 8


def available_memory() -> int | None:
    """Bytes of memory available now (``/proc/meminfo``'s MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_case(case: Case) -> None:
    """Everything a case needs before its first SGD shard runs, each problem one ``ValueError`` line.

    The data load and validate (the split), the architecture builds on the split's input shape
    (a ``module`` spec's factory imports, returns a supported module with the right output shape),
    and if an estimator needs the NNGP kernel (``needs_kernel``): which kernel it will be, and that
    ``(m + k)^2`` float64 entries times the P_B side's working copies fit in the available memory.
    """
    where = f"case {case.name}: " if case.settings else ""
    split = case.split()
    try:
        case.arch.build(split.input_shape, generator=make_generator(0, "check"))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{where}[arch] {case.arch.kind} on data of input shape {split.input_shape}: {exc}") from None
    users = [s.label for s in case.estimators if getattr(s.estimator, "needs_kernel", False)]
    if not users:
        return
    n = split.n_train + split.n_test
    need = n * n * 8 * _KERNEL_COPIES
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(f"{where}estimators {users} need the NNGP kernel on m + k = {n} points, about "
                         f"{need / 2**30:.1f} GiB with the EP's working copies, but {free / 2**30:.1f} GiB is "
                         f"available: lower data.n_train / data.n_test or use a larger machine")
