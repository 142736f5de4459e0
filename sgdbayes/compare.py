"""The Boolean check: P_SGD and three estimators of P_B side by side on the n = 7 system.

For each target (a function on all 128 inputs of 7 bits) and each training-set size |S|, one split
``load_split("boolean", n_train=|S|, n_test=k, seed=data.seed, target=...)`` is made and, on it:

``prior``
    P_B of the finite network by prior (rejection) sampling (:func:`sampler.prior_sampling`):
    exact up to Monte Carlo error; the reference. Samples are drawn in chunks until
    ``prior_min_fit`` samples fit S or ``prior_max_samples`` were drawn (negative-binomial
    stopping; its bias on P(S) is O(1 / n_fit)).
``ess``
    P_B in the GP limit by elliptical slice sampling (:func:`nngp.ess.ess_posterior`).
``ep``
    P_B in the GP limit by Expectation Propagation (:func:`nngp.log_pb_details`), evaluated on
    every function that a sampled method saw at least ``analysis.min_count`` times.
``sgd-<optimizer>``
    P_SGD by training ``sgd.n_runs`` networks to 100% training accuracy (:func:`sampler.sample_sgd`).

Then, for each pair (reference x, method y) in :func:`method_pairs`, the functions *each method sees
often enough* (count >= ``min_count`` for a sampled method; every evaluated function for EP) are
intersected and compared: Pearson/Spearman of the natural logs and the log-log slope
(:func:`analysis.correlate`), the mean ``|ln P_y - ln P_x|``, and total variation, Jensen-Shannon
and KL(P_y || P_x) after renormalising both on those functions (:func:`analysis.compare_distributions`,
whose ``mass_*`` say how much of each distribution the functions carry). A method that saw nothing
(e.g. prior sampling when P(S) is far below ``1 / prior_max_samples``) gives empty rows with a note,
never invented numbers.

Config: an experiment TOML file with ``[data]`` (``dataset = "boolean"``, ``n_test``, ``seed``
only), ``[arch]``, ``[sgd]`` (no ``optimizer``: see ``compare.optimizers``; ``lr`` is the
default learning rate), ``[bayes]`` (``method``: ``ep``, ``ep-conditional`` or ``none``),
``[analysis]`` and the experiment's own ``[compare]`` table (keys of :class:`CompareSettings`).
A file is a compare file exactly when it has a ``[compare]`` table (:func:`is_compare_file`).

Run folder (resumable; rerunning with the same config reuses every finished piece)::

    OUT/config.toml  manifest.json  table.csv  table.md  cases.csv  summary.json  report.md  compare.png
    OUT/cases/<case>/prior/shards/prior/*.parquet     prior-sampling shards
    OUT/cases/<case>/sgd-<opt>/shards/sgd/*.parquet   SGD shards
    OUT/cases/<case>/ess.parquet, ess.json            ESS counts and diagnostics
    OUT/cases/<case>/functions.parquet                one row per function: counts and ln P per method
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sampler._checks import check_choice, check_int, did_you_mean
from sampler.architectures import Architecture
from sgdbayes.config import (OPTIMIZERS, AnalysisConfig, BayesConfig, SGDConfig, _build_arch, _build_section,
                     apply_overrides, read_toml)
from sampler.data import BOOLEAN_N, boolean_inputs, boolean_target
from sampler.functions import FunctionCounts
from sampler.store import RunFolder, atomic_write_json, atomic_write_table, atomic_write_text


def _threshold_target(k: int) -> str:
    """1 on the inputs with at least ``k`` ones among their 7 bits."""
    return "".join(str(int(v)) for v in (boolean_inputs().sum(axis=1) >= k))


#: The default complex target ``weight6``: 1 on the 8 inputs with >= 6 ones (LZ complexity 49, constant's 7).
WEIGHT6_TARGET = _threshold_target(6)
POOL_SIZE = 2 ** BOOLEAN_N
PRIOR_BLOCK = 4096  # sampler.prior.BLOCK_SIZE: chunks must hold whole blocks
PRIOR_BATCH = 1024  # networks per batched forward pass in prior sampling (see _run_prior)
SECTIONS = ("data", "arch", "sgd", "bayes", "analysis", "compare")
DATA_KEYS = ("dataset", "n_test", "seed")

#: Built-in defaults; ``configs/paper/boolean.toml`` spells out the same values.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dataset": "boolean", "n_test": 32, "seed": 0},
    "arch": {"kind": "fcn", "depth": 2, "width": 40, "activation": "relu", "sigma_w": 1.0, "sigma_b": 0.0357},
    "sgd": {"n_runs": 500, "lr": 0.01, "batch_size": 8, "loss": "ce", "max_epochs": 500, "ensemble": 256,
            "seed": 0, "device": "cpu", "shard_size": 1024},
    "bayes": {"method": "ep-conditional"},
    "analysis": {"min_count": 5, "n_boot": 1000, "seed": 0},
}


@dataclass(frozen=True)
class CompareSettings:
    """The ``[compare]`` table.

    Attributes
    ----------
    targets : tuple of str
        Boolean targets: a name (``constant``, ``first-bit``, ``parity``, ...) or a 128-character
        bitstring over all inputs (input i = the 7-bit binary expansion of i, MSB first).
    target_labels : tuple of str
        A short label per target for tables and plots ((): the name; ``weight6`` for
        :data:`WEIGHT6_TARGET`; ``target<i>`` for other bitstrings).
    train_sizes : tuple of int
        The |S| values; each with ``data.n_test`` must fit in the 128 inputs.
    optimizers : tuple of str
        One P_SGD estimate per optimizer (distinct names, torch.optim rules).
    learning_rates : tuple of float
        One per optimizer; () uses ``sgd.lr`` for all.
    prior_min_fit : int
        Prior sampling stops once this many samples fit S ...
    prior_max_samples : int
        ... or once this many were drawn.
    prior_chunk : int
        Samples per chunk (and run-folder shard), a multiple of 4096.
    ess_samples, ess_chains, ess_burn_in, ess_thin : int
        Elliptical slice sampling: kept states in all, chains, discarded first steps, thinning.
        Long chains matter more than many: on ``weight6`` with |S| = 64 (measured), 64 chains
        thinned by 5 gave R-hat 1.18 and a log-log slope of 0.24 against EP; thinned by 25 with
        256 states each, R-hat 1.05 and slope 0.97; 256 chains of 64 states thinned by 25,
        R-hat 1.15 and slope 0.68.
    seed : int
        Randomness of prior sampling and ESS (SGD uses ``sgd.seed``, the split ``data.seed``).
    """

    targets: tuple[str, ...] = ("constant", WEIGHT6_TARGET)
    target_labels: tuple[str, ...] = ()
    train_sizes: tuple[int, ...] = (32, 64)
    optimizers: tuple[str, ...] = ("sgd", "adam")
    learning_rates: tuple[float, ...] = (0.1, 0.01)
    prior_min_fit: int = 50_000
    prior_max_samples: int = 1 << 21
    prior_chunk: int = 1 << 18
    ess_samples: int = 8192
    ess_chains: int = 64
    ess_burn_in: int = 500
    ess_thin: int = 25
    seed: int = 0

    def __post_init__(self):
        for name in ("targets", "target_labels", "train_sizes", "optimizers", "learning_rates"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"compare.{name} must be a list, got {value!r} ({type(value).__name__})")
            object.__setattr__(self, name, tuple(value))
        if not self.targets:
            raise ValueError("compare.targets must name at least one target, got []")
        for i, t in enumerate(self.targets):
            if not isinstance(t, str):
                raise TypeError(f"compare.targets[{i}] must be a string, got {t!r} ({type(t).__name__})")
            try:
                boolean_target(t)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"compare.targets[{i}]: {exc}") from None
        if self.target_labels:
            if len(self.target_labels) != len(self.targets):
                raise ValueError(f"compare.target_labels must have one label per target ({len(self.targets)}), "
                                 f"got {len(self.target_labels)}")
            for i, lab in enumerate(self.target_labels):
                if not isinstance(lab, str) or not lab or not re.fullmatch(r"[\w.+-]+", lab):
                    raise ValueError(f"compare.target_labels[{i}] must be a non-empty name of letters, digits and "
                                     f"._-+ (it names folders), got {lab!r}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"compare.targets must be distinct, got {len(self.targets)} with repeats")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"compare target labels must be distinct, got {list(self.labels)}")
        if not self.train_sizes:
            raise ValueError("compare.train_sizes must hold at least one size, got []")
        for i, m in enumerate(self.train_sizes):
            check_int(f"compare.train_sizes[{i}]", m, minimum=1, maximum=POOL_SIZE - 1)
        if len(set(self.train_sizes)) != len(self.train_sizes):
            raise ValueError(f"compare.train_sizes must be distinct, got {list(self.train_sizes)}")
        if not self.optimizers:
            raise ValueError("compare.optimizers must name at least one optimizer, got []")
        for i, o in enumerate(self.optimizers):
            check_choice(f"compare.optimizers[{i}]", o, OPTIMIZERS)
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"compare.optimizers must be distinct, got {list(self.optimizers)}")
        if self.learning_rates:
            if len(self.learning_rates) != len(self.optimizers):
                raise ValueError(f"compare.learning_rates must have one rate per optimizer ({len(self.optimizers)}) "
                                 f"or be empty (use sgd.lr), got {len(self.learning_rates)}")
            for i, lr in enumerate(self.learning_rates):
                if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
                    raise ValueError(f"compare.learning_rates[{i}] must be a number > 0, got {lr!r}")
            object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        check_int("compare.prior_min_fit", self.prior_min_fit, minimum=1)
        check_int("compare.prior_chunk", self.prior_chunk, minimum=PRIOR_BLOCK)
        if self.prior_chunk % PRIOR_BLOCK:
            raise ValueError(f"compare.prior_chunk must be a multiple of {PRIOR_BLOCK}, got {self.prior_chunk}")
        check_int("compare.prior_max_samples", self.prior_max_samples, minimum=1)
        check_int("compare.ess_samples", self.ess_samples, minimum=1)
        check_int("compare.ess_chains", self.ess_chains, minimum=1)
        check_int("compare.ess_burn_in", self.ess_burn_in, minimum=0)
        check_int("compare.ess_thin", self.ess_thin, minimum=1)
        check_int("compare.seed", self.seed, minimum=0)

    @property
    def labels(self) -> tuple[str, ...]:
        """The target labels used in case names."""
        if self.target_labels:
            return self.target_labels
        known = {WEIGHT6_TARGET: "weight6"}
        return tuple(t if not set(t) <= {"0", "1"} else known.get(t, f"target{i}") for i, t in enumerate(self.targets))

    def lr_of(self, optimizer: str, default: float) -> float:
        """The learning rate of ``optimizer`` (``default`` when ``learning_rates`` is empty)."""
        return self.learning_rates[self.optimizers.index(optimizer)] if self.learning_rates else float(default)


@dataclass(frozen=True)
class CompareConfig:
    """A whole Boolean comparison: split settings, architecture, SGD, EP, analysis and ``[compare]``.

    ``n_test`` is k = |E| and ``data_seed`` the split seed (the only ``[data]`` keys used).
    """

    n_test: int = 32
    data_seed: int = 0
    arch: Architecture = field(default_factory=lambda: _build_arch(DEFAULTS["arch"]))
    sgd: SGDConfig = field(default_factory=lambda: SGDConfig(**DEFAULTS["sgd"]))
    bayes: BayesConfig = field(default_factory=lambda: BayesConfig(**DEFAULTS["bayes"]))
    analysis: AnalysisConfig = field(default_factory=lambda: AnalysisConfig(**DEFAULTS["analysis"]))
    compare: CompareSettings = field(default_factory=CompareSettings)

    def __post_init__(self):
        check_int("data.n_test", self.n_test, minimum=1)
        check_int("data.seed", self.data_seed, minimum=0)
        for m in self.compare.train_sizes:
            if m + self.n_test > POOL_SIZE:
                raise ValueError(f"compare.train_sizes holds {m}: |S| + data.n_test = {m} + {self.n_test} must be "
                                 f"<= {POOL_SIZE} (all inputs of {BOOLEAN_N} bits)")
        if self.sgd.batch_size > min(self.compare.train_sizes):
            raise ValueError(f"sgd.batch_size must be <= the smallest |S| = {min(self.compare.train_sizes)}, "
                             f"got {self.sgd.batch_size}")
        if self.sgd.momentum and any(o != "sgd" for o in self.compare.optimizers):
            raise ValueError("sgd.momentum is only for optimizer 'sgd', but compare.optimizers holds "
                             f"{[o for o in self.compare.optimizers if o != 'sgd']}; set sgd.momentum = 0")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, the TOML layout (round-trips through :func:`parse_compare_config`)."""
        sgd = asdict(self.sgd)
        sgd.pop("optimizer")
        comp = {f.name: list(getattr(self.compare, f.name)) if isinstance(getattr(self.compare, f.name), tuple)
                else getattr(self.compare, f.name) for f in fields(CompareSettings)}
        return {"data": {"dataset": "boolean", "n_test": self.n_test, "seed": self.data_seed},
                "arch": self.arch.to_dict(), "sgd": sgd, "bayes": asdict(self.bayes),
                "analysis": asdict(self.analysis), "compare": comp}

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def cases(self) -> list["Case"]:
        """One case per (target, |S|), targets outer."""
        return [Case(label, boolean_target(t), m) for label, t in zip(self.compare.labels, self.compare.targets)
                for m in self.compare.train_sizes]

    def sampled_methods(self) -> list[str]:
        """Sampled estimators: ``prior``, ``ess`` and one ``sgd-<optimizer>`` each."""
        return ["prior", "ess"] + [f"sgd-{o}" for o in self.compare.optimizers]

    def methods(self) -> list[str]:
        """All estimators, EP included unless ``bayes.method = "none"``."""
        return ["prior"] + (["ep"] if self.bayes.method != "none" else []) + self.sampled_methods()[1:]


