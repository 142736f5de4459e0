"""The estimator plug-in interface: options, plan, shards, rows of the long results table.

An estimator of P(f|S) is an :class:`Estimator` subclass registered under a method name with
:func:`register_estimator`; a config names it with ``[estimators.<label>] method = "<name>"`` and
that method's options. The pipeline knows nothing of any particular estimator (the models: pyro's
``MCMC(kernel)``, scikit-learn's estimator checks); for each case it calls

1. ``plan(case, options)`` for a *sampler* (it produces counts), or ``plan(case, options,
   functions)`` for a *scorer* (it evaluates log P on the functions the case's samplers found, most
   frequent first). A plan is a list of small, picklable shard parameters (Ray ships them).
2. ``run_shard(case, options, shard)`` for each, anywhere; it returns a :func:`shard_table`, which
   the pipeline writes atomically, exactly once, into the run folder.
3. ``extend(case, options, result)`` once the planned shards are done, until it returns ``[]``:
   adaptive samplers decide from the shards on disk, so a resumed run replays the same decisions.
4. ``extras(case, options, result)`` on the driver: per-case numbers for the summary and report.

Before any shard, the pipeline makes each case's *fits* once (the expensive shared state: the
kernel, the EP fit on S): ``fits`` names them, ``make_fit`` computes one, shards and extras read it
with ``case.fit(name)``. ``resources`` declares what a shard needs (:class:`Resources`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

import nngp
from sampler.checks import check_choice, did_you_mean
from sampler.store import SHARD_SCHEMA, merge_shards, shard_meta, shard_table  # noqa: F401  (shard_table: re-exported)

from ..validation import STRICT, attribute_docs

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
class Options(BaseModel):
    """Base of every estimator's options: a frozen, strict pydantic model whose fields are the config
    keys (constraints and docs in ``Field``, choices as ``Literal``). A rule between fields is a
    ``model_validator(mode="after")`` raising a ``ValueError`` that starts with the key, so that the
    config names it ``estimators.<label>.<key>``."""

    model_config = ConfigDict(**STRICT, frozen=True)

    def to_table(self) -> dict[str, Any]:
        """The options as TOML key = value pairs (None, which TOML cannot write, is left out: it is the
        default wherever it is allowed)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @classmethod
    def docs(cls) -> dict[str, str]:
        """Each key's one-line doc: its ``description``, else its entry in a docstring's ``Attributes``."""
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):  # a field a subclass redefines keeps its base's doc
            found.update(attribute_docs(klass.__doc__))
            found.update({k: f.description for k, f in getattr(klass, "model_fields", {}).items() if f.description})
        return {k: found.get(k, "") for k in cls.model_fields}


# --- shards and results ---------------------------------------------------------------------------
def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(float)  # nulls -> nan


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
        Each shard's ``info``.
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
        t = pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()
        return cls(label, method, tuple(t.column("function").to_pylist()), None, _floats(t, "log_p"),
                   _floats(t, "log_p_se"), None, None, infos)

    is_sampler = property(lambda self: self.counts is not None)

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

    @classmethod
    def from_rows(cls, rows: pa.Table) -> "EstimatorResult":
        """The inverse of :meth:`rows`: one estimator's rows of the long table on one case (in
        table order; ``infos`` are not in the table and come back empty)."""
        cols = rows.to_pydict()
        if not cols["function"]:
            raise ValueError("from_rows needs at least one row (an estimator with none: see empty)")
        counts = None if cols["count"][0] is None else np.asarray(cols["count"], dtype=np.int64)
        return cls(cols["estimator"][0], cols["method"][0], tuple(cols["function"]), counts, _floats(rows, "log_p"),
                   _floats(rows, "log_p_se"), None if counts is None else int(cols["n_samples"][0]),
                   None if counts is None else int(counts.sum()))

    @classmethod
    def empty(cls, label: str, method: str, *, n_samples: int | None = None) -> "EstimatorResult":
        """An estimator with no rows: a scorer with nothing to score (``n_samples`` None) or a
        sampler none of whose ``n_samples`` samples fit S."""
        counts = None if n_samples is None else np.zeros(0, dtype=np.int64)
        return cls(label, method, (), counts, np.zeros(0), np.zeros(0), n_samples,
                   None if n_samples is None else 0)

    def by_function(self, column: str = "log_p") -> dict[str, float]:
        """``{function: value}`` of ``column`` (``"log_p"``, ``"log_p_se"``, ``"counts"``: empty for a scorer)."""
        values = getattr(self, column)
        return {} if values is None else dict(zip(self.functions, values.tolist()))

    def seen(self, min_count: int) -> set[str]:
        """Functions this estimator sees: count >= ``min_count`` (sampler), finite log P (scorer)."""
        if self.counts is None:
            return {f for f, v in zip(self.functions, self.log_p.tolist()) if math.isfinite(v)}
        return {f for f, c in zip(self.functions, self.counts.tolist()) if c >= min_count}


# --- estimators and their registry ------------------------------------------------------------------
#: Float64 (m + k) x (m + k) matrices the P_B side holds at once (the kernel, its factor, EP's
#: working copies): the memory an estimator that uses the kernel declares by default.
KERNEL_COPIES = 6


@dataclass(frozen=True)
class Resources:
    """What one shard (or fit) of an estimator needs, declared by :meth:`Estimator.resources`.

    Attributes
    ----------
    device : {"cpu", "cuda", "auto"}
        Where it runs, as configured (``auto``: a GPU where there is one).
    num_gpus : float
        GPUs asked of Ray.
    gpu_optional : bool
        It runs as well on a CPU: Ray is asked for no GPU where the cluster has none.
    memory_bytes, memory_what : int, str
        Estimated peak memory on its device (bytes; checked before anything is written) and what
        sets it, naming the config keys.
    """

    device: str = "cpu"
    num_gpus: float = 0.0
    gpu_optional: bool = False
    memory_bytes: int = 0
    memory_what: str = ""


