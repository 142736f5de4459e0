"""End to end: `sgdbayes run` on real MNIST at a tiny size, resuming, then `sgdbayes analyze`."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import nngp
from sgdbayes.cli import main
from sgdbayes.config import load_config
from sgdbayes.estimators import RESULT_SCHEMA
from sgdbayes.pipeline import run_experiment

TINY = ["data.n_train=40", "data.n_test=10", "arch.width=32", "estimators.sgd.n_runs=48",
        "estimators.sgd.ensemble=16", "estimators.sgd.shard_size=24", "estimators.sgd.lr=0.1",
        "estimators.sgd.batch_size=10", "estimators.sgd.max_epochs=300", "analysis.n_boot=50",
        "estimators.tilting.top=4", "estimators.tilting.n_samples=500"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_experiment(load_config(None, TINY), out, progress=False)
    return out, result


def test_run_folder_holds_everything_the_design_promises(finished_run):
    out, result = finished_run
    for name in ["config.toml", "manifest.json", "functions.parquet", "summary.json", "report.md", "results.parquet"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ["n_runs", "n_fit", "n_functions", "pearson_log", "spearman", "min_count", "cases",
                "ep_tilting_median_abs_z"]:
        assert key in summary
    assert summary["n_runs"] == 48 and summary == json.loads(json.dumps(result.summary))
    table = pq.read_table(out / "functions.parquet").to_pandas()
    assert list(table.columns[:4]) == ["function", "count", "log_p_sgd", "log_pb"]
    assert table["count"].sum() == summary["n_fit"] and (table["count"] > 0).sum() == summary["n_functions"]
    assert table["log_pb"].le(0).all() and table["log_pb"].notna().all()
    report = (out / "report.md").read_text()
    for fig in summary["figures"].values():
        assert (out / fig).stat().st_size > 1000 and fig in report
    assert "ep against tilting, with error bars" in report and "errorbars_ep_vs_tilting" in summary["figures"]


def test_long_table_schema_and_values(finished_run):
    out, result = finished_run
    t = pq.read_table(out / "results.parquet")
    assert t.schema.equals(RESULT_SCHEMA, check_metadata=False)
    df = t.to_pandas()
    assert set(df["estimator"]) == {"sgd", "ep", "tilting"} and set(df["case"]) == {"main"}
    sgd = df[df.estimator == "sgd"]
    n_fit = sgd["count"].sum()
    np.testing.assert_allclose(sgd["log_p"], np.log(sgd["count"] / n_fit))
    p = sgd["count"] / n_fit
    np.testing.assert_allclose(sgd["log_p_se"], np.sqrt((1 - p) / sgd["count"]))
    assert (sgd["n_samples"] == 48).all()
    ep, tilt = df[df.estimator == "ep"], df[df.estimator == "tilting"]
    assert ep["count"].isna().all() and ep["log_p_se"].isna().all() and len(ep) == len(sgd)
    assert len(tilt) == 4 and (tilt["log_p_se"] > 0).all()
    assert list(tilt["function"]) == list(sgd["function"][:4])  # the most frequent first


def test_rerun_resumes_without_recounting(finished_run):
    out, result = finished_run
    shards = sorted(p.stat().st_mtime_ns for p in (out / "cases").rglob("*.parquet"))
    again = run_experiment(load_config(None, TINY), out, progress=False)
    assert again.summary["n_runs"] == 48 and again.summary["n_fit"] == result.summary["n_fit"]
    assert sorted(p.stat().st_mtime_ns for p in (out / "cases").rglob("*.parquet")) == shards


def test_a_different_config_is_refused(finished_run):
    out, _ = finished_run
    with pytest.raises(ValueError, match="holds a different config"):
        run_experiment(load_config(None, TINY + ["estimators.sgd.lr=0.2"]), out, progress=False)


def test_analyze_remakes_the_report(finished_run, capsys):
    out, result = finished_run
    (out / "report.md").unlink()
    assert main(["analyze", str(out), "--set", "analysis.min_count=1"]) == 0
    assert (out / "report.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_count"] == 1 and summary["n_fit"] == result.summary["n_fit"]
    assert "report:" in capsys.readouterr().out
    assert main(["analyze", str(out), "--set", "estimators.sgd.lr=3"]) == 2


def test_primary_pair_statistics_match_scipy(finished_run):
    from scipy import stats

    out, result = finished_run
    f = pq.read_table(out / "functions.parquet").to_pandas()
    used = f[(f["count"] >= 2) & np.isfinite(f["log_pb"])]
    assert result.summary["n_functions_used"] == len(used)
    if len(used) >= 3:
        assert result.summary["pearson_log"] == pytest.approx(stats.pearsonr(used["log_p_sgd"], used["log_pb"])[0])
        assert result.summary["spearman"] == pytest.approx(stats.spearmanr(used["log_p_sgd"], used["log_pb"])[0])


def test_options_that_do_not_fit_the_data_fail_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--set", "data.n_train=20", "--set", "estimators.sgd.batch_size=32"]) == 2
    assert "estimators.sgd: batch_size must be <= the training set size m=20" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kind, axes", [("width", "{'arch.width' = [8, 16]}"),
                                        ("random_labels", "{'data.corrupt_fraction' = [0.0, 1.0]}")])
def test_a_sweep_runs_its_points_as_cases_with_one_report(tmp_path, kind, axes):
    cfg = load_config(None, TINY + [f"sweep.kind={kind}", f"sweep.axes={axes}", "estimators.sgd.n_runs=16",
                                    "estimators.sgd.shard_size=16", "estimators.tilting.top=2"])
    result = run_experiment(cfg, tmp_path, progress=False)
    names = [c.name for c in cfg.cases()]
    assert [c["case"] for c in result.summary["cases"]] == names and len(names) == 2
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["kind"] == kind and [p["name"] for p in sweep["points"]] == names
    assert (tmp_path / "figures" / "sweep.png").stat().st_size > 1000
    df = pq.read_table(tmp_path / "results.parquet").to_pandas()
    assert set(df["case"]) == set(names) and all(c["n_runs"] == 16 for c in result.summary["cases"])


def test_finite_width_config_runs_small_and_reports_log_ps_tv_and_p_values(tmp_path):
    """configs/finite_width.toml at tiny sizes: every case gets prior sampling's P(S) interval,
    EP's and tilting's log P(S), and per pair a total variation and a chi-square p-value."""
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "finite_width.toml",
                      ["sweep.axes={'data.n_train' = [4], 'arch.width' = [8, 64]}", "estimators.sgd.n_runs=128",
                       "estimators.sgd.shard_size=128", "estimators.sgd.ensemble=128", "estimators.prior.n_samples=16384",
                       "estimators.prior.chunk=8192", "estimators.prior.min_fit=100000", "estimators.tilting.top=3",
                       "estimators.tilting.n_samples=200", "analysis.n_boot=0"])
    result = run_experiment(cfg, tmp_path, progress=False)
    for case in result.summary["cases"]:
        prior = case["extras"]["prior"]
        lo, hi = prior["p_s_prior_ci"]
        assert prior["n_samples"] == 16384 and 0 < lo < prior["p_s_prior"] < hi < 1
        assert math.isfinite(case["log_p_s"]) and math.isfinite(case["log_p_s_tilting"])
        # issue 26: the bound comes from the more accurate (tilting's) log P(S), EP's being biased low
        assert case["pac_bayes_bound_from"] == "log_p_s_tilting"
        assert case["pac_bayes_bound"] == pytest.approx(nngp.pac_bayes_bound(min(case["log_p_s_tilting"], 0.0), 4))
        pairs = {(p["a"], p["b"]): p for p in case["pairs"]}
        assert set(pairs) == {("prior", "ep"), ("prior", "tilting"), ("sgd", "prior"), ("sgd", "ep")}
        assert pairs["sgd", "prior"]["fit_test"] == "homogeneity" and pairs["prior", "ep"]["fit_test"] == "goodness-of-fit"
        assert 0.0 <= pairs["sgd", "prior"]["fit_pvalue"] <= 1.0 and 0.0 <= pairs["prior", "ep"]["dist_tv"] <= 1.0
    assert (tmp_path / "figures" / "sweep.png").stat().st_size > 1000
    assert "log P(S) finite (prior)" in (tmp_path / "report.md").read_text()