@dataclass(frozen=True)
class Case:
    """One target and one |S|: ``label`` names the target, ``target`` is its 128-bit string."""

    label: str
    target: str
    n_train: int

    @property
    def name(self) -> str:
        return f"{self.label}-m{self.n_train}"


# --- config -----------------------------------------------------------------------------------
def is_compare_file(path: str | Path) -> bool:
    """Whether the TOML file at ``path`` is a compare config (has a ``[compare]`` table)."""
    return isinstance(read_toml(path).get("compare"), dict)


def parse_compare_config(raw: Mapping[str, Any]) -> CompareConfig:
    """Validate a parsed TOML dict into a :class:`CompareConfig` (missing keys take :data:`DEFAULTS`)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"config must be a table of sections, got {type(raw).__name__}")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config section [{section}] for compare; valid sections: {list(SECTIONS)}"
                             f"{did_you_mean(section, SECTIONS)}")
        if not isinstance(values, dict):
            raise TypeError(f"[{section}] must be a table of key = value, got {values!r}")
    data = {**DEFAULTS["data"], **raw.get("data", {})}
    for key in data:
        if key not in DATA_KEYS:
            hint = {"n_train": " (set compare.train_sizes)", "target": " (set compare.targets)"}.get(key, "")
            raise ValueError(f"data.{key} is not used by compare; [data] takes only {list(DATA_KEYS)}{hint}")
    if data["dataset"] != "boolean":
        raise ValueError(f"data.dataset must be 'boolean' for compare, got {data['dataset']!r}")
    for key in ("n_test", "seed"):
        if isinstance(data[key], bool) or not isinstance(data[key], int):
            raise TypeError(f"data.{key} must be of type int, got {data[key]!r} ({type(data[key]).__name__})")
    user_arch = raw.get("arch", {})
    arch_raw = user_arch if user_arch.get("kind", "fcn") != "fcn" else {**DEFAULTS["arch"], **user_arch}
    sgd_raw = dict(raw.get("sgd", {}))
    if "optimizer" in sgd_raw:
        raise ValueError("sgd.optimizer is not used by compare: list the optimizers in compare.optimizers")
    sgd = _build_section("sgd", {**DEFAULTS["sgd"], **sgd_raw})
    bayes = _build_section("bayes", {**DEFAULTS["bayes"], **raw.get("bayes", {})})
    analysis = _build_section("analysis", {**DEFAULTS["analysis"], **raw.get("analysis", {})})
    comp_raw = dict(raw.get("compare", {}))
    valid = [f.name for f in fields(CompareSettings)]
    for key in comp_raw:
        if key not in valid:
            raise ValueError(f"unknown key compare.{key}; valid keys of [compare]: {sorted(valid)}"
                             f"{did_you_mean(key, valid)}")
    return CompareConfig(n_test=data["n_test"], data_seed=data["seed"], arch=_build_arch(arch_raw), sgd=sgd,
                         bayes=bayes, analysis=analysis, compare=CompareSettings(**comp_raw))


def _apply_compare_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    out = {s: dict(v) if isinstance(v, dict) else v for s, v in raw.items()}
    other = []
    for text in overrides:
        if not isinstance(text, str):
            raise TypeError(f"--set expects section.key=value strings, got {text!r}")
        if not text.strip().startswith("compare."):
            other.append(text)
            continue
        if "=" not in text:
            raise ValueError(f"--set expects section.key=value, got {text!r}")
        path, literal = text.split("=", 1)
        key = path.strip().split(".", 1)[1]
        try:
            value = tomllib.loads(f"v = {literal.strip()}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"--set {text!r}: the value must be a TOML literal (e.g. [32, 64] or "
                             f"[\"constant\"]): {exc}") from None
        out.setdefault("compare", {})[key] = value
    # data.target / data.n_train are rejected by parse_compare_config with a hint
    return apply_overrides(out, other)


def load_compare_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> CompareConfig:
    """Read a compare TOML file (or the built-in :data:`DEFAULTS` when ``path`` is None) and apply
    ``--set section.key=value`` overrides (``compare.*`` values are TOML literals)."""
    raw = read_toml(path) if path is not None else {}
    if path is not None and "compare" not in raw:
        raise ValueError(f"config file {path} has no [compare] table: it is not a compare config "
                         f"(run it with `sgdbayes run`)")
    return parse_compare_config(_apply_compare_overrides(raw, list(overrides)))


# --- estimates and their comparison ---------------------------------------------------------------
@dataclass(frozen=True)
class MethodEstimate:
    """One estimator's ln P(f|S) on one case.

    Attributes
    ----------
    name : str
        ``prior``, ``ep``, ``ess`` or ``sgd-<optimizer>``.
    log_p : dict str -> float
        Natural log of P(f|S) per function: ``ln(count / n_fit)`` for a sampled method (every
        function it saw), EP's value for ``ep``.
    counts : FunctionCounts or None
        The sampled counts (None for EP).
    """

    name: str
    log_p: Mapping[str, float]
    counts: FunctionCounts | None = None

    @classmethod
    def from_counts(cls, name: str, counts: FunctionCounts) -> "MethodEstimate":
        n = counts.n_fit
        return cls(name, {f: math.log(c / n) for f, c in counts.counts.items()}, counts)

    def selected(self, min_count: int) -> set[str]:
        """The functions this method sees often enough: count >= ``min_count`` (sampled), every
        function with a finite ln P (EP)."""
        if self.counts is None:
            return {f for f, v in self.log_p.items() if math.isfinite(v)}
        return {f for f, c in self.counts.counts.items() if c >= min_count}


PAIR_COLUMNS = ("case", "x", "y", "n_x", "n_y", "n_common", "mass_x", "mass_y", "pearson", "spearman", "slope",
                "mean_abs_dlog", "dlog_noise", "tv", "js", "kl_y_x", "note")


def compare_methods(x: MethodEstimate, y: MethodEstimate, *, min_count: int, n_boot: int = 1000,
                    seed: int = 0, case: str = "") -> dict[str, Any]:
    """Statistics of method ``y`` against reference ``x`` over the functions both see often enough.

    Parameters
    ----------
    x, y : MethodEstimate
        Reference (x axis) and method (y axis).
    min_count : int
        Threshold of :meth:`MethodEstimate.selected`.
    n_boot, seed
        Bootstrap of :func:`analysis.correlate` (intervals are not tabulated; the seed keeps
        the call deterministic).
    case : str
        Copied into the row.

    Returns
    -------
    dict
        Keys :data:`PAIR_COLUMNS`: ``n_x``, ``n_y`` functions each sees often enough, ``n_common``
        in both; ``mass_x``/``mass_y`` the P each puts on them; Pearson, Spearman and slope of
        ``ln P_y`` on ``ln P_x`` (nan with a note below 3 common functions); ``mean_abs_dlog`` the
        mean ``|ln P_y - ln P_x|`` (natural log, not renormalised); ``dlog_noise`` the mean over
        the same functions of the binomial standard deviation of ``ln P_y - ln P_x`` from counting
        alone, ``sqrt(sum (1 - p) / count)`` over the sampled methods of the pair (a floor for
        ``mean_abs_dlog``; it ignores autocorrelation, so it is too small for ESS); ``tv``, ``js`` (nats) and
        ``kl_y_x`` = KL(P_y || P_x) (nats) after renormalising both on the common functions.
    """
    import analysis

    min_count = check_int("min_count", min_count, minimum=1)
    sx, sy = x.selected(min_count), y.selected(min_count)
    common = sorted(sx & sy, key=lambda f: (-x.log_p[f], f))
    nan = math.nan
    row: dict[str, Any] = dict(case=case, x=x.name, y=y.name, n_x=len(sx), n_y=len(sy), n_common=len(common),
                               mass_x=nan, mass_y=nan, pearson=nan, spearman=nan, slope=nan, mean_abs_dlog=nan,
                               dlog_noise=nan, tv=nan, js=nan, kl_y_x=nan, note="")
    notes = []
    for est, sel in ((x, sx), (y, sy)):
        if est.counts is not None and est.counts.n_fit == 0:
            notes.append(f"{est.name}: 0 of {est.counts.n_runs} fit S")
        elif not sel:
            notes.append(f"{est.name}: {est.counts.n_fit} of {est.counts.n_runs} fit S, no function seen >= "
                         f"{min_count} times" if est.counts is not None else f"{est.name}: no function evaluated")
    if not common:
        row["note"] = "; ".join(notes or ["no function common to both"])
        return row
    lx = np.array([x.log_p[f] for f in common])
    ly = np.array([y.log_p[f] for f in common])
    row["mean_abs_dlog"] = float(np.mean(np.abs(ly - lx)))
    var = np.zeros(len(common))
    for est in (x, y):
        if est.counts is not None:
            c = np.array([est.counts[f] for f in common], dtype=float)
            var += (1.0 - c / est.counts.n_fit) / c
    row["dlog_noise"] = float(np.mean(np.sqrt(var)))
    d = analysis.compare_distributions(ly, lx, log=True)
    row.update(mass_x=d.mass_b, mass_y=d.mass_sgd, tv=d.tv, js=d.js, kl_y_x=d.kl)
    if len(common) >= 3:
        c = analysis.correlate(ly, lx, n_boot=n_boot, seed=seed)
        row.update(pearson=c.pearson, spearman=c.spearman, slope=c.slope)
        notes.extend(c.notes[:1] if not math.isfinite(c.pearson) else [])
    else:
        notes.append(f"{len(common)} common function(s): no correlation")
    row["note"] = "; ".join(notes)
    return row


def method_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(reference, method) pairs compared: everything against prior sampling; ESS against EP
    (the GP limit two ways); each P_SGD against EP (the paper's plot)."""
    sgd = [m for m in methods if m.startswith("sgd-")]
    pairs = [("prior", m) for m in methods if m != "prior"]
    if "ep" in methods:
        pairs += [("ep", "ess")] + [("ep", m) for m in sgd]
    return pairs


