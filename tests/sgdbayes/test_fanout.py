"""Fan-out of shards: local and Ray give identical counts; killed workers and drivers lose nothing."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys

import pytest

from sampler import RunFolder
from sgdbayes.config import load_config
from sgdbayes.fanout import execute, run_task
from sgdbayes.pipeline import prepare_cases, read_result, shard_task

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

SMALL = ["data.dataset=boolean", "data.n_train=32", "data.n_test=32", "data.target=majority",
         "arch.width=16", "estimators.sgd.n_runs=60", "estimators.sgd.shard_size=16", "estimators.sgd.ensemble=8",
         "estimators.sgd.lr=0.1", "estimators.sgd.batch_size=8", "estimators.sgd.max_epochs=100",
         "estimators.ep.top=1", "estimators.tilting.top=1", "estimators.tilting.n_samples=100"]


def sgd_tasks(config, out):
    """The sgd estimator's shard tasks of the (only) case, as the pipeline makes them."""
    case = prepare_cases(config.cases()[:1], out)[0]
    spec = case.estimator("sgd")
    return [shard_task(case, spec, i, shard) for i, shard in enumerate(spec.estimator.plan(case, spec.options))]


def merge_counts(config, out):
    """(functions -> count, n_samples, n_fit) of the sgd shards on disk."""
    case = prepare_cases(config.cases()[:1], out)[0]
    spec = case.estimator("sgd")
    r = read_result(case, spec, list(spec.estimator.plan(case, spec.options)))
    return dict(zip(r.functions, r.counts.tolist())), r.n_samples, r.n_fit


def shard_indices(config, out):
    return RunFolder(prepare_cases(config.cases()[:1], out)[0].folder).shard_indices("sgd")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _reference(tmp_path, overrides=SMALL):
    config = load_config(None, overrides)
    out = tmp_path / "reference"
    execute(sgd_tasks(config, out), executor="local", progress=False)
    return config, merge_counts(config, out)


def test_ray_and_local_give_identical_counts(tmp_path, local_ray):
    config, expected = _reference(tmp_path)
    out = tmp_path / "ray"
    reports = execute(sgd_tasks(config, out), executor="ray", progress=False)
    assert merge_counts(config, out) == expected
    assert expected[1] == 60 and not any(r.skipped for r in reports)
    # A second fan-out over a finished folder does nothing and changes nothing.
    again = execute(sgd_tasks(config, out), executor="ray", progress=False)
    assert all(r.skipped for r in again) and merge_counts(config, out) == expected


def _die(n_done, n_fit):
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_after_first_runs(task):
    """Run ``task`` in this (child) process and SIGKILL it as soon as some of its runs finished:
    the shard is then certainly interrupted midway, with no chance to clean up."""
    run_task(task, progress=_die)


def test_worker_killed_mid_shard_loses_and_double_counts_nothing(tmp_path, local_ray):
    overrides = SMALL + ["estimators.sgd.n_runs=64", "estimators.sgd.shard_size=32"]
    config, expected = _reference(tmp_path, overrides)
    out = tmp_path / "killed"
    tasks = sgd_tasks(config, out)
    child = mp.get_context("spawn").Process(target=_killed_after_first_runs, args=(tasks[1],))
    child.start()
    child.join(timeout=600)
    assert child.exitcode == -signal.SIGKILL
    assert shard_indices(config, out) == []  # nothing half-written is visible as a shard
    execute(tasks, executor="ray", progress=False)
    assert merge_counts(config, out) == expected


