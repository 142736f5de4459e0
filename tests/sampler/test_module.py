"""sampler.Module: the user's own torch module as an architecture (spec, init, training, refusals)."""

import pickle
import warnings

import pytest
import torch
from torch import nn

import sampler
from sampler.sgd import TrainSpec, train_runs
from sampler.seeding import make_generator

from test_sgd import D64, assert_members_follow_lone_runs

MLP = sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 1, "width": 6})


@pytest.fixture(scope="module")
def digits():
    return sampler.load_split("digits", n_train=20, n_test=10, seed=2)


def _with_bn(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def _with_dropout(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Dropout(0.5), nn.Linear(4, 1))


def _three_outputs(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


@pytest.mark.parametrize("optimizer,lr,momentum,loss,init", [
    ("sgd", 0.3, 0.0, "ce", "standard"), ("sgd", 0.1, 0.9, "mse", "module"), ("adam", 0.01, 0.0, "ce", "module"),
    ("adagrad", 0.05, 0.0, "mse", "standard"), ("adadelta", 1.0, 0.0, "ce", "standard"),
    ("rmsprop", 0.005, 0.0, "ce", "module")])
def test_module_members_follow_lone_torch_optim_step_by_step(digits, optimizer, lr, momentum, loss, init):
    arch = sampler.Module(factory="sgdbayes.examples:resnet", kwargs={"width": 5, "blocks": 1, "hidden": 3},
                          init=init)
    spec = TrainSpec(optimizer=optimizer, lr=lr, momentum=momentum, loss=loss, batch_size=6, max_epochs=3)
    # ensemble 2 < 3 runs: run 8 replaces whichever finishes first
    assert_members_follow_lone_runs(arch, digits, spec, [3, 0, 8], ensemble=2)


def test_generic_path_trains_the_same_runs_as_the_fcn_fast_path(digits):
    # same parameter shapes and order, standard init: same starting values, same trajectories
    spec = TrainSpec(optimizer="sgd", lr=0.2, batch_size=6, max_epochs=5)
    fcn = train_runs(sampler.FCN(depth=1, width=6), digits, spec, seed=3, start=0, stop=6, ensemble=4, dtype=D64)
    gen = train_runs(MLP, digits, spec, seed=3, start=0, stop=6, ensemble=4, dtype=D64)
    assert fcn.column("function").to_pylist() == gen.column("function").to_pylist()
    torch.testing.assert_close(torch.tensor(fcn.column("final_loss").to_pylist()),
                               torch.tensor(gen.column("final_loss").to_pylist()), rtol=1e-9, atol=1e-12)


def test_module_init_is_deterministic_and_leaves_the_global_rng_alone():
    arch = sampler.Module(factory="sgdbayes.examples:attention", kwargs={"dim": 4, "tokens": 8}, init="module")
    state, seed = torch.random.get_rng_state(), torch.initial_seed()
    a = arch.build((64,), generator=make_generator(1, "init", 0))
    b = arch.build((64,), generator=make_generator(1, "init", 0))
    c = arch.build((64,), generator=make_generator(1, "init", 1))
    assert torch.equal(torch.random.get_rng_state(), state) and torch.initial_seed() == seed
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_standard_init_is_the_fcn_rule():
    fcn = sampler.FCN(depth=1, width=6).build((64,), generator=make_generator(0, "x"))
    mod = MLP.build((64,), generator=make_generator(0, "x"))
    for p, q in zip(fcn.parameters(), mod.parameters()):
        assert torch.equal(p, q)


def test_spec_is_hashable_picklable_and_round_trips_through_its_dict():
    from sgdbayes.examples import mlp

    by_callable = sampler.Module(factory=mlp, kwargs={"width": 6, "depth": 1})
    assert by_callable == MLP and hash(by_callable) == hash(MLP)  # importable callable -> its name
    assert pickle.loads(pickle.dumps(MLP)) == MLP
    d = MLP.to_dict()
    assert d == {"kind": "module", "factory": "sgdbayes.examples:mlp", "kwargs": {"depth": 1, "width": 6},
                 "init": "standard", "sigma_w": 1.0, "sigma_b": 0.0357}
    assert sampler.make_architecture(**d) == MLP


def test_local_callable_trains_but_is_refused_where_it_must_be_written_down(digits):
    def local(input_shape):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1))

    arch = sampler.Module(factory=local)
    table = train_runs(arch, digits, TrainSpec(lr=0.1, batch_size=10, max_epochs=1), seed=0, start=0, stop=2)
    assert table.num_rows == 2
    with pytest.raises(ValueError, match="not importable by name"):
        arch.to_dict()


@pytest.mark.parametrize("factory,match", [
    (_with_bn, r"layer '2' \(BatchNorm1d\) is not supported: batch normalisation"),
    (_with_dropout, r"layer '2' \(Dropout\) is not supported: dropout \(p=0.5\)"),
    (_three_outputs, r"outputs of shape \(n,\) or \(n, 1\), got \(2, 3\)"),
])
def test_unsupported_modules_fail_before_training_naming_the_layer(digits, factory, match):
    steps = []
    with pytest.raises(ValueError, match=match):
        train_runs(sampler.Module(factory=factory), digits, TrainSpec(batch_size=10), seed=0, start=0, stop=2,
                   progress=lambda *a: steps.append(a))
    assert not steps


