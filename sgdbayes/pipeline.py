"""One pipeline: cases x estimators -> fits and shards -> one long results table -> report.

``run_experiment(config, out)`` is what ``sgdbayes run`` does, with the config's cases derived once
and prepared (folder set, split loaded) before anything runs:

0. every case's fits (:meth:`Estimator.fits`: the NNGP kernel, the EP fit on S, ...), each made
   once per case into ``cases/<case>/fits/<name>.pt`` with the resources of the estimator that
   needs it, then read by shards and extras (:meth:`sgdbayes.case.Case.fit`);
1. every sampler's planned shards, of every case, through one executor (local or Ray); then, in
   rounds, the shards each sampler's ``extend`` asks for, until none does;
2. every scorer's shards, on the functions the case's samplers found (most frequent first);
3. ``results.parquet``: the long table (:data:`sgdbayes.estimators.RESULT_SCHEMA`), one row per
   case, estimator and function; ``cases/<case>/extras.json``: each estimator's per-case extras,
   by label;
4. the report (:func:`sgdbayes.report.make_report`) from the :class:`EstimatorResult` of each estimator read back
   from that table: ``functions.parquet``, ``summary.json``, ``report.md``, figures.

A task carries its prepared case and its shard parameters, never the config. Run folder:
``config.toml``, ``manifest.json``, ``cases/<case>/shards/<label>/NNNNNN.parquet`` and
``cases/<case>/fits/`` (each written once, atomically: a rerun resumes and computes nothing
twice), ``cases/<case>/extras.json``, ``results.parquet`` and the report's files. The pipeline
knows no estimator by name. ``analyze_run(out)`` re-makes the report from the folder without
running anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

import torch

from sampler.store import RunFolder, ShardError, atomic_write_json, atomic_write_table, atomic_write_text, fingerprint

from .case import Case, check_case
from .config import ExperimentConfig, apply_overrides, load_config, parse_config, read_toml
from .estimators.base import RESULT_SCHEMA, EstimatorResult
from .fanout import ShardTask, execute
from .report import make_report, summary_lines, summary_rows


@dataclass(frozen=True)
class ExperimentResult:
    """A finished (or re-analysed) run folder: its path, ``summary.json``'s contents, ``report.md``,
    and the rows of its summary table (:func:`sgdbayes.report.summary_rows`)."""

    folder: Path
    summary: dict
    report_path: Path
    rows: tuple = ()

    def summary_text(self) -> str:
        """The summary as an aligned two-column table for the terminal."""
        return "\n".join(summary_lines(self.summary, self.rows))


def case_folder(out: str | Path, case: Case) -> RunFolder:
    """The run folder of one case (``out/cases/<case>``), whose shard kinds are estimator labels."""
    return RunFolder(Path(out) / "cases" / case.name)


def prepare_cases(cases, out) -> tuple[Case, ...]:
    """``cases`` with their run folders under ``out`` set and their splits loaded (once per run)."""
    return tuple(c.prepared(Path(out) / "cases" / c.name) for c in cases)  # nothing written yet


def run_estimator_shard(task: ShardTask, progress: Callable | None = None) -> int:
    """Worker side: run one estimator shard of the task's prepared case and write it."""
    case, shard, fp = task.payload
    spec = case.estimator(task.kind)
    t0 = time.perf_counter()
    table = spec.estimator.run_shard(case, spec.options, shard, progress)
    RunFolder(case.folder).write_shard(task.kind, task.index, table, fingerprint=fp, shard=shard,
                                       seconds=time.perf_counter() - t0)
    return spec.estimator.items(shard)


def make_fit(task: ShardTask, progress: Callable | None = None) -> int:
    """Worker side: make one fit of the task's prepared case (by the estimator labelled in the
    task) and write it once into the case's folder."""
    case, label, name = task.payload
    spec = case.estimator(label)
    case.save_fit(name, spec.estimator.make_fit(case, spec.options, name))
    return 1


