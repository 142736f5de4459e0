"""Fixed-budget training (``TrainSpec(stop="budget")``): every run trains exactly ``max_epochs`` epochs,
fitted or not, and equals a lone torch.optim run of the same budget step by step (float64)."""

import pytest
import torch

import sampler
from sampler.store import shard_meta
from sampler.sgd import TrainSpec, iter_runs, reference_run, sgd_shard

from test_sgd import _trajectories

D64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    # m = 20 with batch 6: a short last batch (20 = 3 * 6 + 2).
    return sampler.load_split("digits", n_train=20, n_test=10, seed=2)


def _engine(arch, split, spec, runs, ensemble):
    return _trajectories(arch, split, spec, runs, ensemble)  # test_sgd's: per run, its parameters after each step


@pytest.mark.parametrize("optimizer,lr,loss", [("sgd", 0.3, "ce"), ("adam", 0.02, "mse")])
def test_budget_runs_equal_lone_torch_optim_runs_of_the_same_budget(digits, optimizer, lr, loss):
    arch = sampler.FCN(depth=1, width=6)
    spec = TrainSpec(optimizer=optimizer, lr=lr, loss=loss, batch_size=6, max_epochs=12, stop="budget")
    runs = [3, 0, 8]
    traj, rows = _engine(arch, digits, spec, runs, ensemble=2)  # run 8 replaces a finished one
    steps = spec.max_epochs * spec.steps_per_epoch(digits.n_train)
    for r in runs:
        ref_traj = []
        ref = reference_run(arch, digits, spec, seed=5, run=r, dtype=D64,
                            callback=lambda net: ref_traj.append([p.detach().clone() for p in net.parameters()]))
        assert len(traj[r]) == len(ref_traj) == steps  # the whole budget, fitted early or not
        for ours, theirs in zip(traj[r], ref_traj):
            for p, q in zip(ours, theirs):
                torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        row = rows[r]
        assert (row["function"], row["fit"], row["epochs"]) == (ref["function"], ref["fit"], spec.max_epochs)
        for key in ("final_loss", "test_loss", "train_error", "test_error"):
            assert row[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
        # the test error is the function's disagreement with E's labels (independent of the engine's count)
        wrong = sum(b != str(int(y)) for b, y in zip(row["function"], digits.y_test.tolist()))
        assert row["test_error"] == pytest.approx(wrong / digits.n_test)


def test_budget_trains_past_the_fit_and_records_every_run_in_the_shard(digits):
    arch = sampler.FCN(depth=1, width=16)
    fit_spec = TrainSpec(lr=0.5, batch_size=5, max_epochs=40)
    budget = TrainSpec(lr=0.5, batch_size=5, max_epochs=40, stop="budget")
    early = {int(r): int(e) for c in iter_runs(arch, digits, fit_spec, range(4), seed=1, dtype=D64)
             for r, e, f in zip(c.runs, c.epochs, c.fit) if f}
    assert early and min(early.values()) < 40  # some runs fit early when stopping at the fit
    table = sgd_shard(arch, digits, budget, seed=1, start=0, stop=4, ensemble=3, dtype=D64)
    _, info = shard_meta(table)
    got = info["budget"]
    assert set(got) == {"fit", "train_error", "test_error", "train_loss", "test_loss"}
    assert all(len(v) == 4 for v in got.values())
    assert info["epochs"] == [40] * sum(got["fit"])
    for r in range(4):
        ref = reference_run(arch, digits, budget, seed=1, run=r, dtype=D64)
        assert got["fit"][r] == ref["fit"]
        assert got["train_error"][r] == pytest.approx(ref["train_error"], abs=1e-12)
        assert got["test_error"][r] == pytest.approx(ref["test_error"], abs=1e-12)
        assert got["test_loss"][r] == pytest.approx(ref["test_loss"], rel=1e-9)
        assert got["fit"][r] == (got["train_error"][r] == 0)
    assert table.column("count").to_numpy().sum() == sum(got["fit"])  # functions of the fitted runs only


def test_default_stop_leaves_the_spec_dict_and_its_fingerprint_as_before():
    assert list(TrainSpec().to_dict()) == ["optimizer", "lr", "batch_size", "loss", "momentum", "max_epochs",
                                           "epochs_after_fit", "check_every"]
    assert TrainSpec(stop="budget").to_dict()["stop"] == "budget"


@pytest.mark.parametrize("kwargs,match", [({"stop": "loss"}, "stop"),
                                          ({"stop": "budget", "epochs_after_fit": 2}, "epochs_after_fit=0"),
                                          ({"stop": "budget", "check_every": 3}, "check_every=None")])
def test_stop_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainSpec(**kwargs)


def test_sample_sgd_takes_the_budget_and_counts_only_runs_that_fit(digits):
    arch = sampler.FCN(depth=1, width=3)
    spec = TrainSpec(lr=0.3, batch_size=5, max_epochs=5, stop="budget")
    counts = sampler.sample_sgd(arch, digits, 6, lr=0.3, batch_size=5, max_epochs=5, stop="budget", seed=2,
                                progress=False)
    _, info = shard_meta(sgd_shard(arch, digits, spec, seed=2, start=0, stop=6))
    assert counts.n_runs == 6 and counts.n_fit == sum(info["budget"]["fit"]) == len(info["epochs"])
