"""Experiment configs: TOML files (sections ``data``, ``arch``, ``estimators.<label>``, ``analysis``,
``report``, ``sweep``) -> one validated, frozen pydantic model, with ``--set key=value``. A bad key
or value is a one-line ``ValueError`` / ``TypeError`` naming the key, what was expected and what came.

``arch`` is a union discriminated by ``kind`` over ``sampler.architectures.ARCHITECTURES``, each
estimator one discriminated by ``method`` over the estimator registry, both read at parse time (a
kind or method a user's module registers works). The defaults are the models' own, and
``configs/default.toml`` states the same: no ``[estimators]`` means :data:`DEFAULT_ESTIMATORS`, an
``fcn`` has width :data:`DEFAULT_FCN_WIDTH` unless it says otherwise, no ``[report] pairs`` pairs every
P_SGD estimator with every P_B one.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import pydantic
import tomli_w
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Discriminator, Field, InstanceOf, Strict, Tag,
                      TypeAdapter, ValidationError, field_validator, model_validator, with_config)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from sampler.checks import check_choice, did_you_mean
from sampler.architectures import ARCHITECTURES, Architecture, is_factory_file

from .case import Case, DataConfig
from .estimators import estimator_names, get_estimator
from .estimators.base import LABEL_PATTERN, Options
from .sweep import SWEEP_KINDS
from .validation import SECTION, STRICT

SECTIONS = ("data", "arch", "estimators", "analysis", "report", "sweep")
#: The default experiment's estimators, each with its method's default options.
DEFAULT_ESTIMATORS: Mapping[str, Mapping[str, str]] = {
    "sgd": {"method": "sgd"}, "ep": {"method": "ep-conditional"}, "tilting": {"method": "tilting"}}
#: The default experiment's FCN width (``sampler.FCN``'s own default, 512, is the paper's).
DEFAULT_FCN_WIDTH = 64
_MODEL = dict(frozen=True, kw_only=True, config=SECTION)


@pydantic.dataclasses.dataclass(**_MODEL)
class AnalysisConfig:
    """``[analysis]``: correlations over functions seen at least ``min_count`` times, bootstrap
    intervals from ``n_boot`` resamples seeded by ``seed``."""

    min_count: int = Field(2, ge=1, strict=True)
    n_boot: int = Field(1000, ge=0, strict=True)
    seed: int = Field(0, ge=0, strict=True)


@pydantic.dataclasses.dataclass(**_MODEL)
class ReportConfig:
    """``[report]``: the ``(a, b)`` label pairs the report compares (``a`` the P_SGD side, ``b`` the
    P_B reference)."""

    pairs: tuple[tuple[str, str], ...] = ()


@pydantic.dataclasses.dataclass(**_MODEL)
class SweepConfig:
    """``[sweep]``: the figure (``kind``) and exactly one of ``axes`` (a table ``"section.key" =
    [values]``, their product) or ``points`` (a list of tables); each point is a case."""

    kind: str = "generic"
    axes: Optional[dict[str, list[Any]]] = None
    points: Optional[list[dict[str, Any]]] = None

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind):
        return check_choice("sweep.kind", kind, list(SWEEP_KINDS))

    @model_validator(mode="after")
    def _points_are_settings(self):
        if (self.axes is None) == (self.points is None):
            raise ValueError("[sweep] needs exactly one of 'axes' (a product) or 'points' (a list)")
        if self.axes is not None and not (self.axes and all(self.axes.values())):
            raise ValueError(f"sweep.axes must be a table of 'section.key' = a non-empty list, got {self.axes!r}")
        if self.points is not None and not (self.points and all(self.points)):
            raise ValueError(f"sweep.points must be a non-empty list of non-empty tables, got {self.points!r}")
        names = [point_name(p) for p in self.settings()]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep points must differ, got duplicates among {names}")
        return self

    def settings(self) -> tuple[tuple[tuple[str, Any], ...], ...]:
        """The points, each a tuple of ``(key, value)``, in order."""
        if self.axes is not None:
            return tuple(tuple(zip(self.axes, values)) for values in itertools.product(*self.axes.values()))
        return tuple(tuple(p.items()) for p in self.points)


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """One ``[estimators.<label>]`` table: its label, registered method and validated options."""

    label: str
    method: str
    options: Options

    @property
    def estimator(self):
        return get_estimator(self.method)


# --- the unions, built from the registries when a config is parsed -----------------------------------
def _tagged(key: str, members: Mapping[str, Any]):
    """A union of tables discriminated by their ``key``: ``members[tag]`` validates a table without it."""
    def drop(table):
        return {k: v for k, v in table.items() if k != key} if isinstance(table, Mapping) else table

    def tag(table):
        return table.get(key) if isinstance(table, Mapping) else None

    tag.__name__ = key  # pydantic's errors name the discriminator by it
    return Annotated[Union[tuple(Annotated[m, BeforeValidator(drop), Tag(t)] for t, m in members.items())],
                     Discriminator(tag)]


def _spec_fields(spec: type) -> dict[str, Any]:
    """``{field: type}`` of a spec dataclass's init fields; ``Any`` where string annotations do not
    resolve (a spec defined in a function): the spec's own checks then judge the values."""
    try:
        hints = typing.get_type_hints(spec)
    except NameError:
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(spec) if f.init}


