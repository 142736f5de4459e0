"""Figures of the prior over functions (no training set): drawing only; numbers come from
:mod:`analysis.prior_bias`. Axes show log10 and say so; inputs are natural logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import LN10, save_figure
from .prior_bias import ComplexityBound


def figure_prior_bias(*, rank, freq, complexity, log_p, bound: ComplexityBound, entropy, p_t, binomial,
                      nngp_rank=None, nngp_log_p=None, nngp_complexity=None, complexity_name: str = "LZ complexity",
                      title: str = ""):
    """Four panels: rank-frequency, log P against complexity with the fitted bound, P(T) against the
    uniform prior's binomial, log P against entropy. ``nngp_*``: the NNGP's P(f) of some of the same
    functions (natural log), drawn beside the finite network's frequencies."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 8.5), dpi=120, layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    a.loglog(rank, freq, ".", ms=2, color="C0", label="finite network (sampled)")
    if nngp_rank is not None:
        a.loglog(nngp_rank, np.exp(nngp_log_p), "x", ms=4, color="C3", label="NNGP P(f) (EP), same functions")
    a.set(xlabel="rank (log scale)", ylabel="P(f) (log scale)", title="rank-frequency")
    a.legend(fontsize=8)
    b.scatter(complexity, np.asarray(log_p) / LN10, s=3, color="C0", alpha=0.4, label="finite network")
    xs = np.linspace(np.min(complexity), np.max(complexity), 50)
    b.plot(xs, bound(xs) / LN10, "--", color="k",
           label=f"bound: slope {bound.slope / LN10:.3g} log10 per unit")
    if nngp_complexity is not None:
        b.scatter(nngp_complexity, np.asarray(nngp_log_p) / LN10, s=10, marker="x", color="C3", label="NNGP (EP)")
    b.set(xlabel=complexity_name, ylabel="log10 P(f)", title="log P against complexity")
    b.legend(fontsize=8)
    t = np.arange(len(p_t))
    c.semilogy(t, np.where(p_t > 0, p_t, np.nan), "o-", ms=3, label="finite network")
    c.semilogy(t, binomial, "--", color="0.4", label="uniform prior over functions (binomial)")
    c.set(xlabel="number of ones T", ylabel="P(T) (log scale)", title="number of ones")
    c.legend(fontsize=8)
    d.scatter(entropy, np.asarray(log_p) / LN10, s=3, color="C2", alpha=0.4)
    d.set(xlabel="entropy of the fraction of ones (bits)", ylabel="log10 P(f)", title="log P against entropy")
    for ax in (a, b, c, d):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_prior_bias(path, **kwargs) -> Path:
    """:func:`figure_prior_bias` written as PNG to ``path``."""
    return save_figure(figure_prior_bias(**kwargs), path)


def figure_order_chaos(rows: list[dict]):
    """Across a sweep: the complexity bound's slope and the spread of P(f) against sigma_w, one line per
    (activation, depth). ``rows``: dicts with ``sigma_w``, ``activation``, ``depth``, ``slope`` (natural log
    per unit), ``top_share`` and ``entropy_bits``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.0), dpi=120, layout="constrained")
    axes = fig.subplots(1, 3)
    groups = sorted({(r["activation"], r["depth"]) for r in rows})
    for i, (act, depth) in enumerate(groups):
        sel = sorted((r for r in rows if r["activation"] == act and r["depth"] == depth), key=lambda r: r["sigma_w"])
        sw = [r["sigma_w"] for r in sel]
        style = dict(marker="o", color=f"C{i}", label=f"{act}, depth {depth}")
        axes[0].plot(sw, [r["slope"] / LN10 for r in sel], **style)
        axes[1].semilogy(sw, [r["top_share"] for r in sel], **style)
        axes[2].plot(sw, [r["entropy_bits"] for r in sel], **style)
    axes[0].set(xlabel="sigma_w", ylabel="slope of the bound (log10 P per unit LZ)", title="simplicity bias")
    axes[1].set(xlabel="sigma_w", ylabel="P of the most frequent function (log scale)", title="concentration")
    axes[2].set(xlabel="sigma_w", ylabel="entropy of the sampled P(f) (bits, plug-in)", title="spread")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def plot_order_chaos(rows: list[dict], path) -> Path:
    """:func:`figure_order_chaos` written as PNG to ``path``."""
    return save_figure(figure_order_chaos(rows), path)
