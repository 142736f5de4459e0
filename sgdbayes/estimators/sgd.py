"""``sgd``: P_SGD(f|S) by training many networks from fresh random initialisations to 100% training
accuracy (vectorised over an ensemble) and counting their functions; each shard is
:func:`sampler.sgd.sgd_shard`, runs ``[start, stop)`` of :func:`sampler.sample_sgd`.

Options: the sampling knobs and the fields of :class:`sampler.TrainSpec`, taken from TrainSpec itself
(types, defaults, docs and checks) so that they are declared once; ``check_every = 0`` in a table is
TrainSpec's None (TOML has no null). Run i is a pure function of (seed, i): the counts do not depend
on ``shard_size``, ``ensemble`` or the executor. Runs that never fit S count in ``n_samples`` only.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import numpy as np
import torch
from pydantic import Field, create_model, model_validator

from sampler.sgd import DEVICES, TrainSpec, sgd_shard

from ..double_descent import budget_extras
from .base import Estimator, Options, attribute_docs, register_estimator
from .flatness import FlatnessOptions, check_options, flatness_extras, shard_measure


#: At most this many runs (10^9: days of a GPU cluster); more is a typo, refused at once.
MAX_RUNS = 10**9
#: At most this many shards per estimator (their plan is held in memory and each is a file).
MAX_SHARDS = 100_000
#: Bytes per parameter per network while training: the float32 parameter, its gradient, the
#: optimizer's state and a working copy.
BYTES_PER_PARAMETER = 16


def n_parameters(arch, input_shape) -> int:
    """Parameters of one network of ``arch`` on ``input_shape``, counted on the meta device (nothing
    is allocated)."""
    with torch.device("meta"):
        module = arch._make(tuple(input_shape))  # the architecture's own module, uninitialised
    return sum(p.numel() for p in module.parameters())


class _Knobs(Options):
    n_runs: int = Field(8192, ge=1, le=MAX_RUNS, description="runs started, each from a fresh initialisation")
    ensemble: int = Field(512, ge=1, description="networks trained at once")
    seed: int = Field(0, ge=0, description="run i is a pure function of (seed, i)")
    device: Literal[DEVICES] = Field("cpu", description="where the ensemble trains (cuda: TF32 matmuls)")
    shard_size: int = Field(1024, ge=1, description="runs per shard")


class _SamplingOptions(FlatnessOptions, _Knobs):  # fields in the order knobs, sharpness (then TrainSpec's)
    """The sampling knobs of ``sgd`` and its sharpness measures (:mod:`.flatness`); :data:`SGDOptions`
    adds :class:`sampler.TrainSpec`'s fields."""

    @model_validator(mode="before")
    @classmethod
    def _zero_is_none(cls, table):  # TOML has no null: check_every = 0 (as run folders store it) is None
        zero = isinstance(table, dict) and type(table.get("check_every")) is int and table["check_every"] == 0
        return {**table, "check_every": None} if zero else table

    def to_table(self):
        table = {**super().to_table(), "check_every": self.check_every or 0}
        if table.get("stop") == "fit":  # the default, left out: a fit-mode run reads as one without the key
            del table["stop"]
        return table

    @model_validator(mode="after")
    def _check_train_spec(self):
        self.train_spec()  # TrainSpec's own checks, named by the config key
        return self

    def train_spec(self) -> TrainSpec:
        return TrainSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainSpec)})


_HINTS, _DOCS = typing.get_type_hints(TrainSpec), attribute_docs(TrainSpec.__doc__)
#: Options of the ``sgd`` estimator: the sampling knobs plus :class:`sampler.TrainSpec`'s fields.
SGDOptions = create_model(
    "SGDOptions", __base__=_SamplingOptions, __module__=__name__, __doc__=_SamplingOptions.__doc__,
    **{f.name: (_HINTS[f.name], Field(f.default, description=_DOCS.get(f.name, "")))
       for f in dataclasses.fields(TrainSpec)})


@register_estimator("sgd")
class SGDEstimator(Estimator):
    """P_SGD by counting the functions of ``n_runs`` independently trained networks."""
    growable = ("n_runs",)  # run i is a pure function of (seed, i): more runs leave the first ones as they are

    quantity = "p_sgd"
    Options = SGDOptions
    summary_rows = (("sgd_mean_epochs", "mean epochs to fit"),)

    def plan(self, case, options, functions=None):
        options.train_spec().check_train_size(case.data.n_train)
        check_options(case, options)
        step = options.shard_size
        if -(-options.n_runs // step) > MAX_SHARDS:
            raise ValueError(f"n_runs={options.n_runs} in shards of shard_size={step} makes "
                             f"{-(-options.n_runs // step)} shards, more than the limit {MAX_SHARDS}; raise shard_size")
        return [{"start": a, "stop": min(a + step, options.n_runs), "items": min(step, options.n_runs - a)}
                for a in range(0, options.n_runs, step)]

    def run_shard(self, case, options, shard, progress=None):
        return sgd_shard(case.arch, case.split(), options.train_spec(), seed=options.seed, start=shard["start"],
                         stop=shard["stop"], ensemble=options.ensemble, device=options.device, progress=progress,
                         measure=shard_measure(case, options))

    def extras(self, case, options, result):
        epochs = np.concatenate([np.asarray(i["epochs"], float) for i in result.infos] or [np.zeros(0)])
        loss = np.concatenate([np.asarray(i["final_loss"], float) for i in result.infos] or [np.zeros(0)])
        # how the shards trained the first layer (sampler.sgd_shard's info; shards from before it: "full")
        layer = {"sgd_first_layer": "/".join(sorted({i.get("first_layer", "full") for i in result.infos})) or None,
                 "sgd_span_rank": next((i["span_rank"] for i in result.infos if i.get("span_rank")), None)}
        if options.stop == "budget":  # every run's train and test error and loss (sgdbayes.double_descent)
            layer.update(budget_extras(result.infos, n_parameters(case.arch, case.split().input_shape)))
        unfit = [i["unfit"] for i in result.infos if i.get("unfit")]
        if unfit:  # how close the runs that never fit came (the report says it where few fit)
            best = [u["best_train_accuracy"] for u in unfit if u["best_train_accuracy"] is not None]
            layer.update(sgd_unfit_runs=sum(u["n"] for u in unfit), sgd_unfit_best_train_accuracy=max(best, default=None),
                         sgd_unfit_max_epochs=max(u["epochs"] for u in unfit))
        if epochs.size == 0:
            return {"sgd_mean_epochs": None, "sgd_median_epochs": None, "sgd_mean_final_loss": None, **layer}
        return {"sgd_mean_epochs": float(epochs.mean()), "sgd_median_epochs": float(np.median(epochs)),
                "sgd_mean_final_loss": float(loss.mean()), **layer, **flatness_extras(result.infos)}

    def memory(self, case, options):
        ensemble = min(options.ensemble, options.shard_size, options.n_runs)
        n = n_parameters(case.arch, case.split().input_shape)
        sizes = ", ".join(f"arch.{k}={v}" for k, v in case.arch.to_dict().items()
                          if isinstance(v, int) and not isinstance(v, bool))
        return (ensemble * n * BYTES_PER_PARAMETER,
                f"ensemble={ensemble} networks trained at once, each of {n:.3g} parameters with {sizes}, "
                f"{BYTES_PER_PARAMETER} bytes per parameter")
