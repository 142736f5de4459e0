"""Experiment configs: TOML files -> frozen dataclasses, with ``--set key=value`` overrides.

Sections (names are the contract; an unknown section or key, a wrong type or a value out of range
is a ``ValueError``/``TypeError`` naming the key, what was expected and what came)::

    [data]                  dataset, n_train, n_test, seed, binarize, data_dir, target, corrupt_fraction
    [arch]                  kind, and the fields of that kind's spec (sampler.FCN / CNN / LSTM)
    [estimators.<label>]    method = "<registered estimator>", and that method's options
    [analysis]              min_count, n_boot, seed
    [report]                pairs = [["sgd", "ep"], ...]  (P_SGD-side first, P_B reference second)
    [sweep]                 kind, and axes (a product) or points (a list): each point is a case

A file without ``[estimators]`` gets the default experiment's estimators; missing keys of a
section take the defaults of :data:`DEFAULT`, which equals ``configs/default.toml``. Without
``[report] pairs`` every P_SGD estimator is paired with every P_B estimator. Overrides:
``--set data.n_train=50``, ``--set estimators.sgd.n_runs=64``, ``--set sweep.kind=generic``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from sampler._checks import check_choice, check_int, did_you_mean
from sampler.architectures import ARCHITECTURES, Architecture, make_architecture

from .case import Case, DataConfig
from .estimators import get_estimator
from .estimators.base import LABEL_PATTERN, Options, coerce
from .sweep import SWEEP_KINDS

SECTIONS = ("data", "arch", "estimators", "analysis", "report", "sweep")

#: The default experiment (``sgdbayes run`` with no file); ``configs/default.toml`` spells out the same.
DEFAULT: dict[str, Any] = {
    "data": {"dataset": "mnist", "n_train": 100, "n_test": 20, "seed": 0, "binarize": "half"},
    "arch": {"kind": "fcn", "depth": 2, "width": 64, "activation": "relu", "sigma_w": 1.0, "sigma_b": 0.0357},
    "estimators": {
        "sgd": {"method": "sgd", "n_runs": 8192, "optimizer": "sgd", "lr": 0.1, "batch_size": 32, "loss": "ce",
                "max_epochs": 200, "ensemble": 512, "seed": 0, "device": "cpu", "shard_size": 1024},
        "ep": {"method": "ep-conditional"},
        "tilting": {"method": "tilting", "top": 50},
    },
    "analysis": {"min_count": 2, "n_boot": 1000, "seed": 0},
}


@dataclass(frozen=True)
class AnalysisConfig:
    """Statistics: correlations over functions seen at least ``min_count`` times, bootstrap
    confidence intervals from ``n_boot`` resamples seeded by ``seed``."""

    min_count: int = 2
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self):
        check_int("analysis.min_count", self.min_count, minimum=1)
        check_int("analysis.n_boot", self.n_boot, minimum=0)
        check_int("analysis.seed", self.seed, minimum=0)


@dataclass(frozen=True)
class EstimatorSpec:
    """One ``[estimators.<label>]`` table: the label (names the estimator in tables and pairs), the
    registered method and its validated, frozen options."""

    label: str
    method: str
    options: Options

    @property
    def estimator(self):
        return get_estimator(self.method)

    def to_table(self) -> dict[str, Any]:
        return {"method": self.method, **self.options.to_table()}


@dataclass(frozen=True)
class SweepSpec:
    """``[sweep]``: which figure (``kind``) and the points, each a tuple of ``(key, value)``."""

    kind: str
    points: tuple[tuple[tuple[str, Any], ...], ...]
    axes: bool

    def to_table(self) -> dict[str, Any]:
        if self.axes:
            keys = list(dict.fromkeys(k for p in self.points for k, _ in p))
            values = {k: list(dict.fromkeys(dict(p)[k] for p in self.points)) for k in keys}
            return {"kind": self.kind, "axes": values}
        return {"kind": self.kind, "points": [dict(p) for p in self.points]}


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: the base case (data, arch, estimators), analysis, report pairs, sweep.

    Attributes
    ----------
    data : DataConfig
    arch : Architecture
    estimators : tuple of EstimatorSpec
        In config order; labels are distinct.
    analysis : AnalysisConfig
    pairs : tuple of (str, str)
        (P_SGD-side label, P_B reference label) pairs the report compares, resolved at parse time.
    sweep : SweepSpec or None
    """

    data: DataConfig = field(default_factory=DataConfig)
    arch: Architecture | None = None
    estimators: tuple[EstimatorSpec, ...] = ()
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    pairs: tuple[tuple[str, str], ...] = ()
    sweep: SweepSpec | None = None

    def to_dict(self, *, with_sweep: bool = True) -> dict[str, Any]:
        """Nested plain dict, the TOML layout (round-trips through :func:`parse_config`)."""
        out = {"data": dataclasses.asdict(self.data), "arch": self.arch.to_dict(),
               "estimators": {s.label: s.to_table() for s in self.estimators},
               "analysis": dataclasses.asdict(self.analysis),
               "report": {"pairs": [list(p) for p in self.pairs]}}
        if with_sweep and self.sweep is not None:
            out["sweep"] = self.sweep.to_table()
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def estimator(self, label: str) -> EstimatorSpec:
        for s in self.estimators:
            if s.label == label:
                return s
        raise KeyError(label)

    def cases(self) -> tuple[Case, ...]:
        """The cases: ``main`` without a sweep, else one per sweep point, in order."""
        if self.sweep is None:
            return (Case("main", (), self.data, self.arch, self.estimators),)
        base = self.to_dict(with_sweep=False)
        out = []
        for settings in self.sweep.points:
            raw = _copy(base)
            for key, value in settings:
                _set(raw, key, value)
            try:
                point = parse_config(raw)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"sweep point {point_name(settings)}: {exc}") from None
            out.append(Case(point_name(settings), settings, point.data, point.arch, point.estimators))
        return tuple(out)

    def case(self, name: str) -> Case:
        for c in self.cases():
            if c.name == name:
                return c
        raise KeyError(f"no case {name!r} in this config")


