"""A researcher's variants of one run (issue 25): `sgdbayes analyze --out` writes beside, not over, the run's
report; a refused folder says which keys differ."""

import pytest

from sgdbayes.cli import main
from sgdbayes.config import load_config
from sgdbayes.pipeline import config_differences

from test_cli import TINY_RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", "--out", str(out), "--no-progress"] + TINY_RUN) == 0
    return out


def test_analyze_out_keeps_the_runs_report(run, tmp_path, capsys):
    before = (run / "report.md").read_text()
    variant = tmp_path / "variant"
    assert main(["analyze", str(run), "--out", str(variant), "--set", "analysis.min_count=1"]) == 0
    assert f"report: {variant / 'report.md'}" in capsys.readouterr().out
    assert (run / "report.md").read_text() == before
    assert load_config(variant / "config.toml").analysis.min_count == 1
    assert load_config(run / "config.toml").analysis.min_count != 1
    for name in ("report.md", "summary.json", "functions.parquet", "pairs.csv"):
        assert (variant / name).is_file(), name
    assert main(["analyze", str(run), "--out", str(run)]) == 2
    assert "is the run folder itself" in capsys.readouterr().err


def test_a_refused_folder_names_the_keys_that_differ(run, capsys):
    assert main(["run", "--out", str(run), "--no-progress"] + TINY_RUN + ["--set", "estimators.sgd.n_runs=12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "estimators.sgd.n_runs: folder 8, now 12" in err and len(err.splitlines()) == 1


def test_config_differences_lists_each_key():
    a = load_config(None)
    b = load_config(None, ["arch.width=32", "estimators.sgd.lr=0.5", "data.seed=3"])
    text = config_differences(a, b)
    assert "arch.width: folder 64, now 32" in text and "data.seed: folder 0, now 3" in text
    assert "estimators.sgd.lr: folder 0.1, now 0.5" in text
    assert config_differences(a, a) == "differs"
    assert "and 2 more" in config_differences(a, b, limit=1)
