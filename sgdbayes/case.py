"""A case: one split and one architecture on which every estimator of an experiment runs.

Without a ``[sweep]`` there is one case, ``main``; a sweep has one per point, named after the keys
the point sets (``target=weight6,n_train=32``). Estimators read from the :class:`Case` its split,
its architecture and its *fits*: the expensive per-case state (the NNGP kernel, the EP fit on S)
that the pipeline makes once per case into ``cases/<case>/fits/<name>.pt`` before any shard.
Shards get a prepared case (:meth:`Case.prepared`): frozen, picklable, its split loaded and its
folder set, so a worker neither re-reads the config nor re-loads the data.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field, model_validator

import torch

import nngp
from sampler.architectures import Architecture
from sampler.data import (BINARIZATIONS, DATASETS, Split, corrupt_labels, flip_labels, load_arrays, load_pool,
                          pca_pool, split_pool)
from sampler.checks import check_plain_name
from sampler.network_check import check_network
from sampler.store import ShardError, atomic_write_bytes, file_digest, fingerprint, split_digest

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
    label_noise : float
        In [0, 1]: exactly ``round(label_noise * m)`` of S's labels flipped (seeded by ``seed``,
        :func:`sampler.data.flip_labels`); E keeps its true labels. Not with ``corrupt_fraction``.
    pca_dim : int
        0 (default): the inputs as they are; n >= 1: projected onto the pool's n leading principal
        components, whitened (:func:`sampler.data.pca_pool`). Not for ``arrays``.
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
    label_noise: float = Field(0.0, ge=0.0, le=1.0, strict=True)
    pca_dim: int = Field(0, ge=0, strict=True)
    path: str = ""

    def fingerprint_dict(self) -> dict:
        """The keys as a dict for fingerprints, ``label_noise`` and ``pca_dim`` left out at their defaults
        (off): a config that does not use them is fingerprinted (and written) as one without the keys."""
        d = dataclasses.asdict(self)
        for key in ("label_noise", "pca_dim"):
            if not d[key]:
                del d[key]
        return d

    @model_validator(mode="after")
    def _keys_of_their_dataset(self):
        if self.dataset == "arrays" and not self.path:
            raise ValueError("data.path is required for dataset 'arrays' (an .npz file or a folder of .npy files)")
        if self.path and self.dataset != "arrays":
            raise ValueError(f"data.path is only for dataset 'arrays', got dataset={self.dataset!r}")
        if self.target and self.dataset != "boolean":
            raise ValueError(f"data.target is only for dataset 'boolean', got dataset={self.dataset!r}")
        if self.pca_dim and self.dataset == "arrays":
            raise ValueError("data.pca_dim is only for the named datasets, not 'arrays' (project the arrays yourself)")
        if self.label_noise and self.corrupt_fraction:
            raise ValueError(f"data.label_noise and data.corrupt_fraction are two kinds of label noise: set one, got "
                             f"label_noise={self.label_noise}, corrupt_fraction={self.corrupt_fraction}")
        return self


def split_for(data: DataConfig) -> Split:
    """The split ``data`` describes, projection and label noise or corruption included, loaded now."""
    if data.dataset == "arrays":
        split = load_arrays(data.path, n_train=data.n_train, n_test=data.n_test, seed=data.seed,
                            binarize=data.binarize)
    else:
        pool = load_pool(data.dataset, data_dir=data.data_dir or None,
                         target=(data.target or None) if data.dataset == "boolean" else None)
        if data.pca_dim:
            pool = pca_pool(pool, data.pca_dim)
        split = split_pool(pool, n_train=data.n_train, n_test=data.n_test, seed=data.seed, binarize=data.binarize)
    if data.corrupt_fraction > 0:
        split = corrupt_labels(split, data.corrupt_fraction, seed=data.seed)
    if data.label_noise > 0:
        split = flip_labels(split, data.label_noise, seed=data.seed)
    return split


#: Types a fit may hold besides tensors and plain values (``torch.load`` with ``weights_only``).
FIT_TYPES = (nngp.KernelEstimate, nngp.TrainPosterior, nngp.EPResult)


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
    folder : str
        The case's run folder (``<run>/cases/<name>``; "" until :meth:`prepared`).
    loaded_split : Split or None
        The split, once :meth:`prepared` loaded it (not compared).
    sources : tuple of (role, what, digest)
        Once :meth:`prepared`: content hashes of what the shards are computed from, the loaded
        split (``data``; ``what`` names its file or dataset) and each file of the user's code
        (``arch source``; ``what`` is its path): see :meth:`digests` (not compared).
    """

    name: str
    settings: tuple[tuple[str, Any], ...]
    data: DataConfig
    arch: Architecture
    estimators: tuple
    folder: str = ""
    loaded_split: Split | None = field(default=None, compare=False, repr=False)
    sources: tuple = field(default=(), compare=False, repr=False)

    def prepared(self, folder: str | Path) -> "Case":
        """This case with its run folder set, its split loaded and its sources hashed: what shards are handed."""
        split = self.split()
        data = (f"data file {Path(self.data.path).expanduser()}" if self.data.dataset == "arrays"
                else f"dataset {self.data.dataset}" + (f" in {self.data.data_dir}" if self.data.data_dir else ""))
        sources = (("data", data, split_digest(split)),
                   *(("arch source", str(f), file_digest(f)) for f in self.arch.source_files()))
        return replace(self, folder=str(folder), loaded_split=split, sources=sources)

    def digests(self) -> dict[str, str]:
        """``{role or file: content hash}`` of the prepared case's :attr:`sources`: part of every
        fingerprint of its shards and fits, so shards computed from other data or code are refused."""
        return {(role if role == "data" else what): digest for role, what, digest in self.sources}

    def split(self) -> Split:
        """The loaded split of a prepared case; otherwise loaded now."""
        return self.loaded_split if self.loaded_split is not None else split_for(self.data)

    def estimator(self, label: str):
        """The :class:`~sgdbayes.config.EstimatorSpec` labelled ``label``."""
        for spec in self.estimators:
            if spec.label == label:
                return spec
        raise KeyError(f"case {self.name!r} has no estimator labelled {label!r}; it has "
                       f"{[s.label for s in self.estimators]}")

    # fits --------------------------------------------------------------------------------------
    def fit_path(self, name: str) -> Path:
        """Where the fit ``name`` lives: ``<folder>/fits/<name>.pt``."""
        if not self.folder:
            raise ValueError(f"case {self.name!r} has no run folder: fits live in one (Case.prepared(folder))")
        return Path(self.folder) / "fits" / f"{check_plain_name('fit name', name)}.pt"

    def _fingerprint(self, name: str) -> str:
        return fingerprint({"fit": name, "data": self.data.fingerprint_dict(), "arch": self.arch.to_dict(),
                            "sources": self.digests()})

    def save_fit(self, name: str, value: Any) -> Path:
        """Write the fit ``name`` once, atomically (a fit that exists is left as it is)."""
        path = self.fit_path(name)
        if not path.is_file():
            buf = io.BytesIO()
            torch.save({"fingerprint": self._fingerprint(name), "value": value}, buf)
            atomic_write_bytes(path, buf.getvalue())
        return path

    def fit(self, name: str, *, types: tuple = FIT_TYPES) -> Any:
        """The fit ``name`` as its maker returned it (``torch.load`` with ``weights_only``, allowing
        ``types``); a missing fit, or one made for another case, is an error naming it."""
        path = self.fit_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"fit {path} is not made yet: the pipeline makes a case's fits before its "
                                    f"shards (an estimator lists those it reads in Estimator.fits)")
        with torch.serialization.safe_globals(list(types)):
            saved = torch.load(path, weights_only=True)
        if saved.get("fingerprint") != self._fingerprint(name):
            raise ShardError(f"fit {path} was made for another data or architecture; use a new --out")
        return saved["value"]


def check_case(case: Case) -> None:
    """Before a case's first shard, as one ``ValueError``/``TypeError`` line: its data load, and its
    architecture builds on the split's input shape (a ``module`` factory imports and returns a
    supported module with the right output shape) and gives usable outputs on the data at
    initialisation (:func:`sampler.network_check.check_network`)."""
    where = f"case {case.name}: " if case.settings else ""
    split = case.split()
    try:
        check_network(case.arch, split)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{where}[arch] {case.arch.describe()} on data of input shape {split.input_shape}: {exc}") from exc
