"""One pipeline: cases x estimators -> fits and shards -> one long results table -> report.

``run_experiment(config, out)`` is what ``sgdbayes run`` does. The config's cases are derived and
prepared (folder set, split loaded) once; then, through one executor (local or Ray):

0. every case's fits (:meth:`Estimator.fits`: the NNGP kernel, the EP fit on S, ...), each made
   once per case into ``cases/<case>/fits/<name>.pt`` with the resources of the estimator that
   needs it (:meth:`sgdbayes.case.Case.fit` reads them);
1. every sampler's planned shards, then, in rounds, those each sampler's ``extend`` asks for;
2. every scorer's shards, on the functions the case's samplers found (most frequent first);
3. ``results.parquet`` (:data:`sgdbayes.estimators.RESULT_SCHEMA`, one row per case, estimator and
   function) and ``cases/<case>/extras.json`` (each estimator's per-case extras, by label);
4. the report (:func:`sgdbayes.report.make_report`) read back from those files.

A task carries its prepared case and its shard parameters, never the config; shards and fits are
written once, atomically, so a rerun resumes and computes nothing twice. The pipeline knows no
estimator by name. ``analyze_run(out)`` re-makes the report without running anything.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

import torch

from sampler.architectures import unresolved_factories
from sampler.store import (RunFolder, atomic_write_json, atomic_write_table, atomic_write_text, fingerprint, read_json,
                           shard_meta)

from .case import Case, check_case
from .config import ExperimentConfig, apply_overrides, load_config, parse_config, read_toml
from .estimators.base import RESULT_SCHEMA, EstimatorResult
from .fanout import ShardTask, execute
from .report import make_report, summary_lines, summary_rows
from .verdict import FEW_FIT


@dataclass(frozen=True)
class ExperimentResult:
    """A finished run folder: its path, ``summary.json``'s contents, ``report.md`` and the rows of
    its summary table (:func:`sgdbayes.report.summary_rows`)."""

    folder: Path
    summary: dict
    report_path: Path
    rows: tuple = ()

    def summary_text(self) -> str:
        """The summary as an aligned two-column table for the terminal."""
        return "\n".join(summary_lines(self.summary, self.rows))


def prepare_cases(cases, out) -> tuple[Case, ...]:
    """``cases`` with their run folders (``out/cases/<case>``) set and their splits loaded (once per run)."""
    return tuple(c.prepared(Path(out) / "cases" / c.name) for c in cases)  # nothing written yet


def _where(case: Case) -> str:
    return f"case {case.name}, " if case.settings else ""


def fixed_options(spec) -> dict:
    """``spec``'s options without its growable ones (:attr:`Estimator.growable`): what its samples depend on."""
    return {k: v for k, v in spec.options.to_table().items() if k not in spec.estimator.growable}


def estimator_fingerprint(case: Case, spec) -> str:
    """What determines the numbers of ``spec``'s shards in ``case`` (its data, architecture, method
    and options), hashed: each shard carries it, and shards with another one are refused."""
    return fingerprint({"data": case.data.fingerprint_dict(), "arch": case.arch.to_dict(), "method": spec.method,
                        "options": fixed_options(spec), "sources": case.digests()})


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
    """Worker side: make one fit of the task's prepared case (by the estimator labelled in the task) and write it."""
    case, label, name = task.payload
    spec = case.estimator(label)
    case.save_fit(name, spec.estimator.make_fit(case, spec.options, name))
    return 1


def _task(case: Case, spec, kind: str, index: int, output, payload, worker, items: int = 1) -> ShardTask:
    """A task of the prepared ``case`` for the estimator ``spec``, asking for its resources."""
    r = spec.estimator.resources(case, spec.options)
    return ShardTask(kind, index, str(output), payload, worker, r.num_gpus, items, r.gpu_optional)


def shard_task(case: Case, spec, index: int, shard: dict) -> ShardTask:
    """The task that runs and writes ``spec``'s shard ``index`` (parameters ``shard``) of ``case``."""
    return _task(case, spec, spec.label, index, RunFolder(case.folder).shard_path(spec.label, index),
                 (case, shard, estimator_fingerprint(case, spec)), run_estimator_shard, spec.estimator.items(shard))