class Estimator:
    """Base of the estimator plug-ins (module docstring). Subclasses set:

    Attributes
    ----------
    name : str
        The method name configs use; set by :func:`register_estimator`.
    quantity : {"p_b", "p_sgd"}, default "p_b"
    kind : {"sampler", "scorer"}, default "sampler"
    Options : type
        Its :class:`Options`.
    needs_kernel : bool
        It uses the case's NNGP kernel on S then E: the default :meth:`fits` and :meth:`memory`
        are the kernel's.
    has_error_bars : bool
        A scorer whose standard errors certify it: the report checks every scorer without error
        bars against it (``z`` scores, a figure with error bars).
    reference : bool
        The finite network's own P_B, exact up to Monte Carlo error: sweep figures draw its
        log P(S) (extras ``log_p_s_prior``, ``p_s_prior_ci``) beside the NNGP limit.
    summary_rows : tuple of (str, str)
        ``(extras key, title)`` of its extras the summary table shows.
    target : str
        Which distribution a ``p_b`` scorer estimates (``"nngp"``: the 0-1-likelihood posterior); the
        error-bar checks compare only scorers of the same target.
    growable : tuple of str
        Options that only say how many samples to draw, whose samples a larger value extends (the first
        ones unchanged): left out of the shards' fingerprint, so ``sgdbayes run --extend`` can grow them.
    """

    name: ClassVar[str] = ""
    quantity: ClassVar[str] = "p_b"
    kind: ClassVar[str] = "sampler"
    Options: ClassVar[type[Options]] = Options
    needs_kernel: ClassVar[bool] = False
    has_error_bars: ClassVar[bool] = False
    reference: ClassVar[bool] = False
    summary_rows: ClassVar[tuple[tuple[str, str], ...]] = ()
    target: ClassVar[str] = "nngp"
    growable: ClassVar[tuple[str, ...]] = ()

    def plan(self, case, options, functions: Sequence[str] | None = None) -> list[dict]:
        raise NotImplementedError

    def run_shard(self, case, options, shard: Mapping[str, Any], progress: Callable[[int, int], None] | None = None
                  ) -> pa.Table:
        """Compute one shard; ``progress(n_done, n_fit)`` may be called along the way."""
        raise NotImplementedError

    def extend(self, case, options, result: EstimatorResult) -> list[dict]:
        return []

    def extras(self, case, options, result: EstimatorResult) -> dict[str, Any]:
        """Per-case numbers for the summary and report (JSON-able). The key ``function_columns``,
        ``{name: {function: value}}``, is not a summary number: the report puts each name as a
        column ``<label>:<name>`` of ``functions.parquet`` (``sgd``'s sharpness means)."""
        return {}

    def items(self, shard: Mapping[str, Any]) -> int:
        """Items (runs, samples, functions) a shard holds, for progress bars."""
        return int(shard.get("items", 1))

    def fits(self, case, options) -> tuple[str, ...]:
        """Names of the per-case fits, in the order they are made (a later one may read an earlier
        one); estimators that declare the same name share the fit, made by the first."""
        return ("kernel",) if self.needs_kernel else ()

    def make_fit(self, case, options, name: str) -> Any:
        """Compute the fit ``name`` (saved by ``torch.save``); ``"kernel"``: :func:`nngp.kernel_for`
        on S then E (analytic where a closed form exists, else Monte Carlo)."""
        if name != "kernel":
            raise ValueError(f"{type(self).__name__} makes no fit named {name!r}")
        split = case.split()
        return nngp.kernel_for(case.arch, split.x_all(), input_shape=split.input_shape)

    def memory(self, case, options) -> tuple[int, str]:
        """Estimated peak memory of one shard on its device (bytes) and what sets it, naming the
        config keys."""
        if not self.needs_kernel:
            return 0, ""
        n = case.data.n_train + case.data.n_test
        return (n * n * 8 * KERNEL_COPIES,
                f"{KERNEL_COPIES} float64 kernel-sized matrices of (data.n_train + data.n_test)^2 = {n}^2 entries")

    def resources(self, case, options) -> Resources:
        """The one GPU rule: ``options.device`` (``cpu`` without one); one GPU for ``cuda`` and
        ``auto`` (optional for ``auto``)."""
        device = str(getattr(options, "device", "cpu"))
        need, what = self.memory(case, options)
        return Resources(device=device, num_gpus=0.0 if device == "cpu" else 1.0, gpu_optional=device == "auto",
                         memory_bytes=int(need), memory_what=what)


# The registry is the one piece of module state: like pyro's distributions or an entry-point table it
# maps a name to a class, is filled at import time and never changes a result.
_REGISTRY: dict[str, type[Estimator]] = {}


def register_estimator(name: str):
    """Class decorator: register an :class:`Estimator` subclass under the method ``name`` (once;
    configs can use it as soon as its module is imported)."""
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


def estimator_names() -> tuple[str, ...]:  # in registration order
    return tuple(_REGISTRY)


def get_estimator(name: str) -> Estimator:
    if name not in _REGISTRY:
        raise ValueError(f"unknown estimator method {name!r}; registered: {list(_REGISTRY)}"
                         f"{did_you_mean(str(name), _REGISTRY)}")
    return _REGISTRY[name]()
