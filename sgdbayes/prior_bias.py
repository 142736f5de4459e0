"""``sgdbayes prior-bias CONFIG``: the prior over functions without a training set (m = 0).

For each case: draw ``n_samples`` networks from the prior (:func:`sampler.prior_functions.sample_prior_functions`),
count their functions on E (packed, ``cases/<name>/functions.parquet``), score the most frequent ones
under the NNGP prior (``P(f)`` = the orthant probability of ``N(0, K_EE)``: EP, and minimax tilting
with a standard error), and measure the simplicity bias (:mod:`analysis.prior_bias`): rank-frequency,
log P against LZ complexity with the fitted upper bound, the number of ones against the uniform
prior's binomial. A ``[sweep]`` repeats a case over sigma_w x activation x depth (order to chaos).
Writes ``summary.json``, ``report.md`` and figures into the output folder.

Config (TOML)::

    seed = 0                      # every stream derives from it
    complexity_sample = 20000     # functions whose complexity is computed (the most frequent half, a random half)
    [[cases]]
    name = "boolean"
    dataset = "boolean"           # E = the 128 inputs of the Boolean system (or the first n_points)
    n_points = 128
    n_samples = 10_000_000
    [cases.arch]
    kind = "fcn"
    ...
    [sweep]
    case = "boolean"; n_samples = 200000; sigma_w = [1.0, 2.0, 4.0, 8.0]; activation = ["relu", "tanh"]; depth = [2]
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import numpy as np
import pydantic
import torch
from pydantic import Field, InstanceOf, field_validator, model_validator

import nngp
from analysis.complexity import boolean_critical_sample_ratio, entropy, lz_complexity
from analysis.prior_bias import complexity_bound, ones_distribution, rank_frequency, spread, zipf_exponent
from analysis.prior_plots import plot_order_chaos, plot_prior_bias
from sampler.architectures import FCN, Architecture
from sampler.atomic import atomic_write_json, atomic_write_text
from sampler.data import BOOLEAN_N, DATASETS, boolean_inputs, load_pool
from sampler.packed import PackedCounts
from sampler.prior_functions import sample_prior_functions
from sampler.seeding import derive_seed

from .config import parse_arch, parse_model, read_toml, toml_literal
from .validation import SECTION

_MODEL = dict(frozen=True, kw_only=True, config=pydantic.ConfigDict(**SECTION, arbitrary_types_allowed=True))
ACTIVATIONS = ("relu", "tanh", "erf")


@pydantic.dataclasses.dataclass(**_MODEL)
class PriorCase:
    """One ``[[cases]]`` entry.

    Attributes
    ----------
    name : str
        Folder and label of the case.
    dataset : str
        ``boolean`` (E = the 2^7 inputs, or the first ``n_points``) or a pool of :data:`sampler.data.DATASETS`
        (E = ``n_points`` images drawn by ``seed``).
    n_points : int
        k = |E|.
    n_samples : int
        Networks drawn from the prior.
    arch : Architecture
        ``[cases.arch]``, as ``[arch]`` of an experiment.
    nngp_functions : int
        The most frequent functions scored by EP under the NNGP prior.
    tilting_functions : int
        The most frequent functions scored by minimax tilting (with a standard error).
    data_dir : str
        As ``[data] data_dir``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str = "boolean"
    n_points: int = Field(2 ** BOOLEAN_N, ge=1, strict=True)
    n_samples: int = Field(100_000, ge=1, strict=True)
    arch: InstanceOf[Architecture] = Field(default_factory=lambda: {"kind": "fcn"}, validate_default=True)
    nngp_functions: int = Field(100, ge=0, strict=True)
    tilting_functions: int = Field(10, ge=0, strict=True)
    data_dir: str = ""

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value):
        return parse_arch(value)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value):
        if value not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _points(self):
        if self.dataset == "boolean" and self.n_points > 2 ** BOOLEAN_N:
            raise ValueError(f"n_points must be <= {2 ** BOOLEAN_N} for the Boolean system, got {self.n_points}")
        return self


