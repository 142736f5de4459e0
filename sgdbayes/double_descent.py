"""Double descent across the interpolation threshold, beside the Bayesian limit.

Two pieces of the experiment ``configs/double_descent.toml``:

- :func:`budget_extras`: the ``sgd`` estimator's per-case numbers when it trains for a fixed budget
  (``stop = "budget"``): mean and Student-t 95% interval over runs of the train and test error and
  loss, the fraction of runs that fit S, and the number of parameters p of one network
  (:func:`analysis.double_descent.mean_interval`).
- the sweep kind ``double_descent`` (``[sweep] kind``): test error (mean and 95% interval over runs)
  and train error against p (log axis), one curve per label-noise level, the interpolation threshold
  p = m marked, and the NNGP posterior's test error (``gp-mse``: the sign of the GP-regression
  posterior mean; ``ep``: the sign of EP's) as the infinite-width, no-peak reference; a second panel
  shows the test loss.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from analysis.double_descent import find_peak, mean_interval

from .sweep import _axis, _figure, _groups, register_sweep_kind

#: The per-run quantities of a fixed-budget shard's info (:func:`sampler.sgd.sgd_shard`) summarised here.
BUDGET_QUANTITIES = ("train_error", "test_error", "train_loss", "test_loss")


def budget_extras(infos: Sequence[Mapping], n_parameters: int) -> dict:
    """``sgd_*`` summary values of fixed-budget shards' ``info["budget"]`` (every run, fitted or not):
    for each of :data:`BUDGET_QUANTITIES` its mean over runs and 95% interval (``_mean``, ``_lo``,
    ``_hi``), ``sgd_budget_runs``, ``sgd_budget_fit_fraction`` and ``sgd_n_parameters``."""
    runs = [i["budget"] for i in infos if "budget" in i]
    out: dict = {"sgd_n_parameters": int(n_parameters),
                 "sgd_budget_runs": int(sum(len(r["fit"]) for r in runs))}
    fit = np.concatenate([np.asarray(r["fit"], bool) for r in runs] or [np.zeros(0, bool)])
    out["sgd_budget_fit_fraction"] = float(fit.mean()) if fit.size else None
    for q in BUDGET_QUANTITIES:
        values = np.concatenate([np.asarray(r[q], np.float64) for r in runs] or [np.zeros(0)])
        ci = mean_interval(values)
        out.update({f"sgd_{q}_mean": ci.mean, f"sgd_{q}_lo": ci.lo, f"sgd_{q}_hi": ci.hi})
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


#: The NNGP references' test errors: extras key -> what it is (:mod:`sgdbayes.estimators.gp_mse`, ``ep``).
REFERENCES = {"gp-mse_test_error": "NNGP, Gaussian likelihood", "gp_test_error": "NNGP, EP (sign of its mean)"}


def _extra(summary: Mapping, key: str, label: str | None = None) -> float:
    """``key`` from the extras of estimator ``label`` (None: whichever holds it, else the summary's own
    top level, as ``sweep.json`` keeps it); nan where absent."""
    for name, d in summary.get("extras", {}).items():
        if (label is None or name == label) and isinstance(d, Mapping) and d.get(key) is not None:
            return float(d[key])
    return float(summary[key]) if label is None and summary.get(key) is not None else math.nan


def _reference_name(summary: Mapping, label: str, key: str) -> str:
    """``label: what it is`` and, for GP regression, its likelihood's noise variance."""
    noise = _extra(summary, "gp-mse_noise", label) if key == "gp-mse_test_error" else math.nan
    return f"{label}: {REFERENCES[key]}" + (f" (variance {noise:g})" if math.isfinite(noise) else "")


def _references(summaries) -> list[tuple[str, str]]:
    """``(estimator label, extras key)`` of every NNGP reference the summaries hold, in order."""
    found = {(label, key) for s in summaries for label, d in s.get("extras", {}).items()
             if isinstance(d, Mapping) for key in REFERENCES if d.get(key) is not None}
    return sorted(found)