def make_fits(cases, *, executor: str = "local", address: str | None = None, progress: bool = True) -> list:
    """Make the fits of the prepared ``cases`` not on disk yet, in rounds: round i makes the i-th
    fit an estimator lists (:meth:`Estimator.fits`), so a fit's inputs are made before it. Each
    name is made once per case, by the first estimator that lists it, with that estimator's
    resources (its GPU). Returns the tasks' reports."""
    rounds: list[list[ShardTask]] = []
    for c in cases:
        made: list[str] = []
        for s in c.estimators:
            for level, name in enumerate(s.estimator.fits(c, s.options)):
                if name not in made:
                    made.append(name)
                    rounds += [[] for _ in range(level + 1 - len(rounds))]
                    rounds[level].append(_task(c, s, f"fit:{c.name}", len(made) - 1, c.fit_path(name),
                                               (c, s.label, name), make_fit))
    return [r for tasks in rounds for r in execute(tasks, executor=executor, address=address, progress=progress,
                                                   desc="fits")]


def read_result(case: Case, spec, planned: list[dict]) -> EstimatorResult:
    """``spec``'s planned shards in the prepared ``case``, merged through
    :meth:`sampler.RunFolder.collect_shards` (checked; a missing one is a :class:`ShardError`)."""
    tables = RunFolder(case.folder).collect_shards(spec.label, planned, fingerprint=estimator_fingerprint(case, spec))
    return EstimatorResult.from_shards(spec.label, spec.method, tables, sampler=spec.estimator.kind == "sampler")


SOURCES_NAME = "sources.json"


def _sources(cases) -> dict[str, list[list[str]]]:
    """``{case: [[role, what, digest], ...]}`` of the prepared ``cases`` (what ``sources.json`` holds)."""
    return {c.name: [list(src) for src in c.sources] for c in cases}


def check_sources(folder: RunFolder, cases, *, required: bool = True) -> None:
    """The run folder's data and code must be those it was made from: each case's content hashes
    (:attr:`Case.sources`) against ``sources.json``; a change is one error naming the file. A
    folder without ``sources.json`` (made before it existed) is refused when ``required``."""
    path = folder.path / SOURCES_NAME
    if not path.is_file():
        if not required:
            return
        raise ValueError(f"run folder {folder.path} has no {SOURCES_NAME} (the content hashes of its data and code): "
                         f"it was made by an older sgd-bayes, or its first run stopped before writing it, so its "
                         f"shards cannot be checked against the data; pass a new --out")
    recorded = read_json(path, advice=f"delete the run folder {folder.path} or pass a new --out")
    for c in cases:
        old = {(role, what): digest for role, what, digest in recorded.get(c.name, [])}
        for role, what, digest in c.sources:
            before = old.get((role, what))
            if before is None:
                raise ValueError(f"run folder {folder.path}: {_where(c)}{what} is not the {role} it was made from "
                                 f"({SOURCES_NAME}); pass a new --out")
            if before != digest:
                change = ("the split it gives (data content hash" if role == "data" else "its content (hash")
                raise ValueError(f"run folder {folder.path}: {_where(c)}{what} changed since the folder was made: "
                                 f"{change} {before}, now {digest}); its shards were computed from the old one. "
                                 f"Restore it, or pass a new --out")


