"""A researcher's variants of one run (issue 25): `sgdbayes analyze --out` writes beside, not over, the run's
report; a refused folder says which keys differ."""

import json

import pytest

from sgdbayes.cli import main
from sgdbayes.config import load_config
from sgdbayes.pipeline import config_differences

from test_cli import TINY_RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", "--out", str(out), "--no-progress"] + TINY_RUN) == 0
    return out


def test_analyze_out_keeps_the_runs_report(run, tmp_path, capsys):
    before = (run / "report.md").read_text()
    variant = tmp_path / "variant"
    assert main(["analyze", str(run), "--out", str(variant), "--set", "analysis.min_count=1"]) == 0
    assert f"report: {variant / 'report.md'}" in capsys.readouterr().out
    assert (run / "report.md").read_text() == before
    assert load_config(variant / "config.toml").analysis.min_count == 1
    assert load_config(run / "config.toml").analysis.min_count != 1
    for name in ("report.md", "summary.json", "functions.parquet", "pairs.csv"):
        assert (variant / name).is_file(), name
    assert main(["analyze", str(run), "--out", str(run)]) == 2
    assert "is the run folder itself" in capsys.readouterr().err


def test_a_refused_folder_names_the_keys_that_differ(run, capsys):
    assert main(["run", "--out", str(run), "--no-progress"] + TINY_RUN + ["--set", "estimators.sgd.n_runs=12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "estimators.sgd.n_runs: folder 8, now 12" in err and len(err.splitlines()) == 1


def test_config_differences_lists_each_key():
    a = load_config(None)
    b = load_config(None, ["arch.width=32", "estimators.sgd.lr=0.5", "data.seed=3"])
    text = config_differences(a, b)
    assert "arch.width: folder 64, now 32" in text and "data.seed: folder 0, now 3" in text
    assert "estimators.sgd.lr: folder 0.1, now 0.5" in text
    assert config_differences(a, a) == "differs"
    assert "and 2 more" in config_differences(a, b, limit=1)


def _counts(folder):
    import pyarrow.parquet as pq
    t = pq.read_table(folder / "functions.parquet").to_pydict()
    return {f: c for f, c in zip(t["function"], t["count"]) if c}


def test_extend_grows_a_run_to_what_a_fresh_run_gives(tmp_path, capsys):
    grow = tmp_path / "grow"
    assert main(["run", "--out", str(grow), "--no-progress"] + TINY_RUN) == 0  # 8 runs, shards of 4
    more = TINY_RUN + ["--set", "estimators.sgd.n_runs=10"]
    assert main(["run", "--out", str(grow), "--no-progress"] + more) == 2
    assert "pass --extend" in capsys.readouterr().err
    first = grow / "cases" / "main" / "shards" / "sgd" / "000000.parquet"
    kept = first.stat().st_ino
    assert main(["run", "--out", str(grow), "--no-progress", "--extend"] + more) == 0  # a partial last shard
    assert first.stat().st_ino == kept  # full shards of the old plan are kept, not retrained
    last = TINY_RUN + ["--set", "estimators.sgd.n_runs=12"]
    assert main(["run", "--out", str(grow), "--no-progress", "--extend"] + last) == 0  # which is redone
    fresh = tmp_path / "fresh"
    assert main(["run", "--out", str(fresh), "--no-progress"] + last) == 0
    assert _counts(grow) == _counts(fresh) and sum(_counts(grow).values()) > 8
    assert load_config(grow / "config.toml").estimator("sgd").options.n_runs == 12
    # anything else that differs is still refused, with --extend too
    other = last + ["--set", "estimators.sgd.lr=0.3"]
    assert main(["run", "--out", str(grow), "--no-progress", "--extend"] + other) == 2
    assert "estimators.sgd.lr" in capsys.readouterr().err


def test_few_runs_fit_is_said_after_the_first_shard(tmp_path, capsys):
    """A run where almost nothing fits warns after its first shard, saying how close the others came, and the
    extras keep it (issue 25: a tiny CNN fitted 0 of 512 runs and exited 0 with a report of n/a)."""
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--no-progress"] + TINY_RUN + ["--set", "estimators.sgd.max_epochs=1",
                                                                      "--set", "estimators.sgd.lr=0.001"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "sgd: only 0 of the first shard's 4 runs fit S (the best of the others reached training accuracy" in err
    assert err.count("of the first shard's") == 1  # once, not per shard
    extras = json.loads((out / "summary.json").read_text())["extras"]["sgd"]
    assert extras["sgd_unfit_runs"] == 8 and extras["sgd_unfit_max_epochs"] == 1
    assert 0.0 < extras["sgd_unfit_best_train_accuracy"] < 1.0
