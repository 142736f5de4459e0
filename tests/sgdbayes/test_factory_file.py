"""A factory named by its file (issue 25): `factory = "./mynets.py:tanh_mlp"` works from any folder,
relative to the config file; the run folder keeps the absolute path and fingerprints the file."""

import json

import pytest

from sgdbayes.cli import main
from sgdbayes.config import load_config

NETS = '''
from torch import nn


def tanh_mlp(width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 1))
'''

CONFIG = '''
[data]
dataset = "digits"
n_train = 20
n_test = 8

[arch]
kind = "module"
factory = "./nets/mynets.py:tanh_mlp"
kwargs = { width = 6 }

[estimators.sgd]
method = "sgd"
n_runs = 8
ensemble = 8
shard_size = 8
batch_size = 10
lr = 0.5
max_epochs = 200

[estimators.ep]
method = "ep-conditional"

[analysis]
min_count = 1
n_boot = 10
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "proj" / "nets").mkdir(parents=True)
    (tmp_path / "proj" / "nets" / "mynets.py").write_text(NETS)
    (tmp_path / "proj" / "my.toml").write_text(CONFIG)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def test_a_factory_file_relative_to_the_config(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "elsewhere")  # not the config's folder, not on PYTHONPATH
    out = project / "run"
    assert main(["run", str(project / "proj" / "my.toml"), "--out", str(out), "--no-progress"]) == 0
    saved = load_config(out / "config.toml").arch.factory
    assert saved == f"{project / 'proj' / 'nets' / 'mynets.py'}:tanh_mlp"
    sources = json.loads((out / "sources.json").read_text())
    assert any(str(project / "proj" / "nets" / "mynets.py") in src[1] for src in sources["main"])
    capsys.readouterr()
    # the file changes: resuming the folder is refused, naming it
    (project / "proj" / "nets" / "mynets.py").write_text(NETS + "\n# edited\n")
    assert main(["run", str(project / "proj" / "my.toml"), "--out", str(out), "--no-progress"]) == 2
    assert "mynets.py" in capsys.readouterr().err


def test_a_missing_factory_file_is_one_line(project, capsys):
    (project / "proj" / "my.toml").write_text(CONFIG.replace("./nets/mynets.py", "./nets/nope.py"))
    assert main(["run", str(project / "proj" / "my.toml"), "--out", str(project / "run2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file" in err and "nope.py" in err and len(err.splitlines()) == 1


def test_analyze_needs_no_factory(project, monkeypatch, capsys):
    """`sgdbayes analyze` only redoes statistics: it works with the factory's file gone (issue 25)."""
    out = project / "run"
    assert main(["run", str(project / "proj" / "my.toml"), "--out", str(out), "--no-progress"]) == 0
    (project / "proj" / "nets" / "mynets.py").rename(project / "elsewhere" / "mynets.py")
    capsys.readouterr()
    assert main(["analyze", str(out), "--set", "analysis.min_count=2"]) == 0, capsys.readouterr().err
    assert "report:" in capsys.readouterr().out
    # a run still needs it, and says which file is missing
    assert main(["run", str(project / "proj" / "my.toml"), "--out", str(project / "run2"), "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err
