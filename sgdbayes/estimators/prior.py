"""``prior``: P_B(f|S) of the finite network by prior (rejection) sampling: draw random
initialisations, keep those that reproduce every label of S, count their functions on E. Exact up
to Monte Carlo error: the ground truth where P(S) is not tiny (the Boolean n = 7 system).

Each shard is :func:`sampler.prior.prior_shard`, a chunk of :func:`sampler.sample_prior`'s samples
(same method, seed and samples, same counts). Chunks are drawn until ``min_fit`` samples fit S or
``n_samples`` were drawn (negative-binomial stopping, bias on P(S) O(1 / n_fit));
:meth:`PriorEstimator.extend` decides from the finished shards, so a resumed run decides the same.
Extras: P(S) with its exact binomial (Clopper-Pearson) interval, log P(S) and its error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sampler.prior import BLOCK_SIZE, METHODS, binomial_summary, prior_shard
from sampler.sgd import DEVICES, resolve_device

from .base import Estimator, Options, register_estimator


class PriorOptions(Options):
    """Options of ``prior``."""

    n_samples: int = Field(1 << 21, ge=1, description="At most this many samples in all.")
    min_fit: int = Field(50_000, ge=1, description="Stop once this many samples fit S.")
    chunk: int = Field(1 << 18, ge=BLOCK_SIZE, multiple_of=BLOCK_SIZE, description="Samples per shard, a multiple "
                       "of ``sampler.prior.BLOCK_SIZE`` (4096).")
    batch_size: int = Field(0, ge=0, description="Networks per batched forward pass; does not change the samples "
                            "(0: the sampler's default).")
    draw: Literal[METHODS] = Field("auto", description=(
        "How networks are drawn (``method`` of :func:`sampler.sample_prior`): the same distribution of functions, "
        "not the same draws for a seed; ``auto`` draws FCNs' pre-activations on the split's points (faster) and "
        "builds other networks from weights."))
    seed: int = Field(0, ge=0, description="sample i is a pure function of (seed, i)")
    device: Literal[DEVICES] = Field("cpu", description="where the networks are drawn and evaluated")


@register_estimator("prior")
class PriorEstimator(Estimator):
    """Rejection sampling of the finite network's prior (module docstring)."""

    Options = PriorOptions
    reference = True

    @staticmethod
    def _shard(options, index: int) -> dict:
        lo = index * options.chunk
        hi = min(lo + options.chunk, options.n_samples)
        return {"start": lo, "stop": hi, "items": hi - lo}

    def plan(self, case, options, functions=None):
        return [self._shard(options, 0)]

    def extend(self, case, options, result):
        if result.n_fit >= options.min_fit or result.n_samples >= options.n_samples:
            return []
        return [self._shard(options, result.n_samples // options.chunk)]

    def run_shard(self, case, options, shard, progress=None):
        return prior_shard(case.arch, case.split(), seed=options.seed, start=shard["start"], stop=shard["stop"],
                           batch_size=options.batch_size or None, device=resolve_device(options.device),
                           method=options.draw, progress=progress)

    def extras(self, case, options, result):
        s = binomial_summary(result.n_fit, result.n_samples)
        return {"prior_samples": result.n_samples, "prior_fit": result.n_fit, "p_s_prior": s["acceptance_rate"],
                "p_s_prior_ci": list(s["p_s_interval"]), "log_p_s_prior": s["log_p_s"],
                "log_p_s_prior_se": s["log_p_s_se"]}