# --- running ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompareResult:
    """A finished comparison.

    Attributes
    ----------
    folder : Path
    rows : list of dict
        The comparison table (:data:`PAIR_COLUMNS`), one row per case and pair.
    cases : list of dict
        Per-case facts: target, sizes, P(S) by prior sampling and EP, acceptance, ESS diagnostics,
        SGD fit fractions, seconds per method.
    table_path, figure_path, report_path : Path
    seconds : float
        Wall time of this call.
    """

    folder: Path
    rows: list
    cases: list
    table_path: Path
    figure_path: Path
    report_path: Path
    seconds: float

    def summary_text(self) -> str:
        """The comparison table as markdown, then the per-case table."""
        return format_table(self.rows) + "\n\n" + format_cases(self.cases)


def _log(progress: bool, text: str) -> None:
    if progress:
        import sys

        print(text, file=sys.stderr, flush=True)


def _check_folder(folder: RunFolder, config: CompareConfig) -> None:
    if folder.config_path.is_file():
        existing = parse_compare_config(read_toml(folder.config_path))
        if existing != config:
            raise ValueError(f"run folder {folder.path} holds a different compare config ({folder.config_path}); "
                             f"resume it with the same config, or pass a new --out")
    else:
        atomic_write_text(folder.config_path, config.to_toml())


