"""The ``sgd`` estimator's sharpness options end to end on a tiny MNIST run: per-run measures in the
shards, per-function columns in functions.parquet, the report's flatness section, the rescaling
check, resuming, and early refusal of bad options."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sampler import load_split, make_generator
from sampler.sgd import iter_runs
from sampler.sharpness import make_measure, measure_all
from sgdbayes.config import load_config, parse_config
from sgdbayes.estimators.flatness import flatness_extras
from sgdbayes.pipeline import prepare_cases, read_result, run_experiment

TINY = {
    "data": {"dataset": "mnist", "n_train": 30, "n_test": 10, "seed": 0},
    "arch": {"kind": "fcn", "depth": 1, "width": 16},
    "estimators": {
        "sgd": {"method": "sgd", "n_runs": 24, "ensemble": 12, "shard_size": 12, "lr": 0.1, "batch_size": 10,
                "max_epochs": 300, "sharpness": ["epsilon_sharpness", "hessian_trace", "top_eigenvalue"],
                "hessian_probes": 4, "lanczos_iterations": 6, "sharpness_steps": 4, "rescale_alpha": 4.0},
        "ep": {"method": "ep-conditional"}},
    "analysis": {"n_boot": 50, "min_count": 1},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flat") / "run"
    return out, run_experiment(parse_config(TINY), out, progress=False)


def test_functions_table_has_each_measure_per_function(run):
    out, result = run
    wide = pq.read_table(out / "functions.parquet").to_pandas()
    measured = wide[wide["sgd:count"] > 0]
    assert (measured["sgd:measured_runs"] == measured["sgd:count"]).all()  # every fitted run measured
    for m in ("epsilon_sharpness", "hessian_trace", "top_eigenvalue"):
        for col in (f"sgd:{m}_mean", f"sgd:rescaled_{m}_mean"):
            assert np.isfinite(measured[col]).all(), col
        sd = measured.loc[measured["sgd:count"] > 1, f"sgd:{m}_sd"]
        assert np.isfinite(sd).all() and (sd >= 0).all()
    assert (measured["sgd:epsilon_sharpness_mean"] >= 0).all()
    summary = json.loads((out / "summary.json").read_text())
    extras = summary["extras"]["sgd"]
    assert "function_columns" not in extras and extras["measured_runs"] == summary["n_fit"]
    assert extras["max_rescaled_output_change"] < 1e-9  # the rescaled nets are the same functions
    assert {(r["measure"], r["target"]) for r in summary["flatness"]} >= {
        ("epsilon_sharpness", "test_error"), ("top_eigenvalue", "log_pb"), ("log_pb", "test_error")}
    report = (out / "report.md").read_text()
    assert "Flatness and volume against generalisation" in report and "Rescaling check" in report
    assert (out / "figures" / "main" / "flatness_sgd_top_eigenvalue.png").is_file()


def test_shard_measures_match_measuring_the_trained_member_alone():
    """The engine's per-run values (measured in blocks of 2) are the measure of that run's network on its own."""
    cfg = parse_config(TINY)
    case = cfg.cases()[0]
    opts = case.estimator("sgd").options
    split = load_split("mnist", n_train=30, n_test=10, seed=0)
    spec = opts.measure_spec()
    got = {}
    members = {}
    runs = [3, 5, 8]
    for chunk in iter_runs(case.arch, split, opts.train_spec(), runs, seed=opts.seed, ensemble=3, keep_members=runs,
                           members=members, measure=make_measure(case.arch, split, spec, block=2)):
        for j, r in enumerate(chunk.runs.tolist()):
            got[r] = {k: v[j] for k, v in chunk.measures.items()}
    net = case.arch.network(split.input_shape, dtype=torch.float64)
    for r, module in members.items():
        params = [p.detach().double()[None] for p in module.parameters()]
        alone = measure_all(net, params, split.x_train.double(), split.y_train, spec,
                            generator=[make_generator(opts.seed, "sharpness", r)],
                            x_other=split.x_test.double())
        for k, v in alone.items():
            np.testing.assert_allclose(got[r][k], v[0], rtol=1e-6, atol=1e-9, err_msg=k)


def test_shards_keep_the_measures(run):
    """What extras.json holds is remade from the shards on disk (what a resumed run reads back)."""
    out, result = run
    case = prepare_cases(parse_config(TINY).cases(), out)[0]
    spec = case.estimator("sgd")
    res = read_result(case, spec, spec.estimator.plan(case, spec.options))
    assert len(res.infos) == 2 and all(len(i["measured_function"]) == len(i["epochs"]) for i in res.infos)
    stored = json.loads((out / "cases" / "main" / "extras.json").read_text())["sgd"]
    assert json.loads(json.dumps(flatness_extras(res.infos))) == {k: stored[k] for k in flatness_extras(res.infos)}


def test_options_without_sharpness_keep_old_fingerprints():
    plain = {k: v for k, v in TINY["estimators"]["sgd"].items()
             if k not in ("sharpness", "hessian_probes", "lanczos_iterations", "sharpness_steps", "rescale_alpha")}
    opts = parse_config({**TINY, "estimators": {"sgd": plain}}).cases()[0].estimator("sgd").options
    assert "sharpness" not in opts.to_table() and "hessian_probes" not in opts.to_table()


@pytest.mark.parametrize("change, match", [
    ({"arch": {"kind": "fcn", "depth": 1, "width": 8, "activation": "tanh"}}, "rescale_alpha.*relu"),
    ({"estimators": {"sgd": {**TINY["estimators"]["sgd"], "sharpness": ["flatness"]}}}, "sharpness"),
    ({"estimators": {"sgd": {**TINY["estimators"]["sgd"], "sharpness": []}}}, "rescale_alpha needs sharpness"),
])
def test_bad_options_are_refused_before_training(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        run_experiment(parse_config({**TINY, **change}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "config.toml").exists()


def test_shipped_flatness_config_parses():
    cfg = load_config("configs/flatness.toml")
    assert len(cfg.cases()) >= 2
    assert {s.options.optimizer for s in cfg.estimators if s.method == "sgd"} == {"sgd", "adam"}
    assert all(s.options.sharpness and s.options.rescale_alpha for s in cfg.estimators if s.method == "sgd")
