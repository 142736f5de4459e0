"""Flatness against generalisation: rank and linear correlations of sharpness measures (and of log
P_B, the volume) with test error, log P_B and log P_SGD, with bootstrap intervals; one figure per
measure. Pure functions over numpy arrays (:mod:`analysis.stats` computes, this module picks pairs);
results are frozen dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .plots import _new_figure, save_figure
from .stats import _as_1d, correlate


@dataclass(frozen=True)
class FlatnessCorrelation:
    """Correlation of one measure (x) with one target (y) over the ``n`` points where both are finite.

    Attributes
    ----------
    measure, target : str
        Their names (e.g. ``"epsilon_sharpness"``, ``"test_error"``).
    n : int
        Points used (functions, or runs).
    spearman, pearson : float
        Spearman rho and Pearson r (nan below 3 points or for a constant variable).
    spearman_ci, pearson_ci : (float, float)
        Percentile bootstrap intervals (95%) from paired resamples of the points.
    notes : tuple of str
        Why a field is nan, or what the bootstrap left out.
    """

    measure: str
    target: str
    n: int
    spearman: float
    spearman_ci: tuple[float, float]
    pearson: float
    pearson_ci: tuple[float, float]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def flatness_correlations(measures: Mapping[str, Any], targets: Mapping[str, Any], *, n_boot: int = 1000,
                          seed: int = 0) -> tuple[FlatnessCorrelation, ...]:
    """Each measure against each target (a measure is never paired with itself).

    Parameters
    ----------
    measures, targets : mapping of name -> (n,) array
        The same ``n`` points (e.g. functions) in every array; non-finite entries drop that point
        from the pairs it is in.
    n_boot, seed
        Bootstrap resamples and their seed (:func:`analysis.correlate`).
    """
    arrays = {**{k: _as_1d(k, v) for k, v in measures.items()}, **{k: _as_1d(k, v) for k, v in targets.items()}}
    sizes = {a.size for a in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"measures and targets must have one length, got lengths {sorted(sizes)}")
    nan2 = (math.nan, math.nan)
    out = []
    for m in measures:
        for t in targets:
            if m == t:
                continue
            x, y = arrays[m], arrays[t]
            ok = np.isfinite(x) & np.isfinite(y)
            n = int(ok.sum())
            if n < 3:
                out.append(FlatnessCorrelation(m, t, n, math.nan, nan2, math.nan, nan2,
                                               (f"{n} point(s) with both finite: too few (need 3)",)))
                continue
            c = correlate(y[ok], x[ok], n_boot=n_boot, seed=seed)
            notes = tuple(s.replace("log_p_b", m).replace("log_p_sgd", t) for s in c.notes
                          if "slope" not in s)
            out.append(FlatnessCorrelation(m, t, n, c.spearman, c.spearman_ci, c.pearson, c.pearson_ci, notes))
    return tuple(out)


def figure_flatness(values, targets: Mapping[str, Any], *, name: str, counts=None, groups=None,
                    correlations: Mapping[str, FlatnessCorrelation] | None = None):
    """One measure (x axis; log10 when all finite values are positive) against each target, one
    panel per target; ``groups`` (n,) labels colour the points (e.g. the sweep's cases), ``counts``
    size them; ``correlations[target]`` goes into each panel's title. Returns the Figure."""
    x = _as_1d(name, values)
    fig, _ = _new_figure(figsize=(4.2 * max(1, len(targets)), 3.8))
    fig.clear()
    axes = fig.subplots(1, max(1, len(targets)), squeeze=False)[0]
    pos = x[np.isfinite(x)]
    logx = bool(pos.size) and bool((pos > 0).all())
    groups = np.asarray(groups if groups is not None else np.zeros(x.size, dtype=int))
    sizes = None if counts is None else 10 + 60 * np.sqrt(np.asarray(counts, float) / max(1.0, np.max(counts)))
    for ax, (t, yv) in zip(axes, targets.items()):
        y = _as_1d(t, yv)
        for g in dict.fromkeys(groups.tolist()):
            sel = (groups == g) & np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[sel], y[sel], s=None if sizes is None else sizes[sel], alpha=0.6,
                       label=str(g) if groups.dtype.kind in "US" or len(set(groups.tolist())) > 1 else None)
        c = (correlations or {}).get(t)
        title = t if c is None else f"{t}: Spearman {c.spearman:.2f} [{c.spearman_ci[0]:.2f}, {c.spearman_ci[1]:.2f}]"
        ax.set_title(title, fontsize=9)
        ax.set(xlabel=name + (" (log scale)" if logx else ""), ylabel=t)
        if logx:
            from matplotlib.ticker import NullFormatter  # matplotlib only when drawing

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # less than a decade: minor labels would overlap
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def plot_flatness(values, targets: Mapping[str, Any], path, **kw) -> Path:
    """:func:`figure_flatness` written as PNG to ``path``; returns the path."""
    return save_figure(figure_flatness(values, targets, **kw), path)
