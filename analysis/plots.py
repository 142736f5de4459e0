"""Figures comparing P_SGD with P_B. Only drawing happens here; numbers come from
:mod:`analysis.stats`.

Each ``figure_*`` function builds and returns a ``matplotlib.figure.Figure`` (no pyplot, so no global
state and no interactive backend; rendering is Agg); each ``plot_*`` function builds the same figure,
writes it atomically as PNG to ``path`` and returns the ``Path``. Inputs are natural logs; axes show
log10 and say so. Points with a non-finite coordinate are not drawn, and the figure says how many.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .stats import cumulative_mass

LN10 = math.log(10.0)
_DPI = 120


def _arr(name: str, x, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name} must have length {n} to match the other arrays, got {a.size}")
    return a


def _err(name: str, e, n: int) -> np.ndarray | None:
    """Error bars in natural-log units -> log10 units, shape (n,) or (2, n) (lower, upper)."""
    if e is None:
        return None
    a = np.asarray(e, dtype=float)
    if a.shape not in ((n,), (2, n)):
        raise ValueError(f"{name} must have shape ({n},) or (2, {n}) (lower, upper), got {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{name} must hold finite non-negative half-widths (natural-log units)")
    return a / LN10


def _new_figure(figsize=(6.0, 5.0)):
    from matplotlib.figure import Figure  # slow to import: only when a figure is drawn

    fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot()


def _sizes(counts: np.ndarray | None, n: int) -> np.ndarray:
    """Marker areas (points^2) growing with the square root of the count, 12 to 120."""
    if counts is None:
        return np.full(n, 24.0)
    c = np.maximum(counts, 0)
    top = c.max() if c.size and c.max() > 0 else 1.0
    return 12.0 + 108.0 * np.sqrt(c / top)


def _label(ax, xlabel: str, ylabel: str, title: str, dropped: int = 0, **grid) -> None:
    """Axis labels, title and grid; a note of the ``dropped`` (non-finite) points not drawn."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, **grid)
    if dropped:
        ax.text(0.01, 0.01, f"{dropped} point(s) not shown (non-finite)", transform=ax.transAxes, fontsize=8,
                ha="left", va="bottom", color="0.3")


def _diagonal(ax, lo: float, hi: float, **style) -> None:
    """The dashed line y = x over ``[lo, hi]`` padded by 5% (0.5 when lo == hi)."""
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="0.4", zorder=1, **style)


