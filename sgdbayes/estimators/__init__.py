"""Estimator plug-ins (:mod:`sgdbayes.estimators.base`); importing this package registers the
built-ins: samplers ``sgd`` (P_SGD), ``prior``, ``ess``, ``nuts`` and scorers ``ep-conditional``,
``ep``, ``tilting`` (P_B), ``ntk`` (P_NTK) and ``gp-mse`` (Gaussian-likelihood posterior)."""

from . import ep, ess, gp_mse, ntk, nuts, prior, sgd, tilting  # noqa: F401  (registers the built-ins)
from .base import (RESULT_COLUMNS, RESULT_SCHEMA, Estimator, EstimatorResult, Options, estimator_names,
                   get_estimator, register_estimator, shard_table)

__all__ = ["Estimator", "EstimatorResult", "Options", "register_estimator", "get_estimator",
           "estimator_names", "shard_table", "RESULT_COLUMNS", "RESULT_SCHEMA"]
