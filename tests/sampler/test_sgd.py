"""P_SGD engine: torch.optim equivalence, determinism, independence of layout, stopping, errors, resume."""

import math

import pytest
import torch

import sampler
from sampler.optimizers import OPTIMIZERS
from sampler.sgd import TrainSpec, iter_runs, reference_run, sample_sgd, train_runs

D64 = torch.float64


@pytest.fixture(scope="module")
def boolean():
    return sampler.load_split("boolean", n_train=32, n_test=32, seed=1, target="majority")


@pytest.fixture(scope="module")
def digits():
    # m = 20 with batch 6: a short last batch (20 = 3 * 6 + 2).
    return sampler.load_split("digits", n_train=20, n_test=10, seed=2)


SMALL = sampler.FCN(depth=2, width=8)
FAST = TrainSpec(lr=0.5, batch_size=8, max_epochs=60)


def _table_dict(table):
    return {k: table.column(k).to_pylist() for k in table.column_names}


# one member == a lone torch.optim run, step by step ------------------------------------------------
def _trajectories(arch, split, spec, runs, ensemble):
    """Per run, the list of its parameters after each step, from the engine."""
    traj = {r: [] for r in runs}

    def on_step(slot_runs, params):
        for j, r in enumerate(slot_runs.tolist()):
            if r in traj:
                traj[r].append([p[j].detach().clone() for p in params])

    rows = {}
    for chunk in iter_runs(arch, split, spec, runs, seed=5, ensemble=ensemble, dtype=D64, on_step=on_step):
        for i, r in enumerate(chunk.runs.tolist()):
            rows[r] = {"function": chunk.functions[i], "fit": bool(chunk.fit[i]), "epochs": int(chunk.epochs[i]),
                       "final_loss": float(chunk.final_loss[i]), "train_error": float(chunk.train_error[i]),
                       "test_error": float(chunk.test_error[i]), "test_loss": float(chunk.test_loss[i])}
    return traj, rows


def assert_members_follow_lone_runs(arch, split, spec, runs, ensemble=2):
    """Every run's parameters after each engine step equal a lone torch.optim run's (float64), and so
    do its function, fit and epochs. Returns the engine's rows and the lone runs, by run."""
    traj, rows = _trajectories(arch, split, spec, runs, ensemble=ensemble)
    refs = {}
    for r in runs:
        ref_traj = []
        ref = reference_run(arch, split, spec, seed=5, run=r, dtype=D64,
                            callback=lambda net: ref_traj.append([p.detach().clone() for p in net.parameters()]))
        assert len(ref_traj) == len(traj[r]) > 0
        for ours, theirs in zip(traj[r], ref_traj):
            for p, q in zip(ours, theirs):
                torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
        row = rows[r]
        assert (row["function"], row["fit"], row["epochs"]) == (ref["function"], ref["fit"], ref["epochs"])
        refs[r] = ref
    return rows, refs


@pytest.mark.parametrize("optimizer,lr,momentum,loss", [
    ("sgd", 0.3, 0.0, "ce"), ("sgd", 0.1, 0.9, "mse"), ("adam", 0.01, 0.0, "ce"),
    ("adagrad", 0.05, 0.0, "mse"), ("adadelta", 1.0, 0.0, "ce"), ("rmsprop", 0.005, 0.0, "ce")])
