"""The run folder's report, from the long table: ``summary.json``, ``functions.parquet``, figures,
``report.md`` (and for a sweep, the sweep's table and figure). :mod:`analysis` computes and draws;
this module chooses what to compute and writes it down.

For each case and each pair ``(a, b)`` of :attr:`ExperimentConfig.pairs` (``a`` tested, ``b`` the
reference), :func:`pair_stats` compares the two over the functions both *see* (a sampler: count >=
``analysis.min_count``; a scorer: a finite log P). The first pair of a case is its *primary* pair:
its statistics are the case's summary (docs/DESIGN.md's keys ``n_runs``, ``n_fit``, ``n_functions``,
``pearson_log``, ``spearman``, ``min_count``, ...) and it gets the full set of figures.
``summary.json`` holds the first case's summary at top level and ``cases``, every case's summary,
pairs and extras.

Error-bar checks: every scorer with standard errors (``tilting``) against every other scorer without
(``ep``): ``z = (ln P_ep - ln P_tilting) / se`` over the functions both scored, a table, a figure with
error bars, and ``median_abs_z`` in the summary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

import analysis
import nngp
from analysis import plots
from analysis.compare_plots import Panel, Series, plot_compare
from sampler.store import atomic_write_json, atomic_write_table, atomic_write_text

from .estimators.base import EstimatorResult
from .flatness import flatness_pooled, flatness_section
from .sweep import sweep_section
from .tables import csv_table, fmt, markdown_table
from .verdict import glossary_lines, verdict_lines

FIGURES = {
    "psgd_vs_pb": "P_SGD against P_B, coloured by test error",
    "psgd_vs_pb_lz": "P_SGD against P_B, coloured by LZ complexity",
    "p_vs_complexity": "P_SGD and P_B against LZ complexity",
    "p_vs_error": "P_SGD and P_B against test error",
    "cumulative_mass": "cumulative P_SGD mass of functions ranked by P_B and by P_SGD",
    "pairs": "every pair: log P(f|S) of the tested estimator against its reference",
}


def _finite(x):
    """``x`` as JSON (ints and bools stay so; nan and infinities become None), recursively."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if x is None or isinstance(x, (str, int, np.bool_, np.integer)):
        return x.item() if isinstance(x, np.generic) else x
    return float(x) if math.isfinite(float(x)) else None