def estimator_fingerprint(case: Case, spec) -> str:
    """What determines the numbers of ``spec``'s shards in ``case`` (its data, architecture, method
    and options), hashed: each shard carries it, and shards with another one are refused."""
    return fingerprint({"data": dataclasses.asdict(case.data), "arch": case.arch.to_dict(), "method": spec.method,
                        "options": spec.options.to_table()})


def _task(case: Case, spec, index: int, shard: dict) -> ShardTask:
    """The shard task of ``spec``'s shard ``index`` in the prepared ``case``, with the estimator's resources."""
    r = spec.estimator.resources(case, spec.options)
    return ShardTask(spec.label, index, str(RunFolder(case.folder).shard_path(spec.label, index)),
                     (case, shard, estimator_fingerprint(case, spec)), run_estimator_shard, r.num_gpus,
                     spec.estimator.items(shard), r.gpu_optional)


def fit_tasks(cases) -> list[list[ShardTask]]:
    """The fits of every prepared case, in rounds: round i makes the i-th fit an estimator lists
    (:meth:`Estimator.fits`), so a fit's inputs are made before it. Each name is made once per
    case, by the first estimator that lists it, with that estimator's resources (its GPU)."""
    rounds: list[list[ShardTask]] = []
    for c in cases:
        made = set()
        for s in c.estimators:
            r = s.estimator.resources(c, s.options)
            for level, name in enumerate(s.estimator.fits(c, s.options)):
                if name not in made:
                    made.add(name)
                    rounds += [[] for _ in range(level + 1 - len(rounds))]
                    rounds[level].append(ShardTask(f"fit:{c.name}", len(made) - 1, str(c.fit_path(name)),
                                                   (c, s.label, name), make_fit, r.num_gpus, 1, r.gpu_optional))
    return rounds


def make_fits(cases, *, executor: str = "local", address: str | None = None, progress: bool = True) -> list:
    """Make the fits of the prepared ``cases`` that are not on disk yet, round by round
    (:func:`fit_tasks`); returns the tasks' reports."""
    return [r for tasks in fit_tasks(cases)
            for r in execute(tasks, executor=executor, address=address, progress=progress, desc="fits")]


def check_shards(case: Case, spec, planned: list[dict]) -> None:
    """Before shards of ``spec`` run or merge: refuse foreign, misnamed, copied or overlapping
    shard files of the case (naming them) and move corrupt ones aside, so that they are redone."""
    RunFolder(case.folder).check_shards(spec.label, estimator_fingerprint(case, spec),
                                        expected=dict(enumerate(_jsonable(planned))))


def _jsonable(obj):
    return json.loads(json.dumps(obj))  # as the shard metadata holds it (tuples -> lists)


def read_result(folder: RunFolder, spec, n_shards: int, case: Case | None = None) -> EstimatorResult:
    """Merge shards ``0 .. n_shards - 1`` of the estimator ``spec`` in a case folder (with ``case``:
    each shard's fingerprint is checked; a missing or corrupt one is a :class:`ShardError`)."""
    tables = []
    want = None if case is None else estimator_fingerprint(case, spec)
    for i in range(n_shards):
        table, meta = folder.read_shard(spec.label, i)
        if want is not None and meta.get("fingerprint") != want:
            raise ShardError(f"shard file {folder.shard_path(spec.label, i)} was written by another config "
                             f"(fingerprint {meta.get('fingerprint')}, this run's is {want}); use a new --out")
        tables.append(table)
    return EstimatorResult.from_shards(spec.label, spec.method, tables,
                                       sampler=spec.estimator.kind == "sampler")


def _check_folder_config(folder: RunFolder, config: ExperimentConfig) -> None:
    """Under the folder's lock: the folder's config must be ``config``, or the folder is new."""
    if folder.config_path.is_file():
        if load_config(folder.config_path) != config:
            raise ValueError(f"run folder {folder.path} holds a different config ({folder.config_path}); resume it "
                             f"with the same config, or pass a new --out")
    else:
        atomic_write_text(folder.config_path, config.to_toml())


