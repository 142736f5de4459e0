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

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from sampler.store import RunFolder, atomic_write_json, atomic_write_table, atomic_write_text

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
    folder.write_shard(task.kind, task.index, table, shard=task.params["shard"], seconds=time.perf_counter() - t0)
    return spec.estimator.items(task.params["shard"])


def _task(config_dict, out, case: Case, spec, index: int, shard: dict) -> ShardTask:
    return ShardTask(spec.label, index, str(case_folder(out, case).path), config_dict,
                     {"case": case.name, "shard": shard}, run_estimator_shard,
                     spec.estimator.num_gpus(spec.options), spec.estimator.items(shard))


def read_result(folder: RunFolder, spec, n_shards: int) -> EstimatorResult:
    """Merge shards ``0 .. n_shards - 1`` of the estimator ``spec`` in a case folder."""
    tables = [folder.read_shard(spec.label, i)[0] for i in range(n_shards)]
    return EstimatorResult.from_shards(spec.label, spec.method, tables,
                                       sampler=spec.estimator.kind == "sampler")


def _check_folder_config(folder: RunFolder, config: ExperimentConfig) -> None:
    if folder.config_path.is_file():
        if load_config(folder.config_path) != config:
            raise ValueError(f"run folder {folder.path} holds a different config ({folder.config_path}); resume it "
                             f"with the same config, or pass a new --out")
    else:
        atomic_write_text(folder.config_path, config.to_toml())


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
        tasks = [_task(raw, out, c, s, i, shard) for c in cases for s in c.estimators
                 if (c.name, s.label) in todo for i, shard in enumerate(planned[c.name, s.label])
                 if shard in todo[c.name, s.label]]
        reports += execute(tasks, executor=executor, address=address, progress=progress, desc="samplers")
        more = {}
        for c in cases:
            for s in c.estimators:
                if (c.name, s.label) not in todo:
                    continue
                res = read_result(case_folder(out, c), s, len(planned[c.name, s.label]))
                results[c.name][s.label] = res
                extra = s.estimator.extend(c, s.options, res)
                if extra:
                    planned[c.name, s.label] = planned[c.name, s.label] + list(extra)
                    more[c.name, s.label] = list(extra)
        todo = more
    return results, reports


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
    module docstring for the steps and the folder."""
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    plan_samplers(config)  # bad options for the data fail here, before the folder is written
    for case in config.cases():  # and what the P_B side needs (data, arch, kernel, memory) before training
        check_case(case)
    folder = RunFolder(out)
    _check_folder_config(folder, config)
    devices = sorted({getattr(s.options, "device", "cpu") for s in config.estimators})
    folder.start_manifest(seeds={"data": config.data.seed, "analysis": config.analysis.seed,
                                 **{s.label: s.options.seed for s in config.estimators if hasattr(s.options, "seed")}},
                          device=",".join(devices))
    folder.update_manifest(executor=executor)
    t0 = time.perf_counter()
    results, reports = run_samplers(config, out, executor=executor, address=address, progress=progress)
    folder.update_manifest(timings={"samplers_s": time.perf_counter() - t0}, nodes={"samplers": _nodes(reports)})

    t1 = time.perf_counter()
    raw, cases = config.to_dict(), config.cases()
    planned = {(c.name, s.label): plan(c, s, found_functions(results[c.name]))
               for c in cases for s in c.estimators if s.estimator.kind == "scorer"}
    tasks = [_task(raw, out, c, s, i, shard) for c in cases for s in c.estimators
             if (c.name, s.label) in planned for i, shard in enumerate(planned[c.name, s.label])]
    reports = execute(tasks, executor=executor, address=address, progress=progress, desc="scorers")
    for c in cases:
        for s in c.estimators:
            if (c.name, s.label) in planned:
                results[c.name][s.label] = read_result(case_folder(out, c), s, len(planned[c.name, s.label]))
    folder.update_manifest(timings={"scorers_s": time.perf_counter() - t1}, nodes={"scorers": _nodes(reports)})

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
    table = pq.read_table(path)
    extras = {}
    for c in config.cases():
        p = case_folder(folder.path, c).path / "extras.json"
        extras[c.name] = json.loads(p.read_text()) if p.is_file() else {}
    summary, report = make_report(folder.path, config, table, extras, manifest=folder.read_manifest())
    return ExperimentResult(folder.path, summary, report)


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
    config = replace(load_config(folder.config_path), analysis=changed.analysis, pairs=changed.pairs)
    return analyze_folder(folder, config)
