"""Fan-out of an experiment's shards: run here (``local``) or on a Ray cluster (``ray``).

A shard task is a small, picklable, frozen description of one unit of work whose result is one
file of the run folder (a shard, sampler/store.py, or a case's fit). Tasks are idempotent: a task
whose file exists returns at once, and writing a file that exists is a no-op, so a rerun after a
crash, a killed worker or a lost node redoes only unfinished shards and no run is counted twice.
Workers never write the manifest; the driver records which node did which shard from the reports.
"""

from __future__ import annotations

import atexit
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sampler.checks import check_choice
from sampler.store import ShardProgress

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ShardTask:
    """One unit of work that writes one file, ``output``, of the run folder.

    Attributes
    ----------
    kind, index : str, int
        What it makes (an estimator's label, for its shards, or ``fit:<case>``) and its index.
    output : str
        The file it writes (on a folder all nodes share): the task is done when it exists.
    payload : object
        What the worker needs, picklable (for the pipeline: a prepared case and shard parameters).
    worker : callable
        A module-level function ``worker(task, progress) -> n_items`` that computes and writes
        ``output`` (pickled by reference).
    num_gpus : float
        GPUs the task asks of Ray (0 for CPU work).
    items : int
        Items (runs, samples, functions) in the shard, for the progress bar.
    gpu_optional : bool
        The task runs as well on a CPU (``device = "auto"``); see :func:`ray_num_gpus`.
    """

    kind: str
    index: int
    output: str
    payload: Any
    worker: Callable
    num_gpus: float = 0.0
    items: int = 1
    gpu_optional: bool = False


@dataclass(frozen=True)
class ShardReport:
    """What a finished task says: which shard, where it ran, how long it took (s), its size."""

    kind: str
    index: int
    node: str
    seconds: float
    n_items: int
    skipped: bool


def run_task(task: ShardTask, progress: Callable[[int, int], None] | None = None) -> ShardReport:
    """Execute ``task`` here (a no-op if its file exists); ``progress(n_done, n_fit)`` hears its items done."""
    if Path(task.output).is_file():
        return ShardReport(task.kind, task.index, socket.gethostname(), 0.0, 0, True)
    t0 = time.perf_counter()
    n_items = task.worker(task, progress)
    return ShardReport(task.kind, task.index, socket.gethostname(), time.perf_counter() - t0, n_items, False)


def execute(tasks: Sequence[ShardTask], *, executor: str = "local", address: str | None = None,
            progress: bool = True, desc: str = "shards",
            on_report: Callable[[ShardTask, ShardReport], None] | None = None) -> list[ShardReport]:
    """Run every task (skipping finished ones) and return their reports in task order.

    Parameters
    ----------
    tasks : sequence of ShardTask
    executor : {"local", "ray"}
        ``local`` runs tasks one after another in this process. ``ray`` submits each task to
        Ray with ``num_gpus`` resources (``ray.init(address=address)``, or a local Ray when
        ``address`` is None and none is running).
    progress : bool
        Show a progress bar of items done (``task.items`` per task) and shards done.
    on_report : callable, optional
        ``on_report(task, report)`` on the driver as each task finishes (e.g. to warn early).
    """
    check_choice("executor", executor, EXECUTORS)
    reports: list[Any] = [None] * len(tasks)
    items = 0  # of the finished tasks; a local task's own progress moves the bar in between
    with ShardProgress(bool(progress), total=sum(t.items for t in tasks), desc=desc, unit="item") as bar:
        finished = (((i, run_task(t, bar.within())) for i, t in enumerate(tasks)) if executor == "local"
                    else _ray_results(tasks, address))
        for n, (i, report) in enumerate(finished, 1):
            reports[i], items = report, items + tasks[i].items
            bar.to(items, bar.fit)
            if on_report is not None:
                on_report(tasks[i], report)
            if bar.progress is not None:
                bar.progress.set_postfix_str(f"shards {n}/{len(tasks)}, last on {report.node}")
    return reports


def ray_num_gpus(task: ShardTask, cluster_gpus: float) -> float:
    """GPUs to ask Ray for ``task`` on a cluster with ``cluster_gpus`` GPUs in all: none for a task
    that runs as well on a CPU (``gpu_optional``, ``device = "auto"``) where the cluster has none,
    since asking would leave it pending for ever."""
    return 0.0 if task.gpu_optional and cluster_gpus <= 0 else float(task.num_gpus)


def _ray_results(tasks, address) -> Iterator[tuple[int, ShardReport]]:
    """``(index, report)`` of each task as Ray finishes it."""
    try:
        import ray  # only here (import-linter contract); slow to import and optional
    except ImportError as exc:
        raise ValueError("executor='ray' needs Ray: pip install 'sgd-bayes[ray]' (or pip install ray)") from exc
    if not ray.is_initialized():
        # ray.init replaces the process's SIGTERM handler by sys.exit(15); a handler of the caller's
        # (the command line's, which reports and exits 143 cleanly) is put back.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if in_main else None
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if address else {"include_dashboard": False}))
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)
        if address is None:
            # A local Ray this process started: stopped on every exit Python sees (the CLI turns
            # SIGTERM into one). After a SIGKILL its processes outlive the driver: `ray stop`.
            atexit.register(ray.shutdown)
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    remote = ray.remote(run_task)
    pending = {remote.options(num_gpus=ray_num_gpus(t, cluster_gpus), max_retries=3,
                              retry_exceptions=False).remote(t): i for i, t in enumerate(tasks)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)
