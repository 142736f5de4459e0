"""``tilting``: log P_B(f|S) in the NNGP limit with a standard error, by minimax tilting (Botev's
unbiased importance sampler of Gaussian orthant probabilities, :func:`nngp.orthant` with
``method="tilting"``).

log P_B(f|S) = log P(S, E = f) - log P(S): two orthant probabilities of N(0, K) on the m + k and
the m points. Each is estimated with ``n_samples`` importance samples from its own seeded stream
(``derive_seed(seed, "tilting", f)`` for f, ``derive_seed(seed, "tilting", "S")`` for S), so a
function's value does not depend on the shard it lands in. ``log_p_se`` combines both errors,
``sqrt(se_joint^2 + se_S^2)``; note that every function shares the one log P(S) estimate, so
their errors are correlated through it (it shifts all of them together).

Sizing (measured on the 2-core machine, shared with other jobs, default experiment: MNIST m = 100,
k = 20, FCN 2x64): per function 0.4 s at ``n_samples = 2000`` (standard error of log P(S, E=f)
about 0.028 nats), 0.6 s at 4000 (0.019 nats), 1.2-2 s at 500-1000 (the saddle-point solve
dominates there, measured with a cold cache). 2000 is the default: its error is a tenth of
P_SGD's counting noise on the same functions, and the 50 most frequent functions (``top = 50`` in
``configs/default.toml``) cost about 25 s of a ``make run``. There EP sat within the tilting error
(median |EP - tilting| = 0.42 standard errors).
Per-case extras: log P(S) by tilting with its standard error.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

import nngp
from sampler.functions import string_to_bits
from sampler.seeding import derive_seed

from .base import register_estimator, shard_table
from .scoring import Scorer, ScorerOptions


class TiltingOptions(ScorerOptions):
    """:class:`ScorerOptions` (top 50, 10 per shard), the importance samples and their seed."""

    top: int = Field(50, ge=0)
    group: int = Field(10, ge=1)
    n_samples: int = Field(2000, ge=2, description="Importance samples per orthant probability (>= 2).")
    seed: int = Field(0, ge=0, description="seeds the importance samples")


def _log_ps_fit(options) -> str:
    """Name of the fit ``(log P(S), stderr)`` by tilting with these options' samples and seed."""
    return f"log_ps_tilting_{options.n_samples}_{options.seed}"


@register_estimator("tilting")
class TiltingEstimator(Scorer):
    """log P(S, E=f) - log P(S) by minimax tilting, with standard errors (module docstring)."""

    Options = TiltingOptions
    needs_kernel = True
    has_error_bars = True
    summary_rows = (("log_p_s_tilting", "log P(S) (tilting)"), ("log_p_s_tilting_se", "  its standard error"))

    def fits(self, case, options):
        return ("kernel", _log_ps_fit(options))

    def make_fit(self, case, options, name):
        """``log_ps_tilting_<n_samples>_<seed>``: ``(log P(S), stderr)`` by tilting."""
        if not name.startswith("log_ps_tilting_"):
            return super().make_fit(case, options, name)
        split = case.split()
        m = split.n_train
        r = nngp.orthant(case.fit("kernel").K[:m, :m], split.y_train, method="tilting",
                         seed=derive_seed(options.seed, "tilting", "S"), n_samples=options.n_samples)
        return float(r.log_prob), float(r.stderr)

    def run_shard(self, case, options, shard, progress=None):
        split = case.split()
        K = case.fit("kernel").K
        lps, lps_se = case.fit(_log_ps_fit(options))
        fs = list(shard["functions"])
        log_p, se, unsolved = [], [], 0
        for i, f in enumerate(fs):
            y = torch.cat([split.y_train, torch.as_tensor(string_to_bits(f), dtype=torch.int64)])
            r = nngp.orthant(K, y, method="tilting", seed=derive_seed(options.seed, "tilting", f),
                             n_samples=options.n_samples)
            log_p.append(r.log_prob - lps)
            se.append(math.hypot(r.stderr, lps_se))
            unsolved += not r.converged
            if progress is not None:
                progress(i + 1, i + 1)
        return shard_table(fs, log_p=log_p, log_p_se=se, info={"saddle_unsolved": unsolved})

    def extras(self, case, options, result):
        lps, se = case.fit(_log_ps_fit(options))
        return {**case.fit("kernel").info(),
                "log_p_s_tilting": lps, "log_p_s_tilting_se": se, "tilting_functions": len(result.functions),
                "tilting_saddle_unsolved": int(np.sum([i.get("saddle_unsolved", 0) for i in result.infos]))}
