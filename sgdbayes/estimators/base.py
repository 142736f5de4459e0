"""The estimator plug-in interface: options, plan, shards, rows of the long results table.

An estimator of P(f|S) is a subclass of :class:`Estimator` registered under a method name with
:func:`register_estimator`; a config names it with ``[estimators.<label>] method = "<name>"`` and
that method's options. The pipeline knows nothing of any particular estimator (pyro's
``MCMC(kernel)`` and scikit-learn's estimator checks are the models): for each case it calls

1. ``plan(case, options)`` for a *sampler* (it produces counts: ``sgd``, ``prior``, ``ess``,
   ``nuts``), or ``plan(case, options, functions)`` for a *scorer* (it evaluates log P on given
   functions: ``ep``, ``ep-conditional``, ``tilting``), where ``functions`` are those the case's
   samplers found, most frequent first. A plan is a list of shard parameters: small, picklable
   dicts, so that Ray can ship them.
2. ``run_shard(case, options, shard)`` for each, anywhere (local or a Ray worker); it returns a
   :func:`shard_table`. The pipeline writes it atomically, exactly once, into the run folder.
3. ``extend(case, options, result)`` after the planned shards are done: more shards, or none.
   Adaptive samplers use it (prior sampling draws chunks until enough samples fit S); the
   pipeline calls it again after each round until it returns ``[]``, so a resumed run replays the
   same decisions from the shards on disk.
4. ``extras(case, options, result)`` on the driver: per-case numbers for the summary and report
   (log P(S) with its error, EP convergence, R-hat, ...).

Shard table (:func:`shard_table`): columns ``function`` (str), ``count`` (int64; null for a
scorer), ``log_p`` and ``log_p_se`` (float64; null for a sampler, whose log P comes from the merged
counts), and schema metadata ``n_samples`` (samples drawn or runs started in the shard; a sample
that does not fit S has no row) and ``info`` (JSON, estimator-specific). The pipeline merges the
shards of one estimator into an :class:`EstimatorResult` and into rows of ``results.parquet``
(:data:`RESULT_COLUMNS`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from sampler._checks import check_choice, did_you_mean

from ..validation import STRICT, attribute_docs, config_error

QUANTITIES = ("p_sgd", "p_b")
KINDS = ("sampler", "scorer")
LABEL_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"

#: The long results table ``results.parquet``: one row per (case, estimator, function).
RESULT_SCHEMA = pa.schema([
    ("case", pa.string()),          # case name (``main`` without a sweep)
    ("estimator", pa.string()),     # the config's label, e.g. "sgd", "adam"
    ("method", pa.string()),        # the registered method, e.g. "sgd", "ep-conditional"
    ("function", pa.string()),      # bitstring on E
    ("count", pa.int64()),          # times sampled (null for scorers)
    ("n_samples", pa.int64()),      # runs started / samples drawn by the estimator (null for scorers)
    ("log_p", pa.float64()),        # natural log of P(f|S); count / n_fit for samplers
    ("log_p_se", pa.float64()),     # its standard error: binomial delta method for counts; nan where unknown
])
RESULT_COLUMNS = tuple(RESULT_SCHEMA.names)
SHARD_SCHEMA = pa.schema([RESULT_SCHEMA.field(n) for n in ("function", "count", "log_p", "log_p_se")])


# --- options ------------------------------------------------------------------------------------
class Options(BaseModel):
    """Base of every estimator's options: a frozen pydantic model whose fields are the config keys.

    Subclasses declare fields with constraints (``n_runs: int = Field(8192, ge=1)``, choices as
    ``Literal[...]``) and rules between fields as ``model_validator(mode="after")`` raising a
    ``ValueError`` that starts with the key (``"chunk must be ..."``); the config names every bad key
    as ``estimators.<label>.<key>``. Field docs come from ``Field(description=...)`` or the class
    docstring's numpydoc ``Attributes`` section (:meth:`docs`).
    """

    model_config = ConfigDict(**STRICT, frozen=True)

    @classmethod
    def from_table(cls, label: str, table: Mapping[str, Any]) -> "Options":
        """Validate ``table`` (the ``[estimators.<label>]`` keys other than ``method``)."""
        try:
            return cls.model_validate(dict(table))
        except ValidationError as exc:
            raise config_error(exc, prefix=("estimators", label), fields=lambda loc: cls.model_fields) from None

    def to_table(self) -> dict[str, Any]:
        """The options as TOML key = value pairs (None, which TOML cannot write, is left out: it is the
        default wherever it is allowed); round-trips through :meth:`from_table`."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @classmethod
    def docs(cls) -> dict[str, str]:
        """Each key's one-line doc: its ``description``, else its entry in the docstrings' ``Attributes``."""
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            found.update(attribute_docs(klass.__doc__))
        return {k: f.description or found.get(k, "") for k, f in cls.model_fields.items()}


