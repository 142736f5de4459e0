"""Every registered estimator passes the same checks; a toy estimator registered here runs through
`sgdbayes run` with no edit to the pipeline."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sgdbayes.cli import main
from sgdbayes.config import load_config, parse_config
from pydantic import Field

from sgdbayes.estimators import (Estimator, EstimatorResult, Options, estimator_names, get_estimator,
                                 register_estimator, shard_table)
from sgdbayes.estimators.base import SHARD_SCHEMA, shard_meta
from sgdbayes.pipeline import make_fits

BOOLEAN = ["data.dataset=boolean", "data.target=majority", "data.n_train=16", "data.n_test=8", "arch.width=8"]
TINY_OPTIONS = {
    "sgd": {"n_runs": 12, "ensemble": 6, "shard_size": 6, "lr": 0.1, "batch_size": 4, "max_epochs": 50},
    "prior": {"n_samples": 8192, "chunk": 4096, "min_fit": 10},
    "ess": {"n_samples": 64, "n_chains": 4, "burn_in": 10, "thin": 1},
    "nuts": {"n_samples": 10, "n_warmup": 10, "n_chains": 2, "max_tree_depth": 3},
    "ep-conditional": {}, "ep": {"top": 3}, "tilting": {"top": 3, "n_samples": 200},
    "ntk": {"top": 3, "n_samples": 200}, "gp-mse": {"top": 3, "n_samples": 200},
}


@register_estimator("toy-uniform")
class ToyUniform(Estimator):
    """A toy P_B scorer for the tests: every function gets log P = -k log 2, error 0.1."""

    quantity = "p_b"
    kind = "scorer"

    class Options(Options):
        top: int = Field(0, ge=0)

    def plan(self, case, options, functions=None):
        fs = list(functions or {})
        return [{"functions": fs[:options.top] if options.top else fs, "items": len(fs)}]

    def run_shard(self, case, options, shard, progress=None):
        fs = shard["functions"]
        return shard_table(fs, log_p=[-len(f) * math.log(2) for f in fs], log_p_se=[0.1] * len(fs))

    def extras(self, case, options, result):
        return {"toy_functions": len(result.functions)}


def _options(method, table):
    """``[estimators.x]`` of ``method`` with ``table``, validated by the config."""
    return parse_config({"estimators": {"x": {"method": method, **table}}}).estimator("x").options


def _case(method, folder):
    cfg = load_config(None, BOOLEAN + ["estimators.x.method=" + method]
                      + [f"estimators.x.{k}={v}" for k, v in TINY_OPTIONS.get(method, {}).items()])
    case = cfg.cases()[0].prepared(folder)
    make_fits([case], progress=False)
    return case, case.estimator("x")


@pytest.mark.parametrize("method", [m for m in estimator_names() if m in TINY_OPTIONS])
def test_every_estimator_round_trips_a_tiny_case(method, tmp_path):
    case, spec = _case(method, tmp_path)
    est = spec.estimator
    assert est.quantity in ("p_sgd", "p_b") and est.kind in ("sampler", "scorer")
    # options: defaults validate, round-trip through their table, bad keys and values are named
    assert _options(method, spec.options.to_table()) == spec.options
    with pytest.raises(ValueError, match=r"unknown key estimators\.x\.nonsense"):
        _options(method, {"nonsense": 1})
    ints = [k for k, f in est.Options.model_fields.items() if f.annotation is int and f.metadata]
    if ints:
        with pytest.raises(ValueError, match=rf"estimators\.x\.{ints[0]} must be >= "):
            _options(method, {ints[0]: -1})
    with pytest.raises(TypeError, match=r"estimators\.x\."):
        _options(method, {next(iter(est.Options.model_fields)): "many"})
    # plan -> run_shard -> shard table; shards are picklable (Ray ships them)
    functions = {"10110100": 5, "00000000": 3, "11111111": 2}
    shards = est.plan(case, spec.options, functions if est.kind == "scorer" else None)
    assert shards and json.loads(json.dumps(shards)) == shards
    tables = [est.run_shard(case, spec.options, s) for s in shards]
    for t in tables:
        assert t.schema.equals(SHARD_SCHEMA, check_metadata=False)
        n, info = shard_meta(t)
        json.dumps(info)
        assert all(len(f) == case.data.n_test and set(f) <= {"0", "1"} for f in t.column("function").to_pylist())
    result = EstimatorResult.from_shards("x", method, tables, sampler=est.kind == "sampler")
    while extra := est.extend(case, spec.options, result):
        tables += [est.run_shard(case, spec.options, s) for s in extra]
        result = EstimatorResult.from_shards("x", method, tables, sampler=est.kind == "sampler")
    if est.kind == "sampler":
        assert result.n_fit == result.counts.sum() <= result.n_samples
        assert np.all(result.log_p <= 0)
    else:
        assert set(result.functions) <= set(functions) and np.all(result.log_p <= 1e-9)
    rows = result.rows("main")
    assert rows.num_rows == len(result.functions)
    json.dumps(est.extras(case, spec.options, result))


def test_a_toy_estimator_runs_through_sgdbayes_run(tmp_path, capsys):
    out = tmp_path / "toy"
    args = ["run", "--no-progress", "--out", str(out)]
    for o in BOOLEAN + [f"estimators.sgd.{k}={v}" for k, v in TINY_OPTIONS["sgd"].items()] + [
            "estimators.toy.method=toy-uniform", "estimators.toy.top=2", "report.pairs=[['sgd', 'toy']]"]:
        args += ["--set", o]
    assert main(args) == 0, capsys.readouterr().err
    df = pq.read_table(out / "results.parquet").to_pandas()
    toy = df[df.estimator == "toy"]
    assert len(toy) == 2 and np.allclose(toy["log_p"], -8 * math.log(2))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"][0]["pairs"][0]["b"] == "toy" and summary["toy_functions"] == 2


def test_registry_refuses_bad_registrations():
    with pytest.raises(ValueError, match="registered already"):
        register_estimator("sgd")(type("Other", (Estimator,), {}))
    with pytest.raises(TypeError, match="Estimator subclasses"):
        register_estimator("thing")(object)
    with pytest.raises(ValueError, match="unknown estimator method 'sdg'.*did you mean 'sgd'"):
        get_estimator("sdg")


def test_shard_table_validates():
    with pytest.raises(ValueError, match="either counts"):
        shard_table(["0"])
    with pytest.raises(ValueError, match="n_samples"):
        shard_table(["0"], counts=[1])
    t = shard_table(["01", "10"], counts=[3, 1], n_samples=10, info={"a": 1})
    assert shard_meta(t) == (10, {"a": 1})
    assert isinstance(t, pa.Table)


def test_prior_estimator_equals_sample_prior_and_resumes_exactly_once(tmp_path):
    import sampler
    from sgdbayes.pipeline import run_experiment

    overrides = BOOLEAN + ["data.target=constant", "estimators.prior.method=prior", "estimators.prior.chunk=4096",
                           "estimators.prior.n_samples=65536", "estimators.prior.min_fit=1500",
                           "report.pairs=[]", "estimators.sgd.n_runs=6", "estimators.sgd.ensemble=6",
                           "estimators.sgd.batch_size=4", "estimators.ep.top=1", "estimators.tilting.top=1",
                           "estimators.tilting.n_samples=100"]
    config = load_config(None, overrides)
    run_experiment(config, tmp_path, progress=False)
    shards = sorted((tmp_path / "cases" / "main" / "shards" / "prior").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    df = pq.read_table(tmp_path / "results.parquet").to_pandas()
    extras = json.loads((tmp_path / "cases" / "main" / "extras.json").read_text())["prior"]
    n = extras["n_samples"]
    # adaptive stopping: the first chunk boundary at which >= min_fit samples fit S
    assert n % 4096 == 0 and n > 4096 and extras["n_fit"] >= 1500 and len(shards) == n // 4096
    reference = sampler.sample_prior(config.arch, config.cases()[0].split(), n, seed=0, progress=False)
    assert reference.n_fit == extras["n_fit"]
    prior = df[df.estimator == "prior"]
    assert dict(zip(prior["function"], prior["count"])) == dict(reference.counts)
    if n > 4096:  # it did not stop at an earlier chunk boundary
        assert sampler.sample_prior(config.arch, config.cases()[0].split(), n - 4096, seed=0,
                                    progress=False).n_fit < 1500
    run_experiment(config, tmp_path, progress=False)  # resumed: nothing redrawn, nothing added
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    assert sorted((tmp_path / "cases" / "main" / "shards" / "prior").glob("*.parquet")) == shards


@pytest.mark.parametrize("label", ["sgd", "ep", "ess"])
def test_every_estimator_asks_ray_for_its_gpu(label, tmp_path):
    """Guards: only sgd and prior asked Ray for a GPU; ep and ess with device = "cuda" asked for
    none (a GPU shard on a CPU slot). device = "auto" asks for one only where the cluster has one."""
    from sgdbayes.fanout import ray_num_gpus
    from sgdbayes.pipeline import shard_task

    for device, optional in (("auto", True), ("cuda", False), ("cpu", False)):
        config = load_config(None, BOOLEAN + ["estimators.sgd.batch_size=4", "estimators.ess.method=ess",
                                           f"estimators.{label}.device={device}"])
        case = config.cases()[0].prepared(tmp_path)
        spec = case.estimator(label)
        shards = spec.estimator.plan(case, spec.options, {"0" * 8: 2})
        task = shard_task(case, spec, 0, shards[0])
        assert task.gpu_optional is optional
        assert ray_num_gpus(task, cluster_gpus=0) == (1.0 if device == "cuda" else 0.0)
        assert ray_num_gpus(task, cluster_gpus=2) == (0.0 if device == "cpu" else 1.0)


def test_memory_estimates_name_the_keys_that_set_them():
    """The estimates the pipeline compares with the machine's memory before a run (issue 15):
    SGD from the parameters counted on the meta device, EP from the (m + k)^2 kernel."""
    case = load_config(None, ["arch.width=1000", "data.n_train=100", "data.n_test=20"]).cases()[0]
    r = case.estimator("sgd").estimator.resources(case, case.estimator("sgd").options)
    n_params = 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 + 1
    assert r.memory_bytes == 512 * n_params * 16 and "arch.width=1000" in r.memory_what and "ensemble=512" in r.memory_what
    r = case.estimator("ep").estimator.resources(case, case.estimator("ep").options)
    assert r.memory_bytes == 120 ** 2 * 8 * 6 and "data.n_train + data.n_test" in r.memory_what


def test_one_memory_check_names_the_estimator_its_keys_and_both_numbers(tmp_path, monkeypatch, capsys):
    """Guards: two memory checks with different constants (8 and 6 kernel copies) and two
    /proc/meminfo readers. One check now compares each estimator's declared need with its device."""
    import sgdbayes.pipeline

    monkeypatch.setattr(sgdbayes.pipeline, "available_bytes", lambda device: (20_000, "a test's meminfo"))
    out = tmp_path / "never"
    args = ["run", "--out", str(out)] + [x for o in BOOLEAN + ["estimators.sgd.ensemble=1", "data.n_train=60",
                                                               "data.n_test=64"] for x in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "estimators.ep: needs about 0.000738 GB (6 float64 kernel-sized matrices of (data.n_train + " \
           "data.n_test)^2 = 124^2 entries), more than the 2e-05 GB this machine has (a test's meminfo)" in err
    assert not out.exists()