def _run_prior(config: CompareConfig, split, case_dir: Path, device, progress: bool) -> tuple[FunctionCounts, dict]:
    from sampler.prior import binomial_summary, prior_sampling

    s = config.compare
    folder = RunFolder(case_dir / "prior")
    n, seconds = 0, 0.0
    while True:
        n = min(n + s.prior_chunk, s.prior_max_samples)
        # batch_size does not change the samples. Measured (7-40-40-1, 64 points): 1024 runs at
        # ~50k samples/s on an idle 2-core machine (256: ~66k) but 2.4x faster than 256 when the
        # cores are shared (9.4k vs 3.9k): fewer, larger passes suffer less from contention.
        res = prior_sampling(config.arch, split, n, seed=s.seed, device=device, run_folder=folder,
                             shard_size=s.prior_chunk, batch_size=PRIOR_BATCH, progress=False)
        seconds += res.seconds
        if res.n_fit >= s.prior_min_fit or n >= s.prior_max_samples:
            break
    summ = binomial_summary(res.n_fit, n)
    info = {"prior_samples": n, "prior_fit": res.n_fit, "p_s_prior": summ["acceptance_rate"],
            "p_s_prior_ci": list(summ["p_s_interval"]), "log_p_s_prior": summ["log_p_s"],
            "log_p_s_prior_se": summ["log_p_s_se"], "prior_s": seconds,
            "prior_samples_per_s": res.samples_per_second}
    return res.counts, info


