"""The Boolean comparison as a config of the engine (configs/paper/boolean.toml): prior sampling is
the reference, and EP and ESS must agree with it within the stated noise."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sgdbayes.config import load_config
from sgdbayes.pipeline import run_experiment

ROOT = Path(__file__).resolve().parents[2]
BOOLEAN = ROOT / "configs" / "paper" / "boolean.toml"
SMALL = ["sweep.axes={'data.target' = ['constant'], 'data.n_train' = [32]}", "data.n_test=8",
         "estimators.sgd.n_runs=32", "estimators.adam.n_runs=32", "estimators.prior.chunk=65536",
         "estimators.prior.n_samples=65536", "estimators.ess.n_samples=2048", "estimators.ess.n_chains=16",
         "estimators.ess.burn_in=50", "estimators.ess.thin=5", "analysis.n_boot=20"]


def test_shipped_file_expands_to_four_cases_with_five_estimators():
    cfg = load_config(BOOLEAN)
    assert [c.name for c in cfg.cases()] == ["target=constant,n_train=32", "target=constant,n_train=64",
                                             "target=weight6,n_train=32", "target=weight6,n_train=64"]
    assert [(s.label, s.method) for s in cfg.estimators] == [
        ("sgd", "sgd"), ("adam", "sgd"), ("prior", "prior"), ("ep", "ep-conditional"), ("ess", "ess")]
    assert cfg.estimator("adam").options.train_spec().optimizer == "adam"


@pytest.fixture(scope="module")
def boolean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("boolean")
    return out, run_experiment(load_config(BOOLEAN, SMALL), out, progress=False)


def test_ep_and_ess_agree_with_prior_sampling_within_stated_noise(boolean_run):
    out, _ = boolean_run
    df = pq.read_table(out / "results.parquet").to_pandas()
    prior = df[df.estimator == "prior"].set_index("function")
    frequent = prior[prior["count"] >= 100]
    assert len(frequent) >= 3
    for label in ("ep", "ess"):
        other = df[df.estimator == label].set_index("function").reindex(frequent.index)
        assert other["log_p"].notna().all(), label
        # Stated noise: prior's binomial error and ESS's own (from its chains); EP states none. Beyond
        # that noise, allow 0.1 nats of systematic difference: EP's own error (up to ~0.1 against
        # tilting, tests/nngp/test_posterior.py) and the width-40 network against its GP limit.
        # Measured with both prior samplers: |difference| <= 0.21 nats with se 0.004-0.18, |z| <= 2.9.
        se = np.sqrt(frequent["log_p_se"] ** 2 + np.nan_to_num(other["log_p_se"]) ** 2)
        diff = other["log_p"] - frequent["log_p"]
        assert (diff.abs() <= 4 * se + 0.1).all(), (label, diff.round(3).tolist(), se.round(3).tolist())
        assert np.median(np.abs(diff / se)) < 3.0, (label, (diff / se).round(2).tolist())


def test_what_ep_and_ess_promise_on_functions_seen_five_times(boolean_run):
    """Issue 26: the test above holds for functions prior sampling saw >= 100 times; what can the
    estimators promise down to 5? EP: the prior's noise plus EP's own bias, measured on this target
    against tilting up to 0.44 nats (README, benchmarks/ep_bias.py), so 0.45. ESS: a value only for
    the functions its chains visited (rare ones may be absent: a coverage limit, not an error), within
    its and the prior's noise plus the width-40 network's 0.1 against the GP limit."""
    out, _ = boolean_run
    df = pq.read_table(out / "results.parquet").to_pandas()
    prior = df[df.estimator == "prior"].set_index("function")
    seen = prior[prior["count"] >= 5]
    assert len(seen) >= 10
    for label, bias in (("ep", 0.45), ("ess", 0.1)):
        other = df[df.estimator == label].set_index("function").reindex(seen.index)
        if label == "ep":
            assert other["log_p"].notna().all()
        ok = other["log_p"].notna()
        assert ok[prior["count"].reindex(seen.index) >= 100].all(), label
        se = np.sqrt(seen["log_p_se"] ** 2 + np.nan_to_num(other["log_p_se"]) ** 2)[ok]
        diff = (other["log_p"] - seen["log_p"])[ok]
        assert (diff.abs() <= 4 * se + bias).all(), (label, diff.round(3).tolist(), se.round(3).tolist())


def test_report_lists_every_pair_and_case_facts(boolean_run):
    out, result = boolean_run
    summary = json.loads((out / "summary.json").read_text())
    pairs = [(p["a"], p["b"]) for p in summary["cases"][0]["pairs"]]
    assert pairs == [("sgd", "prior"), ("adam", "prior"), ("ep", "prior"), ("ess", "prior"), ("ess", "ep"),
                     ("sgd", "ep"), ("adam", "ep")]
    extras = summary["cases"][0]["extras"]
    assert extras["prior"]["prior_samples"] == 65536 and 0 < extras["prior"]["p_s_prior"] < 1
    lo, hi = extras["prior"]["p_s_prior_ci"]
    assert lo < extras["prior"]["p_s_prior"] < hi
    assert extras["ess"]["ess_rhat_max"] > 0 and np.isfinite(extras["ep"]["log_p_s"])
    assert (out / "figures" / "pairs.png").stat().st_size > 1000 and (out / "sweep.json").is_file()
