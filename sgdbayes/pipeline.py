"""One pipeline: cases x estimators -> shards -> one long results table -> report.

``run_experiment(config, out)`` is what ``sgdbayes run`` does:

1. every sampler's planned shards, of every case, through one executor (local or Ray); then, in
   rounds, the shards each sampler's ``extend`` asks for, until none does;
2. every scorer's shards, on the functions the case's samplers found (most frequent first);
3. ``results.parquet``: the long table (:data:`sgdbayes.estimators.RESULT_SCHEMA`), one row per
   case, estimator and function; ``cases/<case>/extras.json``: each estimator's per-case extras;
4. the report (:func:`sgdbayes.report.make_report`): ``functions.parquet``, ``summary.json``,
   ``report.md``, figures.

Run folder: ``config.toml``, ``manifest.json``, ``cases/<case>/shards/<label>/NNNNNN.parquet``
(each written once, atomically: a rerun resumes and counts nothing twice), ``cases/<case>/
extras.json``, ``results.parquet`` and the report's files. The pipeline knows no estimator by
name. ``analyze_run(out)`` re-makes the report from the folder without running anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

import torch

from sampler.store import RunFolder, ShardError, atomic_write_json, atomic_write_table, atomic_write_text, fingerprint

from .case import Case, check_case
from .config import ExperimentConfig, apply_overrides, load_config, parse_config, read_toml
from .estimators.base import RESULT_SCHEMA, EstimatorResult
from .fanout import ShardTask, execute
from .report import make_report, summary_lines


@dataclass(frozen=True)
class ExperimentResult:
    """A finished (or re-analysed) run folder: its path, ``summary.json``'s contents, ``report.md``."""

    folder: Path
    summary: dict
    report_path: Path

    def summary_text(self) -> str:
        """The summary as an aligned two-column table for the terminal."""
        return "\n".join(summary_lines(self.summary))


def case_folder(out: str | Path, case: Case) -> RunFolder:
    """The run folder of one case (``out/cases/<case>``), whose shard kinds are estimator labels."""
    return RunFolder(Path(out) / "cases" / case.name)


def run_estimator_shard(task: ShardTask, folder: RunFolder, progress: Callable | None = None) -> int:
    """Worker side: rebuild the case from the task's config, run one estimator shard, write it."""
    config = parse_config(task.config)
    case = config.case(task.params["case"])
    spec = case.estimator(task.kind)
    t0 = time.perf_counter()
    table = spec.estimator.run_shard(case, spec.options, task.params["shard"], progress)
    folder.write_shard(task.kind, task.index, table, fingerprint=task.params.get("fingerprint"),
                       shard=task.params["shard"], seconds=time.perf_counter() - t0)
    return spec.estimator.items(task.params["shard"])


def estimator_fingerprint(case: Case, spec) -> str:
    """What determines the numbers of ``spec``'s shards in ``case`` (its data, architecture, method
    and options), hashed: each shard carries it, and shards with another one are refused."""
    return fingerprint({"data": dataclasses.asdict(case.data), "arch": case.arch.to_dict(), "method": spec.method,
                        "options": spec.options.to_table()})


def _task(config_dict, out, case: Case, spec, index: int, shard: dict) -> ShardTask:
    return ShardTask(spec.label, index, str(case_folder(out, case).path), config_dict,
                     {"case": case.name, "shard": shard, "fingerprint": estimator_fingerprint(case, spec)},
                     run_estimator_shard, spec.estimator.num_gpus(spec.options), spec.estimator.items(shard),
                     spec.estimator.gpu_optional(spec.options))


def check_shards(out, case: Case, spec, planned: list[dict]) -> None:
    """Before shards of ``spec`` run or merge: refuse foreign, misnamed, copied or overlapping
    shard files of the case (naming them) and move corrupt ones aside, so that they are redone."""
    case_folder(out, case).check_shards(spec.label, estimator_fingerprint(case, spec),
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


def check_resources(config: ExperimentConfig, *, executor: str = "local") -> None:
    """Everything a run needs that can be checked before it writes anything: every case's data
    (present and readable) and each estimator's memory against this machine's (local executor)."""
    for case in config.cases():
        case.split()
        if executor != "local":
            continue  # workers' machines are not this one
        for spec in case.estimators:
            need, what = spec.estimator.memory_bytes(case, spec.options)
            device = str(getattr(spec.options, "device", "cpu"))
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            have, source = available_bytes(device)
            if need > have:
                where = f"case {case.name}, " if case.settings else ""
                raise ValueError(f"{where}estimators.{spec.label}: needs about {_gb(need)} ({what}), more than the "
                                 f"{_gb(have)} this machine has ({source}); make the network or the ensemble smaller")


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


def plan_samplers(config: ExperimentConfig) -> dict[tuple[str, str], list[dict]]:
    """Every sampler's planned shards, ``{(case, label): shards}`` (checks each case's options
    against its data, e.g. a batch larger than S, before anything is written)."""
    return {(c.name, s.label): plan(c, s) for c in config.cases() for s in c.estimators
            if s.estimator.kind == "sampler"}


def run_samplers(config: ExperimentConfig, out, *, executor="local", address=None, progress=True):
    """Steps 1: all samplers of all cases, with ``extend`` rounds. Returns
    ``{case name: {label: EstimatorResult}}`` and the shard reports."""
    raw = config.to_dict()
    cases = config.cases()
    planned = plan_samplers(config)
    results: dict[str, dict[str, EstimatorResult]] = {c.name: {} for c in cases}
    reports, todo = [], dict(planned)
    while todo:
        for c in cases:
            for s in c.estimators:
                if (c.name, s.label) in todo:
                    check_shards(out, c, s, planned[c.name, s.label])
        tasks = [_task(raw, out, c, s, i, shard) for c in cases for s in c.estimators
                 if (c.name, s.label) in todo for i, shard in enumerate(planned[c.name, s.label])
                 if shard in todo[c.name, s.label]]
        reports += execute(tasks, executor=executor, address=address, progress=progress, desc="samplers")
        more = {}
        for c in cases:
            for s in c.estimators:
                if (c.name, s.label) not in todo:
                    continue
                res = read_result(case_folder(out, c), s, len(planned[c.name, s.label]), c)
                results[c.name][s.label] = res
                extra = s.estimator.extend(c, s.options, res)
                if extra:
                    planned[c.name, s.label] = planned[c.name, s.label] + list(extra)
                    more[c.name, s.label] = list(extra)
        todo = more
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
    data, the data files, memory); then the folder's lock is taken (one writer at a time, see
    :meth:`sampler.RunFolder.lock`) and held for the whole run, the config check and write
    included.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    plan_samplers(config)  # bad options for the data fail here, before the folder is written
    check_resources(config, executor=executor)  # sizes first: check_case builds one network
    for case in config.cases():  # and what the P_B side needs (data, arch, kernel, memory) before training
        check_case(case)
    folder = RunFolder(out)
    with folder.lock():
        return _run_locked(config, folder, out, executor=executor, address=address, progress=progress)