# --- pairs ---------------------------------------------------------------------------------------------
def pair_stats(a: EstimatorResult, b: EstimatorResult, *, min_count: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Statistics of estimator ``a`` (y axis) against reference ``b`` (x axis) over the functions
    both see: Pearson and Spearman of the natural logs and the log-log slope with bootstrap intervals
    (``pearson_log``, ``spearman``, ``slope_log`` and their ``_ci``; none below 3 common functions),
    ``mean_abs_dlog`` = mean |ln P_a - ln P_b| beside ``dlog_noise``, the counting noise; ``dist_*``
    (:func:`analysis.compare_distributions`: KL(P_a||P_b), total variation, Jensen-Shannon, both
    renormalised on the functions both found at all); ``fit_*`` (:func:`fit_pvalue_test`); ``note``."""
    sa, sb = a.seen(min_count), b.seen(min_count)
    lpa, lpb = a.by_function(), b.by_function()
    common = sorted(sa & sb, key=lambda f: (-lpb[f], f))
    row: dict[str, Any] = {"a": a.label, "b": b.label, "n_a": len(sa), "n_b": len(sb), "n_common": len(common),
                           "pearson_log": None, "pearson_log_ci": None, "spearman": None, "spearman_ci": None,
                           "slope_log": None, "slope_log_ci": None, "intercept_log": None, "mean_abs_dlog": None,
                           "dlog_noise": None}
    notes = []
    for e, s in ((a, sa), (b, sb)):
        if e.is_sampler and e.n_fit == 0:
            notes.append(f"{e.label}: 0 of {e.n_samples} samples fit S")
        elif not s:
            notes.append(f"{e.label}: no function seen >= {min_count} times" if e.is_sampler
                         else f"{e.label}: no function scored")
    if common:
        la, lb = np.array([lpa[f] for f in common]), np.array([lpb[f] for f in common])
        row["mean_abs_dlog"] = float(np.mean(np.abs(la - lb)))
        var = np.zeros(len(common))
        for e in (a, b):
            if e.is_sampler:
                counts = e.by_function("counts")
                c = np.array([counts[f] for f in common], dtype=float)
                var += (1.0 - c / e.n_fit) / c
        row["dlog_noise"] = float(np.mean(np.sqrt(var)))
    if len(common) >= 3:
        c = analysis.correlate(la, lb, n_boot=n_boot, seed=seed)
        row.update(pearson_log=c.pearson, pearson_log_ci=list(c.pearson_ci), spearman=c.spearman,
                   spearman_ci=list(c.spearman_ci), slope_log=c.slope, slope_log_ci=list(c.slope_ci),
                   intercept_log=c.intercept, n_boot_used=c.n_boot_used)
        notes += list(c.notes)
    else:
        notes.append(f"{len(common)} common function(s): too few for a correlation (need 3)")
    both = sorted(a.seen(1) & b.seen(1))
    if both:
        d = analysis.compare_distributions(np.array([lpa[f] for f in both]), np.array([lpb[f] for f in both]),
                                           log=True)
        row.update({f"dist_{k}": v for k, v in d.as_dict().items()})
    row.update(fit_pvalue_test(a, b))
    row["note"] = "; ".join(notes)
    return _finite(row)


def fit_pvalue_test(a: EstimatorResult, b: EstimatorResult) -> dict[str, Any]:
    """``fit_test``, ``fit_pvalue``, ``fit_dof``: chi-square test that ``a`` and ``b`` describe the same
    distribution of functions: homogeneity of two samples' counts, or goodness of fit of one sample's
    counts to the other's probabilities (functions it did not score, and cells expected below 5, are
    pooled into one "other" cell). None for two scorers."""
    none = {"fit_test": None, "fit_pvalue": None, "fit_dof": None}
    if a.is_sampler and b.is_sampler:
        ca, cb = a.by_function("counts"), b.by_function("counts")
        fs = sorted(set(ca) | set(cb))
        t = analysis.homogeneity([ca.get(f, 0) for f in fs], [cb.get(f, 0) for f in fs])
        kind = "homogeneity"
    elif a.is_sampler or b.is_sampler:
        sample, model = (a, b) if a.is_sampler else (b, a)
        counts, lp = sample.by_function("counts"), model.by_function()
        fs = sorted(f for f, v in lp.items() if math.isfinite(v))
        if not fs or not sample.n_fit:
            return none
        t = analysis.goodness_of_fit([counts.get(f, 0) for f in fs], [lp[f] for f in fs], n=sample.n_fit)
        kind = "goodness-of-fit"
    else:
        return none
    return {"fit_test": kind, "fit_pvalue": t.pvalue, "fit_dof": t.dof}


PAIR_COLUMNS = [("a", "estimator"), ("b", "reference"), ("n_a", "n seen"), ("n_b", "n ref"),
                ("n_common", "common"), ("pearson_log", "pearson"), ("pearson_log_ci", "95% CI"),
                ("spearman", "spearman"), ("slope_log", "slope"), ("mean_abs_dlog", "mean |dlnP|"),
                ("dlog_noise", "count noise"), ("dist_kl", "KL(a||b)"), ("dist_tv", "TV"), ("dist_js", "JS"),
                ("fit_pvalue", "p (chi2)"), ("note", "note")]


def error_bar_checks(case, est: Mapping[str, EstimatorResult]) -> list[dict[str, Any]]:
    """For each scorer ``r`` of ``case`` with error bars (:attr:`Estimator.has_error_bars`) and each
    scorer ``e`` without that estimates the same distribution (:attr:`Estimator.target`): the functions both scored, ``z = (ln P_e - ln P_r) / se_r`` and its median |z|."""
    scorers = [(s.estimator.has_error_bars, est[s.label], s.estimator.target) for s in case.estimators
               if s.estimator.kind == "scorer"]
    out = []
    for r, target in ((r, t) for bars, r, t in scorers if bars):
        lr, se = r.by_function(), r.by_function("log_p_se")
        for e in (e for bars, e, t in scorers if not bars and t == target):
            le = e.by_function()
            fs = [f for f in r.functions if f in le and math.isfinite(lr[f]) and math.isfinite(le[f])]
            row = {"log_p": [le[f] for f in fs], "log_p_ref": [lr[f] for f in fs], "se_ref": [se[f] for f in fs]}
            z = analysis.z_scores(row["log_p"], row["log_p_ref"], row["se_ref"])
            zf, d = z.z[np.isfinite(z.z)], np.subtract(row["log_p"], row["log_p_ref"])
            out.append({"estimator": e.label, "reference": r.label, "functions": fs, **row, "z": z.z.tolist(),
                        "median_abs_z": z.median_abs_z, "median_se_ref": z.median_se, "n_z": int(zf.size),
                        "mean_z": float(zf.mean()) if zf.size else None,
                        "median_z": float(np.median(zf)) if zf.size else None,
                        "sd_z": float(zf.std(ddof=1)) if zf.size > 1 else None,
                        "mean_dlog": float(d.mean()) if d.size else None})
    return out


# --- per case ------------------------------------------------------------------------------------------
def primary_pair(config, est: Mapping[str, EstimatorResult]) -> tuple[str, str] | None:
    """A case's primary pair: the config's first ``(a, b)``, except where ``b`` is a scorer without error
    bars (EP, biased: ``benchmarks/ep_bias.py``) and a scorer with them of the same target (tilting,
    unbiased), which the config also pairs with ``a``, scored every function the pair ``(a, b)`` compares:
    then ``(a, that scorer)``, the more accurate P_B on the same functions."""
    if not config.pairs:
        return None
    a, b = config.pairs[0]
    eb = config.estimator(b).estimator
    if eb.kind != "scorer" or eb.has_error_bars:
        return a, b
    min_count = config.analysis.min_count
    common = est[a].seen(min_count) & est[b].seen(min_count)
    for x, r in config.pairs[1:]:
        er = config.estimator(r).estimator
        if x != a or er.kind != "scorer" or not er.has_error_bars or er.target != eb.target:
            continue
        lp = est[r].by_function()
        if common and all(math.isfinite(lp.get(f, math.nan)) for f in common):
            return a, r
    return a, b


def case_summary(case, config, est: Mapping[str, EstimatorResult], extras: Mapping[str, dict], checks,
                 primary: tuple[str, str] | None = None) -> dict[str, Any]:
    """The summary of one case: its primary pair's (:func:`primary_pair`) statistics at top level, every
    pair's (``pairs``), the :func:`error_bar_checks` (``checks``) and the estimators' extras."""
    primary_labels = primary or primary_pair(config, est)
    a_cfg = config.analysis
    pairs = [pair_stats(est[a], est[b], min_count=a_cfg.min_count, n_boot=a_cfg.n_boot, seed=a_cfg.seed)
             for a, b in config.pairs]
    split = case.split()
    summary: dict[str, Any] = {"case": case.name, "settings": dict(case.settings), "min_count": a_cfg.min_count}
    if config.pairs:
        a, b = (est[x] for x in primary_labels)
        primary = pairs[list(config.pairs).index(tuple(primary_labels))]
        summary["primary_pair"] = list(primary_labels)
        if tuple(primary_labels) != tuple(config.pairs[0]):
            summary["primary_pair_note"] = (f"{primary_labels[1]} (with error bars) scored every function the "
                                            f"pair {config.pairs[0][0]}-{config.pairs[0][1]} compares: it is the "
                                            f"primary reference instead of {config.pairs[0][1]}")
        if a.is_sampler:
            by_f = a.by_function("counts")
            counts = a.counts.astype(float)
            errors = np.array([analysis.test_error(f, split.y_test) for f in a.functions])
            p = counts / max(a.n_fit, 1)
            used = a.seen(a_cfg.min_count) & b.seen(a_cfg.min_count)
            summary.update({
                "n_runs": a.n_samples, "n_fit": a.n_fit, "fit_fraction": a.n_fit / a.n_samples if a.n_samples else None,
                "n_functions": len(a.functions), "n_functions_used": len(used),
                "runs_in_used_functions": int(sum(by_f[f] for f in used)),
                "sgd_mean_test_error": float(np.average(errors, weights=counts)) if counts.sum() else None,
                "sgd_top_share": float(counts.max() / a.n_fit) if a.n_fit else None,
                "sgd_entropy": float(-np.sum(p * np.log(p))) if a.n_fit else None})
        summary.update({k: v for k, v in primary.items() if k not in ("a", "b", "note")})
        summary["correlation_note"] = primary["note"]
        for label in [*primary_labels] + list(extras):
            summary.update({k: v for k, v in extras.get(label, {}).items()
                            if k not in summary and k not in ("n_samples", "n_fit")})
        # the bound from the more accurate log P(S): tilting's (unbiased) where it ran, EP's (biased low,
        # benchmarks/ep_bias.py) otherwise
        source = next((key for key in ("log_p_s_tilting", "log_p_s") if summary.get(key) is not None), None)
        if source is not None:
            summary["pac_bayes_bound"] = nngp.pac_bayes_bound(min(summary[source], 0.0), case.data.n_train)
            summary["pac_bayes_bound_reference"] = nngp.pac_bayes_bound_reference(min(summary[source], 0.0),
                                                                                  case.data.n_train)
            summary["pac_bayes_bound_from"] = source
    if checks:
        c = checks[0]
        summary.update(ep_tilting_median_abs_z=c["median_abs_z"], ep_tilting_pair=[c["estimator"], c["reference"]],
                       ep_tilting_n=c["n_z"], ep_tilting_mean_z=c["mean_z"], ep_tilting_median_z=c["median_z"],
                       ep_tilting_sd_z=c["sd_z"], ep_tilting_mean_dlog=c["mean_dlog"])
    summary["pairs"] = pairs
    keep = ("estimator", "reference", "median_abs_z", "median_se_ref")
    summary["checks"] = [{k: c[k] for k in keep} | {"n_functions": len(c["functions"])} for c in checks]
    summary["extras"] = dict(extras)
    return _finite(summary)


def functions_table(case, config, est: Mapping[str, EstimatorResult],
                    columns: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
                    primary: tuple[str, str] | None = None) -> pa.Table:
    """The wide view of one case: one row per function any estimator has, most frequent first by
    the primary P_SGD estimator: ``function``, ``count``, ``log_p_sgd``, ``log_pb`` (the primary
    pair), complexity and test error, ``<label>:count``/``:log_p``/``:log_p_se`` per estimator (no
    label has a colon: no collision with the primary pair's columns), then ``<label>:<name>`` for
    each per-function column an estimator's extras give (``columns[label][name][function]``, nan
    where absent: the ``sgd`` estimator's sharpness means), ``case``."""
    split = case.split()
    a, b = primary or primary_pair(config, est) or (None, None)
    fs = list(dict.fromkeys([*(est[a].functions if a else ()), *(f for e in est.values() for f in e.functions)]))
    nan = math.nan
    maps = {label: [e.by_function(c) for c in ("counts", "log_p", "log_p_se")] for label, e in est.items()}
    cols: dict[str, Any] = {"function": pa.array(fs, pa.string())}
    if a:
        cols["count"] = pa.array([maps[a][0].get(f, 0) for f in fs], pa.int64())
        cols["log_p_sgd"] = pa.array([maps[a][1].get(f, nan) for f in fs], pa.float64())
        cols["log_pb"] = pa.array([maps[b][1].get(f, nan) for f in fs], pa.float64())
    cols["lz_complexity"] = pa.array([analysis.lz_complexity(f) for f in fs], pa.float64())
    cols["entropy"] = pa.array([analysis.entropy(f) for f in fs], pa.float64())
    cols["test_error"] = pa.array([analysis.test_error(f, split.y_test) for f in fs], pa.float64())
    for label, e in est.items():
        counts, lp, se = maps[label]
        if e.is_sampler:
            cols[f"{label}:count"] = pa.array([counts.get(f, 0) for f in fs], pa.int64())
        cols[f"{label}:log_p"] = pa.array([lp.get(f, nan) for f in fs], pa.float64())
        cols[f"{label}:log_p_se"] = pa.array([se.get(f, nan) for f in fs], pa.float64())
        for name, by_f in (columns or {}).get(label, {}).items():
            cols[f"{label}:{name}"] = pa.array([by_f.get(f, nan) for f in fs], pa.float64())
    cols["case"] = pa.array([case.name] * len(fs), pa.string())
    return pa.table(cols)


def case_figures(folder: Path, case, config, est, wide: pa.Table, checks, summary: Mapping | None = None,
                 primary: tuple[str, str] | None = None) -> dict[str, str]:
    """The primary pair's five figures and the error-bar figures of one case, in
    ``figures/<case>/``; returns name -> path relative to ``folder``. With the case's ``summary``, the
    P_SGD-vs-P_B figures draw its fitted line, r and slope."""
    fit = None
    if summary and summary.get("slope_log") is not None:
        fit = {"slope": summary["slope_log"], "intercept": summary["intercept_log"], "r": summary["pearson_log"],
               "r_ci": summary.get("pearson_log_ci"),
               "note": f"over {summary.get('n_common')} functions seen >= {summary.get('min_count')} times by both"}
    fig_dir = folder / "figures" / case.name
    out: dict[str, Path] = {}
    f = wide.to_pandas()
    if config.pairs and "log_pb" in f:
        f = f[np.isfinite(f["log_pb"].to_numpy(float)) & (f["count"].to_numpy() > 0)]
        a, b = primary or primary_pair(config, est)
        if len(f):
            lpb, lsgd, count = f["log_pb"].to_numpy(), f["log_p_sgd"].to_numpy(), f["count"].to_numpy()
            for name, key, label, title in (("psgd_vs_pb", "test_error", "test error", f" ({len(f)} functions)"),
                                            ("psgd_vs_pb_lz", "lz_complexity", "LZ complexity",
                                             ", coloured by LZ complexity")):
                out[name] = plots.plot_psgd_vs_pb(
                    lsgd, lpb, fig_dir / f"{name}.png", counts=count, color=f[key].to_numpy(), color_label=label,
                    title=f"{a} vs {b}{title}", xlabel=f"log10 P(f|S), {b}", ylabel=f"log10 P(f|S), {a}", fit=fit)
            out["p_vs_complexity"] = plots.plot_p_vs_complexity(f["lz_complexity"].to_numpy(), lsgd, lpb,
                                                                fig_dir / "p_vs_complexity.png")
            out["p_vs_error"] = plots.plot_p_vs_error(f["test_error"].to_numpy(), lsgd, lpb, fig_dir / "p_vs_error.png")
            out["cumulative_mass"] = plots.plot_cumulative_mass(lsgd, lpb, fig_dir / "cumulative_mass.png")
    for c in checks:
        if c["functions"]:
            name = f"errorbars_{c['estimator']}_vs_{c['reference']}"
            out[name] = plots.plot_psgd_vs_pb(  # xerr in natural-log units: the plot draws them in log10
                c["log_p"], c["log_p_ref"], fig_dir / f"{name}.png", xerr=np.array(c["se_ref"]),
                title=f"{c['estimator']} against {c['reference']} (+- 1 s.e.), median |z| = "
                      f"{fmt(c['median_abs_z'], 3)}", xlabel=f"log10 P_B(f|S), {c['reference']}",
                ylabel=f"log10 P_B(f|S), {c['estimator']}")
    return {k: str(p.relative_to(folder)) for k, p in out.items()}


def pairs_figure(folder: Path, config, cases, by_case: Mapping[str, Mapping[str, EstimatorResult]]) -> str | None:
    """One panel per case and reference: every estimator paired with it, over the functions both see."""
    mc = config.analysis.min_count
    refs = list(dict.fromkeys(b for _, b in config.pairs))
    panels = []
    for ref in refs:
        for case in cases:
            est = by_case.get(case.name, {})
            series = []
            for a, b in config.pairs:
                if b != ref or a not in est or b not in est:
                    continue
                common = sorted(est[a].seen(mc) & est[b].seen(mc))
                la, lb = est[a].by_function(), est[b].by_function()
                series.append(Series(a, np.array([lb[f] for f in common]), np.array([la[f] for f in common])))
            r = est.get(ref)
            note = "" if any(len(s.log_x) for s in series) else f"no function common at >= {mc}"
            if r is not None and r.is_sampler and r.n_fit == 0:
                note = f"{ref}: 0 of {r.n_samples:.3g} samples fit S"
            panels.append(Panel(f"{case.name}: vs {ref}", ref, tuple(series), note))
    if not panels:
        return None
    path = plot_compare(panels, folder / "figures" / "pairs.png", ncols=len(cases),
                        title=f"log P(f|S) of each estimator against its reference (functions seen >= {mc} times)")
    return str(path.relative_to(folder))


# --- the whole report ------------------------------------------------------------------------------------
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
]
TAIL_ROWS = [("pac_bayes_bound", "marginal-likelihood PAC-Bayes bound (McAllester, delta = 0.05)"),
             ("pac_bayes_bound_reference", "PAC-Bayes bound, reference form (delta = 2^-10)"),
             ("ep_tilting_median_abs_z", "median |z| of the first error-bar check"),
             ("ep_tilting_mean_z", "mean z (signed) of that check"),
             ("ep_tilting_mean_dlog", "mean ln P difference of that check (nats)")]


