"""Finite-width posterior over the network's weights by pyro NUTS, with arviz diagnostics.

The prior is docs/DESIGN.md's standard parameterisation, non-centred: each parameter tensor is ``scale *
z``, ``z ~ N(0, I)`` sampled (``scale`` by :func:`sampler.architectures.standard_std`; nothing sampled
for a zero scale), evaluated through ``arch.network``. The 0-1 likelihood of S is the tempered sigmoid ``prod_i sigmoid((2 y_i - 1) f(x_i) / T)``; ``T -> 0``
approaches it but makes the posterior harder for NUTS. Functions on E are read from every draw;
``counts`` keeps those that reproduce S (``n_fit``) out of all draws (``n_runs``).

Cost: pyro's NUTS is tens of times slower than numpyro's and a step costs up to
``2**max_tree_depth`` gradients: keep to small networks (hundreds to thousands of weights).

Randomness: chain ``c`` runs with pyro seeded by ``derive_seed(seed, "mcmc", c) % 2**32`` inside
:func:`isolated_rng`, which restores the caller's global torch, numpy and ``random`` states.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import warnings
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checks import check_device, check_float, check_int
from .architectures import Architecture, check_arch_split, standard_std
from .data import Split
from .functions import FunctionCounts
from .seeding import derive_seed, forked_torch_rng


@contextlib.contextmanager
def isolated_rng(seed: int, device: str | torch.device = "cpu"):
    """Seed pyro (torch, numpy, random) with ``seed`` inside, restore the caller's states after."""
    import pyro

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with forked_torch_rng(seed, device):  # torch's state and initial seed come back after
            pyro.set_rng_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@dataclass(frozen=True)
class NutsRun:
    """Draws of one NUTS run: ``samples`` ``{site: (n_chains, n_samples, *site_shape)}``, ``diverging``
    ``(n_chains, n_samples)`` bool (the draw ended a divergent trajectory), wall ``seconds``."""

    samples: dict[str, torch.Tensor]
    diverging: np.ndarray
    seconds: float


def run_nuts(model: Callable, *, model_args: tuple = (), model_kwargs: dict | None = None, n_samples: int,
             n_warmup: int, n_chains: int = 4, seed: int, max_tree_depth: int = 8,
             target_accept: float = 0.8, progress: bool = False, device: str | torch.device = "cpu") -> NutsRun:
    """Run ``n_chains`` independent pyro NUTS chains on ``model`` (one after another).

    Parameters
    ----------
    model : callable
        A pyro model, called as ``model(*model_args, **model_kwargs)``.
    n_samples, n_warmup : int
        Kept draws and warm-up (adaptation) steps per chain.
    n_chains : int
        Chain ``c`` is seeded with ``derive_seed(seed, "mcmc", c) % 2**32`` and starts from
        pyro's ``init_to_uniform`` (uniform in [-2, 2] in unconstrained space), so starts are
        dispersed for R-hat.
    seed : int
        The caller's global RNG states are untouched (see :func:`isolated_rng`).
    max_tree_depth, target_accept
        NUTS settings (``2**max_tree_depth`` gradient evaluations per draw at most).
    """
    device = check_device(device)
    from pyro.infer import MCMC, NUTS

    check_int("n_samples", n_samples, minimum=1)
    check_int("n_warmup", n_warmup, minimum=0)
    check_int("n_chains", n_chains, minimum=1)
    check_int("seed", seed, minimum=0)
    check_int("max_tree_depth", max_tree_depth, minimum=1)
    check_float("target_accept", target_accept, minimum=0.0, maximum=1.0, strict_minimum=True)
    t0 = time.perf_counter()
    chains: list[dict[str, torch.Tensor]] = []
    diverging = np.zeros((n_chains, n_samples), dtype=bool)
    for c in range(n_chains):
        # numpy (seeded by pyro too) takes 32-bit seeds only
        with isolated_rng(derive_seed(seed, "mcmc", c) % (1 << 32), device):
            kernel = NUTS(model, max_tree_depth=max_tree_depth, target_accept_prob=target_accept)
            mcmc = MCMC(kernel, num_samples=n_samples, warmup_steps=n_warmup, num_chains=1,
                        disable_progbar=not progress)
            mcmc.run(*model_args, **(model_kwargs or {}))
        chains.append({k: v.detach() for k, v in mcmc.get_samples(group_by_chain=False).items()})
        div = mcmc.diagnostics().get("divergences", {}).get("chain 0", [])
        # pyro lists divergent draws by index, counting warm-up steps too
        idx = np.asarray([int(i) - n_warmup for i in div], dtype=int)
        diverging[c, idx[(idx >= 0) & (idx < n_samples)]] = True
    samples = {k: torch.stack([ch[k] for ch in chains]) for k in chains[0]}
    for k, v in samples.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"NUTS produced non-finite draws of {k!r}")
    return NutsRun(samples, diverging, time.perf_counter() - t0)


