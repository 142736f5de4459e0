from pathlib import Path

import pytest

from sgdbayes.config import load_config, parse_config, point_name

ROOT = Path(__file__).resolve().parents[2]


def test_axes_expand_to_the_cartesian_product_in_order():
    cfg = parse_config({"sweep": {"kind": "width", "axes": {"arch.depth": [1, 2], "arch.width": [8, 64, 512]}}})
    cases = cfg.cases()
    assert [c.name for c in cases] == [
        "depth=1,width=8", "depth=1,width=64", "depth=1,width=512",
        "depth=2,width=8", "depth=2,width=64", "depth=2,width=512"]
    assert [(c.arch.depth, c.arch.width) for c in cases] == [(1, 8), (1, 64), (1, 512), (2, 8), (2, 64), (2, 512)]
    assert cfg.sweep.kind == "width"


def test_points_and_overrides_apply_to_every_point():
    raw = {"estimators": {"sgd": {"method": "sgd", "n_runs": 100}, "ep": {"method": "ep-conditional"}},
           "sweep": {"kind": "optimizer", "points": [{"estimators.sgd.optimizer": "sgd", "estimators.sgd.lr": 0.1},
                                                     {"estimators.sgd.optimizer": "adam", "estimators.sgd.lr": 0.001}]}}
    from sgdbayes.config import apply_overrides

    cfg = parse_config(apply_overrides(raw, ["estimators.sgd.n_runs=7", "data.n_train=50"]))
    cases = cfg.cases()
    assert [c.estimator("sgd").options.optimizer for c in cases] == ["sgd", "adam"]
    assert all(c.estimator("sgd").options.n_runs == 7 and c.data.n_train == 50 for c in cases)
    assert cases[0].name == "sgd.optimizer=sgd,sgd.lr=0.1"


def test_point_names():
    assert point_name([("data.corrupt_fraction", 0.2), ("arch.width", 64)]) == "corrupt_fraction=0.2,width=64"


@pytest.mark.parametrize("sweep, match", [
    ({"kind": "width"}, "exactly one of 'axes'"),
    ({"axes": {"arch.width": []}}, "non-empty list"),
    ({"axes": {"arch.widht": [1]}}, "unknown key arch.widht.*did you mean 'width'"),
    ({"axes": {"estimatrs.sgd.lr": [1.0]}}, "did you mean 'estimators'"),
    ({"axes": {"estimators.sgd.lr": [-1.0]}}, "sweep point sgd.lr=-1: estimators.sgd.lr must be > 0"),
    ({"axis": {}}, "unknown key sweep.axis.*did you mean 'axes'"),
    ({"kind": "depth", "axes": {"arch.width": [1]}}, "sweep.kind must be one of"),
])
def test_bad_sweeps_are_named(sweep, match):
    with pytest.raises(ValueError, match=match):
        parse_config({"sweep": sweep})


def test_shipped_sweep_files_expand():
    files = [f for f in sorted((ROOT / "configs").rglob("*.toml"))
             if f.name != "prior_bias.toml" and load_config(f).sweep is not None]  # prior-bias: its own format
    assert {f.stem for f in files} >= {"random_labels", "width_sweep", "optimizer_sweep", "boolean"}
    for f in files:
        assert len(load_config(f).cases()) >= 2