@pytest.mark.parametrize("fields,error,match", [
    ({"factory": "nomodule"}, ValueError, "arch.factory must be 'package.module:function'"),
    ({"factory": "no_such_pkg_xyz:f"}, ValueError, "cannot import module 'no_such_pkg_xyz'"),
    ({"factory": "sgdbayes.examples:nope"}, ValueError, "has no attribute 'nope'"),
    ({"factory": "sgdbayes.examples:math"}, ValueError, "must name a callable"),
    ({"factory": "sgdbayes.examples:mlp", "init": "xavier"}, ValueError, "arch.init"),
    ({"factory": "sgdbayes.examples:mlp", "kwargs": [1, 2]}, TypeError, "arch.kwargs must be a table"),
])
def test_spec_errors_name_the_key(fields, error, match):
    with pytest.raises(error, match=match):
        sampler.Module(**fields)


def test_prior_sampling_of_a_module_matches_the_builtin_fcn_in_distribution():
    """Prior sampling serves user modules (one network built per sample): P(S) of the mlp twin agrees
    with the built-in FCN's within binomial noise (two-proportion z-test, |z| < 5)."""
    import math

    split = sampler.load_split("boolean", n_train=6, n_test=6, seed=0, target="majority")
    n = 8192
    mod = sampler.sample_prior(sampler.Module(factory="sgdbayes.examples:mlp", kwargs={"depth": 1, "width": 8}),
                               split, n, seed=1, progress=False)
    fcn = sampler.sample_prior(sampler.FCN(depth=1, width=8), split, n, seed=2, progress=False)
    assert mod.n_fit > 50 and all(len(f) == 6 for f in mod)
    p = (mod.n_fit + fcn.n_fit) / (2 * n)
    assert abs(mod.n_fit - fcn.n_fit) / n / math.sqrt(2 * p * (1 - p) / n) < 5


# --- factories as people write them (issue 25) ----------------------------------------------------------
def _no_shape(width=8):  # most people's factory: no input_shape parameter
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 1))


class _NetClass(nn.Module):  # a class used as the factory, input size fixed inside
    def __init__(self, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x):
        return self.body(x)


def _keyword_shape(*, width=8, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.ReLU(), nn.Linear(width, 1))


@pytest.mark.parametrize("factory", [_no_shape, _NetClass, _keyword_shape], ids=["function", "class", "keyword"])
def test_factory_gets_input_shape_only_where_declared(digits, factory):
    arch = sampler.Module(factory=factory, kwargs={"width": 5})
    table = train_runs(arch, digits, TrainSpec(batch_size=10, max_epochs=3), seed=0, start=0, stop=2)
    assert table.num_rows == 2
    net = arch.build((64,), generator=make_generator(0))
    assert net(torch.zeros(3, 64)).shape == (3,)


def test_module_instance_is_refused_saying_what_to_pass(digits):
    with pytest.raises(TypeError, match=r"got a module instance \(_NetClass\); pass what builds one: the class"):
        sampler.Module(factory=_NetClass())
    with pytest.raises(TypeError, match=r"got _NetClass; for your own torch.nn.Module pass sampler.Module"):
        sampler.sample_sgd(_NetClass(), digits, 4, seed=0, progress=False)


# --- the standard initialisation takes fan-in from the layers that know it (issue 25) -----------------
class _RawParams(nn.Module):  # weights as x @ W, a bias named b: no layer tells their roles
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.empty(64, 16))
        self.b = nn.Parameter(torch.empty(16))
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(torch.tanh(x.flatten(1) @ self.W + self.b))


class _Layers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.LayerNorm(3 * 64)
        self.lin = nn.Linear(3 * 64, 5)
        self.out = nn.Linear(5, 1)

    def forward(self, x):
        return self.out(torch.relu(self.lin(self.norm(self.conv(x).flatten(1)))))


def test_standard_init_takes_fan_in_from_the_layers():
    from sampler.architectures import parameter_stds
    arch = sampler.Module(factory=_Layers, sigma_w=1.5, sigma_b=0.2)
    net = arch.build((1, 8, 8), generator=make_generator(0))
    stds = dict(zip([n for n, _ in net.named_parameters()], parameter_stds(net, 1.5, 0.2)[0]))
    assert stds["net.conv.weight"] == pytest.approx(1.5 / 3)      # fan-in 1 x 3 x 3
    assert stds["net.lin.weight"] == pytest.approx(1.5 / 192 ** 0.5) and stds["net.lin.bias"] == 0.2
    assert stds["net.norm.weight"] == 1.5 and stds["net.norm.bias"] == 0.2
    assert parameter_stds(net, 1.5, 0.2)[1] == ()                 # every role known: nothing ambiguous
    # the drawn values follow the rule (independent check: empirical std of the conv weights and biases)
    big = sampler.Module(factory=_Layers, sigma_w=1.5, sigma_b=0.2)
    draws = torch.stack([big.build((1, 8, 8), generator=make_generator(i)).net.lin.weight for i in range(20)])
    assert draws.std().item() == pytest.approx(1.5 / 192 ** 0.5, rel=0.05)


def test_parameters_whose_role_cannot_be_told_are_named(digits):
    arch = sampler.Module(factory=_RawParams)
    with pytest.warns(UserWarning, match=r"cannot tell the role of parameter\(s\) W \(64, 16\), b \(16,\)"):
        arch.build((1, 8, 8), generator=make_generator(0))
    own = sampler.Module(factory=_RawParams, init="module")  # the user's own init: nothing to tell
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        own.build((1, 8, 8), generator=make_generator(0))
