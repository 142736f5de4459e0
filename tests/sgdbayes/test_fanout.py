"""Fan-out of shards: local and Ray give identical counts; killed workers and drivers lose nothing."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest

from sampler import RunFolder
from sgdbayes.config import load_config
from sgdbayes.fanout import execute, run_task
from sgdbayes.pipeline import sgd_tasks

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

SMALL = ["data.dataset=boolean", "data.n_train=32", "data.n_test=32", "data.target=majority",
         "arch.width=16", "sgd.n_runs=60", "sgd.shard_size=16", "sgd.ensemble=8", "sgd.lr=0.1",
         "sgd.batch_size=8", "sgd.max_epochs=100", "bayes.method=none"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _reference(tmp_path, overrides=SMALL):
    config = load_config(None, overrides)
    folder = RunFolder(tmp_path / "reference")
    execute(sgd_tasks(config, folder), executor="local", progress=False)
    return config, folder.merge_counts("sgd")


def test_ray_and_local_give_identical_counts(tmp_path, local_ray):
    config, expected = _reference(tmp_path)
    folder = RunFolder(tmp_path / "ray")
    reports = execute(sgd_tasks(config, folder), executor="ray", progress=False)
    assert folder.merge_counts("sgd") == expected
    assert expected.n_runs == 60 and not any(r.skipped for r in reports)
    # A second fan-out over a finished folder does nothing and changes nothing.
    again = execute(sgd_tasks(config, folder), executor="ray", progress=False)
    assert all(r.skipped for r in again) and folder.merge_counts("sgd") == expected


def _killed_after_first_runs(task):
    """Run ``task`` in this (child) process and SIGKILL it as soon as some of its runs finished:
    the shard is then certainly interrupted midway, with no chance to clean up."""
    import sampler.sgd as sgd

    train_runs = sgd.train_runs

    def train_then_die(*args, **kwargs):
        kwargs["progress"] = lambda n_done, n_fit: os.kill(os.getpid(), signal.SIGKILL)
        return train_runs(*args, **kwargs)

    sgd.train_runs = train_then_die
    run_task(task)


def test_worker_killed_mid_shard_loses_and_double_counts_nothing(tmp_path, local_ray):
    overrides = SMALL + ["sgd.n_runs=64", "sgd.shard_size=32"]
    config, expected = _reference(tmp_path, overrides)
    folder = RunFolder(tmp_path / "killed")
    tasks = sgd_tasks(config, folder)
    child = mp.get_context("spawn").Process(target=_killed_after_first_runs, args=(tasks[1],))
    child.start()
    child.join(timeout=600)
    assert child.exitcode == -signal.SIGKILL
    assert folder.shard_indices("sgd") == []  # nothing half-written is visible as a shard
    execute(tasks, executor="ray", progress=False)
    assert folder.merge_counts("sgd") == expected


def test_driver_killed_then_restarted_completes_the_folder(tmp_path):
    out = tmp_path / "driver"
    overrides = SMALL + ["sgd.n_runs=96"]
    config, expected = _reference(tmp_path, overrides)
    args = [sys.executable, "-m", "sgdbayes.cli", "run", "--no-progress", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = RunFolder(out)
    deadline = time.time() + 120
    while not folder.shard_indices("sgd") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = folder.shard_indices("sgd")
    assert 0 < len(done_before) < 6
    # The restarted driver (the embedded executor: Ray's own restart is covered above) redoes only the rest.
    assert subprocess.run(args, capture_output=True, timeout=600).returncode == 0
    assert folder.merge_counts("sgd") == expected
    redone = [i for nodes in folder.read_manifest()["nodes"]["sgd"].values() for i in nodes]
    assert sorted(redone) == [i for i in range(6) if i not in done_before]
