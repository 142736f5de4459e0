"""The run folder's report: statistics -> ``summary.json``, figures, ``report.md``.

Computation happens in :mod:`analysis.stats`; drawing in :mod:`analysis.plots`; this module only
chooses what to compute and writes it down.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = {
    "psgd_vs_pb": "P_SGD against P_B, coloured by test error",
    "psgd_vs_pb_lz": "P_SGD against P_B, coloured by LZ complexity",
    "p_vs_complexity": "P_SGD and P_B against LZ complexity",
    "p_vs_error": "P_SGD and P_B against test error",
    "cumulative_mass": "cumulative P_SGD mass of functions ranked by P_B and by P_SGD",
}


def _finite(x):
    """``x`` as a JSON number (ints stay ints), or None when it is nan or infinite."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def compute_summary(frame, *, n_runs: int, n_fit: int, min_count: int, n_boot: int, seed: int,
                    log_ps: float | None, n_train: int) -> dict[str, Any]:
    """Every number of ``summary.json`` from the per-function table ``frame``.

    Correlations use the functions seen at least ``min_count`` times whose log P_B is finite;
    distances use all functions with a finite log P_B.
    """
    import analysis

    has_pb = np.isfinite(frame["log_pb"].to_numpy(dtype=float))
    p = frame["count"].to_numpy(dtype=float) / max(n_fit, 1)
    used = has_pb & (frame["count"].to_numpy() >= min_count)
    summary: dict[str, Any] = {
        "n_runs": int(n_runs), "n_fit": int(n_fit), "fit_fraction": n_fit / n_runs if n_runs else None,
        "n_functions": int(len(frame)), "n_functions_used": int(used.sum()), "min_count": int(min_count),
        "runs_in_used_functions": int(frame["count"].to_numpy()[used].sum()),
        "sgd_mean_test_error": _finite(np.average(frame["test_error"], weights=frame["count"])) if len(frame) else None,
        # Concentration of P_SGD: share of fitted runs in the most frequent function; entropy (nats).
        "sgd_top_share": float(frame["count"].max() / n_fit) if n_fit and len(frame) else None,
        "sgd_entropy": _finite(-np.sum(p * np.log(p))) if n_fit and len(frame) else None,
        "pearson_log": None, "pearson_log_ci": None, "spearman": None, "spearman_ci": None,
        "slope_log": None, "intercept_log": None, "correlation_note": "",
    }
    if used.sum() >= 3:
        corr = analysis.correlate(frame["log_p_sgd"].to_numpy()[used], frame["log_pb"].to_numpy()[used],
                                  n_boot=n_boot, seed=seed)
        summary.update(pearson_log=_finite(corr.pearson), pearson_log_ci=[_finite(v) for v in corr.pearson_ci],
                       spearman=_finite(corr.spearman), spearman_ci=[_finite(v) for v in corr.spearman_ci],
                       slope_log=_finite(corr.slope), intercept_log=_finite(corr.intercept),
                       slope_log_ci=[_finite(v) for v in corr.slope_ci], n_boot_used=_finite(corr.n_boot_used),
                       correlation_note="; ".join(corr.notes))
    else:
        summary["correlation_note"] = (f"only {int(used.sum())} functions were seen at least {min_count} times "
                                       f"with a finite log P_B: too few for a correlation (need 3)")
    if has_pb.any() and n_fit:
        # Logs in, so that P_B below ~e^-745 does not underflow out of the shared support.
        d = analysis.compare_distributions(frame["log_p_sgd"].to_numpy()[has_pb],
                                           frame["log_pb"].to_numpy()[has_pb], log=True)
        summary.update({f"dist_{k}": _finite(v) if isinstance(v, (float, int, np.floating)) else v
                        for k, v in d.as_dict().items()})
    summary["log_p_s"] = _finite(log_ps) if log_ps is not None else None
    summary["pac_bayes_bound"] = None
    if summary["log_p_s"] is not None:
        import nngp

        summary["pac_bayes_bound"] = _finite(nngp.pac_bayes_bound(log_ps, n_train))
    return summary


def make_figures(frame, folder: Path, *, min_count: int) -> dict[str, Path]:
    """Draw the report's figures into ``folder/figures``; returns name -> path."""
    from analysis import plots

    fig_dir = Path(folder) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    has_pb = np.isfinite(frame["log_pb"].to_numpy(dtype=float))
    f = frame[has_pb]
    out: dict[str, Path] = {}
    if len(f) == 0:
        return out
    lpb, lsgd, count = f["log_pb"].to_numpy(), f["log_p_sgd"].to_numpy(), f["count"].to_numpy()
    out["psgd_vs_pb"] = plots.plot_psgd_vs_pb(lpb, lsgd, fig_dir / "psgd_vs_pb.png", counts=count,
                                              color=f["test_error"].to_numpy(), color_label="test error",
                                              title=f"P_SGD vs P_B ({len(f)} functions; min_count for stats "
                                                    f"{min_count})")
    out["psgd_vs_pb_lz"] = plots.plot_psgd_vs_pb(lpb, lsgd, fig_dir / "psgd_vs_pb_lz.png", counts=count,
                                                 color=f["lz_complexity"].to_numpy(), color_label="LZ complexity",
                                                 title="P_SGD vs P_B, coloured by LZ complexity")
    out["p_vs_complexity"] = plots.plot_p_vs_complexity(f["lz_complexity"].to_numpy(), lsgd, lpb,
                                                        fig_dir / "p_vs_complexity.png")
    out["p_vs_error"] = plots.plot_p_vs_error(f["test_error"].to_numpy(), lsgd, lpb, fig_dir / "p_vs_error.png")
    out["cumulative_mass"] = plots.plot_cumulative_mass(lsgd, lpb, fig_dir / "cumulative_mass.png")
    return out


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


