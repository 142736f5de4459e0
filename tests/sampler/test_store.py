import os

import pytest

from sampler import FunctionCounts, RunFolder
from sampler.store import ShardError, atomic_write_bytes, count_table, merge_shards, shard_meta


def _runs(start, stop):
    """Toy runs: run i fits unless i % 7 == 0 and ends at function i % 5 (3 bits)."""
    return [(format(i % 5, "03b"), i % 7 != 0) for i in range(start, stop)]


def _shard(params, progress=None):
    """The count shard of toy runs [start, stop) (a ``compute`` for collect_shards)."""
    runs = _runs(params["start"], params["stop"])
    counts = {}
    for f, ok in runs:
        if ok:
            counts[f] = counts.get(f, 0) + 1
    return count_table(counts, n_samples=len(runs))


def _expected(n):
    return FunctionCounts.from_strings([f for f, ok in _runs(0, n) if ok], n_runs=n)


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


def test_resume_after_a_shard_interrupted_midway_counts_every_run_once(tmp_path):
    folder = RunFolder(tmp_path / "run")
    plan = [{"start": 0, "stop": 10}, {"start": 10, "stop": 20}, {"start": 20, "stop": 25}]
    folder.write_shard("sgd", 0, _shard(plan[0]), fingerprint="fp", shard=plan[0])
    # Shard 1 crashes midway: its temporary file exists but was never renamed into place.
    (folder.shard_dir("sgd") / ".000001.parquet.abc.tmp").write_bytes(b"partial garbage")
    assert folder.shard_indices("sgd") == [0]
    done = []
    tables = folder.collect_shards("sgd", plan, lambda p, _: done.append(p) or _shard(p), fingerprint="fp")
    assert done == plan[1:]  # the rerun does only the unfinished shards
    folder.write_shard("sgd", 0, _shard({"start": 100, "stop": 200}))  # duplicate task: ignored
    assert merge_shards(folder.collect_shards("sgd", plan, fingerprint="fp")) == merge_shards(tables) == _expected(25)


def test_count_shards_merge_exactly():
    a = count_table({"01": 3, "11": 1}, n_samples=100, info={"x": 1})
    b = count_table({"01": 2}, n_samples=50)
    assert merge_shards([a, b]) == FunctionCounts({"01": 5, "11": 1}, n_runs=150, n_fit=6)
    assert a.column("function").to_pylist() == ["01", "11"] and shard_meta(a) == (100, {"x": 1})
    assert merge_shards([]) == FunctionCounts({}, 0, 0)


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
    with pyarrow's wording. Copies are named; corrupt files are moved aside (``.corrupt``) and redone."""
    import shutil

    folder = RunFolder(tmp_path / "run")
    plan = [{"start": 0, "stop": 10}, {"start": 10, "stop": 20}]
    folder.collect_shards("sgd", plan, _shard, fingerprint="fp")
    shutil.copyfile(folder.shard_path("sgd", 0), folder.shard_path("sgd", 5))
    with pytest.raises(ShardError, match="000005.parquet holds shard 0"):
        folder.collect_shards("sgd", plan, _shard, fingerprint="fp")
    folder.shard_path("sgd", 5).unlink()
    folder.shard_path("sgd", 1).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=r"000001\.parquet is corrupt"):
        assert folder.check_shards("sgd") == [0]
    assert folder.shard_path("sgd", 1).with_suffix(".parquet.corrupt").is_file()
    with pytest.raises(ShardError, match=r"lacks the shard files \['000001.parquet'\]"):
        folder.collect_shards("sgd", plan, fingerprint="fp")  # without compute: nothing is redone
    assert merge_shards(folder.collect_shards("sgd", plan, _shard, fingerprint="fp")) == _expected(20)


def test_foreign_overlapping_and_replanned_shards_are_refused_by_name(tmp_path):
    folder = RunFolder(tmp_path / "run")
    plan = [{"start": 0, "stop": 10}, {"start": 10, "stop": 20}]
    folder.collect_shards("sgd", plan, _shard, fingerprint="fp")
    with pytest.raises(ShardError, match=r"000000\.parquet was written by another config \(fingerprint fp"):
        folder.collect_shards("sgd", plan, _shard, fingerprint="other")
    with pytest.raises(ShardError, match=r"000001\.parquet holds \{'start': 10, 'stop': 20\}, this run plans"):
        folder.collect_shards("sgd", [{"start": 0, "stop": 10}, {"start": 10, "stop": 15}], _shard, fingerprint="fp")
    folder.write_shard("sgd", 2, _shard({"start": 15, "stop": 25}), fingerprint="fp", shard={"start": 15, "stop": 25})
    with pytest.raises(ShardError, match=r"runs \[10, 20\)\) and .*000002\.parquet \(runs \[15, 25\)\) overlap"):
        folder.collect_shards("sgd", plan, _shard, fingerprint="fp")


def test_manifest_history_keeps_each_invocation(tmp_path):
    """Guards: the manifest kept only the last invocation's timings."""
    folder = RunFolder(tmp_path / "run")
    for t in (1.0, 2.0):
        folder.start_manifest(seeds={"sgd": 0}, device="cpu")
        folder.update_manifest(timings={"total_s": t})
    m = folder.read_manifest()
    assert [h["timings"]["total_s"] for h in m["invocations"]] == [1.0, 2.0] and m["timings"] == {"total_s": 2.0}
