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