def _arch_table(spec: type):
    """``[arch]`` of one kind: a table of the spec's fields and types -> the spec, whose own checks'
    errors reach the user as ``arch.<key> ...``."""
    containers = (list, tuple, dict, set, frozenset)  # a TOML list for a tuple field; scalars stay strict
    fields = {name: Annotated[hint, Strict(False)] if hint in containers or typing.get_origin(hint) in containers
              else hint for name, hint in _spec_fields(spec).items()}
    table = with_config(ConfigDict(**STRICT))(TypedDict(f"arch_{spec.__name__}", fields, total=False))

    def build(values):
        try:
            return spec(**values)
        except TypeError as exc:  # a ValueError passes as it is: pydantic keeps its text and its place
            raise PydanticCustomError("spec_type_error", "{error}", {"error": str(exc)}) from None

    return Annotated[table, AfterValidator(build)]


def _table(value) -> Mapping:
    if not isinstance(value, Mapping):
        raise PydanticCustomError("dict_type", "a table")
    return value


def parse_arch(value) -> Architecture:
    """An ``[arch]`` table (``kind`` defaults to ``fcn``, an fcn's width to :data:`DEFAULT_FCN_WIDTH`) -> its
    spec, inside a pydantic validator (every config that names an architecture uses this one)."""
    if isinstance(value, Architecture):
        return value
    table = {"kind": "fcn", **_table(value)}
    if table["kind"] == "fcn":
        table = {"width": DEFAULT_FCN_WIDTH, **table}
    members = {kind: _arch_table(spec) for kind, spec in ARCHITECTURES.items()}
    return TypeAdapter(_tagged("kind", members)).validate_python(table)


