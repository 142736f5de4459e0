"""``ess``: P_B(f|S) in the NNGP limit by elliptical slice sampling of the latent GP on S and E,
constrained to reproduce S (:func:`nngp.ess_sample`); counts of the functions on E.

One shard (R-hat needs every chain). Standard errors come from the independent chains: for each
function, the spread of its frequency over chains, ``std / sqrt(n_chains)``, by the delta method on
the log (honest under autocorrelation, unlike a binomial error, which ESS states too small).
Per-case extras: proposals per step, R-hat max and bulk ESS min over E's bits, seconds.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

import nngp
from sampler.sgd import DEVICES, resolve_device

from .base import Estimator, Options, register_estimator, shard_table


class ESSOptions(Options):
    """Options of ``ess``. Long chains matter more than many (on ``weight6`` with |S| = 64, thinning
    5 left R-hat ~1.2 and a biased tail; thinning 25, R-hat 1.05)."""

    n_samples: int = Field(8192, ge=1, description="Kept states in all.")
    n_chains: int = Field(64, ge=1, description="Independent chains.")
    burn_in: int = Field(500, ge=0, description="First steps of each chain discarded.")
    thin: int = Field(25, ge=1, description="Steps per kept state.")
    seed: int = Field(0, ge=0, description="seeds the chains (same seed, same samples)")
    device: Literal[DEVICES] = Field("cpu", description="where the chains run (cuda: a GPU; auto: one where there is one)")


@register_estimator("ess")
class ESSEstimator(Estimator):
    """Elliptical slice sampling of the GP posterior (module docstring)."""

    Options = ESSOptions
    needs_kernel = True

    def plan(self, case, options, functions=None):
        return [{"items": options.n_samples}]

    def run_shard(self, case, options, shard, progress=None):
        split = case.split()
        r = nngp.ess_sample(case.fit("kernel").K, split.y_train, split.n_train,
                            n_samples=options.n_samples, n_chains=options.n_chains, burn_in=options.burn_in,
                            thin=options.thin, seed=options.seed, device=resolve_device(options.device))
        items = r.counts.most_common()
        se = []
        for f, c in items:
            freq = r.chain_frequencies(f)
            p = c / r.counts.n_fit
            se.append(float(freq.std(ddof=1) / math.sqrt(len(freq)) / p) if len(freq) > 1 else math.nan)
        info = {"ess_proposals_per_step": r.proposals_per_step, "ess_rhat_max": r.rhat_max,
                "ess_bulk_min": r.ess_bulk_min, "ess_s": r.seconds}
        return shard_table([f for f, _ in items], counts=[c for _, c in items], log_p_se=np.asarray(se),
                           n_samples=r.counts.n_runs, info=info)

    def extras(self, case, options, result):
        return {**case.fit("kernel").info(), **(dict(result.infos[0]) if result.infos else {})}