def _run_ess(config: CompareConfig, split, K, case_dir: Path, device) -> tuple[FunctionCounts, dict]:
    from nngp.ess import ess_sample

    s = config.compare
    counts_path, info_path = case_dir / "ess.parquet", case_dir / "ess.json"
    if counts_path.is_file() and info_path.is_file():
        return FunctionCounts.from_parquet(counts_path), json.loads(info_path.read_text())
    r = ess_sample(K, split.y_train, split.n_train, n_samples=s.ess_samples, n_chains=s.ess_chains,
                   burn_in=s.ess_burn_in, thin=s.ess_thin, seed=s.seed, device=device)
    info = {"ess_kept": int(r.counts.n_fit), "ess_proposals_per_step": r.proposals_per_step,
            "ess_rhat_max": r.rhat_max, "ess_bulk_min": r.ess_bulk_min, "ess_s": r.seconds}
    r.counts.to_parquet(counts_path)
    atomic_write_json(info_path, info)
    return r.counts, info


def _run_sgd(config: CompareConfig, split, optimizer: str, case_dir: Path, device, progress: bool):
    from sampler.sgd import sample_sgd

    g = config.sgd
    t0 = time.perf_counter()
    counts = sample_sgd(config.arch, split, g.n_runs, optimizer=optimizer, lr=config.compare.lr_of(optimizer, g.lr),
                        batch_size=g.batch_size, loss=g.loss, seed=g.seed, device=device, momentum=g.momentum,
                        max_epochs=g.max_epochs, epochs_after_fit=g.epochs_after_fit,
                        check_every=g.check_every or None, ensemble=g.ensemble,
                        run_folder=RunFolder(case_dir / f"sgd-{optimizer}"), shard_size=g.shard_size,
                        progress=progress)
    return counts, time.perf_counter() - t0