# --- the config -------------------------------------------------------------------------------------
@pydantic.dataclasses.dataclass(frozen=True, kw_only=True, config=ConfigDict(**SECTION, arbitrary_types_allowed=True))
class ExperimentConfig:
    """A whole experiment: the base case (data, arch, estimators), analysis, report, sweep.

    Attributes
    ----------
    arch : sampler.architectures.Architecture
        The spec of ``[arch]``.
    estimators : tuple of EstimatorSpec
        In config order; labels are distinct.
    report : ReportConfig
        Its pairs resolved: without ``[report] pairs``, every P_SGD estimator against every P_B one.
    """

    data: DataConfig = Field(default_factory=DataConfig)
    arch: InstanceOf[Architecture] = Field(default_factory=lambda: {"kind": "fcn"}, validate_default=True)
    estimators: tuple[InstanceOf[EstimatorSpec], ...] = Field(default_factory=lambda: DEFAULT_ESTIMATORS,
                                                             validate_default=True)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    sweep: Optional[SweepConfig] = None

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value):
        return parse_arch(value)

    @field_validator("estimators", mode="before")
    @classmethod
    def _estimators(cls, value):
        if isinstance(value, tuple):
            return value
        if not _table(value):
            raise ValueError("estimators must name at least one estimator, e.g. [estimators.sgd] method = \"sgd\"")
        for label in value:
            if not re.fullmatch(LABEL_PATTERN, label):
                raise ValueError(f"estimator label {label!r} must be letters, digits and ._+- (it names folders)")
        members = {method: get_estimator(method).Options for method in estimator_names()}
        options = TypeAdapter(dict[str, _tagged("method", members)]).validate_python(dict(value))
        return tuple(EstimatorSpec(label, value[label]["method"], o) for label, o in options.items())

    @model_validator(mode="after")
    def _pairs_and_points(self):
        labels = [s.label for s in self.estimators]
        for i, pair in enumerate(self.report.pairs):
            for x in pair:
                if x not in labels:
                    raise ValueError(f"report.pairs[{i}] names {x!r}, which is no estimator of this config; "
                                     f"estimators: {labels}{did_you_mean(x, labels)}")
            if pair[0] == pair[1]:
                raise ValueError(f"report.pairs[{i}] pairs {pair[0]!r} with itself")
        if not self.report.pairs:  # resolved now, so that a stored config states them
            of = {q: [s.label for s in self.estimators if s.estimator.quantity == q] for q in ("p_sgd", "p_b")}
            object.__setattr__(self, "report", ReportConfig(pairs=tuple(itertools.product(of["p_sgd"], of["p_b"]))))
        if self.sweep is not None:
            self.cases()  # every point must be valid now, not after the first shards
        return self

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """(P_SGD-side label, P_B reference label) pairs the report compares (``report.pairs``)."""
        return self.report.pairs

    def to_dict(self, *, with_sweep: bool = True) -> dict[str, Any]:
        """Nested plain dict, the TOML layout (round-trips through :func:`parse_config`)."""
        out = {"data": dataclasses.asdict(self.data), "arch": self.arch.to_dict(),
               "estimators": {s.label: {"method": s.method, **s.options.to_table()} for s in self.estimators},
               "analysis": dataclasses.asdict(self.analysis),
               "report": {"pairs": [list(p) for p in self.report.pairs]}}
        if with_sweep and self.sweep is not None:
            out["sweep"] = {k: v for k, v in dataclasses.asdict(self.sweep).items() if v is not None}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def estimator(self, label: str) -> EstimatorSpec:
        for s in self.estimators:
            if s.label == label:
                return s
        raise KeyError(label)

    def cases(self) -> tuple[Case, ...]:
        """The cases: ``main`` without a sweep, else one per sweep point (each validated), in order."""
        if self.sweep is None:
            return (Case("main", (), self.data, self.arch, self.estimators),)
        out = []
        for settings in self.sweep.settings():
            raw = self.to_dict(with_sweep=False)
            for key, value in settings:
                _set(raw, key, value)
            try:
                point = parse_config(raw)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"sweep point {point_name(settings)}: {exc}") from None
            out.append(Case(point_name(settings), settings, point.data, point.arch, point.estimators))
        return tuple(out)


def point_name(settings) -> str:
    """Case name of a sweep point: the last part of each key and its value, e.g.
    ``corrupt_fraction=0.2,width=64`` (``sgd.lr=0.1`` for an estimator option)."""
    def short(key: str) -> str:
        return key.split(".", 1)[1] if key.startswith("estimators.") else key.rsplit(".", 1)[-1]
    return ",".join(f"{short(key)}={v:g}" if isinstance(v, float) else f"{short(key)}={v}" for key, v in settings)


# --- parsing ------------------------------------------------------------------------------------------
_SECTION_MODELS = {"data": DataConfig, "analysis": AnalysisConfig, "report": ReportConfig, "sweep": SweepConfig}


