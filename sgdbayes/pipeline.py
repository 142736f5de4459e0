"""A whole experiment, end to end: P_SGD shards, P_B for every function found, analysis, report.

``run_experiment(config, out)`` is what ``sgdbayes run`` does; ``analyze_run(out)`` re-makes the
statistics, figures and report of a finished run folder without re-running anything.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sgdbayes.config import ExperimentConfig, apply_overrides, load_config, parse_config
from sgdbayes.fanout import ShardTask, execute
from sampler.functions import FunctionCounts
from sampler.store import RunFolder, atomic_write_json, atomic_write_table

BAYES_GROUP = 2000  # functions per P_B shard: one EP on S per shard, so large groups amortise it


@dataclass(frozen=True)
class ExperimentResult:
    """A finished (or re-analysed) run folder.

    Attributes
    ----------
    folder : Path
    summary : dict
        The contents of ``summary.json``.
    report_path : Path
        ``report.md``.
    """

    folder: Path
    summary: dict
    report_path: Path

    def summary_text(self) -> str:
        """The summary as an aligned two-column table for the terminal."""
        from sgdbayes.report import summary_lines

        return "\n".join(summary_lines(self.summary))


def _check_folder_config(folder: RunFolder, config: ExperimentConfig) -> None:
    if folder.config_path.is_file():
        existing = load_config(folder.config_path)
        if existing != config:
            raise ValueError(
                f"run folder {folder.path} holds a different config ({folder.config_path}); resume it with the "
                f"same config, or pass a new --out")
    else:
        from sampler.store import atomic_write_text

        atomic_write_text(folder.config_path, config.to_toml())


def sgd_tasks(config: ExperimentConfig, folder: RunFolder) -> list[ShardTask]:
    """The P_SGD shard tasks: runs ``[i * shard_size, (i + 1) * shard_size)``."""
    s = config.sgd
    n_shards = math.ceil(s.n_runs / s.shard_size)
    gpus = 1.0 if s.device in ("cuda", "auto") else 0.0
    raw = config.to_dict()
    return [ShardTask("sgd", i, str(folder.path), raw,
                      {"start": i * s.shard_size, "stop": min((i + 1) * s.shard_size, s.n_runs)}, gpus)
            for i in range(n_shards)]


def bayes_tasks(config: ExperimentConfig, folder: RunFolder, functions: list[str]) -> list[ShardTask]:
    """The P_B shard tasks: groups of ``BAYES_GROUP`` functions in a fixed (count-ranked) order."""
    raw = config.to_dict()
    return [ShardTask("bayes", i, str(folder.path), raw, {"functions": functions[a:a + BAYES_GROUP]})
            for i, a in enumerate(range(0, len(functions), BAYES_GROUP))]


def _nodes(reports) -> dict[str, list[int]]:
    nodes: dict[str, list[int]] = {}
    for r in reports:
        if not r.skipped:
            nodes.setdefault(r.node, []).append(r.index)
    return nodes


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    *,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run ``config`` into the run folder ``out`` (resuming whatever it already holds).

    Steps: P_SGD by ensembles of SGD runs (shards ``sgd``); log P_B(f|S) for every function that
    any fitted run found (shards ``bayes``), and log P(S); the per-function table
    ``functions.parquet``; statistics, figures, ``summary.json`` and ``report.md``.
    """
    import torch  # noqa: F401  (fail early, before anything is written, if torch is missing)

    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    folder = RunFolder(out)
    _check_folder_config(folder, config)
    folder.start_manifest(seeds={"data": config.data.seed, "sgd": config.sgd.seed, "analysis": config.analysis.seed},
                          device=config.sgd.device)
    folder.update_manifest(executor=executor)

    t0 = time.perf_counter()
    tasks = sgd_tasks(config, folder)
    reports = execute(tasks, executor=executor, address=address, progress=progress, desc="P_SGD runs",
                      items_of=lambda t: t.params["stop"] - t.params["start"])
    counts = folder.merge_counts("sgd")
    folder.update_manifest(timings={"sgd_s": time.perf_counter() - t0}, nodes={"sgd": _nodes(reports)})

    functions = [f for f, _ in counts.most_common()]
    log_pb: dict[str, float] = {}
    if config.bayes.method != "none" and functions:
        import nngp

        from sgdbayes.tasks import split_for, train_posterior_for

        t1 = time.perf_counter()
        breports = execute(bayes_tasks(config, folder, functions), executor=executor, address=address,
                           progress=progress, desc="P_B functions", items_of=lambda t: len(t.params["functions"]))
        for _, table, _ in folder.iter_shards("bayes"):
            log_pb.update(zip(table.column("function").to_pylist(), table.column("log_pb").to_pylist()))
        split = split_for(config.data)
        posterior = train_posterior_for(config.arch, config.data)  # the shards' fit, when they ran here
        bayes = {"method": config.bayes.method,
                 "log_p_s": float(nngp.log_ps(config.arch, split, posterior=posterior)),
                 "gp_test_error": float(nngp.gp_test_error(config.arch, split, posterior=posterior)),
                 "ep_converged": bool(posterior.converged), "ep_iterations": int(posterior.n_iter),
                 "ep_max_change": float(posterior.max_change), "jitter": float(posterior.jitter)}
        atomic_write_json(folder.path / "bayes.json", bayes)
        folder.update_manifest(timings={"bayes_s": time.perf_counter() - t1}, nodes={"bayes": _nodes(breports)})

    write_functions_table(folder, config, counts, log_pb)
    result = analyze_folder(folder, config)
    folder.update_manifest(timings={"total_s": time.perf_counter() - t0},
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return result


def sgd_run_stats(folder: RunFolder) -> dict[str, float | None]:
    """Mean and median epochs to fit, and mean final training loss, over the fitted SGD runs."""
    import numpy as np

    epochs, losses = [], []
    for _, table, _ in folder.iter_shards("sgd"):
        fit = np.asarray(table.column("fit").to_pylist(), dtype=bool)
        epochs.append(np.asarray(table.column("epochs").to_pylist(), dtype=float)[fit])
        losses.append(np.asarray(table.column("final_loss").to_pylist(), dtype=float)[fit])
    e = np.concatenate(epochs) if epochs else np.zeros(0)
    loss = np.concatenate(losses) if losses else np.zeros(0)
    if e.size == 0:
        return {"sgd_mean_epochs": None, "sgd_median_epochs": None, "sgd_mean_final_loss": None}
    return {"sgd_mean_epochs": float(e.mean()), "sgd_median_epochs": float(np.median(e)),
            "sgd_mean_final_loss": float(loss.mean())}


def write_functions_table(folder: RunFolder, config: ExperimentConfig, counts: FunctionCounts,
                          log_pb: dict[str, float]) -> Path:
    """``functions.parquet``: one row per function found, with its SGD count, log P_SGD, log P_B,
    complexity measures and test error against E's true labels."""
    import pyarrow as pa

    import analysis

    from sgdbayes.tasks import split_for

    split = split_for(config.data)
    functions = [f for f, _ in counts.most_common()]
    n_fit = max(counts.n_fit, 1)
    table = pa.table({
        "function": pa.array(functions, pa.string()),
        "count": pa.array([counts[f] for f in functions], pa.int64()),
        "log_p_sgd": pa.array([math.log(counts[f] / n_fit) for f in functions], pa.float64()),
        "log_pb": pa.array([log_pb.get(f, math.nan) for f in functions], pa.float64()),
        "lz_complexity": pa.array([analysis.lz_complexity(f) for f in functions], pa.float64()),
        "entropy": pa.array([analysis.entropy(f) for f in functions], pa.float64()),
        "test_error": pa.array([analysis.test_error(f, split.y_test) for f in functions], pa.float64()),
    }).replace_schema_metadata({"n_runs": str(counts.n_runs), "n_fit": str(counts.n_fit),
                                "test_target": split.test_target})
    return atomic_write_table(table, folder.path / "functions.parquet")


def analyze_folder(folder: RunFolder, config: ExperimentConfig) -> ExperimentResult:
    """Statistics, figures, ``summary.json`` and ``report.md`` from ``functions.parquet``,
    ``bayes.json`` and the SGD shards of a run folder."""
    import pyarrow.parquet as pq

    from sgdbayes.report import make_report

    path = folder.path / "functions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {folder.path} has no functions.parquet: the run did not finish; "
                                f"rerun `sgdbayes run` with --out {folder.path} to resume it")
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    bayes_path = folder.path / "bayes.json"
    bayes = json.loads(bayes_path.read_text()) if bayes_path.is_file() else {}
    extra = {**sgd_run_stats(folder), "gp_test_error": bayes.get("gp_test_error")}
    summary, report = make_report(folder.path, config, table.to_pandas(), n_runs=int(meta["n_runs"]),
                                  n_fit=int(meta["n_fit"]), log_ps=bayes.get("log_p_s"), extra=extra,
                                  manifest=folder.read_manifest())
    return ExperimentResult(folder.path, summary, report)


def analyze_run(run_dir: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentResult:
    """Re-make the report of a finished run folder; ``overrides`` may change ``[analysis]`` keys only."""
    folder_path = Path(run_dir)
    if not folder_path.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    folder = RunFolder(folder_path)
    if not folder.config_path.is_file():
        raise FileNotFoundError(f"{folder_path} is not a run folder: no config.toml in it")
    for text in overrides:
        if not text.strip().startswith("analysis."):
            raise ValueError(f"analyze only takes [analysis] overrides, got --set {text!r}")
    from sgdbayes.config import read_toml

    config = parse_config(apply_overrides(read_toml(folder.config_path), list(overrides)))
    saved = load_config(folder.config_path)
    config = replace(saved, analysis=config.analysis)
    return analyze_folder(folder, config)