def config_differences(before: ExperimentConfig, now: ExperimentConfig, *, limit: int = 6) -> str:
    """The keys in which two configs differ, with both values (``key: folder X, now Y``), at most ``limit``."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(before.to_dict()), flat(now.to_dict())
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    shown = [f"{k}: folder {a.get(k, '<absent>')!r}, now {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ("differs in " + "; ".join(shown) + more) if keys else "differs"


def grown_samplers(before: ExperimentConfig, now: ExperimentConfig) -> list[str] | None:
    """The labels of the estimators whose growable options (:attr:`Estimator.growable`, e.g. the ``sgd``
    estimator's ``n_runs``) ``now`` raises, where that is the only difference between the two configs;
    None where anything else differs (or a growable option shrinks)."""
    def without(config, label):
        spec = config.estimator(label)
        return spec.method, fixed_options(spec)

    labels = [s.label for s in now.estimators]
    if [s.label for s in before.estimators] != labels or before.to_dict(with_sweep=True) | {"estimators": {}} \
            != now.to_dict(with_sweep=True) | {"estimators": {}}:
        return None
    grown = []
    for label in labels:
        if without(before, label) != without(now, label):
            return None
        spec_b, spec_n = before.estimator(label), now.estimator(label)
        for key in spec_n.estimator.growable:
            old, new = getattr(spec_b.options, key), getattr(spec_n.options, key)
            if new < old:
                return None
            if new > old and label not in grown:
                grown.append(label)
    return grown or None


def _extend_folder(folder: RunFolder, cases, grown: list[str], planned) -> None:
    """Make room for more samples of the ``grown`` samplers: a last shard the new plan makes larger is
    redone (its runs are the same pure functions of the seed), and what derives from the samples (scorer
    shards, ``extras.json``, ``results.parquet``) is made again."""
    for c in cases:
        cf = RunFolder(c.folder)
        for s in c.estimators:
            if s.estimator.kind == "scorer":
                for i in cf.shard_indices(s.label):
                    cf.shard_path(s.label, i).unlink()
            elif s.label in grown:
                for i in cf.shards_off_plan(s.label, planned[c.name, s.label]):
                    cf.shard_path(s.label, i).unlink()
        (Path(c.folder) / "extras.json").unlink(missing_ok=True)
    (folder.path / "results.parquet").unlink(missing_ok=True)


def _check_folder_config(folder: RunFolder, config: ExperimentConfig, cases, *, extend: bool = False,
                         planned=None) -> None:
    """Under the folder's lock: the folder's config must be ``config`` and its data and code those
    of the prepared ``cases`` (:func:`check_sources`), or the folder is new. With ``extend``, a config
    that only raises growable options (``n_runs``) is taken: the folder grows (:func:`_extend_folder`)."""
    if folder.config_path.is_file():
        before = load_config(folder.config_path)
        if before != config:
            grown = grown_samplers(before, config)
            if grown is None or not extend:
                hint = (" (only the number of runs grew: pass --extend to add them to this folder)"
                        if grown is not None else "")
                raise ValueError(f"run folder {folder.path} holds a different config ({folder.config_path}): "
                                 f"{config_differences(before, config)}{hint}; resume it with the same config, or "
                                 f"pass a new --out")
            check_sources(folder, cases)
            _extend_folder(folder, cases, grown, planned)
            atomic_write_text(folder.config_path, config.to_toml())
            return
        check_sources(folder, cases)
    else:
        atomic_write_json(folder.path / SOURCES_NAME, _sources(cases))
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
    """The one device and memory check, before anything is written: each estimator's device is
    there (``cuda`` needs CUDA), and its declared memory need against
    what its device has here (local executor only: workers' machines are not this one); the
    error names the estimator, the keys that set the size and both numbers."""
    if executor != "local":
        return
    for case in cases:
        for spec in case.estimators:
            r = spec.estimator.resources(case, spec.options)
            if r.device.split(":")[0] == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"{_where(case)}estimators.{spec.label}.device = {r.device!r}, but CUDA is not "
                                 f"available on this machine; use 'cpu' or 'auto' (or --executor ray on a cluster "
                                 f"with GPUs)")
            if r.memory_bytes <= 0:
                continue
            device = r.device if r.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            have, source = available_bytes(device)
            if r.memory_bytes > have:
                raise ValueError(f"{_where(case)}estimators.{spec.label}: needs about {_gb(r.memory_bytes)} "
                                 f"({r.memory_what}), more than the {_gb(have)} this machine has ({source}); make "
                                 f"the network, the ensemble or the data smaller, or use a larger machine")


def _record(folder: RunFolder, stage: str, t0: float, reports, **fields) -> None:
    """Into the manifest: the seconds since ``t0`` of ``stage`` and which node did which of its tasks."""
    nodes: dict[str, list[str]] = {}
    for r in reports:
        if not r.skipped:
            nodes.setdefault(r.node, []).append(f"{r.kind}/{r.index}")
    folder.update_manifest(timings={f"{stage}_s": time.perf_counter() - t0}, nodes={stage: nodes}, **fields)


def plan(case: Case, spec, functions=None) -> list[dict]:
    """``spec``'s plan for ``case``, with an error that names the case and the estimator."""
    try:
        return list(spec.estimator.plan(case, spec.options, functions))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{_where(case)}estimators.{spec.label}: {exc}") from None


def plan_samplers(cases) -> dict[tuple[str, str], list[dict]]:
    """Every sampler's planned shards, ``{(case, label): shards}``: options checked against the data."""
    return {(c.name, s.label): plan(c, s) for c in cases for s in c.estimators if s.estimator.kind == "sampler"}


def run_shards(pairs, planned, todo=None, *, desc: str, on_report=None, **where) -> tuple[dict, list]:
    """Run the shards ``todo[(case, label)]`` (default: all planned) of each ``(case, spec)`` of
    ``pairs`` through :func:`execute` (``where``: executor, address, progress). Returns
    ``{(case, label): EstimatorResult}`` over all planned shards of the pairs that ran, and the reports."""
    todo = planned if todo is None else todo
    pairs = [(c, s) for c, s in pairs if (c.name, s.label) in todo]
    for c, s in pairs:  # before anything runs: refuse foreign or copied shard files, move corrupt ones aside
        RunFolder(c.folder).check_shards(s.label, estimator_fingerprint(c, s), plan=planned[c.name, s.label])
    reports = execute([shard_task(c, s, i, shard) for c, s in pairs for i, shard in enumerate(planned[c.name, s.label])
                       if shard in todo[c.name, s.label]], desc=desc, on_report=on_report, **where)
    return {(c.name, s.label): read_result(c, s, planned[c.name, s.label]) for c, s in pairs}, reports


def few_fit_warning(samplers):
    """An ``on_report`` for :func:`execute`: after the first shard of each P_SGD sampler that ran, warn at once
    (not after hours) where fewer than :data:`FEW_FIT` of its runs fit S, with how close the others came."""
    seen: set[tuple[str, str]] = set()
    p_sgd = {(c.name, s.label) for c, s in samplers  # a fixed budget need not fit
             if s.estimator.quantity == "p_sgd" and getattr(s.options, "stop", "fit") == "fit"}

    def check(task, report):
        key = (task.payload[0].name, task.kind)  # a shard task's payload: (case, shard, fingerprint)
        if report.skipped or key in seen or key not in p_sgd:
            return
        seen.add(key)
        table = pq.read_table(task.output)
        n, info = shard_meta(table)
        n_fit = int(sum(table.column("count").to_pylist()))
        if n and n_fit < FEW_FIT * n:
            unfit = info.get("unfit") or {}
            best = unfit.get("best_train_accuracy")
            warnings.warn(f"{task.kind}: only {n_fit} of the first shard's {n} runs fit S"
                          + (f" (the best of the others reached training accuracy {best:.3f} in {unfit.get('epochs')} "
                             f"epochs)" if best is not None else "")
                          + "; raise max_epochs or lr, or check the data and the network (the report will say the "
                            "same)", RuntimeWarning, stacklevel=2)
    return check


def run_samplers(cases, planned, **where):
    """Step 1: all samplers of all prepared cases, with ``extend`` rounds. Returns
    ``{case name: {label: EstimatorResult}}``, the shard reports and the final plans."""
    samplers = [(c, s) for c in cases for s in c.estimators if s.estimator.kind == "sampler"]
    planned, todo = dict(planned), dict(planned)
    warn_few = few_fit_warning(samplers)
    results: dict[str, dict[str, EstimatorResult]] = {c.name: {} for c in cases}
    reports = []
    while todo:
        labels = ", ".join(dict.fromkeys(s.label for _, s in samplers))
        done, more = run_shards(samplers, planned, todo, desc=f"runs and samples ({labels})",
                                on_report=warn_few, **where)
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
    totals: Counter = Counter()
    for r in results.values():
        if r.is_sampler:
            totals.update(dict(zip(r.functions, r.counts.tolist())))
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def run_experiment(config: ExperimentConfig, out: str | Path, *, executor: str = "local", address: str | None = None,
                   progress: bool = True, extend: bool = False) -> ExperimentResult:
    """Run ``config`` into the run folder ``out``, resuming whatever it holds (module docstring).

    Everything that can be checked is checked before the folder is written (options against the
    data, the data files, memory, the architecture on the data); then the folder's lock is held
    for the whole run, the config check and write included. ``extend``: a folder whose config differs
    only in a smaller ``n_runs`` (:attr:`Estimator.growable`) grows to this one's.
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
        _check_folder_config(folder, config, cases, extend=extend, planned=planned)
        seeds = {s.label: s.options.seed for s in config.estimators if hasattr(s.options, "seed")}
        folder.start_manifest(seeds={"data": config.data.seed, "analysis": config.analysis.seed, **seeds},
                              device=",".join(sorted({getattr(s.options, "device", "cpu") for s in config.estimators})),
                              argv=list(sys.argv), executor=executor)
        where = {"executor": executor, "address": address, "progress": progress}
        t0 = t = time.perf_counter()
        _record(folder, "fits", t, make_fits(cases, **where))

        t = time.perf_counter()
        results, reports, planned = run_samplers(cases, planned, **where)
        _record(folder, "samplers", t, reports)

        t = time.perf_counter()
        scorers = [(c, s) for c in cases for s in c.estimators if s.estimator.kind == "scorer"]
        planned.update({(c.name, s.label): plan(c, s, found_functions(results[c.name])) for c, s in scorers})
        labels = ", ".join(dict.fromkeys(s.label for _, s in scorers))
        done, reports = run_shards(scorers, planned, desc=f"functions scored ({labels})", **where)
        for (name, label), res in done.items():
            results[name][label] = res
        _record(folder, "scorers", t, reports,
                shards={c.name: {s.label: len(planned[c.name, s.label]) for s in c.estimators} for c in cases})

        t = time.perf_counter()
        for c in cases:
            extras_path = Path(c.folder) / "extras.json"
            if extras_path.is_file():
                try:
                    read_json(extras_path, advice="")
                except ValueError:  # a torn or damaged file (written atomically, so not by us): redo it
                    extras_path.replace(extras_path.with_name("extras.json.corrupt"))
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
        folder.update_manifest(timings={"extras_s": time.perf_counter() - t})
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
            n = extras.get(c.name, {}).get(s.label, {}).get("n_samples") if s.estimator.kind == "sampler" else None
            if not idx and s.estimator.kind == "sampler" and n is None:
                raise ValueError(f"results.parquet has no rows of {s.label!r} in case {c.name!r} and its extras "
                                 f"no n_samples; rerun `sgdbayes run` to remake them")
            out[c.name][s.label] = (EstimatorResult.from_rows(table.take(idx)) if idx
                                    else EstimatorResult.empty(s.label, s.method, n_samples=n))
    return out


def analyze_folder(folder: RunFolder, config: ExperimentConfig, cases=None, *, out: str | Path | None = None
                   ) -> ExperimentResult:
    """The report (statistics, figures, ``functions.parquet``, ``summary.json``, ``report.md``)
    from ``results.parquet`` and the cases' ``extras.json``; ``cases``: the config's, prepared; written
    into ``out`` (with the config used, ``config.toml``) where given, else into the run folder."""
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
    extras = {c.name: read_json(p, advice="rerun `sgdbayes run` to remake it") if p.is_file() else {}
              for c in cases for p in [Path(c.folder) / "extras.json"]}
    target = folder.path if out is None else Path(out)
    if out is not None:
        if target.resolve() == folder.path.resolve():
            raise ValueError(f"--out {out} is the run folder itself; leave --out out to remake its own report")
        atomic_write_text(target / "config.toml", config.to_toml())
    summary, report = make_report(target, config, cases, read_results(table, cases, extras), extras,
                                  manifest=folder.read_manifest())
    return ExperimentResult(target, summary, report, tuple(summary_rows(config)))


def missing_shards(folder: RunFolder, cases) -> list[str]:
    """Shard files the finished run recorded (manifest ``shards``) that are no longer on disk;
    ``cases`` prepared."""
    recorded = folder.read_manifest().get("shards", {})
    gone = []
    for c in cases:
        cf = RunFolder(c.folder)
        for label, n in recorded.get(c.name, {}).items():
            have = set(cf.shard_indices(label))
            gone += [str(cf.shard_path(label, i).relative_to(folder.path)) for i in range(int(n)) if i not in have]
    return gone


def analyze_run(run_dir: str | Path, *, overrides=(), out: str | Path | None = None) -> ExperimentResult:
    """Re-make the report of a finished run folder; ``overrides`` may change ``[analysis]`` and
    ``[report]`` keys only. ``out``: write the report (``report.md``, ``summary.json``, ``functions.parquet``,
    ``pairs.csv``, figures, the config used) into that folder instead, so variants sit side by side and the
    run's own report stays as it is."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    folder = RunFolder(path)
    if not folder.config_path.is_file():
        raise FileNotFoundError(f"{path} is not a run folder: no config.toml in it")
    for text in overrides:
        if not text.strip().startswith(("analysis.", "report.")):
            raise ValueError(f"analyze only takes [analysis] and [report] overrides, got --set {text!r}")
    with unresolved_factories():  # the statistics need no network: a module factory need not be importable
        changed = parse_config(apply_overrides(read_toml(folder.config_path), list(overrides)))
        config = replace(load_config(folder.config_path), analysis=changed.analysis, report=changed.report)
        cases = prepare_cases(config.cases(), folder.path)
    with folder.lock():
        check_sources(folder, cases, required=False)
        gone = missing_shards(folder, cases)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise FileNotFoundError(f"run folder {folder.path} lacks {len(gone)} shard file(s) of its run: {shown}; "
                                    f"rerun `sgdbayes run` with --out {folder.path} to redo them")
        return analyze_folder(folder, config, cases, out=out)
