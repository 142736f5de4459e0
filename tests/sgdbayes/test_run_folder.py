"""Run folders nobody can corrupt (issue 15): one writer at a time, shards that say what made them,
bad input refused before anything is written, corrupt shards redone, the history of every run kept.

Each test names in its docstring the failure it guards against; each failed on the code before
issue 15's fixes. Sizes are tiny (Boolean system, 12 SGD runs in 3 shards: ~2 s a run).
"""

import json
import os
import shutil
import socket
import warnings

import pyarrow.parquet as pq
import pytest

from sampler.store import FolderBusyError, ShardError
from sgdbayes.cli import main
from sgdbayes.config import parse_config
from sgdbayes.pipeline import run_experiment

QUICK = {
    "data": {"dataset": "boolean", "n_train": 32, "n_test": 16, "target": "majority"},
    "arch": {"width": 16},
    "estimators": {"sgd": {"method": "sgd", "n_runs": 12, "shard_size": 4, "ensemble": 4, "lr": 0.5,
                           "batch_size": 8, "max_epochs": 100},
                   "ep": {"method": "ep-conditional"}},
    "analysis": {"n_boot": 20},
}


def quick(**sgd):
    raw = json.loads(json.dumps(QUICK))
    raw["estimators"]["sgd"].update(sgd)
    return parse_config(raw)


def shards(out):
    return out / "cases" / "main" / "shards" / "sgd"


def counts(out):
    df = pq.read_table(out / "results.parquet").to_pandas()
    sgd = df[df["estimator"] == "sgd"]
    return dict(zip(sgd["function"], sgd["count"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    run_experiment(quick(), out, progress=False)
    return out, counts(out)


def test_a_held_folder_is_refused_before_its_config_is_written(tmp_path):
    """Guards: two processes with different configs on one folder both ran and mixed their shards.
    Now the second finds the lock (host, pid named) and writes nothing, not even config.toml."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": "now"}))
    with pytest.raises(FolderBusyError, match=rf"in use by pid {os.getppid()} on host .*\.lock"):
        run_experiment(quick(seed=1), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_stale_lock_of_a_dead_process_is_broken(tmp_path, reference):
    """Guards: a killed run must not lock its folder for ever (the pid is gone on this host)."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "x"}))
    with pytest.warns(RuntimeWarning, match="broke the stale lock .* is gone"):
        run_experiment(quick(), out, progress=False)
    assert not (out / ".lock").exists() and counts(out) == reference[1]


def test_a_new_config_in_an_old_folder_does_not_reuse_its_shards(tmp_path, reference):
    """Guards: with config.toml deleted, a rerun with another seed reused seed 0's shards (results of
    seed 0 labelled seed 1). Each shard carries its config's fingerprint; foreign ones are named."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / "config.toml").unlink()
    with pytest.raises(ShardError, match=r"000000\.parquet was written by another config"):
        run_experiment(quick(seed=1), out, progress=False)


@pytest.mark.parametrize("copy", [("000000", "000001"), ("000000", "000007")])
def test_a_copied_shard_is_refused_by_name(tmp_path, reference, copy):
    """Guards: a shard copied over another (000000 -> 000001) or under an extra name (-> 000007) was
    counted (73 functions instead of 75, n_runs = 576). Each shard records its index and range."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / "results.parquet").unlink()
    src, dst = copy
    shutil.copyfile(shards(out) / f"{src}.parquet", shards(out) / f"{dst}.parquet")
    with pytest.raises(ShardError, match=rf"{dst}\.parquet"):
        run_experiment(quick(), out, progress=False)


def test_a_corrupt_shard_is_named_moved_aside_and_redone(tmp_path, reference):
    """Guards: a corrupt shard stopped the run with pyarrow's wording and no file name."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (shards(out) / "000001.parquet").write_bytes(b"PAR1 not really")
    with pytest.warns(RuntimeWarning, match=r"000001\.parquet is corrupt .* moved it aside"):
        run_experiment(quick(), out, progress=False)
    assert (shards(out) / "000001.parquet.corrupt").is_file()
    assert counts(out) == reference[1]


def test_the_manifest_keeps_every_invocation(tmp_path, reference):
    """Guards: the manifest kept only the last invocation's nodes and timings."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    run_experiment(quick(), out, progress=False)
    history = json.loads((out / "manifest.json").read_text())["invocations"]
    assert len(history) == 2
    assert all("total_s" in h["timings"] and "samplers" in h["nodes"] and "started" in h for h in history)
    assert [len(h["nodes"]["samplers"].get(socket.gethostname(), [])) for h in history] == [3 + 0, 0]


def test_bad_data_leaves_no_run_folder(tmp_path):
    """Guards: a run that failed on bad input (here: CIFAR-10 files absent) left config.toml, so the
    corrected rerun was refused. Data, sizes and memory are checked before anything is written."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress", "--set", "data.dataset=cifar10",
                 "--set", f"data.data_dir={tmp_path}"]) == 2
    assert not out.exists()


def test_analyze_refuses_a_folder_whose_shards_are_gone(tmp_path, reference, capsys):
    """Guards: analyze on a folder with missing shards reported from what was left."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (shards(out) / "000002.parquet").unlink()
    assert main(["analyze", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks 1 shard file(s)" in err and "sgd/000002.parquet" in err


@pytest.mark.parametrize("name, says", [("manifest.json", "is not valid JSON"),
                                        ("cases/main/extras.json", "is not valid JSON"),
                                        ("results.parquet", "is corrupt")])
def test_corrupt_files_are_named(tmp_path, reference, capsys, name, says):
    """Guards: a corrupt JSON or Parquet file gave json's or pyarrow's message without its name."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / name).write_text("{not json")
    assert main(["analyze", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / name} {says}" in err


def test_warnings_are_not_raised_by_a_plain_resume(reference):
    """A finished folder resumes silently (no stale lock, nothing corrupt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_experiment(quick(), reference[0], progress=False)
