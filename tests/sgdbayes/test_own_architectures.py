"""`sgdbayes run` end to end on architectures without an analytic kernel (LSTM, the user's module),
and the checks that run before any training."""

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from sampler.architectures import Architecture, register_architecture

from sgdbayes.cli import main

BASE = """
[data]
dataset = "boolean"
n_train = 12
n_test = 6
target = "majority"
{arch}
[estimators.sgd]
method = "sgd"
n_runs = 16
lr = 0.1
batch_size = 6
max_epochs = 30
ensemble = 16
shard_size = 16
[estimators.ep]
method = "ep-conditional"
[estimators.tilting]
method = "tilting"
top = 2
n_samples = 100
[analysis]
min_count = 1
n_boot = 10
"""

LSTM = '[arch]\nkind = "lstm"\nhidden = 3'
MODULE = ('[arch]\nkind = "module"\nfactory = "sgdbayes.examples:attention"\n'
          '[arch.kwargs]\ndim = 4\ntokens = 7')


def with_batchnorm(input_shape):
    """A module the engine refuses (imported by the config below as test_own_architectures:with_batchnorm)."""
    return nn.Sequential(nn.Linear(7, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


@pytest.mark.parametrize("arch", [LSTM, MODULE], ids=["lstm", "module"])
def test_runs_end_to_end_with_a_monte_carlo_kernel(tmp_path, arch):
    config = tmp_path / "c.toml"
    config.write_text(BASE.format(arch=arch))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_runs"] == 16
    extras = json.loads((tmp_path / "out" / "cases" / "main" / "extras.json").read_text())
    for label in ("ep", "tilting"):
        assert extras[label]["kernel_method"] == "monte-carlo" and extras[label]["kernel_samples"] > 0
    assert (tmp_path / "out" / "report.md").is_file()


def test_unsupported_module_fails_before_training_naming_the_layer(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(BASE.format(arch='[arch]\nkind = "module"\nfactory = "test_own_architectures:with_batchnorm"'))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "layer '1' (BatchNorm1d) is not supported" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "cases").exists()  # nothing trained


def test_kernel_memory_is_checked_before_training(tmp_path, capsys, monkeypatch):
    import sgdbayes.pipeline

    monkeypatch.setattr(sgdbayes.pipeline, "available_bytes", lambda device: (10_000, "a test's meminfo"))
    config = tmp_path / "c.toml"
    config.write_text(BASE.format(arch=LSTM).replace("ensemble = 16", "ensemble = 1"))  # SGD's need below the kernel's
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "estimators.ep: needs about" in err and "(data.n_train + data.n_test)^2 = 18^2 entries" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "cases").exists()


# --- a new architecture defined here, registered, and run with no edit to the package ----------------

@register_architecture
@dataclass(frozen=True)
class Gated(Architecture):
    """Toy spec: ``f(x) = v . (tanh(W x + b) * sigmoid(U x))`` with ``units`` hidden units."""

    kind: ClassVar[str] = "toy-gated"
    units: int = 4
    sigma_w: float = 1.0
    sigma_b: float = 0.1

    def _make(self, input_shape):
        return GatedNet(math.prod(input_shape), self.units)


class GatedNet(nn.Module):
    def __init__(self, d, units):
        super().__init__()
        self.value = nn.Linear(d, units)
        self.gate = nn.Linear(d, units, bias=False)
        self.out = nn.Linear(units, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x))).squeeze(-1)


def test_a_toy_architecture_defined_in_the_test_runs_through_sgdbayes_run(tmp_path):
    """The spec above is a frozen dataclass with defaulted fields and ``_make``; registered, the config
    parser builds it, the SGD engine trains it through torch.func and ep-conditional gets its
    Monte Carlo kernel through the same protocol."""
    config = tmp_path / "c.toml"
    toy = '[arch]\nkind = "toy-gated"\nunits = 3\nsigma_b = 0.2'
    config.write_text(BASE.format(arch=toy).split("[estimators.tilting]")[0] + "[analysis]\nmin_count = 1\nn_boot = 10\n")
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_runs"] == 16 and summary["n_fit"] > 0
    extras = json.loads((tmp_path / "out" / "cases" / "main" / "extras.json").read_text())
    assert extras["ep"]["kernel_method"] == "monte-carlo" and extras["ep"]["kernel_samples"] > 0
    assert "toy-gated" in (tmp_path / "out" / "config.toml").read_text()
