"""What the scorers of a Gaussian on the training then test points share (``ntk``, ``gp-mse``).

A subclass says how to make the case's Gaussian (:meth:`GaussianScorer.gaussian`, a
:class:`nngp.mse.GaussianOnPoints` on S then E); this module turns it into log P(f|S) for sign
patterns f on E:

* ``condition = False``: ``log P(f) = log P[1{g_E > 0} = f]`` under the Gaussian's test block.
* ``condition = True``: ``log P(f | fits S) = log P[sign pattern (y_S, f) on S and E] - log P(fits S)``
  under the joint Gaussian: what a sampler that counts only runs fitting S estimates. When the
  union bound ``sum_i Phi(-|mean_i| / sd_i)`` over the training points is below
  :data:`FIT_BOUND` the probability of fitting S is 1 to that accuracy and the test block is used
  alone (exact up to that bound); the summary says which.

Each orthant probability is computed by minimax tilting (standard error; ``orthant = "tilting"``,
per-function seeds ``derive_seed(seed, <label>, f)``, so a value does not depend on its shard) and by EP
(no error bar, kept in the shard's info and compared in the extras); ``orthant = "ep"`` skips
the tilting. log P(fits S) is made once per case with the Gaussian (a fit) and reported.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from scipy import special

import nngp
from nngp.mse import GaussianOnPoints
from sampler.functions import string_to_bits
from sampler.seeding import derive_seed
from sampler.store import fingerprint

from .base import shard_table
from .scoring import Scorer, ScorerOptions

#: Below this union bound on P(some training point has the wrong sign), fitting S counts as certain.
FIT_BOUND = 1e-12


class GaussianOptions(ScorerOptions):
    """:class:`ScorerOptions` (top 50, 10 per shard) and how the orthant probabilities are computed."""

    top: int = Field(50, ge=0)
    group: int = Field(10, ge=1)
    orthant: Literal["tilting", "ep"] = Field(
        "tilting", description="tilting: unbiased with a standard error (and EP beside it); ep: EP only")
    n_samples: int = Field(2000, ge=2, description="importance samples per orthant probability (tilting)")
    seed: int = Field(0, ge=0, description="seeds the importance samples (tilting)")


def fit_union_bound(g: GaussianOnPoints, y_train: torch.Tensor) -> float:
    """``sum_i Phi(-s_i mean_i / sd_i)`` over the training points (``s = 2 y - 1``): an upper bound on
    P(the Gaussian's training block has a wrong sign). 0 where every sd is 0 and every sign right."""
    mean, cov = g.train()
    s = 2.0 * y_train.to(torch.float64) - 1.0
    sd = cov.diagonal().clamp_min(0.0).sqrt().numpy()
    z = (s * mean).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(sd > 0, special.ndtr(-z / np.where(sd > 0, sd, 1.0)), (z <= 0).astype(float))
    return float(tail.sum())


#: Relative jitters (times the largest variance) tried, in order, when the tilting's Cholesky finds the
#: covariance singular: at finite time the training block is nearly deterministic along the NTK's
#: fast directions. A jitter of 1e-8 adds noise of 1e-4 standard deviations of the largest variance,
#: far from flipping a sign whose mean is near +-1; the shard's info says which was used.
JITTERS = (0.0, 1e-10, 1e-8)


def _orthant(cov, y, mean, method, seed, n_samples):
    """``(OrthantResult, jitter used)`` of the sign pattern ``y`` under ``N(mean, cov)``."""
    scale = float(cov.diagonal().max())
    for jitter in JITTERS:
        c = cov if jitter == 0.0 else cov + jitter * scale * torch.eye(cov.shape[0], dtype=cov.dtype)
        try:
            if method == "ep":
                return nngp.orthant(c, y, mean=mean, method="ep"), jitter
            return nngp.orthant(c, y, mean=mean, method="tilting", seed=seed, n_samples=n_samples), jitter
        except np.linalg.LinAlgError:
            if jitter == JITTERS[-1]:
                raise
    raise AssertionError("unreachable")


class GaussianScorer(Scorer):
    """Base of the scorers of a Gaussian on S and E (module docstring). A subclass implements
    :meth:`gaussian` and :meth:`conditions`, and lists its Gaussian's parameters in :meth:`key`."""

    Options = GaussianOptions
    needs_kernel = True
    has_error_bars = True

    # what a subclass provides ---------------------------------------------------------------------
    def gaussian(self, case, options) -> tuple[GaussianOnPoints, dict]:  # pragma: no cover - abstract
        """The Gaussian on S then E, and facts about it for the extras (JSON-able)."""
        raise NotImplementedError

    def conditions(self, options) -> bool:  # pragma: no cover - abstract
        """Whether log P(f|S) conditions on fitting S."""
        raise NotImplementedError

    def key(self, options) -> dict:
        """The options that determine the Gaussian and log P(fits S) (named in the fit)."""
        return {k: v for k, v in options.model_dump().items() if k not in ("top", "min_count", "group", "device")}

    # the fit ------------------------------------------------------------------------------------------
    def _fit_name(self, case, options) -> str:
        return f"{self.name}_{fingerprint({'method': self.name, **self.key(options), **self._extra_key(case, options)})}"

    def _extra_key(self, case, options) -> dict:
        return {}

    def fits(self, case, options):
        return ("kernel", self._fit_name(case, options))

    def make_fit(self, case, options, name):
        """The Gaussian (mean, covariance on the first ``n_train`` points, S, then E), whether P(fit S) is 1,
        log P(fits S) by the orthant method (and EP), and the subclass's facts."""
        if name == "kernel":
            return super().make_fit(case, options, name)
        split = case.split()
        g, facts = self.gaussian(case, options)
        m = split.n_train
        if g.n_train == 0:  # the test block alone (a subclass at large m): P(fits S) is not computed
            return {"mean": g.mean, "cov": g.cov, "n_train": 0, "condition": False, "log_p_fit": math.nan,
                    "log_p_fit_se": math.nan, "log_p_fit_ep": math.nan, "fit_union_bound": math.nan, "facts": facts}
        bound = fit_union_bound(g, split.y_train)
        certain = bound < FIT_BOUND
        if certain:
            lps, lps_se, lps_ep = 0.0, 0.0, 0.0
        else:
            mean, cov = g.train()
            r, _ = _orthant(cov, split.y_train, mean, options.orthant, derive_seed(options.seed, self.name, "S"),
                            options.n_samples)
            ep = r if options.orthant == "ep" else _orthant(cov, split.y_train, mean, "ep", 0, 0)[0]
            lps, lps_se, lps_ep = float(r.log_prob), float(r.stderr), float(ep.log_prob)
        condition = self.conditions(options) and not certain
        return {"mean": g.mean, "cov": g.cov, "n_train": m, "condition": condition,
                "log_p_fit": lps, "log_p_fit_se": lps_se, "log_p_fit_ep": lps_ep, "fit_union_bound": bound,
                "facts": facts}

    # shards -----------------------------------------------------------------------------------------
    def run_shard(self, case, options, shard, progress=None):
        fit = case.fit(self._fit_name(case, options))
        split = case.split()
        m = fit["n_train"]
        fs = list(shard["functions"])
        if fit["condition"]:
            mean, cov, base = fit["mean"], fit["cov"], split.y_train.to(torch.int64)
            lps, lps_se, lps_ep = fit["log_p_fit"], fit["log_p_fit_se"], fit["log_p_fit_ep"]
        else:
            mean, cov, base = fit["mean"][m:], fit["cov"][m:, m:], torch.zeros(0, dtype=torch.int64)
            lps, lps_se, lps_ep = 0.0, 0.0, 0.0
        log_p, se, eps, jitter = [], [], [], 0.0
        for i, f in enumerate(fs):
            y = torch.cat([base, torch.as_tensor(string_to_bits(f), dtype=torch.int64)])
            r, jit = _orthant(cov, y, mean, options.orthant, derive_seed(options.seed, self.name, f), options.n_samples)
            ep = r if options.orthant == "ep" else _orthant(cov, y, mean, "ep", 0, 0)[0]
            jitter = max(jitter, jit)
            log_p.append(r.log_prob - lps)
            se.append(math.hypot(r.stderr, lps_se) if options.orthant == "tilting" else math.nan)
            eps.append(ep.log_prob - lps_ep)
            if progress is not None:
                progress(i + 1, i + 1)
        return shard_table(fs, log_p=log_p, log_p_se=se,
                           info={"log_p_ep": [float(v) for v in eps], "jitter": jitter})

    def extras(self, case, options, result):
        fit = case.fit(self._fit_name(case, options))
        out = {f"{self.name}_log_p_fit": fit["log_p_fit"], f"{self.name}_log_p_fit_se": fit["log_p_fit_se"],
               f"{self.name}_fit_union_bound": fit["fit_union_bound"], f"{self.name}_conditioned": fit["condition"],
               **{f"{self.name}_{k}": v for k, v in fit["facts"].items()}}
        out[f"{self.name}_max_jitter"] = max([i.get("jitter", 0.0) for i in result.infos] or [0.0])
        ep = np.concatenate([np.asarray(i.get("log_p_ep", []), float) for i in result.infos] or [np.zeros(0)])
        if options.orthant == "tilting" and ep.size == len(result.log_p) and ep.size:
            ok = np.isfinite(ep) & np.isfinite(result.log_p) & (result.log_p_se > 0)
            z = np.abs(ep[ok] - result.log_p[ok]) / result.log_p_se[ok]
            out[f"{self.name}_ep_vs_tilting_median_z"] = float(np.median(z)) if z.size else None
            out[f"{self.name}_ep_vs_tilting_max_abs"] = float(np.max(np.abs(ep[ok] - result.log_p[ok]))) if z.size else None
        return out
