"""Shard workers: P_B shards of one run share one EP fit on S per process, and it changes nothing."""

import numpy as np

import nngp
from sampler import RunFolder
from sgdbayes.config import parse_config
from sgdbayes.fanout import ShardTask
from sgdbayes.tasks import bayes_task, split_for, train_posterior_for


def test_bayes_shards_fit_ep_on_s_once_and_match_a_fresh_fit(tmp_path, monkeypatch):
    raw = {"data": {"dataset": "mnist", "n_train": 40, "n_test": 6, "seed": 3},
           "arch": {"kind": "fcn", "depth": 1, "width": 16}}
    config = parse_config(raw)
    folder = RunFolder(tmp_path / "run")
    functions = ["000000", "111111", "010101", "001100"]
    calls = []
    original = nngp.train_posterior

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(nngp, "train_posterior", counting)
    train_posterior_for.cache_clear()
    for i, group in enumerate((functions[:2], functions[2:])):
        assert bayes_task(ShardTask("bayes", i, str(folder.path), raw, {"functions": group}), folder) == 2
    assert len(calls) == 1
    got = {}
    for _, table, _ in folder.iter_shards("bayes"):
        got.update(zip(table.column("function").to_pylist(), table.column("log_pb").to_pylist()))
    monkeypatch.setattr(nngp, "train_posterior", original)
    fresh = nngp.log_pb(config.arch, split_for(config.data), functions)
    np.testing.assert_array_equal([got[f] for f in functions], fresh)
    train_posterior_for.cache_clear()