@pydantic.dataclasses.dataclass(**_MODEL)
class PriorSweep:
    """``[sweep]``: one case repeated over a grid (FCN only: sigma_w, activation, depth).

    Attributes
    ----------
    case : str
        Name of the case the grid starts from.
    n_samples : int
        Samples per grid point.
    sigma_w : list of float
    activation : list of str
    depth : list of int
    """

    case: str
    n_samples: int = Field(100_000, ge=1, strict=True)
    sigma_w: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    activation: tuple[Literal[ACTIVATIONS], ...] = ("relu",)
    depth: tuple[int, ...] = (2,)


@pydantic.dataclasses.dataclass(**_MODEL)
class PriorBiasConfig:
    """The whole ``prior-bias`` config.

    Attributes
    ----------
    seed : int
        Every case's stream derives from it and the case's name (the sweep's from the point too).
    complexity_sample : int
        Functions whose LZ complexity and entropy are computed: the most frequent half and a seeded
        random half of the rest (LZ costs ~0.2 ms per 128-bit function; millions would take minutes).
    min_count : int
        Functions drawn fewer times do not enter the bound's fit nor the Zipf exponent.
    cases : list of PriorCase
    sweep : PriorSweep, optional
    """

    seed: int = Field(0, ge=0, strict=True)
    complexity_sample: int = Field(20_000, ge=2, strict=True)
    min_count: int = Field(10, ge=1, strict=True)
    cases: tuple[PriorCase, ...] = ()
    sweep: Optional[PriorSweep] = None

    @model_validator(mode="after")
    def _names(self):
        names = [c.name for c in self.cases]
        if not names:
            raise ValueError("cases: give at least one [[cases]] table")
        if len(set(names)) != len(names):
            raise ValueError(f"cases: names must be distinct, got {names}")
        if self.sweep is not None:
            if self.sweep.case not in names:
                raise ValueError(f"sweep.case must name one of the cases {names}, got {self.sweep.case!r}")
            base = next(c for c in self.cases if c.name == self.sweep.case)
            if not isinstance(base.arch, FCN):
                raise ValueError(f"sweep.case: the sweep varies an FCN's sigma_w, activation and depth; case "
                                 f"{base.name!r} has arch kind {base.arch.kind!r}")
        return self


def load_prior_bias_config(path: str | Path, overrides=()) -> PriorBiasConfig:
    """Read a prior-bias TOML file, with ``--set key=value`` overrides of top-level and ``[sweep]`` keys
    (``[[cases]]`` entries are a list: change them in the file). A value is read as a TOML literal, else
    taken as a string."""
    raw = read_toml(path)
    for text in overrides:
        key, sep, literal = (t.strip() for t in str(text).partition("="))
        parts = key.split(".")
        if not sep or not key or parts[0] == "cases" or len(parts) > 2 or (len(parts) == 2 and parts[0] != "sweep"):
            raise ValueError(f"--set expects KEY=VALUE for a top-level key or sweep.KEY (cases are set in the "
                             f"file), got {text!r}")
        value = toml_literal(literal)
        node = raw.setdefault("sweep", {}) if len(parts) == 2 else raw
        if not isinstance(node, dict):
            raise TypeError(f"--set {text!r}: sweep must be a table, got {node!r}")
        node[parts[-1]] = value
    return parse_model(PriorBiasConfig, raw)


