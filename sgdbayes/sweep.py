"""Sweeps: one TOML file that expands into several experiments, run into sub-folders.

A sweep file is an experiment file with one extra section::

    [sweep]
    kind = "random_labels"          # which sweep figure to draw: random_labels, width, optimizer, generic
    axes = { "data.corrupt_fraction" = [0.0, 0.5, 1.0] }        # cartesian product of the axes
    # or an explicit list of settings:
    points = [ { "sgd.optimizer" = "sgd", "sgd.lr" = 0.05 }, { "sgd.optimizer" = "adam", "sgd.lr" = 0.001 } ]

Each point is the base experiment with those keys replaced; ``--set`` overrides apply to the base
(so the same file runs reduced on a laptop and at the paper's size on GPU nodes).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampler._checks import check_choice, did_you_mean
from sgdbayes.config import ALL_SECTIONS, ExperimentConfig, apply_overrides, parse_config, read_toml

SWEEP_KINDS = ("random_labels", "width", "optimizer", "generic")
SWEEP_KEYS = ("kind", "axes", "points")


@dataclass(frozen=True)
class SweepPoint:
    """One experiment of a sweep: its folder name, the keys it sets and its full config."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    config: ExperimentConfig


@dataclass(frozen=True)
class Sweep:
    """A sweep: its kind (which figure) and its points in order."""

    kind: str
    points: tuple[SweepPoint, ...]


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_name(settings: list[tuple[str, Any]]) -> str:
    """Folder name of a point, e.g. ``corrupt_fraction=0.2,width=64``."""
    return ",".join(f"{key.split('.', 1)[1]}={_fmt_value(v)}" for key, v in settings)


def _check_setting_key(key: str) -> tuple[str, str]:
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"sweep keys must be 'section.key', got {key!r}")
    section, name = key.split(".", 1)
    if section not in ALL_SECTIONS:
        raise ValueError(f"unknown config section in sweep key {key!r}; valid sections: {list(ALL_SECTIONS)}"
                         f"{did_you_mean(section, ALL_SECTIONS)}")
    return section, name


def expand_sweep(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Expand a parsed sweep file (with its ``[sweep]`` section) into validated points.

    Raises ``ValueError`` naming the offending key for a malformed ``[sweep]`` or any point
    whose config is invalid.
    """
    raw = dict(raw)
    spec = raw.pop("sweep", None)
    if not isinstance(spec, dict):
        raise ValueError("a sweep file needs a [sweep] table with 'axes' or 'points'")
    for key in spec:
        if key not in SWEEP_KEYS:
            raise ValueError(f"unknown key sweep.{key}; valid keys of [sweep]: {list(SWEEP_KEYS)}"
                             f"{did_you_mean(key, SWEEP_KEYS)}")
    kind = check_choice("sweep.kind", spec.get("kind", "generic"), SWEEP_KINDS)
    base = apply_overrides(raw, list(overrides))
    if ("axes" in spec) == ("points" in spec):
        raise ValueError("[sweep] needs exactly one of 'axes' (a product) or 'points' (a list)")
    if "axes" in spec:
        axes = spec["axes"]
        if not isinstance(axes, dict) or not axes:
            raise ValueError(f"sweep.axes must be a table of 'section.key' = [values], got {axes!r}")
        for key, values in axes.items():
            _check_setting_key(key)
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.axes[{key!r}] must be a non-empty list, got {values!r}")
        combos = [list(zip(axes.keys(), vals)) for vals in itertools.product(*axes.values())]
    else:
        points = spec["points"]
        if not isinstance(points, list) or not points or not all(isinstance(p, dict) and p for p in points):
            raise ValueError(f"sweep.points must be a non-empty list of tables, got {points!r}")
        combos = [list(p.items()) for p in points]
    out = []
    for settings in combos:
        point = {s: (dict(v) if isinstance(v, dict) else v) for s, v in base.items()}
        for key, value in settings:
            section, name = _check_setting_key(key)
            point.setdefault(section, {})[name] = value
        try:
            config = parse_config(point)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"sweep point {point_name(settings)}: {exc}") from exc
        out.append(SweepPoint(point_name(settings), tuple(settings), config))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep points must differ, got duplicates among {names}")
    return Sweep(kind, tuple(out))


def is_sweep_file(path: str | Path) -> bool:
    """Whether the TOML file at ``path`` has a ``[sweep]`` section."""
    return "sweep" in read_toml(path)


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and expand the sweep file at ``path``."""
    return expand_sweep(read_toml(path), overrides)


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its folder, per-point summaries (in point order) and its report."""

    folder: Path
    kind: str
    names: tuple[str, ...]
    settings: tuple[tuple[tuple[str, Any], ...], ...]
    summaries: tuple[dict, ...]
    report_path: Path

    def summary_text(self) -> str:
        from sgdbayes.sweep_report import sweep_table_lines

        return "\n".join(sweep_table_lines(self.kind, self.names, self.summaries))


def run_sweep(sweep: Sweep, out: str | Path, *, executor: str = "local", address: str | None = None,
              progress: bool = True) -> SweepResult:
    """Run every point of ``sweep`` into ``out/<point name>`` (each resumable), then write the
    sweep's figure, ``sweep.json`` and ``report.md`` into ``out``."""
    from sgdbayes.sweep_report import make_sweep_report

    from sgdbayes.pipeline import run_experiment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for i, point in enumerate(sweep.points):
        if progress:
            print(f"[sweep {i + 1}/{len(sweep.points)}] {point.name}", flush=True)
        result = run_experiment(point.config, out / point.name, executor=executor, address=address,
                                progress=progress)
        summaries.append(result.summary)
    settings = tuple(p.settings for p in sweep.points)
    report = make_sweep_report(out, sweep.kind, [p.name for p in sweep.points], settings, summaries)
    return SweepResult(out, sweep.kind, tuple(p.name for p in sweep.points), settings, tuple(summaries), report)
