"""The ``ntk`` and ``gp-mse`` estimators (sgdbayes/estimators/{ntk,gp_mse,gaussian}.py): registry and
options, log P with error bars against exact orthant probabilities (scipy's Genz at k = 4, the
Gaussian written from the issue's formulas), probabilities over all sign patterns summing to 1,
the time mapping's checks, and a run through ``sgdbayes run`` (local and Ray give the same rows)."""

import itertools
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

import nngp
from sgdbayes.cli import main
from sgdbayes.config import load_config
from sgdbayes.estimators import EstimatorResult, estimator_names
from sgdbayes.pipeline import make_fits, run_experiment

BOOLEAN = ["data.dataset=boolean", "data.target=majority", "data.n_train=8", "data.n_test=4", "data.seed=1",
           "arch.depth=1", "arch.width=256", "arch.sigma_b=0.1"]
SGD = ["estimators.sgd.method=sgd", "estimators.sgd.loss=mse", "estimators.sgd.batch_size=8",
       "estimators.sgd.lr=0.0015625", "estimators.sgd.max_epochs=60", "estimators.sgd.check_every=60",
       "estimators.sgd.n_runs=64", "estimators.sgd.ensemble=32", "estimators.sgd.shard_size=32"]
ALL = ["".join(b) for b in itertools.product("01", repeat=4)]


def _case(tmp_path, options, method="ntk", extra=()):
    cfg = load_config(None, BOOLEAN + SGD + [f"estimators.x.method={method}"]
                      + [f"estimators.x.{k}={v}" for k, v in options.items()] + list(extra))
    case = cfg.cases()[0].prepared(tmp_path)
    make_fits([case], progress=False)
    return case, case.estimator("x")


def _score(case, spec, functions):
    est = spec.estimator
    shards = est.plan(case, spec.options, {f: 1 for f in functions})
    tables = [est.run_shard(case, spec.options, s) for s in shards]
    return EstimatorResult.from_shards("x", spec.method, tables, sampler=False)


def _genz_log_p(mean, cov, f):
    """log P[1{g > 0} = f] for g ~ N(mean, cov) by scipy's Genz integration (k = 4: exact to ~1e-5)."""
    s = np.array([1.0 if c == "1" else -1.0 for c in f])
    mean, cov = np.asarray(mean.numpy()), np.asarray(cov.numpy())
    p = stats.multivariate_normal.cdf(np.zeros(len(f)), mean=-s * mean, cov=cov * np.outer(s, s), maxpts=10 ** 6,
                                      abseps=1e-9, releps=1e-7, rng=np.random.default_rng(0))
    return math.log(p)


def test_registered_listed_with_their_options(capsys):
    assert {"ntk", "gp-mse"} <= set(estimator_names())
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    for text in ("ntk  (p_b, scorer)", "gp-mse  (p_b, scorer)", "time = 'inf'", "parameterization = 'standard'",
                 "noise = 0.1", "solver = 'auto'"):
        assert text in out, text


def test_ntk_at_infinite_time_matches_the_issues_formula_and_genz(tmp_path):
    case, spec = _case(tmp_path, {"top": 0, "n_samples": 4000})
    split = case.split()
    m = split.n_train
    x = split.x_all()
    K, T = nngp.kernel(case.arch, x), nngp.ntk(case.arch, x)
    Ti = torch.linalg.inv(T[:m, :m])
    mean = T[m:, :m] @ Ti @ (2.0 * split.y_train.double() - 1)
    TEX = T[m:, :m]
    cov = K[m:, m:] + TEX @ Ti @ K[:m, :m] @ Ti @ TEX.T - TEX @ Ti @ K[:m, m:] - (TEX @ Ti @ K[:m, m:]).T
    res = _score(case, spec, ALL)
    lp, se = res.by_function(), res.by_function("log_p_se")
    for f in ALL:
        assert abs(lp[f] - _genz_log_p(mean, cov, f)) < 5 * se[f] + 2e-3, f
    assert sum(math.exp(v) for v in lp.values()) == pytest.approx(1.0, abs=0.02)
    extras = spec.estimator.extras(case, spec.options, res)
    assert extras["ntk_log_p_fit"] == 0.0 and extras["ntk_conditioned"] is False
    assert extras["ntk_ep_vs_tilting_median_z"] < 5