def _table_fields(raw: Mapping, loc: tuple) -> dict[str, Any]:
    """``{key: type}`` of the table at ``loc`` of ``raw`` (its arch kind, its methods), for errors and
    ``--set`` values; empty where unknown."""
    section = loc[0] if loc else None
    table = raw.get(section) if isinstance(raw.get(section), Mapping) else {}
    if not loc:
        return dict.fromkeys(SECTIONS)
    if len(loc) == 1 and section in _SECTION_MODELS:
        return {k: f.annotation for k, f in _SECTION_MODELS[section].__pydantic_fields__.items()}
    if loc == ("arch",) and table.get("kind", "fcn") in ARCHITECTURES:
        spec = ARCHITECTURES[table.get("kind", "fcn")]
        return {"kind": str, **_spec_fields(spec)}
    if len(loc) == 2 and section == "estimators":
        entry = (table or DEFAULT_ESTIMATORS).get(loc[1])
        method = entry.get("method") if isinstance(entry, Mapping) else None
        if method in estimator_names():
            return {"method": str, **{k: f.annotation for k, f in get_estimator(method).Options.model_fields.items()}}
    return {}


def _untagged(loc: tuple) -> tuple:
    # drop the union tags pydantic puts in locations: (arch, <kind>, key), (estimators, label, <method>, key)
    at = {"arch": 1, "estimators": 2}.get(loc[0] if loc else None)
    return loc[:at] + loc[at + 1:] if at is not None and len(loc) > at else loc


def parse_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested dict (parsed TOML); missing sections and keys take the models' defaults
    (estimators only as a whole: a file that names any estimator gets exactly those)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"config must be a table of sections, got {type(raw).__name__}")
    return parse_model(ExperimentConfig, raw)


