"""The report's verdict: fixed words from the numbers (each branch), and the glossary covers the tables."""

import pytest

from sgdbayes.report import PAIR_COLUMNS, TAIL_ROWS
from sgdbayes.verdict import GLOSSARY, glossary_lines, verdict_lines

BASE = {"primary_pair": ["sgd", "ep"], "n_common": 40, "min_count": 5, "pearson_log": 0.8,
        "pearson_log_ci": [0.7, 0.9], "slope_log": 2.0, "slope_log_ci": [1.5, 2.5], "fit_test": "goodness-of-fit",
        "fit_pvalue": 1e-8, "fit_dof": 12, "dist_mass_b": 0.047, "dist_tv": 0.5, "dist_kl": 0.9,
        "dist_top1_share": 0.02, "dist_top1_share_by_sgd": 0.25}


def text(**change):
    return "\n".join(verdict_lines({**BASE, **change}))


@pytest.mark.parametrize("r, ci, word", [(0.8, [0.7, 0.9], "strongly"), (0.5, [0.3, 0.6], "moderately"),
                                         (0.25, [0.05, 0.4], "weakly"), (0.1, [-0.1, 0.3], "not clearly")])
def test_correlation_words(r, ci, word):
    t = text(pearson_log=r, pearson_log_ci=ci)
    assert f"**{word} correlated**" in t and f"r = {r:.2f}" in t
    assert ("includes 0" in t) == (ci[0] <= 0)


def test_missing_intervals_are_said_not_compared():
    t = text(pearson_log_ci=[None, None], slope_log_ci=None)
    assert "95% CI (no interval)" in t and "about as concentrated" in t


def test_concentration_words():
    assert "**more concentrated** than P_ep" in text()
    assert "**less concentrated**" in text(slope_log=0.5, slope_log_ci=[0.3, 0.7])
    assert "about as concentrated" in text(slope_log=1.1, slope_log_ci=[0.8, 1.4])


def test_chi_square_and_mass():
    t = text()
    assert "**rejected**" in t and "12 degrees of freedom" in t
    assert "**not rejected**" in text(fit_pvalue=0.3)
    assert "p < 1e-300" in text(fit_pvalue=0.0)
    assert "4.7% of P_ep's mass" in t and "renormalising" in t


def test_too_few_functions_says_so_first():
    lines = verdict_lines({**BASE, "n_common": 2, "correlation_note": "sgd: no function seen >= 5 times"})
    assert lines[0].startswith("- **Too few functions to judge:**") and "no function seen" in lines[0]
    assert not any("correlated" in line for line in lines)


def test_bias_of_ep_against_tilting_with_its_sign():
    check = {"ep_tilting_pair": ["ep", "tilting"], "ep_tilting_n": 100, "ep_tilting_sd_z": 1.0,
             "ep_tilting_median_z": 1.4, "ep_tilting_mean_dlog": 0.3}
    assert "**ep is biased above tilting**" in text(**check, ep_tilting_mean_z=1.5)
    assert "**ep is biased below tilting**" in text(**check, ep_tilting_mean_z=-1.5)
    assert "agrees with tilting within its error bars" in text(**check, ep_tilting_mean_z=0.1)


def test_glossary_explains_every_pair_column():
    terms = " ".join(term for term, _ in GLOSSARY)
    for _, title in PAIR_COLUMNS:
        assert any(part.strip() in terms for part in title.split("/")), title
    assert "PAC-Bayes bound, reference form" in terms and len(TAIL_ROWS) >= 2
    assert glossary_lines()[0] == "## Glossary"


def test_a_sweep_prints_every_case():
    from sgdbayes.report import summary_lines
    cases = [{"case": name, "n_fit": 60, "n_runs": 64, "n_functions": 12, "pearson_log": r,
              "pearson_log_ci": [r - 0.1, r + 0.1], "slope_log": 1.2, "dist_tv": 0.3, "log_p_s": -9.0,
              "sgd_mean_test_error": 0.2} for name, r in (("corrupt_fraction=0", 0.7), ("corrupt_fraction=0.5", 0.2))]
    text = "\n".join(summary_lines({**cases[0], "cases": cases}))
    assert "2 cases" in text
    for c in cases:
        assert f"  {c['case']}: fit 60/64, 12 functions, r {c['pearson_log']}" in text


def test_few_runs_fit_is_said_first():
    lines = verdict_lines({**BASE, "fit_fraction": 0.02, "n_fit": 2, "n_runs": 100,
                           "sgd_unfit_best_train_accuracy": 0.875, "sgd_unfit_max_epochs": 200})
    assert lines[0].startswith("- **Few runs fit S:** 2 of 100 (2%)") and "0.875 in 200 epochs" in lines[0]
    assert not any("Few runs" in line for line in verdict_lines({**BASE, "fit_fraction": 0.5}))
