"""Experiment configs: TOML files -> frozen dataclasses, with ``--set section.key=value`` overrides.

Section and key names are part of the contract (DESIGN.md)::

    [data]      dataset, n_train, n_test, seed, binarize, data_dir, target, corrupt_fraction
    [arch]      kind, and the fields of that kind's spec (sampler.FCN / CNN / LSTM)
    [sgd]       n_runs, optimizer, lr, batch_size, loss, momentum, max_epochs, epochs_after_fit,
                check_every, ensemble, seed, device, shard_size
    [bayes]     method
    [analysis]  min_count, n_boot, seed

An unknown section or key, or a value of the wrong type or out of range, is a ``ValueError``
naming the key, what was expected and, for a misspelling, the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sampler._checks import check_choice, check_float, check_int, did_you_mean
from sampler.architectures import ARCHITECTURES, FCN, Architecture, make_architecture
from sampler.data import BINARIZATIONS, DATASETS

from sampler.optimizers import OPTIMIZERS
from sampler.sgd import DEVICES, LOSSES

BAYES_METHODS = ("ep-conditional", "ep", "none")


@dataclass(frozen=True)
class DataConfig:
    """Which split: ``sampler.load_split(dataset, n_train, n_test, seed, ...)``.

    ``corrupt_fraction`` in [0, 1] replaces that fraction of S's labels by random bits
    (seeded by ``seed``); E keeps its true labels.
    """

    dataset: str = "mnist"
    n_train: int = 1000
    n_test: int = 100
    seed: int = 0
    binarize: str = "half"
    data_dir: str = ""
    target: str = ""
    corrupt_fraction: float = 0.0

    def __post_init__(self):
        check_choice("data.dataset", self.dataset, DATASETS)
        check_int("data.n_train", self.n_train, minimum=1)
        check_int("data.n_test", self.n_test, minimum=1)
        check_int("data.seed", self.seed, minimum=0)
        check_choice("data.binarize", self.binarize, BINARIZATIONS)
        check_float("data.corrupt_fraction", self.corrupt_fraction, minimum=0.0, maximum=1.0)
        if self.target and self.dataset != "boolean":
            raise ValueError(f"data.target is only for dataset 'boolean', got dataset={self.dataset!r}")


@dataclass(frozen=True)
class SGDConfig:
    """How P_SGD is sampled (see ``sampler.sample_sgd``). ``check_every = 0`` checks training
    accuracy at each epoch's end, as in the paper; N > 0 every N steps."""

    n_runs: int = 1000
    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int = 128
    loss: str = "ce"
    momentum: float = 0.0
    max_epochs: int = 200
    epochs_after_fit: int = 0
    check_every: int = 0
    ensemble: int = 256
    seed: int = 0
    device: str = "cpu"
    shard_size: int = 1024

    def __post_init__(self):
        check_int("sgd.n_runs", self.n_runs, minimum=1)
        check_choice("sgd.optimizer", self.optimizer, OPTIMIZERS)
        check_float("sgd.lr", self.lr, minimum=0.0, strict_minimum=True)
        check_int("sgd.batch_size", self.batch_size, minimum=1)
        check_choice("sgd.loss", self.loss, LOSSES)
        check_float("sgd.momentum", self.momentum, minimum=0.0)
        check_int("sgd.max_epochs", self.max_epochs, minimum=1)
        check_int("sgd.epochs_after_fit", self.epochs_after_fit, minimum=0)
        check_int("sgd.check_every", self.check_every, minimum=0)
        check_int("sgd.ensemble", self.ensemble, minimum=1)
        check_int("sgd.seed", self.seed, minimum=0)
        check_choice("sgd.device", self.device, DEVICES)
        check_int("sgd.shard_size", self.shard_size, minimum=1)


