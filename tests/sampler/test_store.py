import os

import pyarrow as pa
import pytest

from sampler import FunctionCounts, RunFolder
from sampler.store import atomic_write_bytes


def _runs_table(start, stop):
    funcs = [format(i % 5, "03b") for i in range(start, stop)]
    return pa.table({"run": list(range(start, stop)), "function": funcs,
                     "fit": [i % 7 != 0 for i in range(start, stop)]})


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")

    def boom(*_):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temp file left behind


def test_resume_after_a_shard_interrupted_midway_counts_every_run_once(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    sizes = [(0, 10), (10, 20), (20, 25)]
    folder.write_shard("sgd", 0, _runs_table(*sizes[0]))
    # Shard 1 crashes midway: its temporary file exists but was never renamed into place.
    (folder.shard_dir("sgd") / ".000001.parquet.abc.tmp").write_bytes(b"partial garbage")
    assert folder.shard_indices("sgd") == [0]
    assert not folder.has_shard("sgd", 1)
    # The rerun does the unfinished shards; rewriting a finished one is a no-op.
    for i, (a, b) in enumerate(sizes):
        if not folder.has_shard("sgd", i):
            folder.write_shard("sgd", i, _runs_table(a, b))
    folder.write_shard("sgd", 0, _runs_table(100, 200))  # duplicate task: ignored
    merged = folder.merge_counts("sgd")
    whole = _runs_table(0, 25)
    expected = FunctionCounts.from_strings(
        [f for f, ok in zip(whole.column("function").to_pylist(), whole.column("fit").to_pylist()) if ok],
        n_runs=25)
    assert merged == expected


def test_aggregated_count_shards_merge(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_shard("prior", 0, pa.table({"function": ["01", "11"], "count": [3, 1]}), n_runs=100)
    folder.write_shard("prior", 1, pa.table({"function": ["01"], "count": [2]}), n_runs=50)
    merged = folder.merge_counts("prior")
    assert merged == FunctionCounts({"01": 5, "11": 1}, n_runs=150, n_fit=6)
    _, meta = folder.read_shard("prior", 1)
    assert meta["n_runs"] == 50


def test_manifest_updates_merge(tmp_path):
    folder = RunFolder(tmp_path)
    folder.start_manifest(seeds={"sgd": 1}, device="cpu")
    folder.update_manifest(timings={"sgd_s": 1.5})
    folder.update_manifest(timings={"bayes_s": 2.5})
    m = folder.read_manifest()
    assert m["timings"] == {"sgd_s": 1.5, "bayes_s": 2.5} and m["seeds"] == {"sgd": 1}
    assert "torch" in m["versions"] and "host" in m


def test_bad_shard_kind(tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        RunFolder(tmp_path).shard_path("../x", 0)


# one writer at a time; shards that say what they are (issue 15) -----------------------------------
def test_lock_names_a_live_holder_and_breaks_only_stale_ones(tmp_path):
    """Guards: two writers on one folder. A fresh lock of another host is respected (its pid cannot
    be probed); one whose heartbeat stopped longer than ``stale_after`` ago is broken."""
    import json
    import os
    import time

    from sampler.store import FolderBusyError

    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        with pytest.raises(FolderBusyError, match=f"in use by pid {os.getpid()}"):
            folder.lock().acquire()
    assert not (folder.path / ".lock").exists()
    lock = folder.path / ".lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(FolderBusyError, match="on host elsewhere"):
        folder.lock(stale_after=60).acquire()
    old = time.time() - 120
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="no heartbeat for"):
        with folder.lock(stale_after=60):
            assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_heartbeat_refreshes_the_lock(tmp_path):
    import os
    import time

    folder = RunFolder(tmp_path / "run")
    with folder.lock(heartbeat=0.05):
        old = time.time() - 100
        os.utime(folder.path / ".lock", (old, old))
        time.sleep(0.3)
        assert time.time() - (folder.path / ".lock").stat().st_mtime < 5


def test_merge_refuses_copied_shards_and_redoes_corrupt_ones(tmp_path):
    """Guards: a shard copied under another name was merged twice; a corrupt one stopped the merge
    with pyarrow's wording. Copies are named; corrupt files are moved aside (``.corrupt``)."""
    import shutil

    from sampler.store import ShardError

    folder = RunFolder(tmp_path / "run")
    folder.write_shard("sgd", 0, _runs_table(0, 10), start=0, stop=10)
    folder.write_shard("sgd", 1, _runs_table(10, 20), start=10, stop=20)
    shutil.copyfile(folder.shard_path("sgd", 0), folder.shard_path("sgd", 5))
    with pytest.raises(ShardError, match="000005.parquet holds shard 0"):
        folder.merge_counts("sgd")
    folder.shard_path("sgd", 5).unlink()
    folder.shard_path("sgd", 1).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=r"000001\.parquet is corrupt"):
        assert folder.check_shards("sgd") == [0]
    assert folder.shard_path("sgd", 1).with_suffix(".parquet.corrupt").is_file()
    with pytest.raises(ShardError, match=r"lacks the shard files \['000001.parquet'\]"):
        folder.merge_counts("sgd", indices=[0, 1])


def test_manifest_history_keeps_each_invocation(tmp_path):
    """Guards: the manifest kept only the last invocation's timings."""
    folder = RunFolder(tmp_path / "run")
    for t in (1.0, 2.0):
        folder.start_manifest(seeds={"sgd": 0}, device="cpu")
        folder.update_manifest(timings={"total_s": t})
    m = folder.read_manifest()
    assert [h["timings"]["total_s"] for h in m["invocations"]] == [1.0, 2.0] and m["timings"] == {"total_s": 2.0}
