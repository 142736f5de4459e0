"""One resume path for the library: ``sample_sgd`` and ``sample_prior`` with a run folder (issue 19).

Copied shard files are refused by name, never counted twice; an interrupted call (an exception from
a progress callback, or a killed process) resumes and counts each run or sample exactly once; shards
of another seed, architecture or split are refused.
"""

import shutil
import subprocess
import sys
import textwrap

import pytest

import sampler
from sampler.store import ShardError

ARCH = sampler.FCN(depth=1, width=8)
PRIOR = dict(block_size=256, shard_size=512, progress=False)
SGD = dict(lr=0.5, batch_size=8, max_epochs=60, ensemble=4, shard_size=5)


@pytest.fixture(scope="module")
def boolean():
    return sampler.load_split("boolean", n_train=16, n_test=24, seed=1, target="constant")


def _prior(split, n, folder=None, arch=ARCH, **kw):
    return sampler.sample_prior(arch, split, n, run_folder=folder, **{"seed": 0, **PRIOR, **kw})


def _sgd(split, n, folder=None, arch=ARCH, **kw):
    return sampler.sample_sgd(arch, split, n, run_folder=folder, **{"seed": 1, "progress": False, **SGD, **kw})


@pytest.mark.parametrize("kind, sample, n", [("prior", _prior, 512), ("sgd", _sgd, 5)])
def test_a_copied_shard_is_refused_naming_the_file(boolean, tmp_path, kind, sample, n):
    """Guards: prior sampling with a run folder read a shard copied to the next shard's name as the
    next shard, counting its samples twice (the SGD path refused it)."""
    folder = sampler.RunFolder(tmp_path / "run")
    sample(boolean, n, folder)
    shutil.copyfile(folder.shard_path(kind, 0), folder.shard_path(kind, 1))
    with pytest.raises(ShardError, match=r"000001\.parquet holds shard 0 .*copied or renamed"):
        sample(boolean, 2 * n, folder)
    folder.shard_path(kind, 1).unlink()
    assert sample(boolean, 2 * n, folder) == sample(boolean, 2 * n)


@pytest.mark.parametrize("kind, sample, n", [("prior", _prior, 2000), ("sgd", _sgd, 13)])
def test_resume_after_an_exception_counts_each_sample_once(boolean, tmp_path, kind, sample, n):
    reference = sample(boolean, n)
    size = 512 if kind == "prior" else 5

    def interrupt(done, fit):
        if done > size:  # within the second shard
            raise KeyboardInterrupt

    folder = sampler.RunFolder(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        sample(boolean, n, folder, progress=interrupt)
    assert folder.shard_indices(kind) == [0] and not (folder.path / ".lock").exists()
    seen = []
    resumed = sample(boolean, n, tmp_path / "run", progress=lambda done, fit: seen.append((done, fit)))
    assert resumed == reference and seen[-1] == (n, reference.n_fit)
    assert folder.shard_indices(kind) == list(range(-(-n // size)))
    assert sample(boolean, n, folder) == reference  # all from disk


def test_resume_after_the_process_is_killed(boolean, tmp_path):
    """A process killed (SIGKILL) after its first shard leaves that shard and a stale lock; the rerun
    breaks the lock and counts every sample once."""
    script = textwrap.dedent(f"""
        import os, signal, sampler
        split = sampler.load_split("boolean", n_train=16, n_test=24, seed=1, target="constant")
        def die(done, fit):
            if done > 512:
                os.kill(os.getpid(), signal.SIGKILL)
        sampler.sample_prior(sampler.FCN(depth=1, width=8), split, 2000, seed=0, block_size=256, shard_size=512,
                             run_folder={str(tmp_path / "run")!r}, progress=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    folder = sampler.RunFolder(tmp_path / "run")
    assert folder.shard_indices("prior") == [0] and (folder.path / ".lock").exists()
    with pytest.warns(RuntimeWarning, match="broke the stale lock"):
        resumed = _prior(boolean, 2000, folder)
    assert resumed == _prior(boolean, 2000)


@pytest.mark.parametrize("kind, sample, n", [("prior", _prior, 1024), ("sgd", _sgd, 10)])
def test_foreign_shards_are_refused(boolean, tmp_path, kind, sample, n):
    folder = sampler.RunFolder(tmp_path / "run")
    sample(boolean, n, folder)
    other_split = sampler.load_split("boolean", n_train=16, n_test=24, seed=2, target="constant")
    for split, kw in ((boolean, {"seed": 7}), (other_split, {}), (boolean, {"arch": sampler.FCN(depth=1, width=9)})):
        with pytest.raises(ShardError, match=r"000000\.parquet was written by another config"):
            sample(split, n, folder, **kw)
    with pytest.raises(ShardError, match="this run plans"):  # another shard layout
        sample(boolean, n, folder, shard_size=256 if kind == "prior" else 4)


def test_sgd_shard_counts_the_runs_train_runs_trains(boolean):
    """The estimator's and the library's unit of work is the count of the per-run table."""
    from collections import Counter

    from sampler.sgd import TrainSpec, sgd_shard, train_runs
    from sampler.store import merge_shards, shard_meta

    spec = TrainSpec(lr=0.5, batch_size=8, max_epochs=60)
    runs = train_runs(ARCH, boolean, spec, seed=3, start=2, stop=11, ensemble=3).to_pylist()
    shard = sgd_shard(ARCH, boolean, spec, seed=3, start=2, stop=11, ensemble=4)
    fit = [r for r in runs if r["fit"]]
    assert dict(merge_shards([shard])) == Counter(r["function"] for r in fit) and merge_shards([shard]).n_runs == 9
    n, info = shard_meta(shard)
    assert n == 9 and info["epochs"] == [r["epochs"] for r in fit] and info["device"] == "cpu"
    assert info["final_loss"] == [r["final_loss"] for r in fit]


def test_shard_functions_name_bad_arguments(boolean):
    from sampler.prior import prior_shard

    with pytest.raises(ValueError, match="start must be a multiple of block_size=256"):
        prior_shard(ARCH, boolean, seed=0, start=100, stop=300, block_size=256)
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        _sgd(boolean, 4, shard_size=0)
    with pytest.raises(TypeError, match="progress must be a bool, None, a callable"):
        _prior(boolean, 4, progress="yes")