def _copy(raw: Mapping) -> dict:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_name(settings) -> str:
    """Case name of a sweep point: the last part of each key and its value, e.g.
    ``corrupt_fraction=0.2,width=64`` (``sgd.lr=0.1`` for an estimator option)."""
    def short(key: str) -> str:
        parts = key.split(".")
        return ".".join(parts[1:]) if parts[0] == "estimators" else parts[-1]
    return ",".join(f"{short(key)}={_fmt_value(v)}" for key, v in settings)


# --- parsing -------------------------------------------------------------------------------------------
def _field_types(cls) -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(cls) if f.default is not dataclasses.MISSING}


def _check_keys(section: str, given: Mapping, valid) -> None:
    for key in given:
        if key not in valid:
            raise ValueError(f"unknown key {section}.{key}; valid keys of [{section}]: {sorted(valid)}"
                             f"{did_you_mean(key, valid)}")


def _table(section: str, value: Any) -> dict:
    if not isinstance(value, Mapping):
        raise TypeError(f"[{section}] must be a table of key = value, got {value!r}")
    return dict(value)


def _build(cls, section: str, values: Mapping):
    types = _field_types(cls)
    _check_keys(section, values, types)
    return cls(**{k: coerce(f"{section}.{k}", v, types[k]) for k, v in values.items()})


def _build_arch(values: Mapping) -> Architecture:
    values = dict(values)
    kind = check_choice("arch.kind", values.pop("kind", "fcn"), ARCHITECTURES)
    types = _field_types(ARCHITECTURES[kind])
    _check_keys("arch", values, set(types) | {"kind"})
    return make_architecture(kind, **{k: coerce(f"arch.{k}", v, types[k]) for k, v in values.items()})