# --- shards and results ---------------------------------------------------------------------------
def shard_table(functions: Sequence[str], *, counts: Sequence[int] | None = None,
                log_p: Sequence[float] | None = None, log_p_se: Sequence[float] | None = None,
                n_samples: int | None = None, info: Mapping[str, Any] | None = None) -> pa.Table:
    """One shard's rows (see the module docstring).

    Parameters
    ----------
    functions : sequence of str, length n
    counts : sequence of int, length n
        A sampler's counts of each function in this shard (then ``n_samples`` is required).
    log_p, log_p_se : sequence of float, length n
        A scorer's natural-log P(f|S) and its standard error (nan where the method has none).
    n_samples : int
        Samples drawn (runs started) in this shard, fitted or not.
    info : mapping
        JSON-able facts the estimator's :meth:`Estimator.extras` reads back.
    """
    n = len(functions)
    if (counts is None) == (log_p is None):
        raise ValueError("a shard has either counts (a sampler) or log_p (a scorer)")
    if counts is not None and n_samples is None:
        raise ValueError("a sampler's shard must say n_samples, the samples it drew")
    nulls_i, nulls_f = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())
    table = pa.table({
        "function": pa.array(list(functions), pa.string()),
        "count": pa.array(list(counts), pa.int64()) if counts is not None else nulls_i,
        "log_p": pa.array(np.asarray(log_p, float)) if log_p is not None else nulls_f,
        "log_p_se": (pa.array(np.asarray(log_p_se, float)) if log_p_se is not None
                     else (pa.array(np.full(n, math.nan)) if log_p is not None else nulls_f)),
    }, schema=SHARD_SCHEMA)
    meta = {"n_samples": json.dumps(n_samples), "info": json.dumps(dict(info or {}))}
    return table.replace_schema_metadata(meta)


