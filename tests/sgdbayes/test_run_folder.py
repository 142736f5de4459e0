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

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

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


# --- issue 26: data mixed silently, folders locked for ever ---------------------------------------
def arrays_config(path, **sgd):
    raw = json.loads(json.dumps(QUICK))
    raw["data"] = {"dataset": "arrays", "path": str(path), "n_train": 24, "n_test": 12}
    raw["estimators"]["sgd"].update(sgd)
    return parse_config(raw)


def write_arrays(path, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 5))
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int64))


def test_a_changed_arrays_file_is_refused_by_name(tmp_path, capsys):
    """Guards (issue 26): replacing the arrays file and rerunning merged shards computed on two data
    files (unfinished folder), or reported the old file's results as the new one's (finished
    folder). The folder records the content hash of its split; a change is refused naming the file."""
    data, out = tmp_path / "a.npz", tmp_path / "run"
    write_arrays(data, 0)
    run_experiment(arrays_config(data), out, progress=False)
    write_arrays(data, 1)
    with pytest.raises(ValueError, match=rf"data file {data} changed since the folder was made"):
        run_experiment(arrays_config(data), out, progress=False)  # finished folder
    assert main(["analyze", str(out)]) == 2  # its report would describe the new data with the old results
    assert "changed since the folder was made" in capsys.readouterr().err
    (out / "results.parquet").unlink()
    for p in sorted(shards(out).glob("*.parquet"))[1:]:
        p.unlink()  # an unfinished folder
    assert main(["run", str(out / "config.toml"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(data) in err and "changed" in err
    write_arrays(data, 0)  # the original data back: the folder resumes
    run_experiment(arrays_config(data), out, progress=False)


def test_a_changed_module_source_is_refused_by_name(tmp_path, monkeypatch):
    """Guards (issue 26): the user module's source is what the shards were computed from, too."""
    pkg = tmp_path / "mods"
    pkg.mkdir()
    src = pkg / "tinynet26.py"
    src.write_text("import torch.nn as nn\n\ndef make(shape):\n    return nn.Sequential(nn.Flatten(), nn.Linear(shape[-1], 8),"
                   " nn.Tanh(), nn.Linear(8, 1))\n")
    monkeypatch.syspath_prepend(str(pkg))
    raw = json.loads(json.dumps(QUICK))
    raw["arch"] = {"kind": "module", "factory": "tinynet26:make"}
    del raw["estimators"]["ep"]
    out = tmp_path / "run"
    run_experiment(parse_config(raw), out, progress=False)
    src.write_text(src.read_text() + "# edited: Tanh -> ReLU, say\n")
    with pytest.raises(ValueError, match=rf"{src} changed since the folder was made"):
        run_experiment(parse_config(raw), out, progress=False)


def test_a_shard_of_other_data_is_refused(tmp_path, reference):
    """Guards (issue 26): shard fingerprints cover the split's content, not only the config."""
    data = tmp_path / "a.npz"
    write_arrays(data, 0)
    a, b = tmp_path / "a", tmp_path / "b"
    run_experiment(arrays_config(data), a, progress=False)
    write_arrays(data, 1)
    run_experiment(arrays_config(data), b, progress=False)
    (b / "results.parquet").unlink()
    shutil.copyfile(shards(a) / "000001.parquet", shards(b) / "000001.parquet")
    with pytest.raises(ShardError, match=r"000001\.parquet was written by another config"):
        run_experiment(arrays_config(data), b, progress=False)


def test_a_folder_without_sources_is_refused_clearly(tmp_path, reference):
    """A folder made before data fingerprints existed cannot be checked: said so, not 'another config'."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / "sources.json").unlink()
    with pytest.raises(ValueError, match="no sources.json .* made by an older sgd-bayes"):
        run_experiment(quick(), out, progress=False)


@pytest.mark.parametrize("content", ["", "{\"host\": "])
def test_an_empty_or_torn_lock_is_stale_after_a_few_seconds(tmp_path, reference, content):
    """Guards (issue 26): an empty .lock (crash between create and write, full disk) made every later
    run refuse the folder as 'in use by pid -1 on host ?', for ever."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    lock = out / ".lock"
    lock.write_text(content)
    with pytest.raises(FolderBusyError, match="has not written its lock yet"):  # fresh: maybe being written
        run_experiment(quick(), out, progress=False)
    old = lock.stat().st_mtime - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="broke the stale lock .* left by a crashed writer: it is (empty|unreadable)"):
        run_experiment(quick(), out, progress=False)
    assert not lock.exists() and counts(out) == reference[1]


def test_the_lock_is_written_whole(tmp_path, monkeypatch):
    """Guards (issue 26): the lock was created empty and written after, so a crash between the two
    left an empty lock. Now its content is complete the moment its name exists."""
    import sampler.store as store

    seen = []
    real_link = os.link

    def link(src, dst, *a, **k):
        seen.append(json.loads(open(src).read()))
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(store.os, "link", link)
    folder = store.RunFolder(tmp_path / "run")
    with folder.lock():
        assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
    assert seen and seen[0]["pid"] == os.getpid()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


def test_cuda_absent_is_refused_before_the_folder_is_written(tmp_path, capsys):
    """Guards (issue 26): device = 'cuda' on a machine without CUDA failed after config.toml and
    manifest.json were written, so the corrected command was refused."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress", "--set", "data.dataset=boolean",
                 "--set", "estimators.sgd.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "estimators.sgd.device = 'cuda'" in err and "CUDA is not available" in err
    assert not out.exists()


def test_a_corrupt_extras_json_is_redone_by_a_rerun(tmp_path, reference):
    """Guards (issue 26): the error advised a rerun, and the rerun failed the same way."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    extras = out / "cases" / "main" / "extras.json"
    good = json.loads(extras.read_text())
    extras.write_text("{not json")
    run_experiment(quick(), out, progress=False)
    assert json.loads(extras.read_text()) == good


def test_the_cli_says_a_broken_lock_as_a_plain_note(tmp_path, reference, capsys):
    """Guards (issue 26): breaking a stale lock printed a RuntimeWarning with a source path and line."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "x"}))
    assert main(["run", str(out / "config.toml"), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "stale lock" in line]
    assert len(notes) == 1 and notes[0].startswith("sgdbayes run: note: broke the stale lock")
    assert "RuntimeWarning" not in err and ".py:" not in err
