"""``nuts``: P_B(f|S) of the finite network by NUTS over its weights (pyro), with a sharp
tempered likelihood ``sigmoid((2y - 1) f / temperature)`` on S (:func:`sampler.mcmc.mcmc_functions`);
counts of the functions on E of the draws that reproduce S. Slow (pyro): small networks only.

One shard (R-hat needs every chain). Standard errors are binomial and so too small for
autocorrelated draws; the extras give arviz's R-hat, bulk ESS and divergences to judge them.
"""

from __future__ import annotations

from pydantic import Field

from sampler.mcmc import mcmc_functions

from .base import Estimator, Options, register_estimator, shard_table


class NUTSOptions(Options):
    """Options of ``nuts``."""

    n_samples: int = Field(200, ge=1, description="Kept draws per chain.")
    n_warmup: int = Field(200, ge=1, description="Warm-up steps per chain.")
    n_chains: int = Field(4, ge=1, description="independent chains (R-hat needs 2 or more)")
    temperature: float = Field(0.1, gt=0.0, description="Likelihood temperature, in output units.")
    seed: int = Field(0, ge=0, description="seeds the chains")
    max_tree_depth: int = Field(6, ge=1, description="NUTS tree depth.")
    target_accept: float = Field(0.8, gt=0.0, le=1.0, description="NUTS target acceptance rate.")


@register_estimator("nuts")
class NUTSEstimator(Estimator):
    """NUTS over the finite network's weights (module docstring)."""

    Options = NUTSOptions

    def plan(self, case, options, functions=None):
        return [{"items": options.n_samples * options.n_chains}]

    def run_shard(self, case, options, shard, progress=None):
        r = mcmc_functions(case.arch, case.split(), n_samples=options.n_samples, n_warmup=options.n_warmup,
                           n_chains=options.n_chains, temperature=options.temperature, seed=options.seed,
                           max_tree_depth=options.max_tree_depth, target_accept=options.target_accept)
        items = r.counts.most_common()
        info = {"nuts_rhat_max": r.rhat_max, "nuts_ess_bulk_min": r.ess_bulk_min,
                "nuts_divergences": int(r.divergences), "nuts_s": r.seconds}
        return shard_table([f for f, _ in items], counts=[c for _, c in items], n_samples=r.counts.n_runs,
                           info=info)

    def extras(self, case, options, result):
        return dict(result.infos[0]) if result.infos else {}