def curves(cases, summaries) -> list[dict]:
    """Per label-noise level (``data.label_noise``, or one group without it): the points sorted by p,
    with ``p``, ``m``, the SGD statistics and the NNGP references, and the peak of the test error
    (:func:`analysis.double_descent.find_peak`). What the figure draws and the closing note quotes."""
    noise = _axis(cases, "data.label_noise")
    out = []
    for level, mask in _groups(noise):
        sel = np.flatnonzero(mask)
        p = np.array([_extra(summaries[i], "sgd_n_parameters") for i in sel])
        order = np.argsort(p, kind="stable")
        sel, p = sel[order], p[order]
        m = int(cases[sel[0]].data.n_train)
        row = {"label_noise": float(level) if math.isfinite(level) else float(cases[sel[0]].data.label_noise),
               "m": m, "p": p.tolist(), "cases": [cases[i].name for i in sel]}
        for key in ("sgd_test_error_mean", "sgd_test_error_lo", "sgd_test_error_hi", "sgd_train_error_mean",
                    "sgd_test_loss_mean", "sgd_test_loss_lo", "sgd_test_loss_hi", "sgd_budget_fit_fraction"):
            row[key] = [_extra(summaries[i], key) for i in sel]
        # the references: one value per case (infinite width: the same at every width), by estimator label
        row["references"] = {_reference_name(summaries[sel[0]], label, key): [_extra(summaries[i], key, label)
                                                                               for i in sel]
                             for label, key in _references(summaries)}
        finite = np.isfinite(p)
        peak = find_peak(p[finite], np.asarray(row["sgd_test_error_mean"])[finite], m=m) if finite.any() else None
        row["peak"] = vars(peak) if peak else None
        out.append(row)
    return out


def _draw(plt, cases, summaries):
    fig, axes, _ = _figure(plt, summaries, 3, (16, 4.8))
    m_seen = set()
    for c in curves(cases, summaries):
        p = np.asarray(c["p"])
        tag = f"{c['label_noise']:.0%} of S flipped"
        mean, lo, hi = (np.asarray(c[k], float) for k in ("sgd_test_error_mean", "sgd_test_error_lo",
                                                           "sgd_test_error_hi"))
        line = axes[0].errorbar(p, mean, yerr=np.nan_to_num(np.abs(np.vstack([mean - lo, hi - mean]))), fmt="o-",
                                capsize=3, label=f"SGD test error (95% CI), {tag}")
        color = line[0].get_color()
        axes[0].plot(p, c["sgd_train_error_mean"], "s--", color=color, alpha=0.6, ms=4,
                     label=f"SGD train error, {tag}")
        for (name, values), style in zip(c["references"].items(), (":", "-.", (0, (1, 4)), (0, (5, 2, 1, 2)))):
            v = np.asarray(values, float)
            if np.isfinite(v).any():
                axes[0].axhline(np.nanmean(v), ls=style, color=color, label=f"{name}, {tag}")
        tl, tlo, thi = (np.asarray(c[k], float) for k in ("sgd_test_loss_mean", "sgd_test_loss_lo", "sgd_test_loss_hi"))
        axes[1].errorbar(p, tl, yerr=np.nan_to_num(np.abs(np.vstack([tl - tlo, thi - tl]))), fmt="o-", capsize=3,
                         color=color, label=f"SGD test loss (95% CI), {tag}")
        m_seen.add(c["m"])
    for ax in axes[:2]:
        for m in sorted(m_seen):
            ax.axvline(m, color="grey", ls="--", lw=1)
            ax.text(m, 0.98, " p = m", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")
    axes[0].set(xscale="log", xlabel="parameters p (log)", ylabel="error (fraction misclassified)")
    axes[1].set(xscale="log", yscale="log", xlabel="parameters p (log)", ylabel="test loss on E (the loss trained on)")
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, in a panel of its own: the curves fill theirs
    axes[2].axis("off")
    axes[2].legend(handles, labels, loc="center left", fontsize=8, title="test loss: colours as the errors")
    fig.suptitle("Double descent: fixed-budget SGD across the interpolation threshold, beside the NNGP posterior")
    return fig


register_sweep_kind("double_descent", [
    ("sgd_n_parameters", "p"), ("sgd_test_error_mean", "SGD test error"), ("sgd_test_error_lo", "CI lo"),
    ("sgd_test_error_hi", "CI hi"), ("sgd_train_error_mean", "SGD train error"),
    ("sgd_test_loss_mean", "SGD test loss"), ("sgd_budget_fit_fraction", "fit fraction"),
    ("gp-mse_test_error", "NNGP (GP regression) test error")], _draw)