def shard_meta(table: pa.Table) -> tuple[int | None, dict]:
    """``(n_samples, info)`` of a shard table (read back from its schema metadata)."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "n_samples" not in meta:
        raise ValueError(f"shard table has no n_samples in its metadata (keys {sorted(meta)}): not written by "
                         f"an estimator of this version")
    return json.loads(meta["n_samples"]), json.loads(meta.get("info", "{}"))


@dataclass(frozen=True)
class EstimatorResult:
    """The merged shards of one estimator on one case.

    Attributes
    ----------
    label, method : str
    functions : tuple of str
        Most frequent first (samplers; ties by bitstring) or in the order scored (scorers).
    counts : np.ndarray of int64, shape (n,), or None
        Samplers only.
    log_p, log_p_se : np.ndarray of float64, shape (n,)
        Natural log of P(f|S) and its standard error: for samplers ``log(count / n_fit)`` and the
        binomial delta-method ``sqrt((1 - p) / count)``; for scorers the method's own (nan for EP).
    n_samples, n_fit : int or None
        Samples drawn and samples that fit S (samplers only; ``n_fit = counts.sum()``).
    infos : tuple of dict
        Each shard's ``info``, in shard order.
    """

    label: str
    method: str
    functions: tuple[str, ...]
    counts: np.ndarray | None
    log_p: np.ndarray
    log_p_se: np.ndarray
    n_samples: int | None
    n_fit: int | None
    infos: tuple[dict, ...] = ()

    @classmethod
    def from_shards(cls, label: str, method: str, tables: Sequence[pa.Table], *, sampler: bool) -> "EstimatorResult":
        """Merge shard tables (in shard order). A sampler's counts are summed per function; its
        standard errors are binomial, unless it wrote one shard whose ``log_p_se`` is filled (an
        estimator with a better error of its own, e.g. ESS from its independent chains)."""
        metas = [shard_meta(t) for t in tables]
        infos = tuple(info for _, info in metas)
        if sampler:
            totals: dict[str, int] = {}
            for t in tables:
                for f, c in zip(t.column("function").to_pylist(), t.column("count").to_pylist()):
                    totals[f] = totals.get(f, 0) + int(c)
            items = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
            counts = np.array([c for _, c in items], dtype=np.int64)
            n_fit = int(counts.sum())
            p = counts / max(n_fit, 1)
            log_p = np.log(p, where=p > 0, out=np.full(len(p), -math.inf))
            se = np.sqrt((1.0 - p) / np.maximum(counts, 1))
            if len(tables) == 1 and len(tables[0]) and tables[0].column("log_p_se").null_count == 0:
                own = dict(zip(tables[0].column("function").to_pylist(), tables[0].column("log_p_se").to_pylist()))
                se = np.array([own[f] for f, _ in items], dtype=float)
            return cls(label, method, tuple(f for f, _ in items), counts, log_p, se,
                       int(sum(n for n, _ in metas)), n_fit, infos)
        functions, lp, se = [], [], []
        for t in tables:
            functions += t.column("function").to_pylist()
            lp.append(t.column("log_p").to_numpy(zero_copy_only=False).astype(float))
            se.append(t.column("log_p_se").to_numpy(zero_copy_only=False).astype(float))
        return cls(label, method, tuple(functions), None, np.concatenate(lp) if lp else np.zeros(0),
                   np.concatenate(se) if se else np.zeros(0), None, None, infos)

    @property
    def is_sampler(self) -> bool:
        return self.counts is not None

    def rows(self, case: str) -> pa.Table:
        """This result as rows of the long table (:data:`RESULT_SCHEMA`)."""
        n = len(self.functions)
        return pa.table({
            "case": pa.array([case] * n, pa.string()), "estimator": pa.array([self.label] * n, pa.string()),
            "method": pa.array([self.method] * n, pa.string()), "function": pa.array(self.functions, pa.string()),
            "count": pa.array(self.counts, pa.int64()) if self.is_sampler else pa.nulls(n, pa.int64()),
            "n_samples": pa.array([self.n_samples] * n, pa.int64()) if self.is_sampler else pa.nulls(n, pa.int64()),
            "log_p": pa.array(self.log_p, pa.float64()), "log_p_se": pa.array(self.log_p_se, pa.float64()),
        }, schema=RESULT_SCHEMA)


# --- estimators and their registry ------------------------------------------------------------------
class Estimator:
    """Base of the estimator plug-ins (see the module docstring). Subclasses set:

    Attributes
    ----------
    name : str
        The method name configs use (``method = "..."``); set by :func:`register_estimator`.
    quantity : {"p_sgd", "p_b"}
        What it estimates: P_SGD(f|S) or P_B(f|S) (the report pairs one with the other).
    kind : {"sampler", "scorer"}
        Samplers produce counts; scorers evaluate log P on the functions the samplers found.
    Options : type
        Its frozen :class:`Options` dataclass.
    needs_kernel : bool
        Whether it uses the case's NNGP kernel on S and E (:func:`sgdbayes.case.case_kernel`):
        the pipeline then checks, before any training, that the kernel can be had and fits in
        memory (:func:`sgdbayes.case.check_case`).
    """

    name: ClassVar[str] = ""
    quantity: ClassVar[str] = "p_b"
    kind: ClassVar[str] = "sampler"
    Options: ClassVar[type[Options]] = Options
    needs_kernel: ClassVar[bool] = False

    def options(self, label: str, table: Mapping[str, Any]) -> Options:
        """Validated options from a config table (``method`` removed)."""
        return self.Options.from_table(label, table)

    def plan(self, case, options, functions: Sequence[str] | None = None) -> list[dict]:
        """Shard parameters for ``case`` (small, picklable); scorers get the ``functions`` to score."""
        raise NotImplementedError

    def run_shard(self, case, options, shard: Mapping[str, Any], progress: Callable[[int, int], None] | None = None
                  ) -> pa.Table:
        """Compute one shard; ``progress(n_done, n_fit)`` may be called along the way."""
        raise NotImplementedError

    def extend(self, case, options, result: EstimatorResult) -> list[dict]:
        """More shards once the planned ones are done (default: none)."""
        return []

    def extras(self, case, options, result: EstimatorResult) -> dict[str, Any]:
        """Per-case numbers for the summary and report (JSON-able; default: none)."""
        return {}

    def items(self, shard: Mapping[str, Any]) -> int:
        """Items (runs, samples, functions) a shard holds, for progress bars."""
        return int(shard.get("items", 1))

    def num_gpus(self, options) -> float:
        """GPUs a shard asks of Ray."""
        return 0.0

    def gpu_optional(self, options) -> bool:
        """Whether the shard runs as well without the GPUs of :meth:`num_gpus` (``device = "auto"``):
        then Ray is asked for none where the cluster has none."""
        return getattr(options, "device", None) == "auto"

    def memory_bytes(self, case, options) -> tuple[int, str]:
        """Estimated peak memory of one shard on its device, in bytes, and which config keys set it
        (checked against the machine's before anything is written; default: nothing to check)."""
        return 0, ""


# The registry is the one piece of module state: like pyro's distributions or an entry-point table it
# maps a name to a class, is filled at import time and never changes a result.
_REGISTRY: dict[str, type[Estimator]] = {}


def register_estimator(name: str):
    """Class decorator: register an :class:`Estimator` subclass under the method ``name``.

    A name may be registered once; a test or a user module registers its own estimators the same
    way as the built-ins, and configs can use them as soon as the module is imported.
    """
    if not isinstance(name, str) or not re.fullmatch(LABEL_PATTERN, name):
        raise ValueError(f"estimator name must match {LABEL_PATTERN}, got {name!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise TypeError(f"register_estimator({name!r}) decorates Estimator subclasses, got {cls!r}")
        check_choice(f"{cls.__name__}.quantity", cls.quantity, QUANTITIES)
        check_choice(f"{cls.__name__}.kind", cls.kind, KINDS)
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"an estimator named {name!r} is registered already ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def estimator_names() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_REGISTRY)


def get_estimator(name: str) -> Estimator:
    """An instance of the estimator registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown estimator method {name!r}; registered: {list(_REGISTRY)}"
                         f"{did_you_mean(str(name), _REGISTRY)}")
    return _REGISTRY[name]()
