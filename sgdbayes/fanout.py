"""Fan-out of an experiment's shards: run here (``local``) or on a Ray cluster (``ray``).

A shard task is a small, picklable, frozen description of one unit of work whose result is one
file of the run folder (a shard, sampler/store.py, or a case's fit). Tasks are idempotent: a task whose file exists
returns at once, and writing a file that exists is a no-op, so a rerun after a crash, a killed
worker or a lost node redoes only unfinished shards and no run is counted twice. Workers never
write the manifest; the driver records which node did which shard from the shard's metadata.
"""

from __future__ import annotations

import atexit
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from sampler._checks import check_choice

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ShardTask:
    """One unit of work that writes one file, ``output``, of the run folder.

    Attributes
    ----------
    kind : str
        What it makes, e.g. an estimator's label (its shards) or ``fit``.
    index : int
        Its index within ``kind``.
    output : str
        The file it writes (on a folder all nodes share): the task is done when it exists.
    payload : object
        What the worker needs, picklable (for the pipeline: a prepared case and shard parameters).
    worker : callable
        A module-level function ``worker(task, progress) -> n_items`` that computes and writes
        ``output`` (pickled by reference).
    num_gpus : float
        GPUs the task asks of Ray (0 for CPU work).
    gpu_optional : bool
        The task runs as well on a CPU (``device = "auto"``): on a cluster without GPUs, Ray is
        asked for none (asking would leave the task pending for ever).
    items : int
        Items (runs, samples, functions) in the shard, for the progress bar.
    """

    kind: str
    index: int
    output: str
    payload: Any = None
    worker: Callable | None = None
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
    """Execute ``task`` in this process (a no-op if its shard is already on disk).

    ``progress(n_done, n_fit)``, if given, hears how many of the task's items are done so far.
    """
    if Path(task.output).is_file():
        return ShardReport(task.kind, task.index, socket.gethostname(), 0.0, 0, True)
    t0 = time.perf_counter()
    if task.worker is None:
        raise ValueError(f"shard task {task.kind}/{task.index} has no worker")
    n_items = task.worker(task, progress)
    return ShardReport(task.kind, task.index, socket.gethostname(), time.perf_counter() - t0, n_items, False)


class _Progress:
    """A tqdm bar over items (runs or functions) of a whole fan-out, with shards done in the postfix."""

    def __init__(self, total_items: int, n_shards: int, desc: str, enabled: bool):
        # smoothing: the rate (and so the estimate) follows the latest runs, shown from the first ones
        self.bar = tqdm(total=total_items, desc=desc, unit="item", disable=not enabled, dynamic_ncols=True,
                        smoothing=0.1)
        self.n_shards = n_shards
        self.done = 0
        self.inner = 0  # items of the running task already shown

    def within(self):
        """A ``progress(n_done, n_fit)`` callback that moves the bar inside one task."""
        self.inner = 0

        def callback(n_done: int, n_fit: int) -> None:
            self.bar.update(n_done - self.inner)
            self.inner = n_done
            self.bar.set_postfix_str(f"shard {self.done + 1}/{self.n_shards}, fit {n_fit}/{n_done}", refresh=False)

        return callback

    def update(self, report: ShardReport, n_items: int) -> None:
        self.done += 1
        self.bar.update(n_items - self.inner)
        self.inner = 0
        self.bar.set_postfix_str(f"shards {self.done}/{self.n_shards} last on {report.node}")

    def close(self) -> None:
        self.bar.close()


def execute(
    tasks: Sequence[ShardTask],
    *,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    desc: str = "shards",
    items_of: Callable[[ShardTask], int] = lambda t: t.items,
) -> list[ShardReport]:
    """Run every task (skipping finished shards) and return their reports in task order.

    Parameters
    ----------
    tasks : sequence of ShardTask
    executor : {"local", "ray"}
        ``local`` runs tasks one after another in this process. ``ray`` submits each task to
        Ray with ``num_gpus`` resources (``ray.init(address=address)``, or a local Ray when
        ``address`` is None and none is running).
    progress : bool
        Show a progress bar of items done (``items_of(task)`` per task) and shards done.
    """
    check_choice("executor", executor, EXECUTORS)
    bar = _Progress(sum(items_of(t) for t in tasks), len(tasks), desc, progress)
    try:
        if executor == "local":
            reports = []
            for task in tasks:
                report = run_task(task, bar.within())
                bar.update(report, items_of(task))
                reports.append(report)
            return reports
        return _execute_ray(tasks, address, bar, items_of)
    finally:
        bar.close()


def ray_num_gpus(task: ShardTask, cluster_gpus: float) -> float:
    """GPUs to ask Ray for ``task`` on a cluster with ``cluster_gpus`` GPUs in all: none for a task
    that runs as well on a CPU (``gpu_optional``, ``device = "auto"``) where the cluster has none,
    since asking would leave it pending for ever."""
    return 0.0 if task.gpu_optional and cluster_gpus <= 0 else float(task.num_gpus)


def _execute_ray(tasks, address, bar, items_of) -> list[ShardReport]:
    try:
        import ray  # only here (import-linter contract); slow to import and optional
    except ImportError as exc:
        raise ValueError("executor='ray' needs Ray: pip install 'sgd-bayes[ray]' (or pip install ray)") from exc
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if address else {"include_dashboard": False}))
        if address is None:
            # A local Ray this process started: stopped on every exit Python sees (the CLI turns
            # SIGTERM into one). After a SIGKILL its processes outlive the driver: `ray stop`.
            atexit.register(ray.shutdown)
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    remote = ray.remote(run_task)
    pending = {}
    for i, task in enumerate(tasks):
        ref = remote.options(num_gpus=ray_num_gpus(task, cluster_gpus), max_retries=3, retry_exceptions=False).remote(task)
        pending[ref] = i
    reports: list[Any] = [None] * len(tasks)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            reports[i] = ray.get(ref)
            bar.update(reports[i], items_of(tasks[i]))
    return reports
