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
        if f.name == "prior_bias.toml":  # `sgdbayes prior-bias`'s own format (no training set)
            from sgdbayes.prior_bias import PriorBiasConfig, load_prior_bias_config
            assert isinstance(load_prior_bias_config(f), PriorBiasConfig)
            continue
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
    (["estimators.ep.method=epp"], ValueError, "unknown estimators.ep.method 'epp'; valid: .*'ep-conditional'"),
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
    with pytest.raises(TypeError, match=r"data must be a table, got 3"):
        parse_config({"data": 3})


def test_string_overrides_keep_leading_zeros():
    target = "0" + "1" * 127
    cfg = load_config(None, ["data.dataset=boolean", f"data.target={target}", "data.n_train=64",
                             "data.n_test=64"])
    assert cfg.data.target == target
    assert parse_override("arch.activation='erf'") == (["arch", "activation"], "erf")


def test_a_config_with_only_sgd_runs_on_the_default_data(tmp_path):
    """Guards: ``[estimators.sgd] method = "sgd"`` alone failed on the default data (m = 100): its
    default batch_size 128 was TrainSpec's, not configs/default.toml's 32."""
    from sgdbayes.cli import main

    path = tmp_path / "sgd.toml"
    path.write_text('[estimators.sgd]\nmethod = "sgd"\n')
    out = tmp_path / "run"
    assert main(["run", str(path), "--set", "estimators.sgd.n_runs=64", "--set", "estimators.sgd.ensemble=64",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.parquet").is_file()
    assert load_config(path).estimator("sgd").options.train_spec() == sampler.TrainSpec()


def test_one_source_of_defaults():
    """The default experiment is the models' defaults; the library's sample_sgd has TrainSpec's."""
    import inspect

    cfg = load_config()
    assert cfg.data == __import__("sgdbayes.case", fromlist=["DataConfig"]).DataConfig()
    assert cfg.estimator("tilting").options.top == 50
    signature = inspect.signature(sampler.sample_sgd).parameters
    for key in ("optimizer", "lr", "batch_size", "loss", "momentum", "max_epochs", "epochs_after_fit", "check_every"):
        assert signature[key].default == getattr(sampler.TrainSpec(), key), key


@pytest.mark.parametrize("overrides, err, match", [
    (["arch.width=0"], ValueError, r"^arch\.width must be >= 1, got width=0$"),
    (["arch.kind='cnnn'"], ValueError, r"unknown arch\.kind 'cnnn'; valid: \[.*'cnn'.*did you mean 'cnn'"),
    (["arch.kind='cnn'", "arch.kernel_size=2"], ValueError, r"arch\.kernel_size must be odd"),
    (["arch.width=2.5"], TypeError, r"arch\.width must be of type int, got 2\.5 \(float\)"),
    (["data.n_train='5'"], TypeError, r"data\.n_train must be of type int, got '5' \(str\)"),
    (["data.corrupt_fraction=2"], ValueError, r"data\.corrupt_fraction must be <= 1\.0"),
    (["data.dataset='mnsit'"], ValueError, r"data\.dataset must be 'mnist', .*'arrays', got 'mnsit' \(str\) \(did you mean 'mnist'"),
    (["analysis.min_count=0"], ValueError, r"analysis\.min_count must be >= 1"),
    (["estimators.sgd.lr=inf"], ValueError, r"estimators\.sgd\.lr.*finite"),
    (["estimators.sgd.batch_size=true"], TypeError, r"estimators\.sgd\.batch_size must be of type int, got True"),
    (["estimators.sgd.momentum=0.9", "estimators.sgd.optimizer='adam'"], ValueError,
     r"estimators\.sgd\.momentum is only for optimizer 'sgd'"),
    (["estimators.p.method='prior'", "estimators.p.chunk=5000"], ValueError,
     r"estimators\.p\.chunk must be a multiple of 4096"),
    (["report.pairs=[['sgd', 'sgd']]"], ValueError, r"report\.pairs\[0\] pairs 'sgd' with itself"),
    (["sweep.axes={'arch.width' = [0, 8]}"], ValueError, r"sweep point width=0: arch\.width must be >= 1"),
    (["sweep.axes={'model.width' = [8]}"], ValueError, r"sweep point width=8: unknown config section \[model\]"),
])
def test_more_errors_name_the_key_what_was_expected_and_what_came(overrides, err, match):
    with pytest.raises(err, match=match):
        load_config(None, overrides)


def test_unknown_section_in_a_file_is_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[datum]\nn_train = 5\n")
    with pytest.raises(ValueError, match=r"unknown config section \[datum\].*did you mean 'data'"):
        load_config(p)


def test_an_architecture_registered_elsewhere_is_a_kind(monkeypatch):
    """The arch union is built from sampler.architectures.ARCHITECTURES when a config is parsed."""
    import dataclasses

    from sampler.architectures import ARCHITECTURES, Architecture

    @dataclasses.dataclass(frozen=True)
    class Toy(Architecture):
        kind = "toy"
        width: int = 3
        scales: tuple = (1.0,)

        def __post_init__(self):
            if self.width > 10:
                raise ValueError(f"width must be <= 10, got width={self.width}")

    monkeypatch.setitem(ARCHITECTURES, "toy", Toy)
    cfg = load_config(None, ["arch.kind='toy'", "arch.width=5", "arch.scales=[1.0, 2.0]"])
    assert cfg.arch == Toy(width=5, scales=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"^arch\.width must be <= 10, got width=11$"):
        load_config(None, ["arch.kind='toy'", "arch.width=11"])
    with pytest.raises(ValueError, match=r"unknown key arch\.depth; valid keys of \[arch\]: \['kind', 'scales', 'width'\]"):
        load_config(None, ["arch.kind='toy'", "arch.depth=1"])


def test_resumed_config_compares_equal_and_replace_revalidates():
    import dataclasses

    cfg = load_config(None, ["report.pairs=[['sgd', 'ep']]", "estimators.sgd.n_runs=64"])
    again = parse_config(__import__("tomllib").loads(cfg.to_toml()))
    assert again == cfg and again.pairs == (("sgd", "ep"),)
    changed = dataclasses.replace(cfg, report=load_config(None, ["report.pairs=[['sgd', 'tilting']]"]).report)
    assert changed.pairs == (("sgd", "tilting"),) and changed.estimators == cfg.estimators


def test_stored_configs_keep_their_format():
    """A run folder's config.toml states the resolved pairs and check_every = 0 (TOML has no null), as
    before, so that folders written before the pydantic model still compare equal and resume."""
    stored = load_config().to_dict()
    assert stored["report"]["pairs"] == [["sgd", "ep"], ["sgd", "tilting"]]
    assert stored["estimators"]["sgd"]["check_every"] == 0
    cfg = load_config(None, ["estimators.sgd.check_every=0"])
    assert cfg.estimator("sgd").options.check_every is None and cfg == load_config()
    assert load_config(None, ["estimators.sgd.check_every=5"]).estimator("sgd").options.train_spec().check_every == 5