def _run_locked(config, folder: RunFolder, out, *, executor, address, progress) -> ExperimentResult:
    _check_folder_config(folder, config)
    devices = sorted({getattr(s.options, "device", "cpu") for s in config.estimators})
    folder.start_manifest(seeds={"data": config.data.seed, "analysis": config.analysis.seed,
                                 **{s.label: s.options.seed for s in config.estimators if hasattr(s.options, "seed")}},
                          device=",".join(devices), argv=list(sys.argv), executor=executor)
    t0 = time.perf_counter()
    results, reports, planned = run_samplers(config, out, executor=executor, address=address, progress=progress)
    folder.update_manifest(timings={"samplers_s": time.perf_counter() - t0}, nodes={"samplers": _nodes(reports)})

    t1 = time.perf_counter()
    raw, cases = config.to_dict(), config.cases()
    planned.update({(c.name, s.label): plan(c, s, found_functions(results[c.name]))
                    for c in cases for s in c.estimators if s.estimator.kind == "scorer"})
    scorers = [(c, s) for c in cases for s in c.estimators if s.estimator.kind == "scorer"]
    for c, s in scorers:
        check_shards(out, c, s, planned[c.name, s.label])
    tasks = [_task(raw, out, c, s, i, shard) for c, s in scorers for i, shard in enumerate(planned[c.name, s.label])]
    reports = execute(tasks, executor=executor, address=address, progress=progress, desc="scorers")
    for c, s in scorers:
        results[c.name][s.label] = read_result(case_folder(out, c), s, len(planned[c.name, s.label]), c)
    folder.update_manifest(timings={"scorers_s": time.perf_counter() - t1}, nodes={"scorers": _nodes(reports)},
                           shards={c.name: {s.label: len(planned[c.name, s.label]) for s in c.estimators}
                                   for c in cases})

    t2 = time.perf_counter()
    for c in cases:
        extras_path = case_folder(out, c).path / "extras.json"
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
    folder.update_manifest(timings={"extras_s": time.perf_counter() - t2})
    result = analyze_folder(folder, config)
    folder.update_manifest(timings={"total_s": time.perf_counter() - t0},
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return result


def analyze_folder(folder: RunFolder, config: ExperimentConfig) -> ExperimentResult:
    """The report (statistics, figures, ``functions.parquet``, ``summary.json``, ``report.md``)
    from ``results.parquet`` and the cases' ``extras.json``."""
    path = folder.path / "results.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder.path} has no results.parquet: the run did not finish; rerun "
                                f"`sgdbayes run` with --out {folder.path} to resume it")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is corrupt ({type(exc).__name__}: {exc}); delete it and rerun `sgdbayes run` "
                         f"with --out {folder.path} to remake it from the shards") from None
    extras = {}
    for c in config.cases():
        p = case_folder(folder.path, c).path / "extras.json"
        extras[c.name] = _read_json(p) if p.is_file() else {}
    summary, report = make_report(folder.path, config, table, extras, manifest=folder.read_manifest())
    return ExperimentResult(folder.path, summary, report)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun `sgdbayes run` to remake it") from None


def missing_shards(folder: RunFolder, config: ExperimentConfig) -> list[str]:
    """Shard files the finished run recorded (manifest ``shards``) that are no longer on disk."""
    recorded = folder.read_manifest().get("shards", {})
    gone = []
    for c in config.cases():
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
    with folder.lock():
        gone = missing_shards(folder, config)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise FileNotFoundError(f"run folder {folder.path} lacks {len(gone)} shard file(s) of its run: {shown}; "
                                    f"rerun `sgdbayes run` with --out {folder.path} to redo them")
        return analyze_folder(folder, config)