def wrap_titles(fig) -> None:
    """Break every axes title and the figure's title into lines that fit their width (a long title is
    otherwise cut at the figure's edge)."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig_width = fig.bbox.width
    texts = [(ax.title, ax.get_window_extent(renderer).width) for ax in fig.axes]
    if getattr(fig, "_suptitle", None) is not None:
        texts.append((fig._suptitle, 0.95 * fig_width))
    for text, width in texts:
        content = text.get_text()
        extent = text.get_window_extent(renderer).width
        if not content or extent <= width or width <= 0:
            continue
        chars = max(10, int(len(content.replace("\n", " ")) * width / extent) - 1)
        text.set_text(textwrap.fill(content.replace("\n", " "), chars))


def save_figure(fig, path) -> Path:
    """Render ``fig`` as PNG (titles wrapped to fit: :func:`wrap_titles`) and write it atomically to
    ``path`` (folders created)."""
    from sampler.atomic import atomic_write_bytes  # lazily: importing sampler imports torch (slow)

    wrap_titles(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())


def figure_psgd_vs_pb(log_p_sgd, log_p_b, *, counts=None, color=None, color_label: str = "",
                      yerr=None, xerr=None, title: str = "P_SGD vs P_B", diagonal: bool = True,
                      xlabel: str = "log10 P_B(f|S)", ylabel: str = "log10 P_SGD(f|S)", fit=None):
    """P_SGD against P_B on log10 axes with the diagonal P_SGD = P_B; the scatter is
    ``fig.axes[0].collections[0]``.

    Parameters
    ----------
    log_p_sgd, log_p_b : (n,) arrays
        Natural logs of P_SGD(f|S) (y axis) and P_B(f|S) (x axis), one entry per function (the
        order of :func:`analysis.correlate`).
    counts : (n,) array, optional
        SGD counts: marker area grows with sqrt(count); a legend shows the extremes.
    color : (n,) array, optional
        A value per function (e.g. test error or LZ complexity) for a colour scale, labelled
        ``color_label``.
    yerr, xerr : (n,) or (2, n) arrays, optional
        Error bar half-widths in natural-log units (symmetric, or lower and upper rows); drawn in
        log10 units.
    fit : mapping, optional
        The correlation to draw: ``slope`` and ``intercept`` of ln P_SGD on ln P_B (natural logs), ``r``,
        optionally ``r_ci`` (low, high) and ``note`` (over which functions): the fitted line over the
        points' range and a box with r and the slope.
    """
    x = _arr("log_p_b", log_p_b)
    n = x.size
    y = _arr("log_p_sgd", log_p_sgd, n)
    c = None if counts is None else _arr("counts", counts, n)
    col = None if color is None else _arr("color", color, n)
    ye, xe = _err("yerr", yerr, n), _err("xerr", xerr, n)
    keep = np.isfinite(x) & np.isfinite(y)
    if col is not None:
        keep &= np.isfinite(col)
    fig, ax = _new_figure()
    xs, ys = x[keep] / LN10, y[keep] / LN10
    sizes = _sizes(None if c is None else c[keep], int(keep.sum()))
    sc = ax.scatter(xs, ys, s=sizes, c=None if col is None else col[keep], cmap="viridis" if col is not None else None,
                    alpha=0.8, edgecolors="k", linewidths=0.3, zorder=3)
    if ye is not None or xe is not None:
        ax.errorbar(xs, ys, yerr=None if ye is None else ye[..., keep], xerr=None if xe is None else xe[..., keep],
                    fmt="none", ecolor="0.5", elinewidth=0.7, zorder=2)
    if col is not None and keep.any():
        fig.colorbar(sc, ax=ax, label=color_label)
    if diagonal and keep.any():
        _diagonal(ax, min(xs.min(), ys.min()), max(xs.max(), ys.max()), lw=1, label="y = x")
    if fit is not None and all(fit.get(k) is not None for k in ("slope", "intercept", "r")) and keep.any():
        # ln y = a + b ln x  ->  log10 y = a / ln 10 + b log10 x
        gx = np.array([xs.min(), xs.max()])
        ax.plot(gx, fit["intercept"] / LN10 + fit["slope"] * gx, "-", color="C3", lw=1.2, zorder=4,
                label=f"fit: slope {fit['slope']:.2f}")
        ci = fit.get("r_ci")
        text = f"r = {fit['r']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else "")
        text += f", slope {fit['slope']:.2f}" + (f"\n{fit['note']}" if fit.get("note") else "")
        ax.text(0.98, 0.02, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", ec="0.6", alpha=0.9), zorder=5)
    if c is not None and keep.any():
        cmin, cmax = int(np.min(c[keep])), int(np.max(c[keep]))
        for v in sorted({cmin, cmax}):
            ax.scatter([], [], s=_sizes(np.array([v, cmax], dtype=float), 2)[0], color="0.7", edgecolors="k",
                       linewidths=0.3, label=f"count {v}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    _label(ax, xlabel, ylabel, title, int((~keep).sum()))
    return fig


def plot_psgd_vs_pb(log_p_sgd, log_p_b, path, *, counts=None, color=None, color_label: str = "",
                    yerr=None, xerr=None, title: str = "P_SGD vs P_B", diagonal: bool = True,
                    xlabel: str = "log10 P_B(f|S)", ylabel: str = "log10 P_SGD(f|S)", fit=None) -> Path:
    """Write :func:`figure_psgd_vs_pb` (parameters documented there) as PNG to ``path``; returns it."""
    return save_figure(figure_psgd_vs_pb(log_p_sgd, log_p_b, counts=counts, color=color, color_label=color_label,
                                         yerr=yerr, xerr=xerr, title=title, diagonal=diagonal, xlabel=xlabel,
                                         ylabel=ylabel, fit=fit), path)


def _figure_p_vs(value, log_p_sgd, log_p_b, *, xlabel: str, title: str, counts=None, yerr_b=None):
    v = _arr("x values", value)
    n = v.size
    series = [("P_SGD", _arr("log_p_sgd", log_p_sgd, n), "o", "tab:blue", None)]
    if log_p_b is not None:
        series.append(("P_B", _arr("log_p_b", log_p_b, n), "s", "tab:orange", _err("yerr_b", yerr_b, n)))
    c = None if counts is None else _arr("counts", counts, n)
    fig, ax = _new_figure()
    dropped = 0
    for label, lp, marker, colour, err in series:
        keep = np.isfinite(v) & np.isfinite(lp)
        dropped += int((~keep).sum())
        ax.scatter(v[keep], lp[keep] / LN10, s=_sizes(None if c is None else c[keep], int(keep.sum())),
                   marker=marker, color=colour, alpha=0.6, edgecolors="k", linewidths=0.3, label=label, zorder=3)
        if err is not None:
            ax.errorbar(v[keep], lp[keep] / LN10, yerr=err[..., keep], fmt="none", ecolor=colour, elinewidth=0.7,
                        alpha=0.6, zorder=2)
    _label(ax, xlabel, "log10 P(f|S)", title, dropped)
    ax.legend(loc="best", fontsize=8)
    return fig


def figure_p_vs_complexity(complexity, log_p_sgd, log_p_b=None, *, counts=None, yerr_b=None,
                           complexity_label: str = "LZ complexity", title: str = "P(f|S) vs complexity"):
    """P_SGD (circles) and P_B (squares) of each function against its complexity, log10 y axis; one
    scatter collection per series in ``fig.axes[0].collections`` (P_SGD first).

    Parameters
    ----------
    complexity : (n,) array
        Complexity of each function (e.g. :func:`analysis.lz_complexity`).
    log_p_sgd, log_p_b : (n,) arrays
        Natural logs of P_SGD(f|S) and P_B(f|S); P_B omitted if None.
    counts : (n,) array, optional
        SGD counts for the marker area.
    yerr_b : (n,) or (2, n) array, optional
        Error bars of log P_B in natural-log units.
    """
    return _figure_p_vs(complexity, log_p_sgd, log_p_b, xlabel=complexity_label, title=title, counts=counts,
                        yerr_b=yerr_b)


def plot_p_vs_complexity(complexity, log_p_sgd, log_p_b, path, *, counts=None, yerr_b=None,
                         complexity_label: str = "LZ complexity", title: str = "P(f|S) vs complexity") -> Path:
    """Write :func:`figure_p_vs_complexity` as PNG to ``path``; returns the path."""
    return save_figure(figure_p_vs_complexity(complexity, log_p_sgd, log_p_b, counts=counts, yerr_b=yerr_b,
                                              complexity_label=complexity_label, title=title), path)


def figure_p_vs_error(test_error, log_p_sgd, log_p_b=None, *, counts=None, yerr_b=None,
                      title: str = "P(f|S) vs test error"):
    """P_SGD and P_B of each function against its test error on E (fraction, x axis); as
    :func:`figure_p_vs_complexity` otherwise."""
    return _figure_p_vs(test_error, log_p_sgd, log_p_b, xlabel="test error on E", title=title, counts=counts,
                        yerr_b=yerr_b)


def plot_p_vs_error(test_error, log_p_sgd, log_p_b, path, *, counts=None, yerr_b=None,
                    title: str = "P(f|S) vs test error") -> Path:
    """Write :func:`figure_p_vs_error` as PNG to ``path``; returns the path."""
    return save_figure(figure_p_vs_error(test_error, log_p_sgd, log_p_b, counts=counts, yerr_b=yerr_b,
                                         title=title), path)


def figure_cumulative_mass(log_p_sgd, log_p_b, *, normalise: bool = False,
                           title: str = "Cumulative P_SGD mass"):
    """Cumulative P_SGD mass of the functions ranked by P_B (how much of SGD's mass P_B's favourites
    carry) and ranked by P_SGD (the most any set of that size can carry); log x axis.

    ``log_p_sgd``, ``log_p_b`` and ``normalise`` are those of :func:`analysis.cumulative_mass`
    (``normalise``: the curves end at 1). The figure's ``fig.axes[0].lines`` are two: ranked by
    P_B, then by P_SGD.
    """
    cm = cumulative_mass(log_p_sgd, log_p_b, normalise=normalise)
    fig, ax = _new_figure()
    ax.step(cm.rank, cm.by_pb, where="post", color="tab:orange", label="functions ranked by P_B")
    ax.step(cm.rank, cm.by_sgd, where="post", color="tab:blue", ls="--", label="functions ranked by P_SGD")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02 if normalise else max(1.02 * float(cm.by_sgd[-1]), 1e-12))
    _label(ax, "number of functions (rank)", "cumulative P_SGD mass" + (" (renormalised)" if normalise else ""),
           title, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_cumulative_mass(log_p_sgd, log_p_b, path, *, normalise: bool = False,
                         title: str = "Cumulative P_SGD mass") -> Path:
    """Write :func:`figure_cumulative_mass` as PNG to ``path``; returns the path."""
    return save_figure(figure_cumulative_mass(log_p_sgd, log_p_b, normalise=normalise, title=title), path)
