"""``gp-mse``: the NNGP posterior with a Gaussian likelihood (GP regression on the targets 2y - 1 with
noise variance ``noise``, :func:`nngp.mse.gp_regression`), then the orthant probability of each sign
pattern f on E: the paper's reference code's "GP_MSE". By Cholesky at small m, by gpytorch's
conjugate gradients at large m (``solver``). The latent posterior on S need not have S's signs:
log P(fits S) is reported (up to m = ``joint_max_m``: above, only the test block's posterior is
computed, k + 1 right-hand sides instead of m + k + 1), and ``condition = true`` conditions P(f) on it
(default false, as the reference code: the test block alone).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from nngp.mse import gp_regression, targets
from sampler.sgd import resolve_device

from .base import register_estimator
from .gaussian import GaussianOptions, GaussianScorer


class GPMSEOptions(GaussianOptions):
    """:class:`GaussianOptions` and the likelihood's noise variance and the solver."""

    noise: float = Field(0.1, gt=0.0, description="variance of the Gaussian likelihood (targets are +-1)")
    solver: Literal["auto", "cholesky", "cg"] = Field(
        "auto", description="cholesky, or gpytorch's conjugate gradients (cg; large m, GPU); auto: cholesky up "
                            "to m = 4000")
    condition: bool = Field(False, description="condition P(f) on the latent posterior fitting S")
    joint_max_m: int = Field(2000, ge=0, description="up to this m the posterior on S is computed too (log P(fits "
                                                     "S) reported); above, E alone unless condition")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where the GP solve runs (float64)")


@register_estimator("gp-mse")
class GPMSEEstimator(GaussianScorer):
    """P(f|S) of the NNGP posterior with a Gaussian likelihood (GP regression), an orthant per f."""

    Options = GPMSEOptions
    target = "gp-mse"
    summary_rows = (("gp-mse_log_p_fit", "log P(fits S) (GP regression)"),
                    ("gp-mse_test_error", "test error of the GP-regression posterior mean's sign"))

    def conditions(self, options):
        return options.condition

    def gaussian(self, case, options):
        split = case.split()
        joint = options.condition or split.n_train <= options.joint_max_m
        g = gp_regression(case.fit("kernel").K, targets(split.y_train), n_train=split.n_train, noise=options.noise,
                          solver=options.solver, device=resolve_device(options.device), joint=joint)
        return g, {"noise": options.noise, "joint": joint}

    def extras(self, case, options, result):
        """The base's extras and ``gp-mse_test_error``: the error on E of the sign of the posterior mean
        (the GP regression's own classifier: the no-peak reference of double descent)."""
        fit, y_test = case.fit(self._fit_name(case, options)), case.split().y_test
        pred = (fit["mean"][fit["n_train"]:] > 0).to(torch.int64)
        return {**super().extras(case, options, result),
                f"{self.name}_test_error": float((pred != y_test.to(torch.int64)).double().mean())}