def _build_estimators(raw: Any) -> tuple[EstimatorSpec, ...]:
    tables = _table("estimators", raw)
    if not tables:
        raise ValueError("[estimators] must name at least one estimator, e.g. [estimators.sgd] method = \"sgd\"")
    out = []
    for label, table in tables.items():
        if not re.fullmatch(LABEL_PATTERN, label):
            raise ValueError(f"estimator label {label!r} must be letters, digits and ._+- (it names folders)")
        table = _table(f"estimators.{label}", table)
        if "method" not in table:
            raise ValueError(f"[estimators.{label}] needs method = \"<estimator>\"")
        method = table.pop("method")
        if not isinstance(method, str):
            raise TypeError(f"estimators.{label}.method must be a string, got {method!r}")
        out.append(EstimatorSpec(label, method, get_estimator(method).options(label, table)))
    return tuple(out)


def _build_pairs(raw: Any, estimators: tuple[EstimatorSpec, ...]) -> tuple[tuple[str, str], ...]:
    labels = [s.label for s in estimators]
    if raw is None or raw == []:
        sgd = [s.label for s in estimators if s.estimator.quantity == "p_sgd"]
        pb = [s.label for s in estimators if s.estimator.quantity == "p_b"]
        return tuple((a, b) for a in sgd for b in pb)
    if not isinstance(raw, list):
        raise TypeError(f"report.pairs must be a list of [label, reference label] pairs, got {raw!r}")
    pairs = []
    for i, p in enumerate(raw):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise ValueError(f"report.pairs[{i}] must be [label, reference label], got {p!r}")
        for x in p:
            if x not in labels:
                raise ValueError(f"report.pairs[{i}] names {x!r}, which is no estimator of this config; "
                                 f"estimators: {labels}{did_you_mean(x, labels)}")
        if p[0] == p[1]:
            raise ValueError(f"report.pairs[{i}] pairs {p[0]!r} with itself")
        pairs.append((p[0], p[1]))
    return tuple(pairs)


def _build_sweep(raw: Any) -> SweepSpec:
    spec = _table("sweep", raw)
    _check_keys("sweep", spec, ("kind", "axes", "points"))
    kind = check_choice("sweep.kind", spec.get("kind", "generic"), list(SWEEP_KINDS))
    if ("axes" in spec) == ("points" in spec):
        raise ValueError("[sweep] needs exactly one of 'axes' (a product) or 'points' (a list)")
    if "axes" in spec:
        axes = spec["axes"]
        if not isinstance(axes, Mapping) or not axes:
            raise ValueError(f"sweep.axes must be a table of 'section.key' = [values], got {axes!r}")
        for key, values in axes.items():
            _check_setting_key(key)
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.axes[{key!r}] must be a non-empty list, got {values!r}")
        points = tuple(tuple(zip(axes.keys(), vals)) for vals in itertools.product(*axes.values()))
    else:
        given = spec["points"]
        if not isinstance(given, list) or not given or not all(isinstance(p, Mapping) and p for p in given):
            raise ValueError(f"sweep.points must be a non-empty list of tables, got {given!r}")
        for p in given:
            for key in p:
                _check_setting_key(key)
        points = tuple(tuple(p.items()) for p in given)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep points must differ, got duplicates among {names}")
    return SweepSpec(kind, points, "axes" in spec)


def _check_setting_key(key: Any) -> None:
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"sweep keys must be 'section.key', got {key!r}")
    section = key.split(".", 1)[0]
    if section not in ("data", "arch", "estimators"):
        raise ValueError(f"unknown config section in sweep key {key!r}; a sweep sets data.*, arch.* or "
                         f"estimators.<label>.*{did_you_mean(section, ('data', 'arch', 'estimators'))}")
    if section == "estimators" and key.count(".") != 2:
        raise ValueError(f"sweep key {key!r} must be estimators.<label>.<key>")