def available_bytes(device: str) -> tuple[int, str]:
    """Memory this machine has for ``device`` (bytes) and where the number comes from."""
    if device == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), f"free memory of {torch.cuda.get_device_name(0)}"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass  # not Linux: fall back on sysconf below
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available physical pages"


def _gb(n: float) -> str:
    return f"{n / 1e12:.3g} TB" if n >= 1e12 else f"{n / 1e9:.3g} GB"


def check_resources(cases, *, executor: str = "local") -> None:
    """The one memory check, before anything is written: each estimator's declared need
    (:meth:`Estimator.resources`) against what its device has on this machine (local executor
    only: workers' machines are not this one), one error naming the estimator, the keys that set
    the size and both numbers."""
    if executor != "local":
        return
    for case in cases:
        for spec in case.estimators:
            r = spec.estimator.resources(case, spec.options)
            if r.memory_bytes <= 0:
                continue
            device = r.device if r.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            have, source = available_bytes(device)
            if r.memory_bytes > have:
                where = f"case {case.name}, " if case.settings else ""
                raise ValueError(f"{where}estimators.{spec.label}: needs about {_gb(r.memory_bytes)} ({r.memory_what}), "
                                 f"more than the {_gb(have)} this machine has ({source}); make the network, the "
                                 f"ensemble or the data smaller, or use a larger machine")


def _nodes(reports) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for r in reports:
        if not r.skipped:
            nodes.setdefault(r.node, []).append(f"{r.kind}/{r.index}")
    return nodes


def plan(case: Case, spec, functions=None) -> list[dict]:
    """``spec``'s plan for ``case``, with an error that names the case and the estimator."""
    try:
        return list(spec.estimator.plan(case, spec.options, functions))
    except (ValueError, TypeError) as exc:
        where = f"case {case.name}, " if case.settings else ""
        raise type(exc)(f"{where}estimators.{spec.label}: {exc}") from None


def plan_samplers(cases) -> dict[tuple[str, str], list[dict]]:
    """Every sampler's planned shards, ``{(case, label): shards}`` (checks each case's options
    against its data, e.g. a batch larger than S, before anything is written)."""
    return {(c.name, s.label): plan(c, s) for c in cases for s in c.estimators if s.estimator.kind == "sampler"}


def run_shards(pairs, planned, todo=None, *, desc: str, **where) -> tuple[dict, list]:
    """Run the shards ``todo[(case, label)]`` (default: all planned) of each ``(case, spec)`` of
    ``pairs`` through :func:`execute` (``where``: executor, address, progress), after checking the
    shards on disk. Returns ``{(case, label): EstimatorResult}`` over all planned shards of the
    pairs that ran, and the reports."""
    todo = planned if todo is None else todo
    pairs = [(c, s) for c, s in pairs if (c.name, s.label) in todo]
    for c, s in pairs:
        check_shards(c, s, planned[c.name, s.label])
    tasks = [_task(c, s, i, shard) for c, s in pairs for i, shard in enumerate(planned[c.name, s.label])
             if shard in todo[c.name, s.label]]
    reports = execute(tasks, desc=desc, **where)
    return {(c.name, s.label): read_result(RunFolder(c.folder), s, len(planned[c.name, s.label]), c)
            for c, s in pairs}, reports


def run_samplers(cases, planned, **where):
    """Step 1: all samplers of all prepared cases, with ``extend`` rounds. Returns
    ``{case name: {label: EstimatorResult}}``, the shard reports and the final plans."""
    samplers = [(c, s) for c in cases for s in c.estimators if s.estimator.kind == "sampler"]
    planned, todo = dict(planned), dict(planned)
    results: dict[str, dict[str, EstimatorResult]] = {c.name: {} for c in cases}
    reports = []
    while todo:
        done, more = run_shards(samplers, planned, todo, desc="samplers", **where)
        reports += more
        todo = {}
        for c, s in samplers:
            if (c.name, s.label) in done:
                results[c.name][s.label] = done[c.name, s.label]
                extra = list(s.estimator.extend(c, s.options, done[c.name, s.label]))
                if extra:
                    planned[c.name, s.label] = planned[c.name, s.label] + extra
                    todo[c.name, s.label] = extra
    return results, reports, planned