def parse_model(model: type, raw: Mapping[str, Any]):
    """Validate ``raw`` against the pydantic model ``model``; the first error as one line (:func:`_error`)."""
    try:
        return TypeAdapter(model).validate_python(dict(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if model is not ExperimentConfig and err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            loc = tuple(err["loc"])
            valid = sorted(_model_fields(model, loc[:-1]))
            where = f"[{'.'.join(map(str, loc[:-1]))}]" if len(loc) > 1 else "the top level"
            raise ValueError(f"unknown key {'.'.join(map(str, loc))}; valid keys of {where}: {valid}"
                             f"{did_you_mean(str(loc[-1]), valid)}") from None
        raise _error(err, raw) from None


def _model_fields(model: type, loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic dataclass at ``loc`` of ``model`` (list indices skipped)."""
    for key in loc:
        if isinstance(key, int):
            continue
        hint = model.__pydantic_fields__[key].annotation
        inner = [a for a in typing.get_args(hint) if hasattr(a, "__pydantic_fields__")] \
            or [a for t in typing.get_args(hint) for a in typing.get_args(t) if hasattr(a, "__pydantic_fields__")]
        model = inner[0] if inner else hint
    return list(getattr(model, "__pydantic_fields__", {}))


# what a pydantic error type expected, in the config's words; the first nine are wrong types (TypeError)
_EXPECTED = {"int_type": "of type int", "float_type": "of type float", "string_type": "of type str",
             "bool_type": "true or false", "dict_type": "a table", "model_type": "a table", "dataclass_type": "a table",
             "list_type": "a list", "tuple_type": "a list", "greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
             "less_than": "< {lt}", "less_than_equal": "<= {le}", "multiple_of": "a multiple of {multiple_of}",
             "finite_number": "finite", "missing": "given"}
_TYPE_ERRORS = set(list(_EXPECTED)[:9]) | {"spec_type_error"}


def _error(err: dict, raw: Mapping) -> ValueError | TypeError:
    """A pydantic error (one of ``ValidationError.errors()``) as one line naming the key, what was
    expected and what came: a ``TypeError`` for a wrong type, else a ``ValueError``."""
    loc = _untagged(tuple(err["loc"]))
    kind, value, ctx, key = err["type"], err.get("input"), err.get("ctx") or {}, ".".join(map(str, loc))
    error = TypeError if kind in _TYPE_ERRORS else ValueError
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = sorted(_table_fields(raw, loc[:-1]))
        where = (f"config section [{key}]; valid sections" if len(loc) == 1 else
                 f"key {key}; valid keys of [{'.'.join(map(str, loc[:-1]))}]")
        return error(f"unknown {where}: {valid}{did_you_mean(str(loc[-1]), valid)}")
    if kind.startswith("union_tag"):  # a discriminated union: the method or kind is missing or unknown
        name, valid = ctx["discriminator"].strip("'()"), re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        if "tag" not in ctx:
            return error(f"[{key}] needs {name} = \"...\", a registered {name}")
        return error(f"unknown {key}.{name} {ctx['tag']!r}; valid: {valid}{did_you_mean(ctx['tag'], valid)}")
    if kind in ("value_error", "assertion_error", "spec_type_error"):  # a model's own check: it names the key
        text = str(ctx.get("error", err["msg"]))
        if loc and text.split(" ", 1)[0] in _table_fields(raw, loc):
            return error(f"{key}.{text}")
        return error(text if not loc or text.startswith(str(loc[0])) else f"{key}: {text}")
    expected = _EXPECTED[kind].format(**ctx) if kind in _EXPECTED else err["msg"].replace("Input should be ", "")
    choices = re.findall(r"'([^']*)'", ctx.get("expected", "")) if kind == "literal_error" else []
    return error(f"{key} must be {expected}, got {value!r} ({type(value).__name__}){did_you_mean(str(value), choices)}")


# --- overrides and files ------------------------------------------------------------------------------
def _set(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise TypeError(f"{key}: {p} must be a table, got {nxt!r}")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str, raw: Mapping[str, Any] | None = None) -> tuple[list[str], Any]:
    """``"section.key=value"`` (or ``estimators.<label>.key=value``) -> ``(path, value)``. A string
    option's value is taken as written (quotes optional: ``data.target=0110...`` keeps its leading
    zeros); any other is read as a TOML literal (``report.pairs=[["sgd", "ep"]]``)."""
    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--set expects section.key=value, got {text!r}")
    key, literal = (s.strip() for s in text.split("=", 1))
    path = key.split(".")
    if path[0] not in SECTIONS:
        raise ValueError(f"unknown config section in --set {text!r}; valid sections: {list(SECTIONS)}"
                         f"{did_you_mean(path[0], SECTIONS)}")
    if path[0] == "estimators" and len(path) != 3:
        raise ValueError(f"--set {text!r}: estimator keys are estimators.<label>.<key>")
    hint = _table_fields(raw or {}, tuple(path[:-1])).get(path[-1])
    if hint is str or (typing.get_origin(hint) is Literal and all(isinstance(a, str) for a in typing.get_args(hint))):
        if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
            literal = literal[1:-1]
        return path, literal
    return path, toml_literal(literal)


def toml_literal(text: str):
    """``text`` read as a TOML value (``3``, ``[1.0, 2.0]``, ``"a"``), else the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides) -> dict[str, Any]:
    """A copy of ``raw`` with each ``--set`` override applied (not yet validated). An override of an
    estimator the file does not have adds it (it then needs ``method``); without ``[estimators]``,
    they start from :data:`DEFAULT_ESTIMATORS`."""
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text, out)
        if path[0] == "estimators" and "estimators" not in out:
            out["estimators"] = copy.deepcopy(dict(DEFAULT_ESTIMATORS))
        _set(out, ".".join(path), value)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files "
                         f"are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path | None = None, overrides=()) -> ExperimentConfig:
    """Read a TOML experiment file (the default experiment when ``path`` is None) and apply overrides.
    A module factory named by a relative file (``factory = "./mynets.py:tanh_mlp"``) is relative to the
    config file, and kept as an absolute path (so the run folder's copy resumes from anywhere)."""
    raw = apply_overrides(read_toml(path) if path is not None else {}, list(overrides))
    arch = raw.get("arch")
    if path is not None and isinstance(arch, dict) and is_factory_file(arch.get("factory")):
        file, attr = arch["factory"].rsplit(":", 1)
        if not Path(file).expanduser().is_absolute():
            arch["factory"] = f"{(Path(path).resolve().parent / file).resolve()}:{attr}"
    return parse_config(raw)
