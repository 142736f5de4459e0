"""Complexity measures, statistics, plots and reports.

``import analysis`` imports neither torch nor matplotlib: torch is loaded by the functions that need
it (:func:`critical_sample_ratio`, and input checks shared with :mod:`sampler`), matplotlib by the
plotting functions in :mod:`analysis.plots`.
"""

from . import plots
from .complexity import (boolean_critical_sample_ratio, boolean_expression_complexity, critical_sample_ratio,
                         critical_samples, entropy, lz76_phrases, lz_complexity, test_error)
from .plots import plot_cumulative_mass, plot_p_vs_complexity, plot_p_vs_error, plot_psgd_vs_pb
from .stats import (Correlation, CumulativeMass, Distances, FitTest, ZScores, compare_distributions, correlate,
                    cumulative_mass, goodness_of_fit, homogeneity, select_functions, z_scores)

__all__ = [
    "lz_complexity", "lz76_phrases", "entropy", "test_error", "boolean_critical_sample_ratio",
    "boolean_expression_complexity", "critical_sample_ratio", "critical_samples",
    "Correlation", "Distances", "CumulativeMass", "correlate", "compare_distributions", "cumulative_mass",
    "select_functions", "FitTest", "goodness_of_fit", "homogeneity", "ZScores", "z_scores",
    "plots", "plot_psgd_vs_pb", "plot_p_vs_complexity", "plot_p_vs_error", "plot_cumulative_mass",
]
