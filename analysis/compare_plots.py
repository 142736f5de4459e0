"""A grid of log-log panels, each comparing several estimators of P(f|S) with one reference
estimator on one case (the report's ``figures/pairs.png``).

Only drawing happens here; the application's report chooses the functions and the numbers. Inputs are
natural logs; axes show log10 and say so. Colours and markers follow the series label, the same in
every panel. An empty panel says why (its ``note``) instead of showing nothing silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .plots import LN10, _diagonal, save_figure

_STYLES = [("tab:orange", "s"), ("tab:green", "^"), ("tab:blue", "o"), ("tab:purple", "D"), ("tab:red", "v"),
           ("tab:brown", "P"), ("tab:pink", "X"), ("tab:gray", "*"), ("tab:olive", "<"), ("tab:cyan", ">")]


@dataclass(frozen=True)
class Series:
    """One estimator against the panel's reference: ``log_x[i]``, ``log_y[i]`` are the natural logs
    of P(f_i|S) by the reference and by this estimator, for the same function f_i. ``extra`` is
    appended to the legend entry (e.g. ``r=0.97``); colours follow ``label`` only."""

    label: str
    log_x: np.ndarray
    log_y: np.ndarray
    extra: str = ""

    def __post_init__(self):
        x, y = (np.asarray(v, dtype=float) for v in (self.log_x, self.log_y))
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"series {self.label!r}: log_x and log_y must be 1-d of the same length, got shapes "
                             f"{x.shape} and {y.shape}")
        object.__setattr__(self, "log_x", x)
        object.__setattr__(self, "log_y", y)


@dataclass(frozen=True)
class Panel:
    """One panel: a title, the reference's name for the x axis, its series and a note (shown in
    the panel, e.g. why a series is missing)."""

    title: str
    reference: str
    series: tuple[Series, ...] = ()
    note: str = ""


def figure_compare(panels: Sequence[Panel], *, ncols: int, title: str = ""):
    """A grid of log-log panels (``ncols`` >= 1 per row, filled row by row) with the diagonal y = x.

    Returns a ``matplotlib.figure.Figure`` with one axes per panel, in order (``fig.axes[i]``; a
    colour bar adds none); series with no finite point are listed in the legend as ``label (0)``.
    """
    from matplotlib.figure import Figure  # slow to import: only when a figure is drawn

    from .complexity import _check_int

    ncols = _check_int("ncols", ncols, minimum=1)
    panels = list(panels)
    if not panels:
        raise ValueError("figure_compare needs at least one panel, got none")
    for i, p in enumerate(panels):
        if not isinstance(p, Panel):
            raise TypeError(f"panels[{i}] must be a Panel, got {type(p).__name__}")
    labels = list(dict.fromkeys(s.label for p in panels for s in p.series))
    style = {lab: _STYLES[i % len(_STYLES)] for i, lab in enumerate(labels)}
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.4 * nrows), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.remove()
    for ax, p in zip(axes, panels):
        lo, hi = math.inf, -math.inf
        for s in p.series:
            keep = np.isfinite(s.log_x) & np.isfinite(s.log_y)
            xs, ys = s.log_x[keep] / LN10, s.log_y[keep] / LN10
            colour, marker = style[s.label]
            ax.scatter(xs, ys, s=16, color=colour, marker=marker, alpha=0.7, edgecolors="k", linewidths=0.2,
                       label=f"{s.label} ({int(keep.sum())}{', ' + s.extra if s.extra else ''})", zorder=3)
            if keep.any():
                lo, hi = min(lo, xs.min(), ys.min()), max(hi, xs.max(), ys.max())
        if math.isfinite(lo):
            _diagonal(ax, lo, hi, lw=0.8)
        if p.series:
            ax.legend(loc="upper left", fontsize=7, title="method (functions)", title_fontsize=7)
        if p.note:
            ax.text(0.98, 0.02, p.note, transform=ax.transAxes, fontsize=7, ha="right", va="bottom", color="0.25",
                    wrap=True)
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel(f"log10 P(f|S), {p.reference}", fontsize=8)
        ax.set_ylabel("log10 P(f|S), method", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_compare(panels: Sequence[Panel], path, *, ncols: int, title: str = "") -> Path:
    """Write :func:`figure_compare` as PNG to ``path`` (atomically); returns the path."""
    return save_figure(figure_compare(panels, ncols=ncols, title=title), path)
