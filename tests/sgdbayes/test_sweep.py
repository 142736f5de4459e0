from pathlib import Path

import pytest

from sgdbayes.config import load_config
from sgdbayes.sweep import expand_sweep, is_sweep_file, load_sweep, point_name

ROOT = Path(__file__).resolve().parents[2]


def test_axes_expand_to_the_cartesian_product_in_order():
    raw = {"arch": {"kind": "fcn"},
           "sweep": {"kind": "width", "axes": {"arch.depth": [1, 2], "arch.width": [8, 64, 512]}}}
    sweep = expand_sweep(raw)
    assert [p.name for p in sweep.points] == [
        "depth=1,width=8", "depth=1,width=64", "depth=1,width=512",
        "depth=2,width=8", "depth=2,width=64", "depth=2,width=512"]
    assert [(p.config.arch.depth, p.config.arch.width) for p in sweep.points] == [
        (1, 8), (1, 64), (1, 512), (2, 8), (2, 64), (2, 512)]
    assert sweep.kind == "width"


def test_points_and_overrides_apply_to_every_point():
    raw = {"sgd": {"n_runs": 100},
           "sweep": {"kind": "optimizer", "points": [{"sgd.optimizer": "sgd", "sgd.lr": 0.1},
                                                     {"sgd.optimizer": "adam", "sgd.lr": 0.001}]}}
    sweep = expand_sweep(raw, ["sgd.n_runs=7", "data.n_train=50"])
    assert [p.config.sgd.optimizer for p in sweep.points] == ["sgd", "adam"]
    assert all(p.config.sgd.n_runs == 7 and p.config.data.n_train == 50 for p in sweep.points)
    assert sweep.points[0].config == load_config(None, ["sgd.n_runs=7", "data.n_train=50", "sgd.lr=0.1"])


def test_point_names():
    assert point_name([("data.corrupt_fraction", 0.2), ("arch.width", 64)]) == "corrupt_fraction=0.2,width=64"


@pytest.mark.parametrize("sweep, match", [
    ({"kind": "width"}, "exactly one of 'axes'"),
    ({"axes": {"arch.width": []}}, "non-empty list"),
    ({"axes": {"arch.widht": [1]}}, "unknown key arch.widht.*did you mean 'width'"),
    ({"axes": {"sdg.lr": [1.0]}}, "did you mean 'sgd'"),
    ({"axes": {"sgd.lr": [-1.0]}}, "sweep point lr=-1: sgd.lr must be > 0"),
    ({"axis": {}}, "unknown key sweep.axis.*did you mean 'axes'"),
    ({"kind": "depth", "axes": {"arch.width": [1]}}, "sweep.kind must be one of"),
])
def test_bad_sweeps_are_named(sweep, match):
    with pytest.raises(ValueError, match=match):
        expand_sweep({"sweep": sweep})


def test_shipped_sweep_files_expand():
    files = [f for f in sorted((ROOT / "configs").rglob("*.toml")) if is_sweep_file(f)]
    assert {f.stem for f in files} >= {"random_labels", "width_sweep", "optimizer_sweep"}
    for f in files:
        assert len(load_sweep(f).points) >= 2
