"""The report's primary P_B is tilting's (unbiased, with error bars) where it scored every function the
primary pair compares, EP's otherwise (issue 26: EP is biased low against tilting)."""

import json

import pytest

from sgdbayes.cli import main

from test_cli import TINY_RUN


@pytest.mark.parametrize("top, primary", [(2, ["sgd", "ep"]), (50, ["sgd", "tilting"])])
def test_primary_reference_is_tilting_where_it_covers(tmp_path, top, primary):
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--no-progress"] + TINY_RUN + [
        "--set", f"estimators.tilting.top={top}", "--set", "estimators.sgd.n_runs=32", "--set", "analysis.min_count=1"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["primary_pair"] == primary
    pair = next(p for p in s["cases"][0]["pairs"] if [p["a"], p["b"]] == primary)
    assert s["pearson_log"] == pair["pearson_log"] and s["n_common"] == pair["n_common"]
    report = (out / "report.md").read_text()
    assert f"Primary pair: {primary[0]} against {primary[1]}" in report
    assert ("primary reference instead of ep" in report) == (primary[1] == "tilting")