def found_functions(results: dict[str, EstimatorResult]) -> dict[str, int]:
    """Functions the samplers of a case found, with their total count, most frequent first (ties
    by bitstring): what scorers score."""
    totals: dict[str, int] = {}
    for r in results.values():
        if r.is_sampler:
            for f, c in zip(r.functions, r.counts.tolist()):
                totals[f] = totals.get(f, 0) + c
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def run_experiment(config: ExperimentConfig, out: str | Path, *, executor: str = "local", address: str | None = None,
                   progress: bool = True) -> ExperimentResult:
    """Run ``config`` into the run folder ``out`` (resuming whatever it already holds); see the
    module docstring for the steps and the folder.

    Everything that can be checked is checked before the folder is written (options against the
    data, the data files, memory, the architecture on the data); then the folder's lock is taken
    (one writer at a time, see :meth:`sampler.RunFolder.lock`) and held for the whole run, the
    config check and write included.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    cases = config.cases()  # the one time this run derives its cases
    planned = plan_samplers(cases)  # bad options for the data fail here, before the folder is written
    cases = prepare_cases(cases, out)  # every case's data, loaded once
    check_resources(cases, executor=executor)  # sizes first: check_case builds one network
    for case in cases:
        check_case(case)
    folder = RunFolder(out)
    with folder.lock():
        return _run_locked(config, cases, planned, folder, executor=executor, address=address, progress=progress)


def _run_locked(config, cases, planned, folder: RunFolder, *, executor, address, progress) -> ExperimentResult:
    _check_folder_config(folder, config)
    devices = sorted({getattr(s.options, "device", "cpu") for s in config.estimators})
    folder.start_manifest(seeds={"data": config.data.seed, "analysis": config.analysis.seed,
                                 **{s.label: s.options.seed for s in config.estimators if hasattr(s.options, "seed")}},
                          device=",".join(devices), argv=list(sys.argv), executor=executor)
    t0 = time.perf_counter()
    where = {"executor": executor, "address": address, "progress": progress}
    reports = make_fits(cases, **where)
    folder.update_manifest(timings={"fits_s": time.perf_counter() - t0}, nodes={"fits": _nodes(reports)})

    t1 = time.perf_counter()
    results, reports, planned = run_samplers(cases, planned, **where)
    folder.update_manifest(timings={"samplers_s": time.perf_counter() - t1}, nodes={"samplers": _nodes(reports)})

    t2 = time.perf_counter()
    scorers = [(c, s) for c in cases for s in c.estimators if s.estimator.kind == "scorer"]
    planned.update({(c.name, s.label): plan(c, s, found_functions(results[c.name])) for c, s in scorers})
    done, reports = run_shards(scorers, planned, desc="scorers", **where)
    for (name, label), res in done.items():
        results[name][label] = res
    folder.update_manifest(timings={"scorers_s": time.perf_counter() - t2}, nodes={"scorers": _nodes(reports)},
                           shards={c.name: {s.label: len(planned[c.name, s.label]) for s in c.estimators}
                                   for c in cases})

    t3 = time.perf_counter()
    for c in cases:
        extras_path = Path(c.folder) / "extras.json"
        if not extras_path.is_file():
            extras = {}
            for s in c.estimators:
                r = results[c.name][s.label]
                extras[s.label] = s.estimator.extras(c, s.options, r)
                if r.is_sampler:  # kept here too: a sampler that found nothing has no rows in results.parquet
                    extras[s.label].update(n_samples=r.n_samples, n_fit=r.n_fit)
            atomic_write_json(extras_path, extras)
    tables = [results[c.name][s.label].rows(c.name) for c in cases for s in c.estimators]
    atomic_write_table(pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table(),
                       folder.path / "results.parquet")
    folder.update_manifest(timings={"extras_s": time.perf_counter() - t3})
    result = analyze_folder(folder, config, cases)
    folder.update_manifest(timings={"total_s": time.perf_counter() - t0},
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return result


def read_results(table: pa.Table, cases, extras: Mapping[str, Mapping[str, dict]]
                 ) -> dict[str, dict[str, EstimatorResult]]:
    """``{case: {label: EstimatorResult}}`` from the long table ``results.parquet``, every
    estimator of every case in config order; one without rows is empty (a sampler's
    ``n_samples`` then comes from its extras)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(table.column("case").to_pylist(), table.column("estimator").to_pylist())):
        groups.setdefault(key, []).append(i)
    out: dict[str, dict[str, EstimatorResult]] = {}
    for c in cases:
        out[c.name] = {}
        for s in c.estimators:
            idx = groups.get((c.name, s.label))
            if idx:
                out[c.name][s.label] = EstimatorResult.from_rows(table.take(idx))
            elif s.estimator.kind == "scorer":
                out[c.name][s.label] = EstimatorResult.empty(s.label, s.method)
            elif "n_samples" in extras.get(c.name, {}).get(s.label, {}):
                out[c.name][s.label] = EstimatorResult.empty(s.label, s.method,
                                                             n_samples=extras[c.name][s.label]["n_samples"])
            else:
                raise ValueError(f"results.parquet has no rows of {s.label!r} in case {c.name!r} and its extras "
                                 f"no n_samples; rerun `sgdbayes run` to remake them")
    return out


