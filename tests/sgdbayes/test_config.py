from pathlib import Path

import pytest

import sampler
from sgdbayes.config import ExperimentConfig, load_config, parse_config, parse_override

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg.arch == sampler.FCN() and cfg.data.dataset == "mnist" and cfg.bayes.method == "ep-conditional"
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_shipped_configs_parse():
    from sgdbayes.compare import is_compare_file, load_compare_config
    from sgdbayes.sweep import is_sweep_file

    files = sorted((ROOT / "configs").rglob("*.toml"))
    plain = [f for f in files if not is_sweep_file(f) and not is_compare_file(f)]
    assert plain, "configs/ holds the experiment files"
    for f in plain:
        assert isinstance(load_config(f), ExperimentConfig), f
    for f in files:
        if is_compare_file(f):  # sgdbayes compare files validate through their own loader
            load_compare_config(f)


def test_overrides():
    cfg = load_config(None, ["sgd.n_runs=64", "arch.width=32", "data.dataset=digits", "sgd.lr=1"])
    assert cfg.sgd.n_runs == 64 and cfg.arch.width == 32 and cfg.data.dataset == "digits"
    assert cfg.sgd.lr == 1.0 and isinstance(cfg.sgd.lr, float)
    cnn = load_config(None, ["arch.kind='cnn'", "arch.channels=16"])
    assert cnn.arch == sampler.CNN(channels=16)


@pytest.mark.parametrize("overrides, err, match", [
    (["sgd.n_rns=5"], ValueError, "unknown key sgd.n_rns.*did you mean 'n_runs'"),
    (["sdg.n_runs=5"], ValueError, "unknown config section.*did you mean 'sgd'"),
    (["sgd.n_runs=many"], TypeError, "sgd.n_runs must be of type int, got 'many'"),
    (["sgd.lr=-1"], ValueError, "sgd.lr must be > 0"),
    (["sgd.optimizer='sgdd'"], ValueError, "did you mean 'sgd'"),
    (["arch.widht=3"], ValueError, "unknown key arch.widht.*did you mean 'width'"),
    (["arch.channels=3"], ValueError, "unknown key arch.channels"),
    (["nonsense"], ValueError, "section.key=value"),
])
def test_config_errors_name_the_key(overrides, err, match):
    with pytest.raises(err, match=match):
        load_config(None, overrides)


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[sgd\nn_runs = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_parse_config_rejects_non_tables():
    with pytest.raises(TypeError, match=r"\[sgd\] must be a table"):
        parse_config({"sgd": 3})


def test_string_overrides_keep_leading_zeros():
    target = "0" + "1" * 127
    cfg = load_config(None, ["data.dataset=boolean", f"data.target={target}", "data.n_train=64",
                             "data.n_test=64"])
    assert cfg.data.target == target
    assert parse_override("arch.activation='erf'") == ("arch", "activation", "erf")