# --- one case ------------------------------------------------------------------------------------------
def case_points(case: PriorCase, seed: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """E of a case: ``(k, d)`` float32 inputs and one input's shape."""
    if case.dataset == "boolean":
        return torch.as_tensor(boolean_inputs()[: case.n_points], dtype=torch.float32), (7,)
    pool = load_pool(case.dataset, data_dir=case.data_dir or None)
    if case.n_points > pool.size:
        raise ValueError(f"n_points must be <= the {case.dataset} pool's size {pool.size}, got {case.n_points}")
    rng = np.random.default_rng(derive_seed(seed, "points", case.name))
    idx = np.sort(rng.choice(pool.size, size=case.n_points, replace=False))
    return torch.as_tensor(pool.x[idx], dtype=torch.float32), tuple(pool.input_shape)


def complexity_sample(counts: PackedCounts, size: int, seed: int) -> np.ndarray:
    """Rows of ``counts`` whose complexity is computed: the ``size // 2`` most frequent, and a seeded
    uniform draw of ``size - size // 2`` of the rest (all rows when there are fewer than ``size``)."""
    n = counts.n_functions
    if n <= size:
        return np.arange(n)
    top = size // 2
    rest = np.random.default_rng(seed).choice(np.arange(top, n), size=size - top, replace=False)
    return np.concatenate([np.arange(top), np.sort(rest)])


def nngp_scores(arch: Architecture, x: torch.Tensor, input_shape, bits: np.ndarray, *, n_ep: int, n_tilting: int,
                seed: int) -> dict[str, np.ndarray]:
    """log P(f) under the NNGP prior of the first ``n_ep`` rows of ``bits`` (EP) and the first ``n_tilting``
    (minimax tilting, with standard errors): the orthant probability of ``N(0, K_EE)``."""
    out = {"ep": np.full(n_ep, np.nan), "tilting": np.full(n_tilting, np.nan), "tilting_se": np.full(n_tilting, np.nan)}
    if not (n_ep or n_tilting):
        return out
    K = nngp.kernel_for(arch, x.double(), input_shape=input_shape, seed=seed).K
    for i in range(n_ep):
        out["ep"][i] = nngp.orthant(K, torch.as_tensor(bits[i], dtype=torch.float64), method="ep").log_prob
    for i in range(n_tilting):
        r = nngp.orthant(K, torch.as_tensor(bits[i], dtype=torch.float64), method="tilting",
                         seed=derive_seed(seed, "tilting", i))
        out["tilting"][i], out["tilting_se"][i] = r.log_prob, r.stderr
    return out


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """What one case measured (the summary's numbers, the arrays of its figure)."""

    summary: dict
    figure_data: dict


def measure_case(case: PriorCase, arch: Architecture, *, n_samples: int, seed: int, sample_size: int, min_count: int,
                 score_nngp: bool = True, progress: bool = True) -> tuple[PackedCounts, CaseResult]:
    """Sample one case's prior over functions and measure its bias (see the module docstring)."""
    x, input_shape = case_points(case, seed)
    t0 = time.perf_counter()
    counts = sample_prior_functions(arch, x, n_samples, seed=derive_seed(seed, "prior", case.name),
                                    input_shape=input_shape, progress=progress)
    seconds = time.perf_counter() - t0
    rows = complexity_sample(counts, sample_size, derive_seed(seed, "complexity", case.name))
    strings = counts.strings(rows)
    lz = np.array([lz_complexity(s) for s in strings])
    ent = np.array([entropy(s) for s in strings])
    log_p = counts.log_p()
    bound = complexity_bound(lz, log_p[rows], counts.counts[rows], min_count=min_count)
    p_t, binomial = ones_distribution(counts.ones(), counts.counts, counts.k)
    n_ep = min(case.nngp_functions, counts.n_functions) if score_nngp else 0
    n_tilt = min(case.tilting_functions, counts.n_functions) if score_nngp else 0
    scores = nngp_scores(arch, x, input_shape, counts.bits(slice(0, max(n_ep, n_tilt))), n_ep=n_ep, n_tilting=n_tilt,
                         seed=derive_seed(seed, "nngp", case.name))
    rank, freq = rank_frequency(counts.counts, n_samples)
    top = []
    for i in range(min(20, counts.n_functions)):
        sampled = i < len(rows) and rows[i] == i  # its complexity is already computed
        f = strings[i] if sampled else counts.strings(i)[0]
        row = {"function": f, "count": int(counts.counts[i]), "log_p": float(log_p[i]),
               "lz": float(lz[i]) if sampled else lz_complexity(f),
               "ones": f.count("1")}
        if i < n_ep:
            row["log_p_nngp_ep"] = float(scores["ep"][i])
        if i < n_tilt:
            row["log_p_nngp_tilting"], row["tilting_se"] = float(scores["tilting"][i]), float(scores["tilting_se"][i])
        if case.dataset == "boolean" and case.n_points == 2 ** BOOLEAN_N:
            row["csr"] = boolean_critical_sample_ratio(f)
        top.append(row)
    summary = {"case": case.name, "arch": arch.describe(), "dataset": case.dataset, "k": counts.k,
               "n_samples": n_samples, "seconds": seconds, "samples_per_s": n_samples / seconds,
               **spread(counts.counts, n_samples), "zipf_exponent": zipf_exponent(counts.counts, n_samples,
                                                                                     min_count=min_count),
               "bound_slope": bound.slope, "bound_slope_log10": bound.slope / math.log(10),
               "bound_intercept": bound.intercept, "bound_r": bound.r, "bound_levels": int(bound.levels.size),
               "complexity_sample": int(rows.size), "p_constant": float(p_t[0] + p_t[-1]),
               "mean_ones": float((np.arange(counts.k + 1) * p_t).sum()), "top_functions": top}
    if n_ep:
        finite = np.isfinite(scores["ep"])
        summary["nngp_vs_sampled_pearson"] = (float(np.corrcoef(scores["ep"][finite], log_p[:n_ep][finite])[0, 1])
                                              if finite.sum() > 2 else None)
    figure_data = dict(rank=rank, freq=freq, complexity=lz, log_p=log_p[rows], bound=bound, entropy=ent, p_t=p_t,
                       binomial=binomial, title=f"{case.name}: {arch.describe()}, {n_samples:,} samples")
    if n_ep:
        figure_data.update(nngp_rank=np.arange(1, n_ep + 1), nngp_log_p=scores["ep"],
                           nngp_complexity=lz[:n_ep] if np.array_equal(rows[:n_ep], np.arange(n_ep))
                           else np.array([lz_complexity(s) for s in counts.strings(slice(0, n_ep))]))
    return counts, CaseResult(summary, figure_data)


# --- the command -----------------------------------------------------------------------------------------
def run_prior_bias(config: PriorBiasConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Run every case and the sweep into ``out``; returns the summary (also ``summary.json``)."""
    out = Path(out)
    summary: dict[str, Any] = {"cases": {}, "sweep": []}
    for case in config.cases:
        counts, result = measure_case(case, case.arch, n_samples=case.n_samples, seed=config.seed,
                                      sample_size=config.complexity_sample, min_count=config.min_count,
                                      progress=progress)
        counts.save(out / "cases" / case.name / "functions.parquet")
        plot_prior_bias(out / "figures" / f"{case.name}.png", **result.figure_data)
        summary["cases"][case.name] = result.summary
    if config.sweep is not None:
        base = next(c for c in config.cases if c.name == config.sweep.case)
        for depth in config.sweep.depth:
            for act in config.sweep.activation:
                for sw in config.sweep.sigma_w:
                    arch = dataclasses.replace(base.arch, sigma_w=float(sw), activation=act, depth=int(depth))
                    _, r = measure_case(base, arch, n_samples=config.sweep.n_samples,
                                        seed=derive_seed(config.seed, "sweep", depth, act, repr(float(sw))),
                                        sample_size=min(config.complexity_sample, 4000), min_count=config.min_count,
                                        score_nngp=False, progress=progress)
                    keys = ("bound_slope", "top_share", "entropy_bits", "n_functions", "p_constant", "zipf_exponent",
                            "samples_per_s")
                    summary["sweep"].append({"sigma_w": float(sw), "activation": act, "depth": int(depth),
                                             "slope": r.summary["bound_slope"], **{k: r.summary[k] for k in keys}})
        plot_order_chaos(summary["sweep"], out / "figures" / "order_chaos.png")
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", report(summary, config))
    return summary


def report(summary: Mapping, config: PriorBiasConfig) -> str:
    """report.md of a prior-bias run: per case the bias in numbers, its figure, the top functions; the sweep."""
    lines = ["# The prior over functions without a training set (m = 0)", "",
             "P(f) of a function f on E is the fraction of networks drawn from the prior (random initialisation) "
             "whose outputs' signs give f; the NNGP column is the infinite-width prior's P(f) (orthant probability "
             "of N(0, K_EE)). Logs are natural unless a column says log10. The bound is fitted to the largest log P "
             f"at each complexity level among functions drawn >= {config.min_count} times, then raised to lie above "
             "them (so it bounds the sampled frequencies, not the unseen tail).", ""]
    for name, s in summary["cases"].items():
        lines += [f"## {name}: {s['arch']}, {s['dataset']}, k = {s['k']}", "",
                  f"- {s['n_samples']:,} samples in {s['seconds']:.0f} s ({s['samples_per_s']:,.0f} samples/s); "
                  f"{s['n_functions']:,} distinct functions, {s['singletons']:,} drawn once.",
                  f"- Most frequent function: P = {s['top_share']:.4g}; top 10: {s['top10_share']:.4g}; constant "
                  f"functions: {s['p_constant']:.4g}; sampled P spans {s['decades']:.1f} decades; plug-in entropy "
                  f"{s['entropy_bits']:.2f} bits (a uniform prior: {s['k']} bits).",
                  f"- Simplicity bias: log10 P(f) <= {s['bound_intercept'] / math.log(10):.2f} "
                  f"{s['bound_slope_log10']:+.3f} x LZ complexity (fitted on {s['bound_levels']} levels, r = "
                  f"{s['bound_r']:.2f}; complexity of {s['complexity_sample']:,} functions); Zipf exponent "
                  f"(log P vs log rank) {s['zipf_exponent']:.2f}.",
                  f"- Mean number of ones {s['mean_ones']:.1f} of {s['k']} (a uniform prior: {s['k'] / 2:.0f}).",
                  *( [f"- NNGP (EP) against the sampled log P over the most frequent functions: Pearson "
                      f"{s['nngp_vs_sampled_pearson']:.3f}."] if s.get("nngp_vs_sampled_pearson") is not None else []),
                  "", f"![{name}](figures/{name}.png)", "",
                  "| rank | function (first 32 bits) | count | log P | log P NNGP (EP) | log P NNGP (tilting) | LZ | ones |"
                  + (" CSR |" if "csr" in s["top_functions"][0] else ""),
                  "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if "csr" in s["top_functions"][0] else "")]
        for i, t in enumerate(s["top_functions"], 1):
            ep = f"{t['log_p_nngp_ep']:.3f}" if "log_p_nngp_ep" in t else ""
            tilt = f"{t['log_p_nngp_tilting']:.3f} ± {t['tilting_se']:.3f}" if "log_p_nngp_tilting" in t else ""
            lines.append(f"| {i} | `{t['function'][:32]}` | {t['count']:,} | {t['log_p']:.3f} | {ep} | {tilt} | "
                         f"{t['lz']:.1f} | {t['ones']} |" + (f" {t['csr']:.3f} |" if "csr" in t else ""))
        lines.append("")
    if summary["sweep"]:
        lines += ["## Order and chaos: the sweep", "",
                  "| depth | activation | sigma_w | bound slope (log10 per unit LZ) | P(top) | P(constant) | entropy (bits) "
                  "| distinct |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in summary["sweep"]:
            lines.append(f"| {r['depth']} | {r['activation']} | {r['sigma_w']:g} | {r['slope'] / math.log(10):.3f} | "
                         f"{r['top_share']:.4g} | {r['p_constant']:.4g} | {r['entropy_bits']:.2f} | {r['n_functions']:,} |")
        lines += ["", "![order and chaos](figures/order_chaos.png)", ""]
    return "\n".join(lines)
