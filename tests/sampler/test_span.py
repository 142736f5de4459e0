"""Training in the span of the split's inputs (sampler._span) against the full path, which is independent
code: run by run in float64 (weights, outputs on S and E, functions, epochs), and as distributions of
functions on the default experiment's settings in float32 (chi-square test of homogeneity)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import sampler
from analysis.stats import homogeneity
from sampler._span import BoundFirstLayer, first_layer, span_allowed, span_basis
from sampler.optimizers import OPTIMIZERS, ROTATION_EQUIVARIANT
from sampler.sgd import TrainSpec, iter_runs, sgd_shard, train_runs
from sampler.store import shard_meta

D64 = torch.float64
#: Level of the homogeneity test (a false alarm once in 1000 seeds).
LEVEL = 1e-3


@pytest.fixture(scope="module")
def mnist():
    return sampler.load_split("mnist", n_train=24, n_test=8, seed=3)


def _runs(arch, split, spec, runs, *, span, seed=4, ensemble=4, dtype=D64):
    """Per run: its row, and its trained member (a module in input coordinates); and the first-layer info."""
    members, rows, infos = {}, {}, set()
    for c in iter_runs(arch, split, spec, runs, seed=seed, ensemble=ensemble, dtype=dtype, span=span,
                       keep_members=runs, members=members):
        infos.add(c.first_layer["first_layer"])
        for i, r in enumerate(c.runs.tolist()):
            rows[r] = (c.functions[i], bool(c.fit[i]), int(c.epochs[i]), float(c.final_loss[i]))
    return rows, members, infos


def assert_span_matches_full(arch, split, spec, runs):
    """Per run (float64): the span path's trained weights, outputs on S and E, function, fit, epochs and
    final loss equal the full path's."""
    full, full_members, kinds = _runs(arch, split, spec, runs, span=False)
    assert kinds == {"full"}
    proj, proj_members, kinds = _runs(arch, split, spec, runs, span=True)
    assert kinds == {"span"}
    x = torch.cat([split.x_train, split.x_test]).to(D64)
    for r in runs:
        assert proj[r][:3] == full[r][:3], r
        assert proj[r][3] == pytest.approx(full[r][3], rel=1e-9, abs=1e-12)
        a, b = full_members[r], proj_members[r]
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            scale = max(1.0, float(p.abs().max()))  # rounding grows with the weights
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-10 * scale, msg=f"run {r} {name}")
        with torch.no_grad():
            out = a(x)
            torch.testing.assert_close(b(x), out, rtol=1e-9, atol=1e-10 * max(1.0, float(out.abs().max())))
    assert sum(row[1] for row in full.values()) > 0  # the comparison covers runs that fit


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_span_path_equals_full_path_run_by_run(mnist, momentum):
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=7, momentum=momentum, max_epochs=40)  # short last batch
    assert_span_matches_full(sampler.FCN(depth=2, width=16), mnist, spec, [0, 3, 5, 6, 9])


def test_span_path_of_a_linear_model_and_mse(mnist):
    # depth 0: the first layer is the readout itself
    spec = TrainSpec(optimizer="sgd", lr=0.005, batch_size=8, loss="mse", max_epochs=30)
    assert_span_matches_full(sampler.FCN(depth=0), mnist, spec, [1, 2])


def test_span_path_does_not_depend_on_the_ensemble_size(mnist):
    spec = TrainSpec(lr=0.1, batch_size=8, max_epochs=10)
    arch = sampler.FCN(depth=2, width=8)
    a = train_runs(arch, mnist, spec, seed=0, start=0, stop=6, ensemble=2, span=True)
    b = train_runs(arch, mnist, spec, seed=0, start=0, stop=6, ensemble=6, span=True)
    assert a.equals(b)


def test_rank_deficient_inputs(mnist):
    """Points in a 5-dimensional subspace of the 784 (r = 5 < m + k = 32): the basis has rank 5, holds the
    points to rounding, and training in it is exact."""
    g = torch.Generator().manual_seed(0)
    # small integers over 8: exact in float32, so the points lie in the subspace exactly
    basis = torch.randint(-3, 4, (5, 784), generator=g).to(D64)
    coef = torch.randint(-2, 3, (32, 5), generator=g).to(D64)
    coef[-4:] = coef[:4]  # duplicates of training points in E
    x = (coef @ basis / 8).float()
    assert torch.equal(x.to(D64), coef @ basis / 8)
    y = (coef[:, 0] > 0).long()  # labels the network can fit
    split = dataclasses.replace(mnist, x_train=x[:24], x_test=x[24:], y_train=y[:24], y_test=y[24:])
    v = span_basis(torch.cat([split.x_train, split.x_test]))
    assert v.shape == (784, 5)
    torch.testing.assert_close(v.T @ v, torch.eye(5, dtype=D64), atol=1e-12, rtol=0)
    x64 = x.to(D64)
    assert float((x64 - x64 @ v @ v.T).abs().max()) < 1e-12 * float(x64.abs().max())
    spec = TrainSpec(optimizer="sgd", lr=0.05, batch_size=8, momentum=0.5, max_epochs=40)
    layer = first_layer(sampler.FCN(depth=1, width=8), spec, split.x_train, split.x_test)
    assert (layer.kind, layer.rank) == ("span", 5)
    assert_span_matches_full(sampler.FCN(depth=1, width=8), split, spec, [0, 1, 2])


