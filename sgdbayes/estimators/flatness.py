"""The ``sgd`` estimator's sharpness options: measure every fitted run at its stopping point
(:mod:`sampler.sharpness`) and give each function the mean and spread of its runs' measures.

Options (keys of ``[estimators.<label>]`` with ``method = "sgd"``): ``sharpness`` (measure names),
``sharpness_epsilon``, ``sharpness_steps``, ``hessian_probes``, ``lanczos_iterations``,
``rescale_alpha``. Each shard's ``info`` keeps every fitted run's measures and function
(:func:`sampler.sgd.sgd_shard`), so resuming and merging keep them; :func:`function_columns` turns
them into per-function columns ``<label>:<measure>_mean`` / ``_sd`` and ``<label>:measured_runs`` of
``functions.parquet`` (through the estimator's extras, key ``function_columns``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from sampler.sgd import resolve_device
from sampler.sharpness import MEASURES, MeasureSpec, check_rescalable, make_measure

from .base import Options

#: The option keys this module adds; left out of the options table (and so of the shards'
#: fingerprint) when ``sharpness`` is empty: a run that measures nothing reads as one without these options.
KEYS = ("sharpness", "sharpness_epsilon", "sharpness_steps", "hessian_probes", "lanczos_iterations", "rescale_alpha")


class FlatnessOptions(Options):
    """Sharpness of every fitted run (empty ``sharpness``: none measured)."""

    sharpness: list[Literal[MEASURES]] = Field(
        default_factory=list, description=f"measures of each fitted run at its stopping point, of {list(MEASURES)}")
    sharpness_epsilon: float = Field(1e-4, gt=0, description="epsilon_sharpness box half-width epsilon (|w| + 1)")
    sharpness_steps: int = Field(20, ge=1, description="epsilon_sharpness projected gradient ascent steps")
    hessian_probes: int = Field(32, ge=2, description="hessian_trace Rademacher probes (Hutchinson)")
    lanczos_iterations: int = Field(20, ge=1, description="top_eigenvalue Lanczos steps")
    rescale_alpha: float | None = Field(None, gt=0, description="also measure each run rescaled layer-wise by "
                                        "alpha (W1/alpha, b1/alpha, W2*alpha: the same function)")

    def to_table(self):
        table = super().to_table()
        return table if self.sharpness else {k: v for k, v in table.items() if k not in KEYS}

    def measure_spec(self) -> MeasureSpec | None:
        """The :class:`sampler.sharpness.MeasureSpec` of these options (None: nothing to measure)."""
        if not self.sharpness:
            return None
        return MeasureSpec(measures=tuple(dict.fromkeys(self.sharpness)), loss=self.loss,  # type: ignore[attr-defined]
                           epsilon=self.sharpness_epsilon, ascent_steps=self.sharpness_steps,
                           probes=self.hessian_probes, iterations=self.lanczos_iterations,
                           rescale_alpha=self.rescale_alpha, seed=self.seed)  # type: ignore[attr-defined]


def check_options(case, options: FlatnessOptions) -> None:
    """Refuse, before any training, options the case cannot measure (a rescaling its architecture lacks)."""
    if options.rescale_alpha is not None:
        if not options.sharpness:
            raise ValueError("rescale_alpha needs sharpness = [...] (the measures to take before and after rescaling)")
        try:
            check_rescalable(case.arch)
        except ValueError as exc:
            raise ValueError(f"rescale_alpha: {exc}") from None


def shard_measure(case, options: FlatnessOptions):
    """The engine's ``measure`` hook for one shard (None without ``sharpness``)."""
    spec = options.measure_spec()
    if spec is None:
        return None
    device = resolve_device(options.device)  # type: ignore[attr-defined]
    return make_measure(case.arch, case.split(), spec, device=device)


def run_measures(infos) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every measured fitted run of the shards' ``infos``: its function and ``{measure: (n,) array}``."""
    functions: list[str] = []
    parts: dict[str, list] = {}
    for info in infos:
        if "measures" not in info:
            continue
        n = len(info["measured_function"])
        functions += info["measured_function"]
        for k, v in info["measures"].items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=float).reshape(n))
    return functions, {k: np.concatenate(v) for k, v in parts.items()}


def function_columns(functions: list[str], values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per function: ``<measure>_mean`` and ``<measure>_sd`` (sample sd, nan for one run) over its
    runs' finite values, and ``measured_runs``; ``{column: {function: value}}``."""
    order = list(dict.fromkeys(functions))
    index = {f: i for i, f in enumerate(order)}
    group = np.array([index[f] for f in functions], dtype=np.int64)
    n = np.bincount(group, minlength=len(order))
    cols: dict[str, dict[str, float]] = {"measured_runs": dict(zip(order, n.tolist()))}
    for k, v in values.items():
        ok = np.isfinite(v)
        c = np.bincount(group[ok], minlength=len(order)).astype(float)
        s1 = np.bincount(group[ok], weights=v[ok], minlength=len(order))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / c
            s2 = np.bincount(group[ok], weights=(v[ok] - mean[group[ok]]) ** 2, minlength=len(order))
            sd = np.where(c > 1, np.sqrt(s2 / (c - 1)), np.nan)
        cols[f"{k}_mean"] = dict(zip(order, mean.tolist()))
        cols[f"{k}_sd"] = dict(zip(order, sd.tolist()))
    return cols


def flatness_extras(infos) -> dict:
    """The extras of a measured ``sgd`` estimator: ``measured_runs``, ``mean_<measure>`` over runs, and
    ``function_columns`` (:func:`function_columns`); empty when nothing was measured."""
    functions, values = run_measures(infos)
    if not functions:
        return {}
    out = {"measured_runs": len(functions)}
    out.update({f"mean_{k}": float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in values.items()
                if k != "rescaled_output_change"})
    if "rescaled_output_change" in values:
        out["max_rescaled_output_change"] = float(np.nanmax(values["rescaled_output_change"]))
    out["function_columns"] = function_columns(functions, values)
    return out