def _run_ep(config: CompareConfig, split, K, functions: list[str]) -> tuple[dict[str, float], dict]:
    import nngp

    t0 = time.perf_counter()
    post = nngp.train_posterior(config.arch, split, K=K)
    res = nngp.log_pb_details(config.arch, split, functions, method=config.bayes.method, posterior=post)
    info = {"log_p_s_ep": float(post.log_ps), "ep_converged_s": bool(post.converged),
            "ep_functions": len(functions), "ep_unconverged": int((~res.converged).sum()),
            "ep_s": time.perf_counter() - t0}
    return dict(zip(functions, res.log_pb.tolist())), info


def _functions_table(case_dir: Path, split, estimates: dict[str, MethodEstimate]) -> Path:
    import pyarrow as pa

    import analysis

    names = sorted({f for e in estimates.values() for f in e.log_p})
    cols: dict[str, Any] = {"function": pa.array(names, pa.string())}
    for name, e in estimates.items():
        key = name.replace("-", "_")
        if e.counts is not None:
            cols[f"count_{key}"] = pa.array([e.counts[f] for f in names], pa.int64())
        cols[f"log_p_{key}"] = pa.array([e.log_p.get(f, math.nan) for f in names], pa.float64())
    cols["lz_complexity"] = pa.array([analysis.lz_complexity(f) for f in names], pa.float64())
    cols["test_error"] = pa.array([analysis.test_error(f, split.y_test) for f in names], pa.float64())
    meta = {f"n_fit_{n.replace('-', '_')}": str(e.counts.n_fit) for n, e in estimates.items() if e.counts is not None}
    meta.update({f"n_runs_{n.replace('-', '_')}": str(e.counts.n_runs) for n, e in estimates.items()
                 if e.counts is not None})
    meta["test_target"] = split.test_target
    return atomic_write_table(pa.table(cols).replace_schema_metadata(meta), case_dir / "functions.parquet")


