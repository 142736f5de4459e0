from pathlib import Path

import pytest

import sampler
from sgdbayes.config import ExperimentConfig, load_config, parse_config, parse_override

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_equal_the_default_file_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg == load_config(ROOT / "configs" / "default.toml")
    assert cfg.arch == sampler.FCN(width=64) and cfg.data.dataset == "mnist"
    assert [(s.label, s.method) for s in cfg.estimators] == [("sgd", "sgd"), ("ep", "ep-conditional"),
                                                             ("tilting", "tilting")]
    assert cfg.pairs == (("sgd", "ep"), ("sgd", "tilting"))
    assert cfg.estimator("sgd").options.train_spec() == sampler.TrainSpec(lr=0.1, batch_size=32)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_shipped_configs_parse():
    files = sorted((ROOT / "configs").rglob("*.toml"))
    assert len(files) >= 10, "configs/ holds the experiment files"
    for f in files:
        cfg = load_config(f)
        assert isinstance(cfg, ExperimentConfig) and cfg.cases() and cfg.pairs, f


def test_overrides():
    cfg = load_config(None, ["estimators.sgd.n_runs=64", "arch.width=32", "data.dataset=digits",
                             "estimators.sgd.lr=1"])
    sgd = cfg.estimator("sgd").options
    assert sgd.n_runs == 64 and cfg.arch.width == 32 and cfg.data.dataset == "digits"
    assert sgd.lr == 1.0 and isinstance(sgd.lr, float)
    cnn = load_config(None, ["arch.kind='cnn'", "arch.channels=16"])
    assert cnn.arch == sampler.CNN(channels=16)


@pytest.mark.parametrize("overrides, err, match", [
    (["estimators.sgd.n_rns=5"], ValueError, "unknown key estimators.sgd.n_rns.*did you mean 'n_runs'"),
    (["estimatrs.sgd.n_runs=5"], ValueError, "unknown config section.*did you mean 'estimators'"),
    (["estimators.sgd.n_runs=many"], TypeError, "estimators.sgd.n_runs must be of type int, got 'many'"),
    (["estimators.sgd.lr=-1"], ValueError, "estimators.sgd.lr must be > 0"),
    (["estimators.sgd.optimizer='sgdd'"], ValueError, "did you mean 'sgd'"),
    (["estimators.x.top=3"], ValueError, r"\[estimators.x\] needs method"),
    (["estimators.ep.method=epp"], ValueError, "unknown estimator method 'epp'"),
    (["report.pairs=[['sgd', 'nope']]"], ValueError, "report.pairs.0. names 'nope'"),
    (["sgd.n_runs=5"], ValueError, "unknown config section"),
    (["arch.widht=3"], ValueError, "unknown key arch.widht.*did you mean 'width'"),
    (["arch.channels=3"], ValueError, "unknown key arch.channels"),
    (["nonsense"], ValueError, "section.key=value"),
])
def test_config_errors_name_the_key(overrides, err, match):
    with pytest.raises(err, match=match):
        load_config(None, overrides)


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[data\nn_train = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_parse_config_rejects_non_tables():
    with pytest.raises(TypeError, match=r"\[data\] must be a table"):
        parse_config({"data": 3})


def test_string_overrides_keep_leading_zeros():
    target = "0" + "1" * 127
    cfg = load_config(None, ["data.dataset=boolean", f"data.target={target}", "data.n_train=64",
                             "data.n_test=64"])
    assert cfg.data.target == target
    assert parse_override("arch.activation='erf'") == (["arch", "activation"], "erf")
