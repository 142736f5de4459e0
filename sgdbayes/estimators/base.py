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

Shard table: :func:`sampler.store.shard_table`, the one shard format of the library and the
pipeline. The pipeline merges the shards of one estimator into an :class:`EstimatorResult` and
into rows of ``results.parquet`` (:data:`RESULT_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pyarrow as pa

from sampler._checks import check_choice, check_float, check_int, did_you_mean
from sampler.store import SHARD_SCHEMA, merge_shards, shard_meta, shard_table  # noqa: F401  (the shard format)

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


# --- options ------------------------------------------------------------------------------------
def option(default, *, minimum=None, maximum=None, strict_minimum: bool = False, choices: Sequence[str] = (),
           doc: str = ""):
    """A field of an :class:`Options` dataclass with its constraints (checked by
    :meth:`Options.validate`, with errors naming ``estimators.<label>.<key>``)."""
    meta = {"minimum": minimum, "maximum": maximum, "strict_minimum": strict_minimum,
            "choices": tuple(choices), "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options:
    """Base of every estimator's options: a frozen dataclass whose fields are the config keys.

    Subclasses declare fields with :func:`option`; ``int``, ``float``, ``str`` and ``bool``
    fields are type-checked, bounds and choices come from the field's metadata, and
    :meth:`check` adds rules between fields. Build one from a config table with
    :meth:`from_table` (which names every bad key as ``estimators.<label>.<key>``).
    """

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def key_type(cls, key: str) -> type | None:
        for f in dataclasses.fields(cls):
            if f.name == key:
                return type(f.default) if f.default is not None else None
        return None

    @classmethod
    def from_table(cls, label: str, table: Mapping[str, Any]) -> "Options":
        """Validate ``table`` (the ``[estimators.<label>]`` keys other than ``method``)."""
        valid = cls.keys()
        values = {}
        for key, value in table.items():
            if key not in valid:
                raise ValueError(f"unknown key estimators.{label}.{key}; valid keys for this method: "
                                 f"{sorted(valid + ('method',))}{did_you_mean(key, valid)}")
            values[key] = coerce(f"estimators.{label}.{key}", value, cls.key_type(key))
        opts = cls(**values)
        opts.validate(label)
        return opts

    def validate(self, label: str) -> None:
        """Check every field's bounds and choices, then :meth:`check`."""
        for f in dataclasses.fields(self):
            name, value, meta = f"estimators.{label}.{f.name}", getattr(self, f.name), f.metadata
            if meta.get("choices"):
                check_choice(name, value, meta["choices"])
            elif isinstance(f.default, bool):
                continue
            elif isinstance(f.default, int) and (meta.get("minimum") is not None or meta.get("maximum") is not None):
                check_int(name, value, minimum=meta.get("minimum"), maximum=meta.get("maximum"))
            elif isinstance(f.default, float) and meta:
                check_float(name, value, minimum=meta.get("minimum"), maximum=meta.get("maximum"),
                            strict_minimum=bool(meta.get("strict_minimum")))
        self.check(label)

    def check(self, label: str) -> None:
        """Rules between fields; raise ``ValueError`` naming ``estimators.<label>.<key>``."""

    def to_table(self) -> dict[str, Any]:
        """The options as TOML key = value pairs (round-trips through :meth:`from_table`)."""
        return dataclasses.asdict(self)


def coerce(key: str, value: Any, expected: type | None) -> Any:
    """``value`` as the config key ``key`` of type ``expected`` (an int where a float is expected becomes
    a float); ``TypeError`` naming the key otherwise. ``expected`` None accepts anything."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, got {value!r}")
    if expected in (int, float, str) and (isinstance(value, bool) or not isinstance(value, expected)):
        raise TypeError(f"{key} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


# --- shards and results ---------------------------------------------------------------------------
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
            merged = merge_shards(tables)
            items = merged.most_common()
            counts = np.array([c for _, c in items], dtype=np.int64)
            n_fit = merged.n_fit
            p = counts / max(n_fit, 1)
            log_p = np.log(p, where=p > 0, out=np.full(len(p), -math.inf))
            se = np.sqrt((1.0 - p) / np.maximum(counts, 1))
            if len(tables) == 1 and len(tables[0]) and tables[0].column("log_p_se").null_count == 0:
                own = dict(zip(tables[0].column("function").to_pylist(), tables[0].column("log_p_se").to_pylist()))
                se = np.array([own[f] for f, _ in items], dtype=float)
            return cls(label, method, tuple(f for f, _ in items), counts, log_p, se, merged.n_runs, n_fit, infos)
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