def summary_rows(config) -> list[tuple[str, str]]:
    """The summary table's rows ``(key, title)``: the primary pair's, then each estimator's own
    (:attr:`Estimator.summary_rows`, in config order), then the PAC-Bayes bound and error-bar check."""
    own = [row for s in config.estimators for row in s.estimator.summary_rows]
    return SUMMARY_ROWS + list(dict.fromkeys(own)) + TAIL_ROWS


def summary_lines(summary: Mapping[str, Any], rows=()) -> list[str]:
    """The key numbers (``rows``: :func:`summary_rows`) as aligned lines for a terminal."""
    rows = list(rows) or SUMMARY_ROWS + TAIL_ROWS
    width = max(len(label) for _, label in rows)
    lines = [f"{label:<{width}}  {fmt(summary.get(key))}" for key, label in rows if key in summary]
    if summary.get("correlation_note"):
        lines.append(f"note: {summary['correlation_note']}")
    cases = summary.get("cases", [])
    if len(cases) > 1:
        lines += ["", f"{len(cases)} cases (the numbers above are the first's); every case:"]
        for c in cases:
            ci = c.get("pearson_log_ci")
            lines.append(f"  {c.get('case')}: fit {fmt(c.get('n_fit'))}/{fmt(c.get('n_runs'))}, "
                         f"{fmt(c.get('n_functions'))} functions, r {fmt(c.get('pearson_log'))}"
                         + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
                         + f", slope {fmt(c.get('slope_log'))}, TV {fmt(c.get('dist_tv'))}, "
                           f"log P(S) {fmt(c.get('log_p_s'))}, test error {fmt(c.get('sgd_mean_test_error'))}")
    return lines