def test_full_rank_inputs_keep_the_full_path_and_a_rotation_is_exact():
    """r == d (Boolean: 64 points of 7 bits span all 7): automatic keeps the full path; span=True
    trains in a rotated basis, still exact."""
    split = sampler.load_split("boolean", n_train=32, n_test=32, seed=1, target="majority")
    arch, spec = sampler.FCN(depth=2, width=8), TrainSpec(lr=0.5, batch_size=8, max_epochs=60)
    layer = first_layer(arch, spec, split.x_train, split.x_test)
    assert (layer.kind, layer.rank, layer.input_dim) == ("full", 7, 7)
    assert "all 7" in layer.reason
    assert_span_matches_full(arch, split, spec, [0, 1, 2, 3])


@pytest.mark.parametrize("name", sorted(set(OPTIMIZERS) - ROTATION_EQUIVARIANT))
def test_per_coordinate_optimizers_keep_the_full_path(mnist, name):
    spec = TrainSpec(optimizer=name, lr=0.01, batch_size=8, max_epochs=2)
    table = sgd_shard(sampler.FCN(depth=1, width=4), mnist, spec, seed=0, start=0, stop=2, ensemble=2)
    info = shard_meta(table)[1]
    assert info["first_layer"] == "full" and info["input_dim"] == 784
    assert name in info["first_layer_reason"] and "rotation" in info["first_layer_reason"]
    with pytest.raises(ValueError, match=f"span=True.*{name}"):
        sgd_shard(sampler.FCN(depth=1, width=4), mnist, spec, seed=0, start=0, stop=2, span=True)


def test_the_decision(mnist):
    sgd = TrainSpec()
    fcn = sampler.FCN(depth=1, width=4)
    assert span_allowed(fcn, sgd) == (True, span_allowed(fcn, sgd)[1])
    assert not span_allowed(fcn, sgd, rank=784, input_dim=784)[0]
    assert span_allowed(fcn, sgd, rank=32, input_dim=784)[0]
    ok, why = span_allowed(sampler.CNN(depth=1, channels=2), sgd)
    assert not ok and "'cnn'" in why
    assert not span_allowed(sampler.LSTM(hidden=2), sgd)[0]
    ok, why = span_allowed(fcn, sgd, on_step=lambda runs, params: None)
    assert not ok and "on_step" in why
    # on_step forces the full path in the engine
    chunks = list(iter_runs(fcn, mnist, TrainSpec(batch_size=8, max_epochs=1), [0], seed=0,
                            on_step=lambda runs, params: None))
    assert chunks[0].first_layer["first_layer"] == "full"
    # so does a measure of the trained members (sharpness is coordinate-dependent); it still measures
    ok, why = span_allowed(fcn, sgd, measure=lambda runs, params: {})
    assert not ok and "measure" in why
    chunks = list(iter_runs(fcn, mnist, TrainSpec(batch_size=8, max_epochs=30), [0, 1], seed=0,
                            measure=lambda runs, params: {"n": np.full(len(runs), float(params[0].shape[-1]))}))
    assert {c.first_layer["first_layer"] for c in chunks} == {"full"}
    assert all(np.all(c.measures["n"][c.fit] == 784) for c in chunks if c.fit.any())
    info = shard_meta(sgd_shard(fcn, mnist, TrainSpec(batch_size=8, max_epochs=1), seed=0, start=0, stop=1))[1]
    assert (info["first_layer"], info["span_rank"], info["input_dim"]) == ("span", 32, 784)
    layer = first_layer(fcn, sgd, mnist.x_train, mnist.x_test)
    assert (layer.rank, layer.train_rank) == (32, 24)  # E adds 8 directions, which training never updates
    v, xs = layer.basis, mnist.x_train.to(D64)
    torch.testing.assert_close(v.T @ v, torch.eye(32, dtype=D64), atol=1e-12, rtol=0)
    vs = v[:, :24]
    assert float((xs - xs @ vs @ vs.T).abs().max()) < 1e-12 * float(xs.abs().max())
    with pytest.raises(TypeError, match="span must be None"):
        first_layer(fcn, sgd, mnist.x_train, mnist.x_test, span="yes")


def test_function_distributions_agree_on_the_default_settings(monkeypatch):
    """configs/default.toml's split, FCN and SGD settings (float32): the functions of 256 runs on the span
    path (seed 0) and 128 on the full path (seed 1, independent runs; the costly side) pass a chi-square test of
    homogeneity at level 1e-3. Power: the same test rejects a span path whose first weight is drawn
    with the projected fan-in r instead of d (the likely bug), at the same level."""
    split = sampler.load_split("mnist", n_train=100, n_test=20, seed=0)
    arch = sampler.FCN(depth=2, width=64, activation="relu", sigma_w=1.0, sigma_b=0.0357)
    spec = TrainSpec(optimizer="sgd", lr=0.1, batch_size=32, loss="ce", max_epochs=200)
    def counts(seed, span, n):
        table = sgd_shard(arch, split, spec, seed=seed, start=0, stop=n, ensemble=n, span=span)
        assert shard_meta(table)[1]["first_layer"] == ("span" if span else "full")
        return dict(zip(table.column("function").to_pylist(), table.column("count").to_pylist()))

    def test(a, b):
        keys = sorted(set(a) | set(b))
        return homogeneity(np.array([a.get(k, 0) for k in keys]), np.array([b.get(k, 0) for k in keys]))

    a, b = counts(0, True, 256), counts(1, False, 128)
    assert sum(a.values()) > 0.95 * 256 and sum(b.values()) > 0.95 * 128
    same = test(a, b)
    assert same.n_cells >= 4
    assert same.pvalue > LEVEL, same

    right = BoundFirstLayer.init

    def wrong_fan_in(self, generators):
        params = right(self, generators)
        params[0] = params[0] * math.sqrt(self.layer.input_dim / self.layer.rank)
        return params

    monkeypatch.setattr(BoundFirstLayer, "init", wrong_fan_in)
    assert test(a, counts(2, True, 128)).pvalue < LEVEL
