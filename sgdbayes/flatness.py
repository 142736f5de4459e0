"""The report's flatness section: for each sampler whose runs were measured (``sharpness`` options of
``sgd``, :mod:`sgdbayes.estimators.flatness`), every measure's per-function mean (and log P_B, the
volume) against test error, log P_B and log P_SGD, with bootstrap intervals, one figure per measure,
and the rescaling check. Over a sweep, the same pooled over its cases, with the volume
``log P(f on S and E) = log P_B(f|S) + log P(S)`` (comparable across training sets; Zhang et al.'s
log P(f)) in place of log P_B(f|S).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.flatness import flatness_correlations, plot_flatness
from sampler.sharpness import MEASURES
from sampler.store import atomic_write_json

from .tables import fmt, markdown_table

_MEAN = re.compile(r"^(?P<label>[^:]+):(?P<m>(rescaled_)?(" + "|".join(MEASURES) + r"))_mean$")


def measured(wide: pa.Table) -> dict[str, list[str]]:
    """``{label: [measure, ...]}`` of the wide table's ``<label>:<measure>_mean`` columns."""
    out: dict[str, list[str]] = {}
    for c in wide.column_names:
        hit = _MEAN.match(c)
        if hit:
            out.setdefault(hit["label"], []).append(hit["m"])
    order = {m: i for i, m in enumerate(list(MEASURES) + [f"rescaled_{m}" for m in MEASURES])}
    return {label: sorted(ms, key=order.__getitem__) for label, ms in out.items()}


def _points(frame, label: str, ms: Sequence[str], min_count: int, seed: int = 0):
    """Functions the sampler ``label`` saw >= ``min_count`` times with a measure: measures and targets.
    With rescaled measures, also ``half_rescaled_<m>``: the rescaled value for a random half of the
    functions (seeded by ``seed``) and the plain one for the rest -- Dinh et al.'s and Zhang et al.'s
    point: the same functions, whose volume does not move, can be given almost any sharpness."""
    count = frame[f"{label}:count"].to_numpy(float)
    keep = (count >= min_count) & (frame[f"{label}:measured_runs"].to_numpy(float) > 0)
    f = frame[keep]
    lpb = f["log_pb"].to_numpy(float) if "log_pb" in f else np.full(len(f), np.nan)
    measures = {m: f[f"{label}:{m}_mean"].to_numpy(float) for m in ms}
    half = np.random.default_rng(seed).random(len(f)) < 0.5
    for m in [m for m in ms if f"rescaled_{m}" in measures]:
        measures[f"half_rescaled_{m}"] = np.where(half, measures[f"rescaled_{m}"], measures[m])
    targets = {"test_error": f["test_error"].to_numpy(float), "log_pb": lpb,
               "log_p_sgd": f[f"{label}:log_p"].to_numpy(float)}
    return measures, targets, f[f"{label}:count"].to_numpy(float)


def _rows(corrs) -> list[list[Any]]:
    return [[c.measure, c.target, c.n, c.spearman, list(c.spearman_ci), c.pearson, list(c.pearson_ci)]
            for c in corrs]


HEADER = ["measure", "against", "n", "Spearman", "95% CI", "Pearson", "95% CI"]


def _json(v):
    """nan -> None, recursively (JSON has no nan)."""
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _section(folder: Path, fig_dir: Path, title: str, frame, groups, label, ms, n_boot, seed, tag):
    measures, targets, counts = frame
    volume = "log_volume" if "log_volume" in targets else "log_pb"
    corrs = flatness_correlations(
        measures, {k: targets[k] for k in ("test_error", volume, "log_p_sgd")}, n_boot=n_boot, seed=seed)
    corrs += flatness_correlations({volume: targets[volume]}, {k: targets[k] for k in ("test_error", "log_p_sgd")},
                                   n_boot=n_boot, seed=seed)
    by = {(c.measure, c.target): c for c in corrs}

    def cell(m):
        c = by.get((m, "test_error"))
        return None if c is None else f"{fmt(c.spearman, 2)} [{fmt(c.spearman_ci[0], 2)}, {fmt(c.spearman_ci[1], 2)}]"

    plain = [m for m in ms if not m.startswith("rescaled_")]
    answer = [[m, cell(m), cell(f"rescaled_{m}"), cell(f"half_rescaled_{m}")] for m in plain] + [[volume, cell(volume),
                                                                                                 "same", "same"]]
    lines = [f"#### {title}", "", "Spearman with test error (95% CI): as trained, every run rescaled, a random half "
             "of the functions rescaled.", "",
             markdown_table(["measure", "as trained", "all rescaled", "half rescaled"], answer), "",
             "Every pair:", "", markdown_table(HEADER, _rows(corrs)), ""]
    for m in [m for m in ms if not m.startswith("rescaled_")] + [volume]:  # rescaled ones: in the table only
        values = measures.get(m, targets.get(m))
        tg = {k: targets[k] for k in ("test_error", volume, "log_p_sgd") if k != m}
        path = plot_flatness(values, tg, fig_dir / f"flatness_{label}_{m}{tag}.png", name=m, counts=counts,
                             groups=groups, correlations={t: by[(m, t)] for t in tg if (m, t) in by})
        lines += [f"![{label}: {m}]({path.relative_to(folder)})", ""]
    return lines, [_json(c.as_dict() | {"estimator": label}) for c in corrs]


