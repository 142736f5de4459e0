import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sgdbayes.report import compute_summary, make_report, summary_lines
from sgdbayes.config import load_config


def _frame(n=30, seed=0):
    rng = np.random.default_rng(seed)
    count = rng.integers(1, 30, n)
    frame = pd.DataFrame({"function": [format(i, "08b") for i in range(n)], "count": count,
                          "log_pb": np.log(count) - 5 + rng.normal(0, 0.5, n),
                          "lz_complexity": rng.random(n) * 20, "entropy": rng.random(n),
                          "test_error": rng.random(n)})
    frame["log_p_sgd"] = np.log(count / count.sum())
    return frame


def test_summary_numbers_match_scipy_over_the_selected_functions():
    frame = _frame()
    s = compute_summary(frame, n_runs=1000, n_fit=int(frame["count"].sum()), min_count=3, n_boot=200, seed=1,
                        log_ps=-20.0, n_train=100)
    used = frame[frame["count"] >= 3]
    assert s["n_functions_used"] == len(used) and s["n_functions"] == 30
    assert s["pearson_log"] == pytest.approx(stats.pearsonr(used["log_p_sgd"], used["log_pb"])[0], abs=1e-12)
    assert s["spearman"] == pytest.approx(stats.spearmanr(used["log_p_sgd"], used["log_pb"])[0], abs=1e-12)
    lo, hi = s["pearson_log_ci"]
    assert lo <= s["pearson_log"] <= hi
    assert 0 < s["pac_bayes_bound"] <= 1 and isinstance(s["n_fit"], int)
    json.dumps(s)


def test_too_few_functions_say_so_instead_of_a_number():
    frame = _frame(n=4)
    s = compute_summary(frame, n_runs=100, n_fit=int(frame["count"].sum()), min_count=10_000, n_boot=10, seed=0,
                        log_ps=None, n_train=100)
    assert s["pearson_log"] is None and "too few" in s["correlation_note"]
    assert any("note:" in line for line in summary_lines(s))


def test_report_and_figures_are_written(tmp_path):
    frame = _frame()
    summary, report = make_report(tmp_path, load_config(), frame, n_runs=1000, n_fit=int(frame["count"].sum()),
                                  log_ps=-20.0, extra={"gp_test_error": 0.1})
    text = report.read_text()
    assert "| Pearson r of log P_SGD vs log P_B |" in text and "[data]" in text
    assert len(summary["figures"]) == 5
    for rel in summary["figures"].values():
        assert (tmp_path / rel).stat().st_size > 1000 and rel in text
    assert json.loads((tmp_path / "summary.json").read_text())["gp_test_error"] == 0.1
