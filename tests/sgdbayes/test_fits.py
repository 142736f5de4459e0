"""Explicit per-case state: the EP fit on S and the kernel are made once per case into the run
folder (``cases/<case>/fits/``) and read back by shards and extras; extras stay namespaced by label."""

import json

import pytest

import nngp
from sampler.store import ShardError
from sgdbayes.config import load_config
from sgdbayes.pipeline import make_fits, run_experiment

TINY = ["data.dataset=boolean", "data.target=majority", "data.n_train=16", "data.n_test=8", "arch.width=8",
        "estimators.sgd.n_runs=24", "estimators.sgd.ensemble=12", "estimators.sgd.shard_size=12",
        "estimators.sgd.batch_size=4", "estimators.sgd.max_epochs=50", "estimators.tilting.top=2",
        "estimators.tilting.n_samples=100", "estimators.ep.group=2", "analysis.n_boot=10"]


@pytest.fixture
def ep_fits(monkeypatch):
    """Counts the EP fits on S (calls of nngp.train_posterior)."""
    calls = []
    real = nngp.train_posterior

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nngp, "train_posterior", counting)
    return calls


def test_the_ep_fit_on_s_is_made_once_per_case_and_never_again(tmp_path, ep_fits):
    """Guards: a process-wide lru_cache carried the EP fit; under Ray the driver refitted it for
    the report. Now a fit stage writes it once into the folder, shards (several here: group = 2)
    and the extras read it, and rerunning a finished folder fits nothing."""
    config = load_config(None, TINY)
    run_experiment(config, tmp_path, progress=False)
    assert len(ep_fits) == 1
    fits = tmp_path / "cases" / "main" / "fits"
    assert sorted(p.name for p in fits.iterdir()) == ["kernel.pt", "log_ps_tilting_100_0.pt", "posterior.pt"]
    run_experiment(config, tmp_path, progress=False)
    assert len(ep_fits) == 1


def test_a_two_point_sweep_fits_each_case_once(tmp_path, ep_fits):
    """Guards: with the lru_cache of one entry, a sweep computed the EP fit about twice per case."""
    config = load_config(None, TINY + ["sweep.kind=width", "sweep.axes={'arch.width' = [8, 16]}"])
    run_experiment(config, tmp_path, progress=False)
    assert len(ep_fits) == 2


def test_a_fit_of_another_case_is_refused(tmp_path):
    """A fit records what it was made for: a folder's fit cannot be read for other data."""
    case = load_config(None, TINY).cases()[0].prepared(tmp_path)
    make_fits([case], progress=False)
    other = load_config(None, TINY + ["data.seed=1"]).cases()[0].prepared(tmp_path)
    with pytest.raises(ShardError, match=r"posterior\.pt was made for another data"):
        other.fit("posterior")
    with pytest.raises(FileNotFoundError, match="not made yet"):
        case.fit("nothing")


def test_two_ep_estimators_keep_their_own_extras(tmp_path):
    """Guards: per-estimator extras were merged into one namespace of summary.json, so a second EP
    estimator's log P(S) and facts were dropped (the first one's won). They stay under each label."""
    config = load_config(None, TINY + ["estimators.ep2.method=ep", "estimators.ep2.top=3",
                                       "estimators.ep2.min_count=2", "report.pairs=[['sgd', 'ep'], ['sgd', 'ep2']]"])
    run_experiment(config, tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    extras = summary["extras"]
    assert set(extras) == {"sgd", "ep", "tilting", "ep2"}
    for label in ("ep", "ep2"):
        assert extras[label]["log_p_s"] == pytest.approx(summary["log_p_s"])
    assert extras["ep2"]["ep_functions"] <= 3 < extras["ep"]["ep_functions"]
    on_disk = json.loads((tmp_path / "cases" / "main" / "extras.json").read_text())
    assert on_disk["ep2"]["ep_functions"] == extras["ep2"]["ep_functions"]
