"""Sweep reports: one figure and one table over the cases of a sweep (random labels, width,
optimiser settings), from the cases' summaries. The sweep itself (``[sweep]`` axes or points, one
case per point) is expanded by :meth:`sgdbayes.config.ExperimentConfig.cases`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from analysis.plots import save_figure, wrap_titles
from sampler.store import atomic_write_json

from .tables import markdown_table


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else math.nan


def _axis(cases, key: str) -> np.ndarray:
    return np.array([dict(c.settings).get(key, math.nan) for c in cases], dtype=float)


def _figure(plt, summaries, n: int, figsize):
    """A row of ``n`` panels and ``get(key)``: the summaries' values of ``key`` (nan where absent)."""
    fig, axes = plt.subplots(1, n, figsize=figsize)
    return fig, axes, lambda key: np.array([_num(s.get(key)) for s in summaries])


def _groups(values: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """``(value, mask)`` per distinct value of a sweep axis; one group of every case where it is not set."""
    return [(v, values == v) for v in sorted(set(values[np.isfinite(values)]))] or [
        (math.nan, np.ones(len(values), bool))]


def _finish(axes, *sets, fontsize=8):
    for ax, kw in zip(axes, sets):
        ax.set(**kw)
        ax.legend(fontsize=fontsize)


@dataclass(frozen=True)
class SweepKind:
    """How a kind of sweep is shown: the table's columns (summary key, title) and its figure,
    ``draw(pyplot, cases, summaries) -> matplotlib Figure`` (the sweep's cases and their summaries)."""

    columns: tuple[tuple[str, str], ...]
    draw: Callable


#: Registered sweep kinds (``[sweep] kind = ...``); :func:`register_sweep_kind` adds one.
SWEEP_KINDS: dict[str, SweepKind] = {}


def register_sweep_kind(name: str, columns, draw: Callable) -> None:
    """Register a sweep kind: its table columns and figure function (see :class:`SweepKind`)."""
    SWEEP_KINDS[name] = SweepKind(tuple(columns), draw)


def _draw_random_labels(plt, cases, summaries):
    fig, axes, get = _figure(plt, summaries, 3, (14, 4))
    x, xlabel = _axis(cases, "data.corrupt_fraction"), "fraction of S's labels random"
    axes[0].plot(x, get("sgd_mean_epochs"), "o-")
    axes[0].set(xlabel=xlabel, ylabel="SGD epochs to 100% train accuracy")
    for key, label in [("sgd_mean_test_error", "SGD test error"), ("gp_test_error", "GP (EP) test error"),
                       ("pac_bayes_bound", "PAC-Bayes bound (from log P(S))")]:
        axes[1].plot(x, get(key), "o-", label=label)
    axes[1].axhline(0.5, color="grey", ls=":", label="chance")
    _finish(axes[1:2], dict(xlabel=xlabel, ylabel="error", ylim=(0, 1.05)))
    axes[2].plot(x, get("log_p_s"), "o-")
    axes[2].set(xlabel=xlabel, ylabel="log P(S) (natural log, EP)")
    return fig


def _draw_width(plt, cases, summaries):
    fig, axes, get = _figure(plt, summaries, 2, (11, 4))
    widths = _axis(cases, "arch.width")
    for d, sel in _groups(_axis(cases, "arch.depth")):
        label = f"depth {d:g}" if math.isfinite(d) else "SGD"
        order = np.argsort(widths[sel])
        axes[0].plot(widths[sel][order], get("sgd_mean_test_error")[sel][order], "o-", label=f"SGD, {label}")
        gp = get("gp_test_error")[sel]
        if np.isfinite(gp).any():
            axes[0].axhline(np.nanmean(gp), ls="--", color=axes[0].lines[-1].get_color(),
                            label=f"NNGP (infinite width), {label}")
        axes[1].plot(widths[sel][order], get("sgd_top_share")[sel][order], "o-", label=label)
    _finish(axes, dict(xscale="log", xlabel="width", ylabel="test error on E"),
            dict(xscale="log", xlabel="width", ylabel="share of runs in the commonest function"))
    return fig


def _draw_generic(plt, cases, summaries):
    names = [c.name for c in cases]
    fig, axes, get = _figure(plt, summaries, 2, (max(8, 1.2 * len(names) + 4), 4))
    x = np.arange(len(names))
    for off, key, label in [(-0.15, "pearson_log", "Pearson (log)"), (0.15, "spearman", "Spearman")]:
        y = get(key)
        ci = np.array([s.get(key + "_ci") or [math.nan, math.nan] for s in summaries], dtype=float)
        yerr = np.abs(np.vstack([y - ci[:, 0], ci[:, 1] - y]))
        axes[0].errorbar(x + off, y, yerr=np.nan_to_num(yerr), fmt="o", capsize=3, label=label)
    axes[1].bar(x - 0.2, get("dist_kl"), 0.4, label="KL(P_SGD||P_B), nats")
    axes[1].bar(x + 0.2, get("dist_tv"), 0.4, label="total variation")
    _finish(axes, dict(xticks=x, ylabel="correlation of P_SGD with P_B", ylim=(-1.05, 1.05)), dict(xticks=x))
    for ax in axes:
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    return fig


def pair_value(summary: dict, a: str, b: str, key: str) -> float:
    """``key`` of the pair (a, b) in a case summary's ``pairs`` (nan if absent)."""
    for p in summary.get("pairs", []):
        if p.get("a") == a and p.get("b") == b:
            return _num(p.get(key))
    return math.nan


P_FLOOR = 1e-12  # p-values below this are drawn at it, so that the ones near 0.05 stay readable


def _draw_finite_width(plt, cases, summaries):
    """log P(S) per width (the finite network's reference estimator, :attr:`Estimator.reference`,
    with its 95% interval; EP and tilting in the NNGP limit), then per pair of the first case: total
    variation and the chi-square p-value."""
    widths = _axis(cases, "arch.width")
    pairs = [(p["a"], p["b"]) for p in summaries[0].get("pairs", [])] if summaries else []
    refs = [s.label for s in cases[0].estimators if s.estimator.reference] if cases else []
    fig, axes, _ = _figure(plt, summaries, 3, (16, 4.2))
    for m, mask in _groups(_axis(cases, "data.n_train")):
        sel = np.flatnonzero(mask)
        sel = sel[np.argsort(widths[sel])]
        tag = f"m={m:g}" if math.isfinite(m) else ""
        w = widths[sel]
        color = None
        for ref in refs:
            prior = np.array([_num(summaries[i]["extras"].get(ref, {}).get("log_p_s_prior")) for i in sel])
            ci = np.array([summaries[i]["extras"].get(ref, {}).get("p_s_prior_ci") or [math.nan, math.nan]
                           for i in sel], dtype=float)
            with np.errstate(divide="ignore"):
                lo, hi = np.log(ci[:, 0]), np.log(ci[:, 1])
            line = axes[0].errorbar(w, prior, yerr=np.nan_to_num(np.abs(np.vstack([prior - lo, hi - prior]))),
                                    fmt="o-", capsize=3, label=f"{ref}, finite width {tag}")
            color = line[0].get_color()
        for key, style, label in [("log_p_s", "--", "EP"), ("log_p_s_tilting", ":", "tilting")]:
            vals = [_num(summaries[i].get(key)) for i in sel]
            if np.isfinite(vals).any():
                axes[0].axhline(np.nanmean(vals), ls=style, color=color, label=f"NNGP by {label} {tag}")
        for a, b in pairs:
            axes[1].plot(w, [pair_value(summaries[i], a, b, "dist_tv") for i in sel], "o-", label=f"{a} vs {b} {tag}")
            axes[2].plot(w, [max(pair_value(summaries[i], a, b, "fit_pvalue"), P_FLOOR) for i in sel], "o-",
                         label=f"{a} vs {b} {tag}")
    axes[2].axhline(0.05, color="grey", ls=":", label="0.05")
    _finish(axes, dict(xscale="log", xlabel="width", ylabel="log P(S) (natural log)"),
            dict(xscale="log", xlabel="width", ylabel="total variation on shared support"),
            dict(xscale="log", yscale="log", xlabel="width", ylim=(P_FLOOR / 3, 3), ylabel="chi-square p-value",
                 title=f"same distribution? (p < {P_FLOOR:g} drawn at {P_FLOOR:g})"), fontsize=7)
    return fig


def _draw_pairs_by_width(plt, cases, summaries):
    """Per pair of the first case, against width: Pearson of the logs with its bootstrap 95% interval,
    KL(a||b) and total variation (both on the shared support)."""
    widths = _axis(cases, "arch.width")
    order = np.argsort(widths)
    pairs = [(p["a"], p["b"]) for p in summaries[0].get("pairs", [])] if summaries else []
    fig, axes, _ = _figure(plt, summaries, 3, (16, 4.2))
    for a, b in pairs:
        w = widths[order]
        r = np.array([pair_value(summaries[i], a, b, "pearson_log") for i in order])
        ci = np.array([next((p.get("pearson_log_ci") for p in summaries[i].get("pairs", [])
                             if p.get("a") == a and p.get("b") == b), None) or [math.nan, math.nan]
                       for i in order], dtype=float)
        yerr = np.nan_to_num(np.abs(np.vstack([r - ci[:, 0], ci[:, 1] - r])))
        axes[0].errorbar(w, r, yerr=yerr, fmt="o-", capsize=3, label=f"{a} vs {b}")
        axes[1].plot(w, [pair_value(summaries[i], a, b, "dist_kl") for i in order], "o-", label=f"{a} vs {b}")
        axes[2].plot(w, [pair_value(summaries[i], a, b, "dist_tv") for i in order], "o-", label=f"{a} vs {b}")
    _finish(axes, dict(xscale="log", xlabel="width", ylabel="Pearson r of natural logs (95% CI)", ylim=(-1.05, 1.05)),
            dict(xscale="log", yscale="log", xlabel="width", ylabel="KL(a || b) on shared support (nats)"),
            dict(xscale="log", xlabel="width", ylabel="total variation on shared support"), fontsize=7)
    return fig


register_sweep_kind("random_labels", [("sgd_mean_epochs", "SGD epochs to fit"), ("fit_fraction", "fit fraction"),
                                      ("sgd_mean_test_error", "SGD test error"), ("gp_test_error", "GP test error"),
                                      ("log_p_s", "log P(S)"), ("pac_bayes_bound", "PAC-Bayes bound")],
                    _draw_random_labels)
register_sweep_kind("width", [("sgd_mean_test_error", "SGD test error"), ("gp_test_error", "NNGP test error"),
                              ("sgd_top_share", "top-function share"), ("sgd_entropy", "P_SGD entropy"),
                              ("n_functions", "functions"), ("sgd_mean_epochs", "epochs to fit")], _draw_width)
_GENERIC_COLUMNS = [("pearson_log", "Pearson (log)"), ("spearman", "Spearman"), ("dist_kl", "KL"),
                    ("dist_tv", "TV"), ("n_functions_used", "functions used"), ("sgd_mean_test_error", "test error")]
register_sweep_kind("optimizer", _GENERIC_COLUMNS, _draw_generic)
register_sweep_kind("generic", _GENERIC_COLUMNS, _draw_generic)
register_sweep_kind("finite_width", [("log_p_s_prior", "log P(S) finite (prior)"), ("log_p_s", "log P(S) NNGP (EP)"),
                                     ("log_p_s_tilting", "log P(S) NNGP (tilting)"),
                                     ("log_p_s_tilting_se", "tilting s.e.")], _draw_finite_width)
register_sweep_kind("pairs_by_width", [("ntk_log_p_fit", "log P(fits S), NTK"), ("fit_fraction", "SGD fit fraction"),
                                       ("n_functions", "functions")], _draw_pairs_by_width)


def sweep_section(folder: Path, config, cases, summaries: Sequence[dict]) -> list[str]:
    """Draw ``figures/sweep.png`` and write ``sweep.json``; returns the report's sweep section."""
    import matplotlib  # slow to import: only when a sweep is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind, folder = SWEEP_KINDS[config.sweep.kind], Path(folder)
    fig, path = kind.draw(plt, cases, summaries), folder / "figures" / "sweep.png"
    fig.set_dpi(120)
    wrap_titles(fig)
    fig.tight_layout()
    save_figure(fig, path)  # atomic, like every other figure
    plt.close(fig)
    atomic_write_json(folder / "sweep.json", {"kind": config.sweep.kind, "points": [
        {"name": c.name, "settings": dict(c.settings), "summary": {k: v for k, v in s.items()
                                                                   if k not in ("pairs", "extras")}}
        for c, s in zip(cases, summaries)]})
    table = markdown_table(["case"] + [t for _, t in kind.columns],
                           [[c.name] + [s.get(k) for k, _ in kind.columns] for c, s in zip(cases, summaries)])
    return [f"## Sweep: {config.sweep.kind}", "", table, "", f"![sweep]({path.relative_to(folder)})", ""]


from . import double_descent  # noqa: E402,F401 (registers the sweep kind double_descent)
