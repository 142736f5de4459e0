"""``ep-conditional`` and ``ep``: log P_B(f|S) in the NNGP limit by Expectation Propagation
(:func:`nngp.log_pb_details`). ``ep-conditional`` runs one EP on S and then scores each f as a
k-dimensional orthant of the EP posterior on E (thousands of f at large m); ``ep`` runs one joint
EP on S and E per function, the paper's way (about 100x slower). EP has no standard error:
``log_p_se`` is nan; the ``tilting`` estimator says how far EP is from an unbiased estimate.
Per-case extras: log P(S) (EP), the GP posterior mean's test error, EP's convergence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

import nngp
from sampler.sgd import resolve_device

from .base import register_estimator, shard_table
from .scoring import Scorer, ScorerOptions


class EPOptions(ScorerOptions):
    """:class:`ScorerOptions` and ``device``. One EP fit on S per case serves every shard, so larger
    groups than 2000 amortise nothing more: that keeps shards small for Ray."""

    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the kernel and the EP on S run (float64); 'auto' takes a GPU where there is one")


class _EP(Scorer):
    Options = EPOptions
    needs_kernel = True
    summary_rows = (("gp_test_error", "test error of the GP posterior mean's sign"),
                    ("log_p_s", "log P(S) (EP, natural log)"))

    def fits(self, case, options):
        # an analytic kernel is computed where the EP runs; a Monte Carlo one is the case's, shared
        return (() if nngp.has_analytic_kernel(case.arch) else ("kernel",)) + ("posterior",)

    def make_fit(self, case, options, name):
        """``"posterior"``: the EP fit on S (:func:`nngp.train_posterior`) on ``options.device``, saved
        on the CPU."""
        if name != "posterior":
            return super().make_fit(case, options, name)
        K = None if nngp.has_analytic_kernel(case.arch) else case.fit("kernel").K
        return nngp.train_posterior(case.arch, case.split(), K=K, device=str(resolve_device(options.device)))

    def run_shard(self, case, options, shard, progress=None):
        fs = list(shard["functions"])
        res = nngp.log_pb_details(case.arch, case.split(), fs, method=self.name, posterior=case.fit("posterior"))
        return shard_table(fs, log_p=res.log_pb, info={"unconverged": int((~res.converged).sum())})

    def extras(self, case, options, result):
        post = case.fit("posterior")
        kernel = {} if nngp.has_analytic_kernel(case.arch) else case.fit("kernel").info()
        return {**kernel, "log_p_s": float(post.log_ps),
                "gp_test_error": float(nngp.gp_test_error(case.arch, case.split(), posterior=post)),
                "ep_converged": bool(post.converged), "ep_iterations": int(post.n_iter),
                "ep_max_change": float(post.max_change), "jitter": float(post.jitter),
                "ep_functions": len(result.functions),
                "ep_unconverged": int(np.sum([i.get("unconverged", 0) for i in result.infos]))}


@register_estimator("ep-conditional")
class EPConditional(_EP):
    """One EP on S, then each f on E (see the module docstring)."""


@register_estimator("ep")
class EPJoint(_EP):
    """One joint EP on S and E per function (see the module docstring)."""