def to_inference_data(run: NutsRun, extra: dict[str, np.ndarray] | None = None):
    """arviz ``InferenceData`` with the draws (and ``extra`` (chain, draw, ...) arrays) as posterior
    and ``diverging`` as a sample statistic (arviz 0.x ``from_dict``)."""
    import arviz as az

    posterior = {k: v.cpu().numpy() for k, v in run.samples.items()}
    posterior.update(extra or {})
    return az.from_dict(posterior=posterior, sample_stats={"diverging": run.diverging})


def summarize(idata, var_names: list[str] | None = None):
    """arviz summary table (mean, sd, HDI, MCSE, ESS bulk/tail, R-hat) as a pandas DataFrame."""
    import arviz as az

    # A quantity constant over all draws (e.g. an output bit every chain agrees on) has no R-hat or
    # ESS: arviz divides by its zero variance and returns nan, which diagnostic_numbers skips.
    with np.errstate(divide="ignore", invalid="ignore"):
        return az.summary(idata, var_names=var_names, round_to="none")


def write_diagnostics(idata, summary, out_dir: str | Path, *, trace_vars: list[str], extra: dict | None = None
                      ) -> tuple[Path, Path, Path]:
    """Write ``summary.csv``, ``diagnostics.json`` and ``trace.png`` (arviz trace plot of
    ``trace_vars``) to ``out_dir`` atomically; returns their paths."""
    import matplotlib.pyplot as plt
    import arviz as az

    from .store import atomic_write_bytes, atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = atomic_write_text(out / "summary.csv", summary.to_csv())
    info = diagnostic_numbers(idata, summary)
    info.update(extra or {})
    js = atomic_write_json(out / "diagnostics.json", info)
    with warnings.catch_warnings():
        # a constant trace has no density to draw; arviz says so and draws the trace alone
        warnings.filterwarnings("ignore", message="Your data appears to have a single value")
        axes = az.plot_trace(idata, var_names=trace_vars, compact=True)
    fig = np.asarray(axes).ravel()[0].figure
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    png = atomic_write_bytes(out / "trace.png", buf.getvalue())
    return csv, js, png


def diagnostic_numbers(idata, summary) -> dict[str, Any]:
    """Largest R-hat, smallest bulk/tail ESS over the summary's rows, divergences and draws."""
    div = np.asarray(idata.sample_stats["diverging"])
    rhat = summary["r_hat"].to_numpy(dtype=float)
    return {
        "rhat_max": float(np.nanmax(rhat)) if np.isfinite(rhat).any() else math.nan,
        "ess_bulk_min": float(np.nanmin(summary["ess_bulk"].to_numpy(dtype=float))),
        "ess_tail_min": float(np.nanmin(summary["ess_tail"].to_numpy(dtype=float))),
        "divergences": int(div.sum()),
        "n_chains": int(div.shape[0]),
        "n_draws": int(div.shape[1]),
    }


# --- the network posterior --------------------------------------------------------------------------