def run_case(config: CompareConfig, case: Case, folder: RunFolder, *, progress: bool = True
             ) -> tuple[dict[str, MethodEstimate], dict]:
    """Run every estimator on one case; returns the estimates by method name and the case facts."""
    import nngp

    import analysis

    from sampler.data import load_split
    from sampler.sgd import resolve_device

    device = resolve_device(config.sgd.device)
    split = load_split("boolean", n_train=case.n_train, n_test=config.n_test, seed=config.data_seed,
                       target=case.target)
    case_dir = folder.path / "cases" / case.name
    case_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"case": case.name, "target_label": case.label, "target": case.target,
                            "target_lz": analysis.lz_complexity(case.target), "m": case.n_train, "k": config.n_test,
                            "ones_in_s": int(split.y_train.sum()), "ones_in_e": int(split.y_test.sum())}
    _log(progress, f"[{case.name}] prior sampling ...")
    prior_counts, i = _run_prior(config, split, case_dir, device, progress)
    info.update(i)
    _log(progress, f"[{case.name}] prior: {i['prior_fit']} of {i['prior_samples']} samples fit S "
                   f"({prior_counts.n_functions} functions), {i['prior_s']:.1f} s")
    K = nngp.kernel(config.arch, split.x_all(), input_shape=split.input_shape)
    _log(progress, f"[{case.name}] elliptical slice sampling ...")
    ess_counts, i = _run_ess(config, split, K, case_dir, device)
    info.update(i)
    _log(progress, f"[{case.name}] ESS: {ess_counts.n_functions} functions in {i['ess_kept']} states, "
                   f"R-hat max {i['ess_rhat_max']:.3f}, {i['ess_s']:.1f} s")
    est = {"prior": MethodEstimate.from_counts("prior", prior_counts),
           "ess": MethodEstimate.from_counts("ess", ess_counts)}
    for opt in config.compare.optimizers:
        _log(progress, f"[{case.name}] P_SGD with {opt} ...")
        counts, sec = _run_sgd(config, split, opt, case_dir, device, progress)
        est[f"sgd-{opt}"] = MethodEstimate.from_counts(f"sgd-{opt}", counts)
        info[f"fit_sgd-{opt}"] = f"{counts.n_fit}/{counts.n_runs}"
        info[f"sgd-{opt}_s"] = sec
    if config.bayes.method != "none":
        mc = config.analysis.min_count
        wanted = sorted(set().union(*(e.selected(mc) for e in est.values())))
        _log(progress, f"[{case.name}] EP ({config.bayes.method}) on {len(wanted)} functions ...")
        log_p, i = _run_ep(config, split, K, wanted)
        info.update(i)
        est["ep"] = MethodEstimate("ep", log_p)
    for name, e in est.items():
        if e.counts is not None:
            top = e.counts.most_common(1)
            info[f"top_{name}"] = top[0][1] / e.counts.n_fit if top else math.nan
    ordered = {m: est[m] for m in config.methods()}
    _functions_table(case_dir, split, ordered)
    return ordered, info


