"""sampler.network_check: a network that cannot be trained is one line before any training (issue 26).

Each class of broken module below ended, on the code before issue 26, in a 30-80 line traceback from
inside torch (forward or factory raising, random numbers in forward, integer outputs) or in a run
that "succeeded" with nothing fit (NaN at initialisation, an output activation).
"""

import json
import sys
import textwrap

import pytest

import sampler
from sampler.network_check import check_network
from sgdbayes.cli import main

BROKEN = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, d, how):
        super().__init__()
        self.lin, self.out, self.how = nn.Linear(d, 6), nn.Linear(6, 1), how

    def forward(self, x):
        h = torch.tanh(self.lin(x.flatten(1)))
        if self.how == "noise":
            h = h + 0.1 * torch.randn_like(h)
        if self.how == "constant":
            h = torch.tanh(self.lin(torch.zeros_like(x.flatten(1))))
        o = self.out(h)
        if self.how == "nan":
            return torch.log(-o.abs() - 1)
        if self.how == "raises" and x.shape[0] > 2:
            raise KeyError("the layer 'head' is not there")
        if self.how == "integer":
            return (o > 0).long()
        if self.how == "detached":
            return o.detach()
        if self.how == "sigmoid":
            return torch.sigmoid(o)
        return o


def make(shape, how="ok"):
    return Net(shape[-1], how)


def factory_raises(shape):
    return {}["missing"]
'''

CASES = {  # how -> what the one line must say
    "nan": "NaN or inf for 16 of 16 members",
    "raises": r"forward pass on .* raised KeyError: \"the layer 'head' is not there\"",
    "noise": "draws random numbers in its forward pass .* deterministic function of its parameters.*register_buffer",
    "integer": "outputs are torch.int64, not floating point",
    "detached": "do not depend on its parameters through autograd",
    "sigmoid": r"never negative .* \(remove an output activation",
    "constant": "does not depend on the input",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mods")
    (folder / "broken26.py").write_text(textwrap.dedent(BROKEN))
    sys.path.insert(0, str(folder))
    yield "broken26"
    sys.path.remove(str(folder))
    sys.modules.pop("broken26", None)


@pytest.fixture(scope="module")
def boolean():
    return sampler.load_split("boolean", n_train=32, n_test=16, seed=0, target="majority")


@pytest.mark.parametrize("how", sorted(CASES))
def test_each_broken_module_is_named_in_one_line(broken, boolean, how):
    arch = sampler.Module(factory=f"{broken}:make", kwargs={"how": how})
    with pytest.raises((ValueError, TypeError), match=CASES[how]) as info:
        check_network(arch, boolean)
    assert "\n" not in str(info.value)


def test_a_raising_factory_is_named_with_its_call(broken, boolean):
    with pytest.raises(ValueError, match=r"arch.factory 'broken26:factory_raises' raised KeyError: 'missing' when "
                                         r"called as factory_raises\(\(7,\)\)"):
        check_network(sampler.Module(factory=f"{broken}:factory_raises"), boolean)


@pytest.mark.parametrize("how", sorted(CASES) + ["factory"])
def test_the_cli_says_it_in_one_line_before_the_folder_is_written(broken, tmp_path, capsys, how):
    out = tmp_path / "run"
    factory = f"{broken}:factory_raises" if how == "factory" else f"{broken}:make"
    argv = ["run", "--out", str(out), "--no-progress", "--set", "data.dataset=boolean", "--set", "data.n_train=32",
            "--set", "data.n_test=16", "--set", "arch.kind=module", "--set", f"arch.factory={factory}",
            "--set", "estimators.sgd.n_runs=8", "--set", "estimators.sgd.ensemble=8"]
    if how != "factory":
        argv += ["--set", f"arch.kwargs={json.dumps({'how': how})}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sgdbayes run: error: "), err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("arch", [
    sampler.FCN(depth=2, width=16), sampler.FCN(depth=1, width=8, activation="erf", sigma_b=0.0),
    sampler.CNN(depth=1, channels=4), sampler.LSTM(hidden=4),
    sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 1, "width": 6}),
    sampler.Module(factory="sgdbayes.examples:resnet", kwargs={"width": 5, "blocks": 1, "hidden": 3}, init="module"),
], ids=lambda a: a.kind)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_working_networks_pass_for_any_seed(arch, seed):
    """The check must not refuse a sound network: built-ins and the examples, on data of one and of
    several input points, for several seeds of the check's members."""
    data = sampler.load_split("digits", n_train=20, n_test=10, seed=seed)
    check_network(arch, data, seed=seed)
    check_network(arch, sampler.Split.from_arrays(data.x_train[:1], data.y_train[:1], data.x_test[:1],
                                                  data.y_test[:1], input_shape=data.input_shape), seed=seed)