@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of the network: module name, pyro site name, shape, prior scale."""

    name: str
    site: str
    shape: tuple[int, ...]
    scale: float


def param_specs(net, sigma_w: float, sigma_b: float) -> list[ParamSpec]:
    """The prior scales of the standard rule (:meth:`sampler.Architecture.parameter_stds`, the same the
    network's initialisation draws with) of the parameters of ``net`` (a :class:`sampler.ensemble.Network`):
    weights ``sigma_w / sqrt(fan_in)``, biases ``sigma_b``."""
    stds = net.stds if net.stds is not None else [standard_std(n, s, sigma_w, sigma_b)
                                                  for n, s in zip(net.names, net.shapes)]
    return [ParamSpec(name, name.replace(".", "_") + "_z", shape, float(std))
            for name, shape, std in zip(net.names, net.shapes, stds)]


def _stacked(specs: list[ParamSpec], draws: dict[str, torch.Tensor], n: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Parameters ``(n, *shape)`` from standard-normal draws ``(n, *shape)`` per site (zeros where the scale is 0)."""
    return [draws[s.site] * s.scale if s.scale else like.new_zeros((n, *s.shape)) for s in specs]


def network_model(net, specs: list[ParamSpec], x_train: torch.Tensor, y_train: torch.Tensor,
                  temperature: float) -> None:
    """pyro model: standard-normal ``z`` per parameter tensor, tempered-sigmoid likelihood of S."""
    import pyro
    import pyro.distributions as dist

    draws = {}
    for s in specs:
        if s.scale:
            base = dist.Normal(torch.zeros((), dtype=x_train.dtype, device=x_train.device), 1.0)
            draws[s.site] = pyro.sample(s.site, base.expand(s.shape).to_event(len(s.shape))).unsqueeze(0)
    f = net.apply(_stacked(specs, draws, 1, x_train), x_train)[0]
    pyro.sample("y", dist.Bernoulli(logits=f / temperature).to_event(1), obs=y_train.to(x_train.dtype))


def network_outputs(net, specs: list[ParamSpec], samples: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Outputs ``(n_chains, n_draws, n)`` on inputs ``x (n, d)`` of the network at every draw:
    a chain's draws are the members of one ``net.apply`` (a chain's outputs do not depend on
    ``n_chains``)."""
    some = samples[next(s.site for s in specs if s.scale)]
    n_draws = some.shape[1]
    with torch.no_grad():
        return torch.stack([net.apply(_stacked(specs, {k: v[c] for k, v in samples.items()}, n_draws, x), x)
                            for c in range(some.shape[0])])


@dataclass(frozen=True)
class McmcResult:
    """Posterior draws of the finite network's functions.

    Attributes
    ----------
    counts : FunctionCounts
        Functions on E of the draws that reproduce every label of S (``n_fit``) out of all
        ``n_runs = n_chains * n_samples`` draws.
    idata : arviz.InferenceData
        Posterior of the ``*_z`` sites (standard-normal weights), ``log_lik`` (tempered
        log-likelihood of S, nats), ``f_E`` (outputs on E) and ``fits_S`` (0/1) per draw;
        ``diverging`` in ``sample_stats``.
    summary : pandas.DataFrame
        arviz summary of ``log_lik`` and ``f_E`` (functional quantities; single weights are not
        identifiable under the hidden units' permutation symmetry, so their R-hat says little);
        ``rhat_max`` and ``ess_bulk_min`` over its rows.
    files : tuple of Path
        What was written to ``out_dir`` (summary.csv, diagnostics.json, trace.png), if given.
    """

    counts: FunctionCounts
    idata: Any
    summary: Any
    rhat_max: float
    ess_bulk_min: float
    divergences: int
    temperature: float
    seconds: float
    seed: int
    files: tuple[Path, ...] = field(default=())


def mcmc_functions(arch: Architecture, split: Split, *, n_samples: int, n_warmup: int, n_chains: int = 4,
                   temperature: float = 0.1, seed: int, out_dir: str | Path | None = None,
                   max_tree_depth: int = 6, target_accept: float = 0.8, progress: bool = False,
                   device: str | torch.device = "cpu") -> McmcResult:
    """Sample the finite network's weights given S by NUTS; count the functions on E.

    Parameters
    ----------
    arch : Architecture
        Any architecture (evaluated through ``arch.network``); keep it small (module docstring).
    n_samples, n_warmup, n_chains, seed, max_tree_depth, target_accept
        As in :func:`run_nuts`.
    temperature : float
        T > 0 of the likelihood ``sigmoid((2y - 1) f / T)`` (same units as the output f).
    out_dir : path, optional
        Folder for ``summary.csv``, ``diagnostics.json`` and ``trace.png``.
    progress, device
        pyro's progress bar; where to compute (float64).
    """
    device = check_device(device)
    check_arch_split(arch, split)
    temperature = check_float("temperature", temperature, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0)
    net = arch.network(split.input_shape, dtype=torch.float64, device=device)
    specs = param_specs(net, arch.sigma_w, arch.sigma_b)  # type: ignore[attr-defined]
    x_train = split.x_train.to(device=device, dtype=torch.float64)
    y_train = split.y_train.to(device)
    run = run_nuts(network_model, model_args=(net, specs, x_train, y_train, temperature), n_samples=n_samples,
                   n_warmup=n_warmup, n_chains=n_chains, seed=seed, max_tree_depth=max_tree_depth,
                   target_accept=target_accept, progress=progress, device=device)
    m = split.n_train
    out = network_outputs(net, specs, run.samples, split.x_all().to(device=device, dtype=torch.float64))
    f_s, f_e = out[..., :m], out[..., m:]
    s = (2 * y_train - 1).to(torch.float64)
    log_lik = torch.nn.functional.logsigmoid(s * f_s / temperature).sum(-1)
    fits = ((f_s > 0) == (y_train == 1)).all(-1)
    bits = (f_e > 0).to(torch.uint8).reshape(-1, split.n_test)
    counts = FunctionCounts.from_bits(bits, fitted=fits.reshape(-1))
    extra = {"log_lik": log_lik.cpu().numpy(), "f_E": f_e.cpu().numpy(), "fits_S": fits.to(torch.int64).cpu().numpy()}
    idata = to_inference_data(run, extra)
    summary = summarize(idata, var_names=["log_lik", "f_E"])
    numbers = diagnostic_numbers(idata, summary)
    files: tuple[Path, ...] = ()
    if out_dir is not None:
        z_sites = [s.site for s in specs if s.scale > 0.0][:2]
        files = write_diagnostics(idata, summary, out_dir, trace_vars=["log_lik"] + z_sites, extra={
            "temperature": temperature, "seed": int(seed), "arch": arch.to_dict(), "n_fit": counts.n_fit,
            "n_runs": counts.n_runs, "n_functions": counts.n_functions, "seconds": run.seconds,
            "max_tree_depth": max_tree_depth, "n_warmup": n_warmup})
    return McmcResult(counts, idata, summary, numbers["rhat_max"], numbers["ess_bulk_min"], numbers["divergences"],
                      temperature, run.seconds, int(seed), files)
