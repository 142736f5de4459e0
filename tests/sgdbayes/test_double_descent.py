"""Double descent: the fixed-budget extras, the data keys (label noise, PCA) and configs/double_descent.toml
at tiny size through the pipeline."""

import json
from pathlib import Path

import pytest
from scipy import stats

from sgdbayes.case import DataConfig, split_for
from sgdbayes.config import load_config
from sgdbayes.double_descent import budget_extras, curves
from sgdbayes.pipeline import run_experiment

ROOT = Path(__file__).resolve().parents[2]


def test_budget_extras_pool_every_run_of_every_shard():
    infos = [{"budget": {"fit": [True, False], "train_error": [0.0, 0.1], "test_error": [0.2, 0.3],
                         "train_loss": [0.01, 0.2], "test_loss": [0.5, 0.6]}},
             {"budget": {"fit": [True], "train_error": [0.0], "test_error": [0.4], "train_loss": [0.0],
                         "test_loss": [0.7]}}]
    out = budget_extras(infos, 23)
    assert out["sgd_budget_runs"] == 3 and out["sgd_n_parameters"] == 23
    assert out["sgd_budget_fit_fraction"] == pytest.approx(2 / 3)
    assert out["sgd_test_error_mean"] == pytest.approx(0.3)
    lo, hi = stats.t.interval(0.95, 2, loc=0.3, scale=stats.sem([0.2, 0.3, 0.4]))
    assert (out["sgd_test_error_lo"], out["sgd_test_error_hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_data_keys_label_noise_and_pca():
    data = DataConfig(dataset="digits", n_train=50, n_test=20, seed=1, pca_dim=8, label_noise=0.2)
    split, clean = split_for(data), split_for(DataConfig(dataset="digits", n_train=50, n_test=20, seed=1))
    assert split.x_train.shape == (50, 8) and split.input_shape == (8,)
    assert int((split.y_train != clean.y_train).sum()) == 10 and len(split.flipped_index) == 10
    assert bool((split.y_test == clean.y_test).all())


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "arrays", "path": "x.npz", "pca_dim": 4}, "pca_dim is only for the named datasets"),
    ({"label_noise": 0.1, "corrupt_fraction": 0.1}, "set one"),
    ({"label_noise": 1.5}, "label_noise"), ({"pca_dim": -1}, "pca_dim")])
def test_data_key_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_double_descent_config_runs_tiny_and_draws_the_sweep(tmp_path):
    cfg = load_config(ROOT / "configs" / "double_descent.toml",
                      ["data.n_train=40", "data.n_test=30", "data.pca_dim=6",
                       "sweep.axes={'data.label_noise' = [0.0, 0.25], 'arch.width' = [1, 32]}",
                       "estimators.sgd.n_runs=4", "estimators.sgd.ensemble=4", "estimators.sgd.shard_size=4",
                       "estimators.sgd.batch_size=40", "estimators.sgd.max_epochs=30", "analysis.n_boot=0"])
    result = run_experiment(cfg, tmp_path, progress=False)
    assert (tmp_path / "figures" / "sweep.png").stat().st_size > 1000
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["kind"] == "double_descent"
    summaries = result.summary["cases"]
    for s in summaries:
        sgd = s["extras"]["sgd"]
        assert sgd["sgd_budget_runs"] == 4 and sgd["sgd_n_parameters"] in (1 * 8 + 1, 32 * 8 + 1)
        assert 0.0 <= sgd["sgd_test_error_mean"] <= 1.0
        assert 0.0 <= s["extras"]["gp"]["gp-mse_test_error"] <= 1.0
    got = curves(cfg.cases(), summaries)
    assert [c["label_noise"] for c in got] == [0.0, 0.25]
    assert all(c["p"] == [9.0, 257.0] and c["m"] == 40 and c["peak"] for c in got)
    assert all(len(next(iter(c["references"].values()))) == 2 for c in got)
    # the same curves from sweep.json's points (no extras there: the summaries' top level)
    again = curves(cfg.cases(), [p["summary"] for p in sweep["points"]])
    assert [c["sgd_test_error_mean"] for c in again] == [c["sgd_test_error_mean"] for c in got]
    report = (tmp_path / "report.md").read_text()  # the label noise is said in each noisy case's section
    assert report.count("label noise: 10 of the 40 labels of S flipped") == 2
    assert report.count("the pool's 6 leading principal components") == 4


def test_new_data_keys_at_their_defaults_leave_fingerprints_as_before():
    import dataclasses

    from sgdbayes.pipeline import estimator_fingerprint

    before = {"dataset": "mnist", "n_train": 100, "n_test": 20, "seed": 0, "binarize": "half", "data_dir": "",
              "target": "", "corrupt_fraction": 0.0, "path": ""}  # DataConfig's keys before label_noise, pca_dim
    assert DataConfig().fingerprint_dict() == before
    assert DataConfig(label_noise=0.1).fingerprint_dict()["label_noise"] == 0.1
    case = load_config(None, []).cases()[0]
    spec = case.estimators[0]
    noisy = dataclasses.replace(case, data=DataConfig(label_noise=0.1))
    assert estimator_fingerprint(noisy, spec) != estimator_fingerprint(case, spec)