def flatness_section(folder: Path, case, config, summary: dict, wide: pa.Table) -> list[str]:
    """The case's flatness section (empty when nothing was measured); puts the correlations in
    ``summary["flatness"]``."""
    labels = measured(wide)
    if not labels:
        return []
    frame = wide.to_pandas()
    a = config.analysis
    lines = ["### Flatness and volume against generalisation", "",
             "Per function: the mean of each measure over the runs that ended at it (functions seen >= "
             f"{a.min_count} times); log P_B is the primary reference's log P_B(f|S) (the volume, up to log P(S), "
             "constant within a case). `rescaled_<m>`: every run rescaled layer-wise by alpha; `half_rescaled_<m>`: "
             "a random half of the functions rescaled (the same functions and volumes). Correlations with 95% "
             "percentile bootstrap intervals over functions.", ""]
    rows = []
    for label, ms in labels.items():
        pts = _points(frame, label, ms, a.min_count, a.seed)
        more, found = _section(Path(folder), Path(folder) / "figures" / case.name, f"{label}", pts, None, label, ms,
                               a.n_boot, a.seed, "")
        lines += more
        rows += found
        lines += rescaling_lines(summary.get("extras", {}).get(label, {}), label)
    summary["flatness"] = rows
    return lines


def rescaling_lines(extras: dict, label: str) -> list[str]:
    """What the rescaling did to each measure (means over runs) and to the function."""
    pairs = [(k[len("mean_"):], v, extras.get(f"mean_rescaled_{k[len('mean_'):]}")) for k, v in extras.items()
             if k.startswith("mean_") and not k.startswith("mean_rescaled_") and not k.endswith(("_se", "_converged"))]
    pairs = [(m, v, r) for m, v, r in pairs if r is not None]
    if not pairs:
        return []
    rows = [[m, v, r, (r / v) if v else None] for m, v, r in pairs]
    change = extras.get("max_rescaled_output_change")
    return [f"Rescaling check ({label}, layer-wise by alpha: W1/alpha, b1/alpha, W2*alpha): mean over "
            f"{extras.get('measured_runs')} runs.", "",
            markdown_table(["measure", "before", "after", "after / before"], rows), "",
            f"Largest change of any run's outputs on S and E: {fmt(change, 3)}: the functions, and so log P_B(f|S), "
            "do not move.", ""]


def flatness_pooled(folder: Path, config, cases, summaries: Sequence[dict], wides: Sequence[pa.Table]) -> list[str]:
    """Over the cases of a sweep: functions of every case pooled, log volume = log P_B(f|S) + log P(S)
    of its case; written to ``flatness.json`` too. Empty with one case or nothing measured."""
    if len(cases) < 2 or not any(measured(w) for w in wides):
        return []
    a = config.analysis
    frames = []
    for case, s, w in zip(cases, summaries, wides):
        f = w.to_pandas()
        f["log_p_s"] = s.get("log_p_s") if s.get("log_p_s") is not None else np.nan
        f["case"] = case.name
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    labels = measured(pa.Table.from_pandas(frame.head(0)))
    lines = ["## Flatness and volume over the sweep (functions of every case pooled)", "",
             "log_volume = log P_B(f|S) + log P(S) (EP): the prior mass of the function on S and E, comparable "
             "across the cases' training sets.", ""]
    out = []
    for label, ms in labels.items():
        sub = frame[frame[f"{label}:count"] > 0] if f"{label}:count" in frame else frame.iloc[:0]
        measures, targets, counts = _points(sub, label, ms, a.min_count, a.seed)
        keep = ((sub[f"{label}:count"].to_numpy(float) >= a.min_count)
                & (sub[f"{label}:measured_runs"].to_numpy(float) > 0))
        targets["log_volume"] = targets["log_pb"] + sub["log_p_s"].to_numpy(float)[keep]
        more, found = _section(Path(folder), Path(folder) / "figures", f"{label} (all cases)",
                               (measures, targets, counts), sub["case"].to_numpy()[keep], label, ms,
                               a.n_boot, a.seed, "_pooled")
        lines += more
        out += found
    atomic_write_json(Path(folder) / "flatness.json", {"pooled": out, "cases": {s.get("case"): s.get("flatness", [])
                                                                                 for s in summaries}})
    return lines