def run_compare(config: CompareConfig, out: str | Path, *, progress: bool = True) -> CompareResult:
    """Run the comparison ``config`` into the run folder ``out`` (resuming what it holds).

    Returns
    -------
    CompareResult
        Also written: ``table.csv``/``table.md`` (the pairs), ``cases.csv``, ``summary.json``,
        ``report.md`` and the figure ``compare.png``.
    """
    if not isinstance(config, CompareConfig):
        raise TypeError(f"config must be a CompareConfig, got {type(config).__name__}")
    t0 = time.perf_counter()
    folder = RunFolder(out)
    _check_folder(folder, config)
    folder.start_manifest(seeds={"data": config.data_seed, "sgd": config.sgd.seed, "compare": config.compare.seed,
                                 "analysis": config.analysis.seed}, device=config.sgd.device)
    rows, cases, panels = [], [], []
    a = config.analysis
    for case in config.cases():
        tc = time.perf_counter()
        est, info = run_case(config, case, folder, progress=progress)
        info["case_s"] = time.perf_counter() - tc
        cases.append(info)
        for xm, ym in method_pairs(list(est)):
            rows.append(compare_methods(est[xm], est[ym], min_count=a.min_count, n_boot=a.n_boot, seed=a.seed,
                                        case=case.name))
        panels.append((case.name, est))
        folder.update_manifest(timings={f"{case.name}_s": info["case_s"]})
    from analysis.compare_plots import plot_compare

    references = ["prior"] + (["ep"] if "ep" in config.methods() else [])
    figure_path = plot_compare(build_panels(panels, references, min_count=a.min_count, rows=rows),
                               folder.path / "compare.png", ncols=len(panels),
                               title=f"Boolean n = 7, {config.arch.describe()}, |E| = {config.n_test}: "
                                     f"functions each method saw >= {a.min_count} times")
    table_path = _write_tables(folder, rows, cases)
    seconds = time.perf_counter() - t0
    summary = {"rows": rows, "cases": cases, "min_count": a.min_count, "seconds": seconds,
               "methods": config.methods(), "arch": config.arch.describe()}
    atomic_write_json(folder.path / "summary.json", _jsonable(summary))
    report = _write_report(folder, config, rows, cases, figure_path, seconds)
    folder.update_manifest(timings={"total_s": seconds}, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return CompareResult(folder.path, rows, cases, table_path, figure_path, report, seconds)


def build_panels(case_estimates: Sequence[tuple[str, Mapping[str, MethodEstimate]]], references: Sequence[str],
                 *, min_count: int, rows: Sequence[Mapping] = ()) -> list:
    """Figure panels: one row per reference (``prior``, ``ep``), one column per case; each panel
    shows every method paired with that reference in :func:`method_pairs`, over the functions
    both see often enough (the ones :func:`compare_methods` uses). ``rows`` (from
    :func:`compare_methods`) add each pair's Pearson r to the legend."""
    from analysis.compare_plots import Panel, Series

    pearson = {(r["case"], r["x"], r["y"]): r["pearson"] for r in rows}
    panels = []
    for ref in references:
        for case, est in case_estimates:
            series, notes = [], []
            x = est[ref]
            sx = x.selected(min_count)
            if x.counts is not None and x.counts.n_fit == 0:
                notes.append(f"{ref}: 0 of {x.counts.n_runs:.3g} samples fit S")
            elif not sx:
                notes.append(f"{ref}: {x.counts.n_fit} of {x.counts.n_runs:.3g} samples fit S,\nno function seen "
                             f">= {min_count} times" if x.counts is not None else f"{ref}: no function evaluated")
            for xm, ym in method_pairs(list(est)):
                if xm != ref:
                    continue
                y = est[ym]
                common = sorted(sx & y.selected(min_count))
                r = pearson.get((case, xm, ym), math.nan)
                series.append(Series(ym, np.array([x.log_p[f] for f in common]),
                                     np.array([y.log_p[f] for f in common]),
                                     f"r={r:.2f}" if math.isfinite(r) else ""))
            panels.append(Panel(f"{case}: vs {ref}", ref, tuple(series), "; ".join(notes)))
    return panels


# --- tables and report --------------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def format_table(rows: Sequence[Mapping]) -> str:
    """The comparison table as markdown (natural logs; TV, JS, KL in nats after renormalising)."""
    header = ["case", "x (reference)", "y (method)", "n_x", "n_y", "common", "mass x", "mass y", "pearson",
              "spearman", "slope", "mean abs dlnP", "count noise", "TV", "JS", "KL(y||x)", "note"]
    body = [[r["case"], r["x"], r["y"], str(r["n_x"]), str(r["n_y"]), str(r["n_common"])]
            + [_fmt(r[k]) for k in ("mass_x", "mass_y", "pearson", "spearman", "slope", "mean_abs_dlog", "dlog_noise",
                                    "tv", "js", "kl_y_x")] + [r["note"]] for r in rows]
    return _markdown(header, body)


CASE_COLUMNS = ("case", "target_lz", "m", "k", "ones_in_s", "prior_samples", "prior_fit", "p_s_prior",
                "log_p_s_prior", "log_p_s_prior_se", "log_p_s_ep", "ess_proposals_per_step", "ess_rhat_max",
                "ess_bulk_min", "ep_functions", "ep_unconverged", "prior_s", "ess_s", "ep_s", "case_s")


def format_cases(cases: Sequence[Mapping]) -> str:
    """The per-case facts as markdown: P(S) two ways, acceptance, ESS diagnostics, seconds, SGD fits,
    and ``top_<method>``, the probability a sampled method gives its most frequent function."""
    extra = sorted({k for c in cases for k in c if k.startswith("fit_sgd-")})
    extra += [k for k in dict.fromkeys(k for c in cases for k in c) if k.startswith("top_")]
    header = list(CASE_COLUMNS) + extra
    body = [[_fmt(c.get(k, math.nan)) if not isinstance(c.get(k), str) else c[k] for k in header] for c in cases]
    return _markdown(header, body)


def _write_tables(folder: RunFolder, rows, cases) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(PAIR_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path = atomic_write_text(folder.path / "table.csv", buf.getvalue())
    atomic_write_text(folder.path / "table.md", format_table(rows) + "\n")
    keys = list(CASE_COLUMNS) + sorted({k for c in cases for k in c if k not in CASE_COLUMNS})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows([{k: c.get(k, "") for k in keys} for c in cases])
    atomic_write_text(folder.path / "cases.csv", buf.getvalue())
    return path


def _write_report(folder: RunFolder, config: CompareConfig, rows, cases, figure: Path, seconds: float) -> Path:
    text = "\n".join([
        "# Boolean n = 7: P_SGD and P_B by prior sampling, EP and ESS",
        "",
        f"Architecture: {config.arch.describe()}; |E| = {config.n_test}; split seed {config.data_seed}; "
        f"functions compared where each method saw them >= {config.analysis.min_count} times "
        f"(EP: every function evaluated). Natural logs; TV, JS and KL(y||x) in nats after renormalising both "
        f"methods on the common functions; mass = P each method puts on them. Wall time of this call "
        f"{seconds:.0f} s (work reused from the run folder is not re-timed).",
        "",
        "## Comparison",
        "",
        format_table(rows),
        "",
        "## Cases",
        "",
        format_cases(cases),
        "",
        f"![comparison]({figure.name})",
        "",
    ])
    return atomic_write_text(folder.path / "report.md", text)