def analyze_folder(folder: RunFolder, config: ExperimentConfig, cases=None) -> ExperimentResult:
    """The report (statistics, figures, ``functions.parquet``, ``summary.json``, ``report.md``)
    from ``results.parquet`` and the cases' ``extras.json``; ``cases``: the config's, prepared."""
    path = folder.path / "results.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder.path} has no results.parquet: the run did not finish; rerun "
                                f"`sgdbayes run` with --out {folder.path} to resume it")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is corrupt ({type(exc).__name__}: {exc}); delete it and rerun `sgdbayes run` "
                         f"with --out {folder.path} to remake it from the shards") from None
    cases = cases if cases is not None else prepare_cases(config.cases(), folder.path)
    extras = {}
    for c in cases:
        p = Path(c.folder) / "extras.json"
        extras[c.name] = _read_json(p) if p.is_file() else {}
    summary, report = make_report(folder.path, config, cases, read_results(table, cases, extras), extras,
                                  manifest=folder.read_manifest())
    return ExperimentResult(folder.path, summary, report, tuple(summary_rows(config)))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun `sgdbayes run` to remake it") from None


def missing_shards(folder: RunFolder, cases) -> list[str]:
    """Shard files the finished run recorded (manifest ``shards``) that are no longer on disk."""
    recorded = folder.read_manifest().get("shards", {})
    gone = []
    for c in cases:
        cf = case_folder(folder.path, c)
        for label, n in recorded.get(c.name, {}).items():
            gone += [str(cf.shard_path(label, i).relative_to(folder.path)) for i in range(int(n))
                     if not cf.has_shard(label, i)]
    return gone


def analyze_run(run_dir: str | Path, *, overrides=()) -> ExperimentResult:
    """Re-make the report of a finished run folder; ``overrides`` may change ``[analysis]`` and
    ``[report]`` keys only."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    folder = RunFolder(path)
    if not folder.config_path.is_file():
        raise FileNotFoundError(f"{path} is not a run folder: no config.toml in it")
    for text in overrides:
        if not text.strip().startswith(("analysis.", "report.")):
            raise ValueError(f"analyze only takes [analysis] and [report] overrides, got --set {text!r}")
    changed = parse_config(apply_overrides(read_toml(folder.config_path), list(overrides)))
    config = replace(load_config(folder.config_path), analysis=changed.analysis, report=changed.report)
    cases = prepare_cases(config.cases(), folder.path)
    with folder.lock():
        gone = missing_shards(folder, cases)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise FileNotFoundError(f"run folder {folder.path} lacks {len(gone)} shard file(s) of its run: {shown}; "
                                    f"rerun `sgdbayes run` with --out {folder.path} to redo them")
        return analyze_folder(folder, config, cases)