def test_ntk_at_training_time_conditions_on_fitting_s(tmp_path):
    case, spec = _case(tmp_path, {"top": 0, "n_samples": 3000, "time": "train"})
    fit = case.fit(spec.estimator._fit_name(case, spec.options))
    assert fit["condition"] and fit["log_p_fit"] < -0.01  # this short training often misses S
    # the time is the sgd estimator's: tau = 2 lr steps / m
    assert fit["facts"]["flow_time"] == pytest.approx(2 * 0.0015625 * 60 / 8)
    res = _score(case, spec, ALL)
    probs = np.exp(res.log_p)
    assert probs.sum() == pytest.approx(1.0, abs=0.03)  # P(f | fits S) over every f on E
    # against P(S and E = f) / P(S) by Genz on the joint Gaussian (m + k = 12 dimensions)
    split = case.split()
    mean, cov = fit["mean"], fit["cov"] + 1e-10 * fit["cov"].diagonal().max() * torch.eye(12, dtype=torch.float64)
    s_bits = "".join(str(int(v)) for v in split.y_train)
    lps = _genz_log_p(mean[:8], cov[:8, :8], s_bits)
    for f, v, e in zip(res.functions[:4], res.log_p[:4], res.log_p_se[:4]):
        assert abs(v - (_genz_log_p(mean, cov, s_bits + f) - lps)) < 5 * e + 0.01


def test_gp_mse_matches_genz_on_the_regression_posterior(tmp_path):
    case, spec = _case(tmp_path, {"top": 0, "noise": 0.05, "n_samples": 4000}, method="gp-mse")
    split = case.split()
    m = split.n_train
    Kn = nngp.kernel(case.arch, split.x_all()).numpy()
    A = Kn[:m, :m] + 0.05 * np.eye(m)
    Y = 2.0 * split.y_train.numpy() - 1
    mean = torch.from_numpy(Kn[m:, :m] @ np.linalg.solve(A, Y))
    cov = torch.from_numpy(Kn[m:, m:] - Kn[m:, :m] @ np.linalg.solve(A, Kn[:m, m:]))
    res = _score(case, spec, ALL[:6])
    for f, v, e in zip(res.functions, res.log_p, res.log_p_se):
        assert abs(v - _genz_log_p(mean, cov, f)) < 5 * e + 2e-3
    extras = spec.estimator.extras(case, spec.options, res)
    assert extras["gp-mse_log_p_fit"] < 0 and extras["gp-mse_conditioned"] is False
    # above joint_max_m only the test block is computed: the same values, log P(fits S) not computed
    case2, spec2 = _case(tmp_path / "test-only", {"top": 0, "noise": 0.05, "n_samples": 4000, "joint_max_m": 4},
                         method="gp-mse")
    res2 = _score(case2, spec2, ALL[:6])
    np.testing.assert_allclose(res2.log_p, res.log_p, rtol=1e-10)
    assert math.isnan(spec2.estimator.extras(case2, spec2.options, res2)["gp-mse_log_p_fit"])


def test_training_time_needs_full_batch_gradient_descent_on_mse(tmp_path):
    for bad, match in [("estimators.sgd.batch_size=4", "full-batch"), ("estimators.sgd.loss=ce", "mse"),
                       ("estimators.sgd.check_every=10", "check_every")]:
        cfg = load_config(None, BOOLEAN + SGD + ["estimators.x.method=ntk", "estimators.x.time=train", bad])
        case = cfg.cases()[0]
        with pytest.raises(ValueError, match=match):
            case.estimator("x").estimator.plan(case, case.estimator("x").options, {"0000": 1})
    cfg = load_config(None, BOOLEAN + SGD + ["estimators.x.method=ntk", "estimators.x.time=train",
                                            "estimators.x.sgd=adam"])
    case = cfg.cases()[0]
    with pytest.raises(ValueError, match="labelled sgd = 'adam'"):
        case.estimator("x").estimator.plan(case, case.estimator("x").options, {"0000": 1})


def _run(tmp_path, name, executor):
    cfg = load_config(None, BOOLEAN + SGD + ["estimators.ntk.method=ntk", "estimators.ntk.time=train",
                                            "estimators.ntk.n_samples=300", "estimators.gp.method=gp-mse",
                                            "estimators.gp.n_samples=300",
                                            "report.pairs=[['sgd', 'ntk'], ['sgd', 'gp']]"])
    out = tmp_path / name
    run_experiment(cfg, out, executor=executor, progress=False)
    return pq.read_table(out / "results.parquet").to_pandas().sort_values(["estimator", "function"])


def test_runs_through_sgdbayes_run_with_report_pairs(tmp_path):
    rows = _run(tmp_path, "local", "local")
    assert {"sgd", "ntk", "gp"} <= set(rows.estimator)
    scored = rows[rows.estimator == "ntk"]
    assert len(scored) and np.isfinite(scored.log_p).all() and (scored.log_p_se > 0).all()
    report = (tmp_path / "local" / "report.md").read_text()
    assert "| sgd | ntk |" in report and "| sgd | gp |" in report


@pytest.mark.slow  # a local Ray starts in ~30 s on the 2-core machine
@pytest.mark.ray
def test_ray_gives_the_same_rows_as_local(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = _run(tmp_path, "ray", "ray")
    finally:
        ray.shutdown()
    local = _run(tmp_path, "local", "local")
    np.testing.assert_array_equal(remote.function.to_numpy(), local.function.to_numpy())
    np.testing.assert_allclose(remote.log_p.to_numpy(), local.log_p.to_numpy(), rtol=1e-12)