@dataclass(frozen=True)
class BayesConfig:
    """How P_B is estimated: ``ep-conditional`` (default), ``ep`` (one EP per function) or
    ``none`` (P_SGD only)."""

    method: str = "ep-conditional"

    def __post_init__(self):
        check_choice("bayes.method", self.method, BAYES_METHODS)


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
class ExperimentConfig:
    """A whole experiment: one split, one architecture, P_SGD and P_B settings, analysis."""

    data: DataConfig = field(default_factory=DataConfig)
    arch: Architecture = field(default_factory=FCN)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    bayes: BayesConfig = field(default_factory=BayesConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, the TOML layout."""
        return {
            "data": dataclasses.asdict(self.data),
            "arch": self.arch.to_dict(),
            "sgd": dataclasses.asdict(self.sgd),
            "bayes": dataclasses.asdict(self.bayes),
            "analysis": dataclasses.asdict(self.analysis),
        }

    def to_toml(self) -> str:
        """The config as TOML text (round-trips through :func:`parse_config`)."""
        import tomli_w

        return tomli_w.dumps(self.to_dict())


SECTIONS = {"data": DataConfig, "sgd": SGDConfig, "bayes": BayesConfig, "analysis": AnalysisConfig}
ALL_SECTIONS = ("data", "arch", "sgd", "bayes", "analysis")


def _field_types(cls) -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(cls) if f.default is not dataclasses.MISSING}


def _coerce(key: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, got {value!r}")
    if expected in (int, float, str) and (isinstance(value, bool) or not isinstance(value, expected)):
        raise TypeError(f"{key} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _check_keys(section: str, given: dict, valid) -> None:
    for key in given:
        if key not in valid:
            raise ValueError(f"unknown key {section}.{key}; valid keys of [{section}]: {sorted(valid)}"
                             f"{did_you_mean(key, valid)}")


def _build_section(section: str, values: dict):
    cls = SECTIONS[section]
    types = _field_types(cls)
    _check_keys(section, values, types)
    return cls(**{k: _coerce(f"{section}.{k}", v, types[k]) for k, v in values.items()})


def _build_arch(values: dict) -> Architecture:
    values = dict(values)
    kind = values.pop("kind", "fcn")
    check_choice("arch.kind", kind, ARCHITECTURES)
    cls = ARCHITECTURES[kind]
    types = _field_types(cls)
    _check_keys("arch", values, set(types) | {"kind"})
    return make_architecture(kind, **{k: _coerce(f"arch.{k}", v, types[k]) for k, v in values.items()})


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a nested dict (parsed TOML) into an :class:`ExperimentConfig`."""
    if not isinstance(raw, dict):
        raise TypeError(f"config must be a table of sections, got {type(raw).__name__}")
    for section, values in raw.items():
        if section not in ALL_SECTIONS:
            raise ValueError(f"unknown config section [{section}]; valid sections: {list(ALL_SECTIONS)}"
                             f"{did_you_mean(section, ALL_SECTIONS)}")
        if not isinstance(values, dict):
            raise TypeError(f"[{section}] must be a table of key = value, got {values!r}")
    parts = {s: _build_section(s, raw.get(s, {})) for s in SECTIONS}
    return ExperimentConfig(arch=_build_arch(raw.get("arch", {})), **parts)


def _expected_type(section: str, key: str) -> type | None:
    if section == "arch":
        if key == "kind":
            return str
        for cls in ARCHITECTURES.values():
            types = _field_types(cls)
            if key in types:
                return types[key]
        return None
    return _field_types(SECTIONS[section]).get(key)


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> ``(section, key, value)``.

    For a key whose type is ``str`` the value is taken as written (quotes optional), so a
    bitstring target like ``data.target=0110...`` keeps its leading zeros; otherwise it is read
    as a TOML literal (``sgd.lr=0.1``, ``sgd.n_runs=64``).
    """
    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--set expects section.key=value, got {text!r}")
    path, literal = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    literal = literal.strip()
    if section not in ALL_SECTIONS:
        raise ValueError(f"unknown config section in --set {text!r}; valid sections: {list(ALL_SECTIONS)}"
                         f"{did_you_mean(section, ALL_SECTIONS)}")
    if _expected_type(section, key) is str:
        if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
            literal = literal[1:-1]
        return section, key, literal
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        value = literal
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``section.key=value`` override applied (not yet validated)."""
    out = {s: (dict(v) if isinstance(v, dict) else v) for s, v in raw.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        if not isinstance(out.get(section, {}), dict):
            raise TypeError(f"[{section}] must be a table of key = value, got {out[section]!r}")
        out.setdefault(section, {})[key] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a TOML experiment file (or the built-in defaults when ``path`` is None) and apply
    ``--set`` overrides."""
    raw = read_toml(path) if path is not None else {}
    return parse_config(apply_overrides(raw, list(overrides)))