def test_member_follows_lone_torch_optim_step_by_step(digits, optimizer, lr, momentum, loss):
    arch = sampler.FCN(depth=1, width=6)
    spec = TrainSpec(optimizer=optimizer, lr=lr, momentum=momentum, loss=loss, batch_size=6, max_epochs=4)
    # ensemble 2 < 3 runs: run 8 replaces whichever finishes first, mid-way
    rows, refs = assert_members_follow_lone_runs(arch, digits, spec, [3, 0, 8], ensemble=2)
    for r, ref in refs.items():
        assert rows[r]["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-9)


def test_all_optimisers_are_tested():
    assert set(OPTIMIZERS) == {"sgd", "adam", "adagrad", "adadelta", "rmsprop"}


@pytest.mark.parametrize("arch", [sampler.CNN(depth=1, channels=2, kernel_size=3),
                                  sampler.LSTM(hidden=4)], ids=["cnn", "lstm"])
def test_cnn_and_lstm_members_follow_torch_optim(arch):
    split = sampler.load_split("digits", n_train=12, n_test=6, seed=0)
    spec = TrainSpec(optimizer="adam", lr=0.02, batch_size=4, max_epochs=3)
    traj, _ = _trajectories(arch, split, spec, [1, 2], ensemble=2)
    ref_traj = []
    reference_run(arch, split, spec, seed=5, run=2, dtype=D64,
                  callback=lambda net: ref_traj.append([p.detach().clone() for p in net.parameters()]))
    assert len(ref_traj) == len(traj[2])
    for ours, theirs in zip(traj[2], ref_traj):
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("after,check_every", [(2, None), (0, 3), (1, 5)])
def test_stopping_rules_match_reference(boolean, after, check_every):
    spec = TrainSpec(lr=0.1, batch_size=6, max_epochs=60, epochs_after_fit=after, check_every=check_every)
    table = _table_dict(train_runs(SMALL, boolean, spec, seed=5, start=0, stop=3, ensemble=2, dtype=D64))
    assert any(table["fit"])
    for r in range(3):
        ref = reference_run(SMALL, boolean, spec, seed=5, run=r, dtype=D64)
        assert (table["function"][r], table["fit"][r], table["epochs"][r]) == \
            (ref["function"], ref["fit"], ref["epochs"])
        assert table["final_loss"][r] == pytest.approx(ref["final_loss"], rel=1e-8)


# determinism and independence ---------------------------------------------------------------------
def test_same_seed_same_counts_other_seed_differs(boolean):
    a = sample_sgd(SMALL, boolean, 24, lr=0.5, batch_size=8, seed=3, max_epochs=60, ensemble=10, progress=False)
    b = sample_sgd(SMALL, boolean, 24, lr=0.5, batch_size=8, seed=3, max_epochs=60, ensemble=10, progress=False)
    c = sample_sgd(SMALL, boolean, 24, lr=0.5, batch_size=8, seed=4, max_epochs=60, ensemble=10, progress=False)
    assert a == b
    assert a.n_runs == 24 and a.n_fit > 0
    assert a.counts != c.counts


def test_independent_of_ensemble_size_and_shards(boolean):
    whole = _table_dict(train_runs(SMALL, boolean, FAST, seed=9, start=0, stop=20, ensemble=20))
    small = _table_dict(train_runs(SMALL, boolean, FAST, seed=9, start=0, stop=20, ensemble=3))
    parts = [_table_dict(train_runs(SMALL, boolean, FAST, seed=9, start=a, stop=b, ensemble=e))
             for a, b, e in [(0, 7, 4), (7, 8, 1), (8, 20, 5)]]
    joined = {k: sum((p[k] for p in parts), []) for k in whole}
    assert whole["run"] == list(range(20))
    assert small == whole  # bit for bit, final losses included
    assert joined == whole


def test_every_counted_function_fits_and_is_what_the_member_computes(boolean):
    table = _table_dict(train_runs(SMALL, boolean, FAST, seed=2, start=0, stop=16, ensemble=16))
    sample = [0, 5, 9, 15]
    members: dict = {}
    for _ in iter_runs(SMALL, boolean, FAST, sample, seed=2, ensemble=3, keep_members=sample, members=members):
        pass
    assert sorted(members) == sample
    for r in sample:
        net = members[r]
        with torch.no_grad():
            train_pred = (net(boolean.x_train) > 0).long()
            test_bits = "".join("1" if v > 0 else "0" for v in net(boolean.x_test).tolist())
        assert test_bits == table["function"][r]
        assert table["fit"][r] == bool(torch.equal(train_pred, boolean.y_train))
    assert all(table["fit"][r] for r in sample)


def test_non_fitting_runs_are_reported(boolean):
    spec = TrainSpec(lr=1e-4, batch_size=8, max_epochs=2)
    table = _table_dict(train_runs(SMALL, boolean, spec, seed=0, start=0, stop=6, ensemble=4))
    assert table["fit"] == [False] * 6 and table["epochs"] == [2] * 6
    assert all(math.isfinite(v) for v in table["final_loss"])
    counts = sample_sgd(SMALL, boolean, 6, lr=1e-4, batch_size=8, max_epochs=2, progress=False)
    assert (counts.n_runs, counts.n_fit, counts.n_functions) == (6, 0, 0)


def test_diverging_runs_are_reported_with_a_warning(boolean):
    spec = TrainSpec(lr=1e12, batch_size=8, loss="mse", max_epochs=5)
    with pytest.warns(RuntimeWarning, match="diverged"):
        table = _table_dict(train_runs(SMALL, boolean, spec, seed=0, start=0, stop=3, ensemble=3))
    assert not any(table["fit"]) and all(math.isnan(v) for v in table["final_loss"])


def test_progress_callable_and_table_schema(boolean):
    seen = []
    table = train_runs(SMALL, boolean, FAST, seed=0, start=4, stop=9, ensemble=2,
                       progress=lambda done, fit: seen.append((done, fit)))
    assert seen[-1][0] == 5 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert [str(t) for t in table.schema.types] == ["int64", "string", "bool", "int32", "double"]
    assert table.column_names == ["run", "function", "fit", "epochs", "final_loss"]
    assert table.column("run").to_pylist() == [4, 5, 6, 7, 8]
    assert {len(f) for f in table.column("function").to_pylist()} == {boolean.n_test}


# run folders --------------------------------------------------------------------------------------
def test_run_folder_resumes_after_interruption(boolean, tmp_path):
    kw = dict(lr=0.5, batch_size=8, seed=1, max_epochs=60, ensemble=4, shard_size=5)
    reference = sample_sgd(SMALL, boolean, 13, progress=False, **kw)

    def stop_after_first_shard(done, fit):
        if done > 6:
            raise KeyboardInterrupt

    folder = sampler.RunFolder(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        sample_sgd(SMALL, boolean, 13, run_folder=folder, progress=stop_after_first_shard, **kw)
    assert folder.shard_indices("sgd") == [0]
    resumed = sample_sgd(SMALL, boolean, 13, run_folder=tmp_path / "run", progress=False, **kw)
    assert folder.shard_indices("sgd") == [0, 1, 2]
    assert resumed == reference
    again = sample_sgd(SMALL, boolean, 13, run_folder=folder, progress=lambda d, f: None, **kw)
    assert again == reference
    with pytest.raises(ValueError, match=r"holds \{'start': 0, 'stop': 5\}, this run plans"):  # shard_size
        sample_sgd(SMALL, boolean, 13, run_folder=folder, progress=False, **{**kw, "shard_size": 4})
    with pytest.raises(ValueError, match="written by another config"):  # seed
        sample_sgd(SMALL, boolean, 13, run_folder=folder, progress=False, **{**kw, "seed": 2})


# bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    ({"optimizer": "sdg"}, ValueError, r"optimizer must be one of .*did you mean 'sgd'"),
    ({"lr": 0.0}, ValueError, "lr must be > 0"),
    ({"lr": -1.0}, ValueError, "lr must be > 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"loss": "hinge"}, ValueError, "loss must be one of"),
    ({"momentum": 0.9, "optimizer": "adam"}, ValueError, "momentum is only for optimizer 'sgd'"),
    ({"max_epochs": 0}, ValueError, "max_epochs must be >= 1"),
    ({"check_every": 0}, ValueError, "check_every must be None"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
])
def test_train_spec_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainSpec(**kwargs)


def test_errors_at_the_public_boundary(boolean):
    with pytest.raises(ValueError, match=r"batch_size must be <= the training set size m=32, got batch_size=33"):
        sample_sgd(SMALL, boolean, 4, batch_size=33, progress=False)
    with pytest.raises(ValueError, match="batch_size must be <= the training set size"):
        train_runs(SMALL, boolean, TrainSpec(batch_size=64), seed=0, start=0, stop=2)
    with pytest.raises(ValueError, match="n_runs must be >= 1"):
        sample_sgd(SMALL, boolean, 0, progress=False)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        sample_sgd(SMALL, boolean, 4, optimizer="adamw", progress=False)
    with pytest.raises(ValueError, match="lr must be > 0"):
        sample_sgd(SMALL, boolean, 4, lr=0, progress=False)
    with pytest.raises(ValueError, match="stop must be > start"):
        train_runs(SMALL, boolean, FAST, seed=0, start=3, stop=3)
    with pytest.raises(ValueError, match="device must be one of"):
        sample_sgd(SMALL, boolean, 4, batch_size=8, device="tpu", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            sample_sgd(SMALL, boolean, 4, batch_size=8, device="cuda", progress=False)
    with pytest.raises(TypeError, match="spec must be a TrainSpec"):
        train_runs(SMALL, boolean, {"lr": 0.1}, seed=0, start=0, stop=2)


def test_independent_of_ensemble_size_adam_short_batches_check_every(digits):
    spec = TrainSpec(optimizer="adam", lr=0.02, batch_size=6, max_epochs=25, check_every=4, epochs_after_fit=1)
    a = _table_dict(train_runs(SMALL, digits, spec, seed=1, start=0, stop=9, ensemble=9))
    b = _table_dict(train_runs(SMALL, digits, spec, seed=1, start=0, stop=9, ensemble=2))
    assert a == b
    assert any(a["fit"])


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_member_loss_grads_is_the_gradient_of_member_losses(loss):
    from sampler.sgd import member_loss_grads, member_losses

    g = torch.Generator().manual_seed(5)
    out = torch.randn(4, 70, dtype=torch.float64, generator=g).mul_(3).requires_grad_()
    labels = (torch.rand(4, 70, generator=g) > 0.5).long()
    weights = (torch.rand(4, 70, generator=g) > 0.2).double()
    ref, = torch.autograd.grad(member_losses(out, labels, loss, weights).sum(), out)
    torch.testing.assert_close(member_loss_grads(out, labels, loss, weights), ref, rtol=1e-12, atol=1e-15)
    ref1, = torch.autograd.grad(member_losses(out, labels[0], loss).sum(), out)
    torch.testing.assert_close(member_loss_grads(out, labels[0], loss), ref1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.int32, "float32", torch.float16])
def test_train_runs_names_a_bad_dtype(dtype):
    split = sampler.load_split("boolean", n_train=16, n_test=8, seed=0, target="parity")
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        train_runs(sampler.FCN(depth=1, width=8), split, TrainSpec(batch_size=4), seed=0, start=0, stop=2,
                   dtype=dtype)


def test_everything_after_n_runs_is_keyword_only(boolean):
    """Guards: ``sample_sgd(arch, split, 10, "sgd", 0.1, 32, "ce", 3)`` passed the seed by position."""
    with pytest.raises(TypeError, match="positional"):
        sample_sgd(SMALL, boolean, 4, "sgd", 0.1, 8, "ce", 3, progress=False)


def test_a_run_folder_in_use_is_refused(boolean, tmp_path):
    """Guards: two sample_sgd calls on one run folder wrote into it at once."""
    folder = sampler.RunFolder(tmp_path / "run")
    with folder.lock():
        with pytest.raises(sampler.store.FolderBusyError, match="in use by pid"):
            sample_sgd(SMALL, boolean, 4, lr=0.5, batch_size=8, run_folder=folder, progress=False)
    assert folder.shard_indices("sgd") == []