KILL_AFTER_TWO_SHARDS = """\
import os, signal, sys
import sgdbayes.fanout as fanout
real = fanout.run_task
written = []
def run_task(task, progress=None):
    report = real(task, progress)
    written.append(task.index) if task.kind == "sgd" else None  # the case's fits come first
    if len(written) == 2:  # two shards are on disk: the driver dies here, with no chance to clean up
        os.kill(os.getpid(), signal.SIGKILL)
    return report
fanout.run_task = run_task
from sgdbayes.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_driver_killed_then_restarted_completes_the_folder(tmp_path):
    """Guards: the old test killed the driver after a timer, a race (0 or all shards could be
    done). Now the driver SIGKILLs itself right after its second shard is written."""
    out = tmp_path / "driver"
    overrides = SMALL + ["estimators.sgd.n_runs=96"]
    config, expected = _reference(tmp_path, overrides)
    args = ["run", "--no-progress", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO_SHARDS] + args, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert shard_indices(config, out) == [0, 1]
    # The restarted driver (the embedded executor: Ray's own restart is covered above) redoes only the
    # rest; the dead driver's lock (its pid is gone on this host) is broken.
    again = subprocess.run([sys.executable, "-m", "sgdbayes.cli"] + args, capture_output=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert b"broke the stale lock" in again.stderr
    assert merge_counts(config, out) == expected
    redone = [int(i.split("/")[1]) for nodes in RunFolder(out).read_manifest()["nodes"]["samplers"].values()
              for i in nodes if i.startswith("sgd/")]
    assert sorted(redone) == [2, 3, 4, 5]


def test_under_ray_the_driver_makes_no_fit(tmp_path, local_ray, monkeypatch):
    """Guards: under Ray the driver refitted EP on S for the report's extras (a process cache held
    the workers' fit). The fits are made by Ray tasks into the folder; the driver only reads them."""
    import json

    import nngp
    from sgdbayes.pipeline import run_experiment

    def refuse(*args, **kwargs):
        raise AssertionError("the driver fitted EP")

    monkeypatch.setattr(nngp, "train_posterior", refuse)
    config = load_config(None, SMALL + ["estimators.sgd.n_runs=16", "estimators.sgd.shard_size=16"])
    run_experiment(config, tmp_path, executor="ray", progress=False)
    assert (tmp_path / "cases" / "main" / "fits" / "posterior.pt").is_file()
    extras = json.loads((tmp_path / "cases" / "main" / "extras.json").read_text())
    assert extras["ep"]["ep_converged"] is True
    assert sum(len(v) for v in RunFolder(tmp_path).read_manifest()["nodes"]["fits"].values()) == 3


SIGTERM_AFTER_ONE_SHARD = """
import os, signal, sys
import sgdbayes.fanout as fanout
real = fanout._ray_results
def results(tasks, address):
    for n, item in enumerate(real(tasks, address)):
        yield item
        if tasks[item[0]].kind == "sgd":  # one shard is on disk (Ray is up): SIGTERM, as `kill PID` sends it
            os.kill(os.getpid(), signal.SIGTERM)
fanout._ray_results = results
from sgdbayes.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ray_init_does_not_take_the_callers_sigterm_handler(monkeypatch, tmp_path):
    """Fast version of the test below, with a stand-in for Ray whose init installs its own SIGTERM
    handler as ray.init does (sys.exit(signum)): the caller's handler is in place afterwards."""
    import threading
    import types

    import sgdbayes.fanout as fanout
    from sgdbayes.fanout import ShardTask

    def ray_handler(signum, frame):
        raise SystemExit(signum)

    fake = types.SimpleNamespace(is_initialized=lambda: False, cluster_resources=lambda: {}, shutdown=lambda: None,
                                 init=lambda **kw: signal.signal(signal.SIGTERM, ray_handler),
                                 get=lambda ref: ref(), wait=lambda refs, num_returns: (refs[:1], refs[1:]))
    fake.remote = lambda f: types.SimpleNamespace(options=lambda **kw: types.SimpleNamespace(
        remote=lambda task: (lambda: f(task))))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(fanout.atexit, "register", lambda f: None)

    def ours(signum, frame):
        pass

    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        task = ShardTask("x", 0, str(tmp_path / "x.done"), None, _touch)
        assert [r.index for _, r in fanout._ray_results([task], None)] == [0]
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def _touch(task, progress=None):
    open(task.output, "w").close()
    return 1


@pytest.mark.slow
def test_sigterm_under_ray_exits_cleanly(tmp_path):
    """Guards (issue 26): under --executor ray, SIGTERM exited 15 through Ray's own handler (ray.init
    replaces the process's: sys.exit(signum)), with a native stack trace; the local executor exits
    143 with one line. Now both say the same line and exit 143, lock released."""
    out = tmp_path / "run"
    args = ["run", "--no-progress", "--executor", "ray", "--out", str(out)]
    for o in SMALL + ["estimators.sgd.n_runs=64", "estimators.sgd.shard_size=8"]:
        args += ["--set", o]
    proc = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_ONE_SHARD] + args, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 143, proc.stderr
    assert "sgdbayes run: terminated (SIGTERM); finished shards are kept, rerun to resume" in proc.stderr
    assert "Traceback" not in proc.stderr and "SIGTERM" not in proc.stderr.replace("terminated (SIGTERM)", "")
    assert not (out / ".lock").exists()