SUMMARY_ROWS = [
    ("n_runs", "SGD runs started"), ("n_fit", "runs that reached 100% train accuracy"),
    ("fit_fraction", "fraction fitted"), ("n_functions", "distinct functions found"),
    ("min_count", "min count for statistics"), ("n_functions_used", "functions used in correlations"),
    ("runs_in_used_functions", "runs in those functions"),
    ("pearson_log", "Pearson r of log P_SGD vs log P_B"), ("pearson_log_ci", "  95% bootstrap CI"),
    ("spearman", "Spearman rho"), ("spearman_ci", "  95% bootstrap CI"),
    ("slope_log", "slope of log P_SGD on log P_B"),
    ("dist_kl", "KL(P_SGD || P_B) on shared support (nats)"), ("dist_tv", "total variation on shared support"),
    ("sgd_mean_test_error", "mean test error of SGD's functions"),
    ("sgd_top_share", "share of runs in the commonest function"), ("sgd_entropy", "entropy of P_SGD (nats)"),
    ("sgd_mean_epochs", "mean epochs to fit"), ("gp_test_error", "test error of the GP posterior mean's sign"),
    ("log_p_s", "log P(S) (EP, natural log)"), ("pac_bayes_bound", "marginal-likelihood PAC-Bayes bound"),
]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The key numbers as aligned lines for a terminal."""
    width = max(len(label) for _, label in SUMMARY_ROWS)
    lines = [f"{label:<{width}}  {_fmt(summary.get(key))}" for key, label in SUMMARY_ROWS if key in summary]
    if summary.get("correlation_note"):
        lines.append(f"note: {summary['correlation_note']}")
    return lines


def make_report(folder: str | Path, config, frame, *, n_runs: int, n_fit: int, log_ps: float | None,
                extra: dict[str, Any] | None = None, manifest: dict | None = None) -> tuple[dict[str, Any], Path]:
    """Write ``summary.json``, the figures and ``report.md`` into ``folder``.

    Returns
    -------
    summary : dict
    report_path : Path
    """
    from sampler.store import atomic_write_json, atomic_write_text

    folder = Path(folder)
    a = config.analysis
    summary = compute_summary(frame, n_runs=n_runs, n_fit=n_fit, min_count=a.min_count, n_boot=a.n_boot,
                              seed=a.seed, log_ps=log_ps, n_train=config.data.n_train)
    summary.update(extra or {})
    figures = make_figures(frame, folder, min_count=a.min_count)
    summary["figures"] = {k: str(p.relative_to(folder)) for k, p in figures.items()}
    atomic_write_json(folder / "summary.json", summary)

    timings = (manifest or {}).get("timings", {})
    lines = [
        "# sgd-bayes report", "",
        f"{config.arch.describe()} on {config.data.dataset} (m = {config.data.n_train}, k = {config.data.n_test}, "
        f"split seed {config.data.seed}, binarize {config.data.binarize}"
        + (f", {config.data.corrupt_fraction:.0%} of S's labels random" if config.data.corrupt_fraction else "")
        + f"); {config.sgd.optimizer} lr {config.sgd.lr:g}, batch {config.sgd.batch_size}, loss {config.sgd.loss}; "
          f"P_B by {config.bayes.method}.", "",
        "## Summary", "", "| quantity | value |", "| --- | --- |",
        *[f"| {label.strip()} | {_fmt(summary.get(key))} |" for key, label in SUMMARY_ROWS if key in summary],
        "",
    ]
    if summary.get("correlation_note"):
        lines += [f"**Note:** {summary['correlation_note']}.", ""]
    if timings:
        lines += ["Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items())), ""]
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"### {FIGURES[name]}", "", f"![{FIGURES[name]}]({path.relative_to(folder)})", ""]
    top = frame.sort_values("count", ascending=False).head(10)
    lines += ["## Most frequent functions", "", "| function on E | count | log P_SGD | log P_B | LZ | test error |",
              "| --- | --- | --- | --- | --- | --- |"]
    for _, r in top.iterrows():
        lines.append(f"| `{r['function']}` | {r['count']} | {r['log_p_sgd']:.3f} | {r['log_pb']:.3f} | "
                     f"{r['lz_complexity']:.1f} | {r['test_error']:.2f} |")
    lines += ["", "## Config", "", "```toml", config.to_toml().rstrip(), "```", "",
              "Logs are natural unless an axis says log10. Correlations are over functions seen at least "
              "`min_count` times; intervals are percentile bootstrap over those functions.", ""]
    report = atomic_write_text(folder / "report.md", "\n".join(lines))
    return summary, report