def make_report(folder: str | Path, config, cases, results: Mapping[str, Mapping[str, EstimatorResult]],
                extras: Mapping[str, Mapping[str, dict]], *, manifest: Mapping | None = None
                ) -> tuple[dict[str, Any], Path]:
    """Write ``functions.parquet``, figures, ``summary.json``, ``pairs.csv`` and ``report.md`` from
    ``results[case][label]`` (every estimator of every one of the config's ``cases``) and their
    ``extras[case][label]``; returns the summary and the report's path."""
    folder = Path(folder)
    summaries, wides, lines, pair_rows = [], [], [], []
    for case in cases:
        est = results[case.name]
        checks = error_bar_checks(case, est)
        own = {label: {k: v for k, v in d.items() if k != "function_columns"}
               for label, d in extras.get(case.name, {}).items()}  # per-function columns go to the wide table
        prim = primary_pair(config, est)
        s = case_summary(case, config, est, own, checks, prim)
        wide = functions_table(case, config, est, {label: d["function_columns"]
                                                   for label, d in extras.get(case.name, {}).items()
                                                   if "function_columns" in d}, prim)
        s["figures"] = case_figures(folder, case, config, est, wide, checks, s, prim)
        summaries.append(s)
        wides.append(wide)
        pair_rows += [[case.name] + [p.get(k) for k, _ in PAIR_COLUMNS] for p in s["pairs"]]
        lines += _case_section(case, config, s, wide, checks)
        lines += flatness_section(folder, case, config, s, wide)
    atomic_write_table(pa.concat_tables(wides, promote_options="default"), folder / "functions.parquet")
    pairs_fig = pairs_figure(folder, config, cases, results)
    header = ["case"] + [t for _, t in PAIR_COLUMNS]
    atomic_write_text(folder / "pairs.csv", csv_table(["case"] + [k for k, _ in PAIR_COLUMNS], pair_rows))
    summary = {k: v for k, v in summaries[0].items() if k not in ("pairs", "checks", "case")}
    summary.update(cases=summaries, pairs_figure=pairs_fig, figures=summaries[0]["figures"])
    lines = flatness_pooled(folder, config, cases, summaries, wides) + lines
    if config.sweep is not None:
        lines = sweep_section(folder, config, cases, summaries) + lines
    timings = (manifest or {}).get("timings", {})
    head = ["# sgd-bayes report", "",
            f"{config.arch.describe()} on {config.data.dataset} (m = {config.data.n_train}, k = {config.data.n_test}, "
            f"split seed {config.data.seed}); estimators: "
            + ", ".join(f"{s.label} ({s.method})" for s in config.estimators) + f"; {len(cases)} case(s).", ""]
    if config.pairs:
        first = summaries[0]
        head += ["## Verdict" + (f" (case {first['case']}; each case's is in its section)" if len(cases) > 1 else ""),
                 "", *verdict_lines(first), ""]
    head += ["## All pairs", "", markdown_table(header, pair_rows), ""]
    if pairs_fig:
        head += [f"![{FIGURES['pairs']}]({pairs_fig})", ""]
    if timings:
        head += ["Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items())), ""]
    tail = [*glossary_lines(), "## Config", "", "```toml", config.to_toml().rstrip(), "```", "",
            "Logs are natural unless an axis says log10. Correlations are over functions both estimators see "
            "(samplers: count >= `min_count`); intervals are percentile bootstrap over those functions.", ""]
    atomic_write_json(folder / "summary.json", summary)
    report = atomic_write_text(folder / "report.md", "\n".join(head + lines + tail))
    return summary, report


def _case_section(case, config, s, wide: pa.Table, checks) -> list[str]:
    lines = [f"## Case {case.name}", ""]
    data = case.data
    notes = ([f"label noise: {round(data.label_noise * data.n_train)} of the {data.n_train} labels of S flipped "
              f"(seeded by data.seed; E keeps its true labels)"] if data.label_noise else []) \
        + ([f"inputs: the pool's {data.pca_dim} leading principal components (whitened)"]
           if data.pca_dim else []) \
        + ([f"label corruption: {data.corrupt_fraction:g} of S's labels replaced by random bits"]
           if data.corrupt_fraction else [])
    if notes:
        lines += ["Data: " + "; ".join(notes) + ".", ""]
    if config.pairs and config.sweep is not None:
        lines += ["Verdict:", "", *verdict_lines(s), ""]
    if config.pairs:
        rows = [[label.strip(), s.get(key)] for key, label in summary_rows(config) if key in s]
        a, b = s["primary_pair"]
        lines += [f"Primary pair: {a} against {b}"
                  + (f" ({s['primary_pair_note']})." if s.get("primary_pair_note") else "."), "",
                  markdown_table(["quantity", "value"], rows), ""]
    if s.get("correlation_note"):
        lines += [f"**Note:** {s['correlation_note']}.", ""]
    for c in checks:
        lines += [f"### {c['estimator']} against {c['reference']}, with error bars", "",
                  f"{len(c['functions'])} functions; median |z| = {fmt(c['median_abs_z'], 3)} where z = "
                  f"(ln P_{c['estimator']} - ln P_{c['reference']}) / s.e.; with its sign: mean z = "
                  f"{fmt(c['mean_z'], 3)}, median z = {fmt(c['median_z'], 3)}; mean ln P difference "
                  f"{fmt(c['mean_dlog'], 3)} nats; median s.e. "
                  f"{fmt(c['median_se_ref'], 3)} nats.", "",
                  markdown_table(["function on E", c["estimator"], c["reference"], "s.e.", "z"],
                                 [[f"`{f}`", x, y, e, z] for f, x, y, e, z in
                                  zip(c["functions"], c["log_p"], c["log_p_ref"], c["se_ref"], c["z"])][:20]), ""]
    for name, path in s["figures"].items():
        title = FIGURES.get(name, name.replace("_", " "))
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    extras = [[label, key, value] for label, d in s.get("extras", {}).items() for key, value in d.items()]
    if extras:
        lines += ["### Estimator facts", "", markdown_table(["estimator", "quantity", "value"], extras), ""]
    top = wide.slice(0, 10).to_pylist()
    if top and "count" in wide.column_names:
        lines += ["### Most frequent functions", "",
                  markdown_table(["function on E", "count", "log P_SGD", "log P_B", "LZ", "test error"],
                                 [[f"`{r['function']}`", r["count"], r["log_p_sgd"], r["log_pb"], r["lz_complexity"],
                                   r["test_error"]] for r in top]), ""]
    return lines