def _set(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise TypeError(f"{key}: {p} must be a table, got {nxt!r}")
        node = nxt
    node[parts[-1]] = value


def parse_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested dict (parsed TOML) into an :class:`ExperimentConfig`; missing sections and
    keys take :data:`DEFAULT`'s values (estimators only as a whole: a file that names any estimator
    gets exactly those)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"config must be a table of sections, got {type(raw).__name__}")
    for section in raw:
        if section not in SECTIONS:
            raise ValueError(f"unknown config section [{section}]; valid sections: {list(SECTIONS)}"
                             f"{did_you_mean(section, SECTIONS)}")
    data = _build(DataConfig, "data", {**DEFAULT["data"], **_table("data", raw.get("data", {}))})
    arch_raw = _table("arch", raw.get("arch", {}))
    if arch_raw.get("kind", "fcn") == "fcn":
        arch_raw = {**DEFAULT["arch"], **arch_raw}
    estimators = _build_estimators(_copy(raw["estimators"]) if "estimators" in raw else _copy(DEFAULT["estimators"]))
    labels = [s.label for s in estimators]
    report = _table("report", raw.get("report", {}))
    _check_keys("report", report, ("pairs",))
    analysis = _build(AnalysisConfig, "analysis", {**DEFAULT["analysis"], **_table("analysis", raw.get("analysis", {}))})
    sweep = _build_sweep(raw["sweep"]) if "sweep" in raw else None
    if len(set(labels)) != len(labels):
        raise ValueError(f"estimator labels must be distinct, got {labels}")
    config = ExperimentConfig(data=data, arch=_build_arch(arch_raw), estimators=estimators, analysis=analysis,
                              pairs=_build_pairs(report.get("pairs"), estimators), sweep=sweep)
    if sweep is not None:
        config.cases()  # every point must be valid now, not after the first shards
    return config


# --- overrides and files ------------------------------------------------------------------------------
def _expected_type(raw: Mapping, path: list[str]) -> type | None:
    section = path[0]
    if section == "data" and len(path) == 2:
        return _field_types(DataConfig).get(path[1])
    if section == "arch" and len(path) == 2:
        if path[1] == "kind":
            return str
        for cls in ARCHITECTURES.values():
            if path[1] in _field_types(cls):
                return _field_types(cls)[path[1]]
    if section == "estimators" and len(path) == 3:
        if path[2] == "method":
            return str
        table = (raw.get("estimators") or DEFAULT["estimators"]).get(path[1], {})
        method = table.get("method") if isinstance(table, Mapping) else None
        if isinstance(method, str):
            try:
                return get_estimator(method).Options.key_type(path[2])
            except ValueError:
                return None
    if section == "sweep" and path[-1] == "kind":
        return str
    return None


def parse_override(text: str, raw: Mapping[str, Any] | None = None) -> tuple[list[str], Any]:
    """``"section.key=value"`` (or ``estimators.<label>.key=value``) -> ``(path, value)``.

    A value whose key is a string option is taken as written (quotes optional), so a bitstring
    like ``data.target=0110...`` keeps its leading zeros; otherwise it is read as a TOML literal
    (``estimators.sgd.lr=0.1``, ``report.pairs=[["sgd", "ep"]]``).
    """
    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--set expects section.key=value, got {text!r}")
    key, literal = (s.strip() for s in text.split("=", 1))
    path = key.split(".")
    if path[0] not in SECTIONS:
        raise ValueError(f"unknown config section in --set {text!r}; valid sections: {list(SECTIONS)}"
                         f"{did_you_mean(path[0], SECTIONS)}")
    if path[0] == "estimators" and len(path) != 3:
        raise ValueError(f"--set {text!r}: estimator keys are estimators.<label>.<key>")
    if _expected_type(raw or {}, path) is str:
        if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
            literal = literal[1:-1]
        return path, literal
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        value = literal
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides) -> dict[str, Any]:
    """A copy of ``raw`` with each ``--set`` override applied (not yet validated). An override of an
    estimator the file does not have adds it (it then needs ``method``); without a file, estimators
    start from :data:`DEFAULT`'s."""
    out = _copy(raw)
    for text in overrides:
        path, value = parse_override(text, out)
        if path[0] == "estimators" and "estimators" not in out:
            out["estimators"] = _copy(DEFAULT["estimators"])
        _set(out, ".".join(path), value)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files "
                         f"are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path | None = None, overrides=()) -> ExperimentConfig:
    """Read a TOML experiment file (or :data:`DEFAULT` when ``path`` is None) and apply overrides."""
    raw = read_toml(path) if path is not None else {}  # parse_config fills in DEFAULT
    return parse_config(apply_overrides(raw, list(overrides)))
