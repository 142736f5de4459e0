"""The report's answer in words, from its numbers, and the glossary of its columns.

:func:`verdict_lines` reads one case's summary (:func:`sgdbayes.report.case_summary`) and says, in this
order: whether there is enough to judge; how strongly log P_SGD and log P_B are correlated (r and its
interval); whether P_SGD is more or less concentrated than P_B (the log-log slope against 1, and the top
function's share under each); whether the chi-square test rejects that the two are the same
distribution; what share of P_B's mass the functions SGD found carry (the distances are computed after
renormalising onto the functions both found, which it says); and, where an estimator has error bars,
whether EP is biased against it and which numbers to trust. The words are fixed by the thresholds
below, so two reports with the same numbers say the same thing.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: Fewer common functions than this and no verdict on the correlation is given.
MIN_COMMON = 5
#: |r| thresholds for "strong", "moderate", "weak" (below: "no clear").
STRENGTH = ((0.7, "strongly"), (0.4, "moderately"), (0.2, "weakly"))
#: A mean z whose standard error puts it this many s.e. from 0 is a bias.
BIAS_Z = 3.0
#: Chi-square p-values below this reject equality.
ALPHA = 0.05
#: A fraction of runs fit below this is said first.
FEW_FIT = 0.1


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _interval(ci) -> tuple[float, float] | None:
    """A two-sided interval, or None where the bootstrap gave none (too few functions, all ties)."""
    if not ci or len(ci) != 2 or any(v is None or not math.isfinite(v) for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "(no interval)"


def verdict_lines(s: Mapping[str, Any], pair: tuple[str, str] | None = None) -> list[str]:
    """Bulleted sentences answering "is P_SGD close to P_B here?" for one case summary ``s``."""
    a, b = (f"P_{x}" for x in (pair or s.get("primary_pair") or ("SGD", "B")))
    out: list[str] = []
    frac = s.get("fit_fraction")
    if frac is not None and frac < FEW_FIT:
        best = s.get("sgd_unfit_best_train_accuracy")
        out.append(f"**Few runs fit S:** {s.get('n_fit')} of {s.get('n_runs')} ({_pct(frac)})"
                   + (f"; the best of the others reached training accuracy {best:.3f} in "
                      f"{s.get('sgd_unfit_max_epochs')} epochs" if best is not None else "")
                   + ": P_SGD rests on the few that did (raise max_epochs or lr).")
    n = s.get("n_common") or 0
    if n < MIN_COMMON:
        out.append(f"**Too few functions to judge:** {a} and {b} share {n} function(s) seen at least "
                   f"{s.get('min_count')} times (a verdict needs {MIN_COMMON}); "
                   + (f"{s.get('correlation_note')}. " if s.get("correlation_note") else "")
                   + "More runs, or a smaller `analysis.min_count`, would give one.")
    r, ci = s.get("pearson_log"), _interval(s.get("pearson_log_ci"))
    if r is not None and n >= MIN_COMMON:
        word = next((w for t, w in STRENGTH if abs(r) >= t), "not clearly")
        sign = "" if r >= 0 else " (negatively)"
        excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
        out.append(f"log {a} and log {b} are **{word} correlated**{sign}: Pearson r = {r:.2f}, 95% CI {_ci(ci)} "
                   f"over {n} functions both see" + ("" if excludes or ci is None else "; the interval includes 0")
                   + ".")
    slope, sci = s.get("slope_log"), _interval(s.get("slope_log_ci"))
    if slope is not None and n >= MIN_COMMON:
        if sci is not None and sci[0] > 1:
            conc = f"**more concentrated** than {b} (slope of log {a} on log {b} = {slope:.2f}, CI {_ci(sci)} above 1)"
        elif sci is not None and sci[1] < 1:
            conc = f"**less concentrated** than {b} (slope {slope:.2f}, CI {_ci(sci)} below 1)"
        else:
            conc = f"about as concentrated as {b} (slope {slope:.2f}, CI {_ci(sci)} includes 1)"
        top = s.get("dist_top1_share_by_sgd"), s.get("dist_top1_share")
        extra = (f"; on the functions both found, {a}'s commonest function takes {_pct(top[0])} of its mass and "
                 f"{b}'s most probable one {_pct(top[1])} of {a}'s") if None not in top else ""
        out.append(f"{a} is {conc}{extra}.")
    p, dof, test = s.get("fit_pvalue"), s.get("fit_dof"), s.get("fit_test")
    if p is not None:
        if p < ALPHA:
            out.append(f"Equality of the two distributions is **rejected** (chi-square {test} test, "
                       f"p {'< 1e-300' if p == 0 else f'= {p:.3g}'}, "
                       f"{dof} degrees of freedom; cells expected below 5 pooled).")
        else:
            out.append(f"Equality of the two distributions is **not rejected** (chi-square {test} test, p = {p:.3g}, "
                       f"{dof} degrees of freedom): with these counts the data cannot tell them apart.")
    elif test is None and n:
        out.append("No chi-square test: it needs at least one sampler in the pair and two cells after pooling.")
    mass_b, tv, kl = s.get("dist_mass_b"), s.get("dist_tv"), s.get("dist_kl")
    if mass_b is not None:
        out.append(f"The functions {a} found carry **{_pct(mass_b)} of {b}'s mass**; the distances (TV = "
                   f"{tv:.3g}, KL({a}||{b}) = {kl:.3g} nats) compare the two after renormalising both onto the "
                   f"functions both found, so they say nothing about the rest.")
    out += bias_lines(s)
    return [f"- {line}" for line in out]


def bias_lines(s: Mapping[str, Any]) -> list[str]:
    """Whether the first error-bar check (e.g. EP against tilting) shows a bias, with its sign."""
    mean_z, median_z, dlog = s.get("ep_tilting_mean_z"), s.get("ep_tilting_median_z"), s.get("ep_tilting_mean_dlog")
    n, sd = s.get("ep_tilting_n"), s.get("ep_tilting_sd_z")
    if mean_z is None or not n:
        return []
    est, ref = s.get("ep_tilting_pair") or ("ep", "tilting")
    t = mean_z / (sd / math.sqrt(n)) if sd and n > 1 else math.inf * (1 if mean_z else 0)
    nums = (f"mean z = {mean_z:+.2f}, median z = {median_z:+.2f}, mean ln P_{est} - ln P_{ref} = {dlog:+.3f} nats "
            f"over {n} functions")
    if abs(t) >= BIAS_Z and abs(mean_z) > 1:
        side = "above" if mean_z > 0 else "below"
        return [f"**{est} is biased {side} {ref}** ({nums}): trust {ref}'s numbers, which carry their own error bars."]
    return [f"{est} agrees with {ref} within its error bars ({nums})."]


#: Every column and row title of the report, explained once.
GLOSSARY = [
    ("estimator / reference", "the tested estimator of a pair (y axis of its figure) and the one it is compared with"),
    ("n seen, n ref", "functions each estimator sees: a sampler's functions found at least `min_count` times, "
                      "a scorer's functions with a finite log P"),
    ("common", "functions both see; the correlations use these"),
    ("pearson, 95% CI", "Pearson correlation of the natural logs over the common functions, with a percentile "
                        "bootstrap interval over them"),
    ("spearman", "rank correlation over the same functions"),
    ("slope", "least-squares slope of log P_estimator on log P_reference; > 1: the estimator is more "
              "concentrated than the reference"),
    ("mean |dlnP|", "mean absolute difference of the natural logs over the common functions"),
    ("count noise", "the mean standard deviation of ln(count / n) from counting alone, to read mean |dlnP| against"),
    ("KL(a||b), TV, JS", "Kullback-Leibler (nats), total variation and Jensen-Shannon (nats) between the two "
                         "distributions after renormalising both onto the functions both found at all"),
    ("p (chi2)", "p-value of the chi-square test that the two are the same distribution (homogeneity for two "
                 "samplers, goodness of fit for a sampler against a scorer; cells expected below 5 pooled); n/a "
                 "for two scorers (no counts) or when fewer than two cells remain"),
    ("note", "why a statistic is missing, or a warning about it"),
    ("s.e., z", "the reference's standard error of ln P (nats) and z = (ln P_estimator - ln P_reference) / s.e.; "
                "|z| above 2-3 on many functions is a bias, its sign says which way"),
    ("count, log P_SGD, log P_B, LZ, test error", "runs ending at the function, natural logs of the two "
                                                  "probabilities, Lempel-Ziv complexity (bits) and the fraction of E "
                                                  "it gets wrong"),
    ("marginal-likelihood PAC-Bayes bound", "McAllester form (delta = 0.05): eps = 1 - exp(-(ln 1/P(S) + "
                                            "ln(2m/delta)) / (m - 1))"),
    ("PAC-Bayes bound, reference form", "the paper's code (delta = 2^-10): eps = 1 - exp(-(ln 1/P(S) + 2 ln m + 1 "
                                        "- ln delta) / m)"),
    ("log P", "natural logarithm throughout; figures say log10 on their axes where they use it"),
]


def glossary_lines() -> list[str]:
    """The glossary as a markdown section."""
    return ["## Glossary", ""] + [f"- **{term}**: {text}." for term, text in GLOSSARY] + [""]
