"""NNGP kernels, orthant probabilities and log P_B(f|S) in the infinite-width limit.

Public API (docs/DESIGN.md): :func:`kernel` (closed forms registered per spec type, :func:`register_kernel`), :func:`empirical_kernel`, :func:`kernel_for`, :class:`NNGPKernel`,
:func:`orthant` / :func:`log_orthant`, :func:`log_ps`, :func:`log_pb` (and
:func:`log_pb_details`), :func:`train_posterior`, :func:`gp_test_error`,
:func:`pac_bayes_bound`; NTKs (:func:`ntk`, :func:`empirical_ntk`, :func:`register_ntk`) and the
Gaussians of squared-loss training at infinite width (:func:`gd_mse_ensemble`, :func:`gp_regression`).
"""

from .bound import pac_bayes_bound, pac_bayes_bound_reference
from .empirical import DEFAULT_MC_SAMPLES, KernelEstimate, empirical_kernel, kernel_for
from .ep import EPResult, ep_orthant
from .ess import EssResult, ess_posterior, ess_sample
from .kernels import AnalyticKernel, has_analytic_kernel, kernel, kernel_diag, register_kernel
from .mse import GaussianOnPoints, flow_time, gd_mse_ensemble, gp_regression
from .ntk import empirical_ntk, has_analytic_ntk, ntk, ntk_for, register_ntk
from .orthant import OrthantResult, log_orthant, orthant
from .posterior import LogPBResult, TrainPosterior, gp_test_error, log_pb, log_pb_details, log_ps, train_posterior


def __getattr__(name):
    # gpytorch is imported only when the wrapper is used (it is slow to import)
    if name == "NNGPKernel":
        from .gp_wrappers import NNGPKernel

        return NNGPKernel
    raise AttributeError(f"module 'nngp' has no attribute {name!r}")


__all__ = [
    "kernel", "kernel_diag", "empirical_kernel", "kernel_for", "KernelEstimate", "DEFAULT_MC_SAMPLES",
    "has_analytic_kernel", "register_kernel", "AnalyticKernel", "NNGPKernel",
    "orthant", "log_orthant", "OrthantResult", "ep_orthant", "EPResult",
    "log_ps", "log_pb", "log_pb_details", "LogPBResult", "train_posterior", "TrainPosterior", "gp_test_error",
    "pac_bayes_bound", "pac_bayes_bound_reference", "ess_sample", "ess_posterior", "EssResult",
    "ntk", "empirical_ntk", "ntk_for", "has_analytic_ntk", "register_ntk",
    "gd_mse_ensemble", "gp_regression", "flow_time", "GaussianOnPoints",
]
