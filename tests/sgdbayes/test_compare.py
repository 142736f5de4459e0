"""The Boolean comparison (sgdbayes.compare, analysis.compare_plots, `sgdbayes compare`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.compare_plots import Panel, Series, figure_compare
from sgdbayes.cli import main
from sgdbayes.compare import (WEIGHT6_TARGET, CompareConfig, MethodEstimate, compare_methods, is_compare_file,
                             load_compare_config, method_pairs, parse_compare_config, run_compare)
from sampler.data import boolean_inputs
from sampler.functions import FunctionCounts

ROOT = Path(__file__).resolve().parents[2]
BOOLEAN_TOML = ROOT / "configs" / "paper" / "boolean.toml"

TINY = [
    "data.n_test=8", "compare.train_sizes=[8]", 'compare.targets=["constant"]', "compare.prior_chunk=4096",
    "compare.prior_max_samples=8192", "compare.prior_min_fit=1000000", "compare.ess_samples=256",
    "compare.ess_chains=4", "compare.ess_burn_in=20", "compare.ess_thin=1", "sgd.n_runs=16", "sgd.batch_size=4",
    "sgd.max_epochs=50", "analysis.min_count=2", "analysis.n_boot=20", "bayes.method=ep-conditional",
]


# --- config ------------------------------------------------------------------------------------------
def test_shipped_file_is_a_compare_config_equal_to_the_defaults():
    assert is_compare_file(BOOLEAN_TOML)
    cfg = load_compare_config(BOOLEAN_TOML)
    default = load_compare_config(None)
    assert cfg.compare.labels == default.compare.labels == ("constant", "weight6")
    assert cfg.compare.targets == default.compare.targets == ("constant", WEIGHT6_TARGET)
    assert (cfg.arch, cfg.sgd, cfg.bayes, cfg.analysis, cfg.n_test) == \
        (default.arch, default.sgd, default.bayes, default.analysis, default.n_test)
    assert [c.name for c in cfg.cases()] == ["constant-m32", "constant-m64", "weight6-m32", "weight6-m64"]
    assert cfg.methods() == ["prior", "ep", "ess", "sgd-sgd", "sgd-adam"]
    assert parse_compare_config(__import__("tomllib").loads(cfg.to_toml())) == cfg
    assert not is_compare_file(ROOT / "configs" / "default.toml")


def test_weight6_target_is_the_threshold_function():
    w = boolean_inputs().sum(axis=1)
    assert [i for i, b in enumerate(WEIGHT6_TARGET) if b == "1"] == [int(i) for i in np.flatnonzero(w >= 6)]
    assert WEIGHT6_TARGET.count("1") == 8


def test_overrides_and_learning_rates():
    cfg = load_compare_config(None, ["compare.train_sizes=[16]", 'compare.optimizers=["adam"]',
                                     "compare.learning_rates=[]", "sgd.lr=0.003", "sgd.n_runs=7"])
    assert cfg.compare.train_sizes == (16,) and cfg.sgd.n_runs == 7
    assert cfg.compare.lr_of("adam", cfg.sgd.lr) == 0.003
    assert cfg.methods() == ["prior", "ep", "ess", "sgd-adam"]
    none = load_compare_config(None, ["bayes.method=none"])
    assert "ep" not in none.methods()


@pytest.mark.parametrize("overrides, err, match", [
    (["compare.train_size=[8]"], ValueError, r"unknown key compare.train_size.*did you mean 'train_sizes'"),
    (["data.n_train=8"], ValueError, r"data.n_train is not used by compare.*compare.train_sizes"),
    (["data.target=parity"], ValueError, r"data.target is not used by compare.*compare.targets"),
    (["data.dataset=mnist"], ValueError, r"data.dataset must be 'boolean'"),
    (["sgd.optimizer=adam"], ValueError, r"sgd.optimizer is not used by compare"),
    (['compare.targets=["parrity"]'], ValueError, r"compare.targets\[0\]"),
    (['compare.targets=["constant", "constant"]'], ValueError, r"compare.targets must be distinct"),
    (["compare.train_sizes=[100]"], ValueError, r"\|S\| \+ data.n_test = 100 \+ 32 must be <= 128"),
    (["compare.train_sizes=32"], TypeError, r"compare.train_sizes must be a list"),
    (["compare.prior_chunk=5000"], ValueError, r"compare.prior_chunk must be a multiple of 4096"),
    (["compare.learning_rates=[0.1]"], ValueError, r"compare.learning_rates must have one rate per optimizer"),
    (['compare.optimizers=["sgdd"]'], ValueError, r"compare.optimizers\[0\].*did you mean 'sgd'"),
    (['compare.target_labels=["a/b", "c"]'], ValueError, r"compare.target_labels\[0\]"),
    (["compare.ess_chains=0"], ValueError, r"compare.ess_chains must be >= 1"),
    (["sgd.batch_size=40"], ValueError, r"sgd.batch_size must be <= the smallest \|S\| = 32"),
    (["compare.seed=x"], ValueError, r"compare.seed=x.*TOML literal"),
])
def test_bad_config_gives_named_errors(overrides, err, match):
    with pytest.raises(err, match=match):
        load_compare_config(None, overrides)


def test_not_a_compare_file(tmp_path):
    with pytest.raises(ValueError, match="no \\[compare\\] table"):
        load_compare_config(ROOT / "configs" / "default.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[compare]\n[sweep]\n")
    with pytest.raises(ValueError, match=r"unknown config section \[sweep\] for compare"):
        load_compare_config(bad)


def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["compare", "--set", "compare.bogus=1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sgdbayes compare: error: unknown key compare.bogus")
    assert main(["compare", str(tmp_path / "missing.toml")]) == 2


# --- statistics of one pair -------------------------------------------------------------------------
def _counts(d: dict[str, int], extra_runs: int = 0) -> FunctionCounts:
    n = sum(d.values())
    return FunctionCounts(d, n_runs=n + extra_runs, n_fit=n)


def test_compare_methods_matches_analysis_on_the_common_functions():
    x = MethodEstimate.from_counts("prior", _counts({"00": 50, "01": 30, "10": 12, "11": 1}, extra_runs=7))
    y = MethodEstimate.from_counts("ess", _counts({"00": 40, "01": 35, "10": 9, "11": 20}))
    row = compare_methods(x, y, min_count=5, n_boot=0, case="c")
    common = ["00", "01", "10"]  # "11" has count 1 < 5 in x
    lx = np.log(np.array([50, 30, 12]) / 93)
    ly = np.log(np.array([40, 35, 9]) / 104)
    c = analysis.correlate(ly, lx, n_boot=0)
    d = analysis.compare_distributions(ly, lx, log=True)
    assert (row["n_x"], row["n_y"], row["n_common"]) == (3, 4, 3)
    assert row["pearson"] == pytest.approx(c.pearson) and row["spearman"] == pytest.approx(c.spearman)
    assert row["slope"] == pytest.approx(c.slope)
    assert row["mean_abs_dlog"] == pytest.approx(np.mean(np.abs(ly - lx)))
    assert (row["tv"], row["js"], row["kl_y_x"]) == pytest.approx((d.tv, d.js, d.kl))
    assert row["mass_x"] == pytest.approx(92 / 93) and row["mass_y"] == pytest.approx(84 / 104)
    cx, cy = np.array([50, 30, 12.0]), np.array([40, 35, 9.0])
    noise = np.sqrt((1 - cx / 93) / cx + (1 - cy / 104) / cy)
    assert row["dlog_noise"] == pytest.approx(noise.mean())
    assert row["note"] == "" and set(common) == {"00", "01", "10"}


def test_compare_methods_with_ep_and_empty_inputs():
    ep = MethodEstimate("ep", {"00": math.log(0.5), "01": math.log(0.3), "11": -math.inf})
    assert ep.selected(100) == {"00", "01"}  # EP: every finite value, whatever min_count
    prior = MethodEstimate.from_counts("prior", _counts({"00": 6, "01": 4}))
    row = compare_methods(prior, ep, min_count=2, n_boot=0)
    assert row["n_common"] == 2 and math.isnan(row["pearson"]) and "2 common function(s)" in row["note"]
    assert row["dlog_noise"] == pytest.approx(np.mean([math.sqrt(0.4 / 6), math.sqrt(0.6 / 4)]))
    nothing = MethodEstimate.from_counts("prior", FunctionCounts({}, n_runs=1000, n_fit=0))
    row = compare_methods(nothing, ep, min_count=2, n_boot=0)
    assert row["n_common"] == 0 and math.isnan(row["mean_abs_dlog"]) and "prior: 0 of 1000 fit S" in row["note"]
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        compare_methods(prior, ep, min_count=0)


def test_method_pairs():
    assert method_pairs(["prior", "ep", "ess", "sgd-sgd"]) == [
        ("prior", "ep"), ("prior", "ess"), ("prior", "sgd-sgd"), ("ep", "ess"), ("ep", "sgd-sgd")]
    assert method_pairs(["prior", "ess", "sgd-adam"]) == [("prior", "ess"), ("prior", "sgd-adam")]


# --- figure -----------------------------------------------------------------------------------------
def test_figure_compare_panels_and_errors():
    s1 = Series("ep", np.log([0.5, 0.1, 0.01]), np.log([0.4, 0.2, 0.02]), "r=0.99")
    s2 = Series("ess", np.array([]), np.array([]))
    fig = figure_compare([Panel("a", "prior", (s1, s2)), Panel("b", "prior", (), "prior: 0 of 1e+06 samples fit S"),
                          Panel("c", "ep", (s1,))], ncols=2)
    assert len(fig.axes) == 3
    assert fig.axes[0].collections[0].get_offsets().shape == (3, 2)
    assert np.allclose(fig.axes[0].collections[0].get_offsets()[:, 0], np.log10([0.5, 0.1, 0.01]))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ep (3, r=0.99)", "ess (0)"]
    assert any("0 of 1e+06" in t.get_text() for t in fig.axes[1].texts)
    with pytest.raises(ValueError, match="same length"):
        Series("x", np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="at least one panel"):
        figure_compare([], ncols=1)
    with pytest.raises(TypeError, match=r"panels\[0\] must be a Panel"):
        figure_compare(["a"], ncols=1)


# --- end to end -------------------------------------------------------------------------------------
def _functions(case_dir: Path):
    t = pq.read_table(case_dir / "functions.parquet")
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    return t.to_pandas(), meta


def test_end_to_end_tiny(tmp_path):
    cfg = load_compare_config(None, TINY)
    out = tmp_path / "run"
    res = run_compare(cfg, out, progress=False)
    for name in ("table.csv", "table.md", "cases.csv", "summary.json", "report.md", "config.toml", "manifest.json"):
        assert (out / name).is_file(), name
    assert res.figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(res.rows) == len(method_pairs(cfg.methods())) == 7

    # counts in the functions table sum to n_fit; n_runs as configured
    frame, meta = _functions(out / "cases" / "constant-m8")
    for m in ("prior", "ess", "sgd_sgd", "sgd_adam"):
        assert frame[f"count_{m}"].sum() == int(meta[f"n_fit_{m}"])
    assert int(meta["n_runs_prior"]) == 8192 and int(meta["n_runs_sgd_sgd"]) == 16
    assert int(meta["n_fit_ess"]) == int(meta["n_runs_ess"]) == 256
    case = res.cases[0]
    assert case["prior_samples"] == 8192 and case["prior_fit"] == int(meta["n_fit_prior"])
    assert case["p_s_prior"] == pytest.approx(case["prior_fit"] / 8192)
    assert case["log_p_s_prior"] == pytest.approx(math.log(case["p_s_prior"]))
    assert math.isfinite(case["log_p_s_ep"]) and case["ep_unconverged"] == 0

    # each row's statistics recomputed from the functions table with analysis.correlate
    mc = cfg.analysis.min_count
    for row in res.rows:
        x, y = (row[k].replace("-", "_") for k in ("x", "y"))
        sel = np.isfinite(frame[f"log_p_{x}"]) & np.isfinite(frame[f"log_p_{y}"])
        for m in (x, y):
            if f"count_{m}" in frame:
                sel &= frame[f"count_{m}"] >= mc
        assert row["n_common"] == int(sel.sum())
        if row["n_common"] >= 3:
            c = analysis.correlate(frame[f"log_p_{y}"][sel].to_numpy(), frame[f"log_p_{x}"][sel].to_numpy(), n_boot=0)
            assert row["pearson"] == pytest.approx(c.pearson, nan_ok=True)
            assert row["spearman"] == pytest.approx(c.spearman, nan_ok=True)
    prior_ep = next(r for r in res.rows if (r["x"], r["y"]) == ("prior", "ep"))
    assert prior_ep["n_common"] >= 3 and math.isfinite(prior_ep["pearson"])

    # the csv holds the same rows; summary.json too
    with open(out / "table.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["x"], r["y"], int(r["n_common"])) for r in table] == [(r["x"], r["y"], r["n_common"]) for r in res.rows]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_count"] == mc and len(summary["rows"]) == len(res.rows)

    # resuming reuses every piece and gives the same table; another config is refused
    again = run_compare(cfg, out, progress=False)
    assert [(r["x"], r["y"], r["n_common"], r["mean_abs_dlog"]) for r in again.rows] == \
        [(r["x"], r["y"], r["n_common"], r["mean_abs_dlog"]) for r in res.rows]
    with pytest.raises(ValueError, match="different compare config"):
        run_compare(load_compare_config(None, TINY + ["compare.seed=1"]), out, progress=False)
    with pytest.raises(TypeError, match="config must be a CompareConfig"):
        run_compare({"compare": {}}, tmp_path / "y")
    assert isinstance(cfg, CompareConfig)
