"""End to end: `sgdbayes run` on real MNIST at a tiny size, then `sgdbayes analyze`."""

import json

import pyarrow.parquet as pq
import pytest

from sampler import RunFolder
from sgdbayes.cli import main
from sgdbayes.config import load_config
from sgdbayes.pipeline import run_experiment

TINY = ["data.n_train=40", "data.n_test=10", "arch.width=32", "sgd.n_runs=48", "sgd.ensemble=16",
        "sgd.shard_size=24", "sgd.lr=0.1", "sgd.batch_size=10", "sgd.max_epochs=300", "analysis.n_boot=50"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_experiment(load_config(None, TINY), out, progress=False)
    return out, result


def test_run_folder_holds_everything_the_design_promises(finished_run):
    out, result = finished_run
    for name in ["config.toml", "manifest.json", "functions.parquet", "summary.json", "report.md", "bayes.json"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ["n_runs", "n_fit", "n_functions", "pearson_log", "spearman", "min_count"]:
        assert key in summary
    assert summary["n_runs"] == 48 and summary == result.summary
    table = pq.read_table(out / "functions.parquet").to_pandas()
    assert list(table.columns[:4]) == ["function", "count", "log_p_sgd", "log_pb"]
    assert table["count"].sum() == summary["n_fit"] and len(table) == summary["n_functions"]
    assert (table["function"].str.len() == 10).all()
    assert table["log_pb"].le(0).all() and table["log_pb"].notna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"versions", "seeds", "timings", "host", "git_revision"} <= set(manifest)
    report = (out / "report.md").read_text()
    for fig in summary["figures"].values():
        assert (out / fig).stat().st_size > 1000 and fig in report


def test_rerun_resumes_without_recounting(finished_run):
    out, result = finished_run
    again = run_experiment(load_config(None, TINY), out, progress=False)
    assert again.summary["n_runs"] == 48 and again.summary["n_fit"] == result.summary["n_fit"]
    assert RunFolder(out).merge_counts("sgd").n_runs == 48


def test_a_different_config_is_refused(finished_run):
    out, _ = finished_run
    with pytest.raises(ValueError, match="holds a different config"):
        run_experiment(load_config(None, TINY + ["sgd.lr=0.2"]), out, progress=False)


def test_analyze_remakes_the_report(finished_run, capsys):
    out, result = finished_run
    (out / "report.md").unlink()
    assert main(["analyze", str(out), "--set", "analysis.min_count=1"]) == 0
    assert (out / "report.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_count"] == 1 and summary["n_fit"] == result.summary["n_fit"]
    assert "report:" in capsys.readouterr().out
    assert main(["analyze", str(out), "--set", "sgd.lr=3"]) == 2
