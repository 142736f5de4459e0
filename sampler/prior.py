"""P_B(f|S) of the finite network by prior (rejection) sampling.

Draw random initialisations of the network (the prior of docs/DESIGN.md: ``W ~ N(0, sigma_w**2 /
fan_in)``, ``b ~ N(0, sigma_b**2)``), keep those whose function reproduces every label of S and
count their functions on E. This is exact for the finite network up to Monte Carlo error, and
practical where P(S) is not tiny (the Boolean n = 7 system with |S| = 32 or 64).

Two samplers (``method``)
-------------------------
``"weights"``
    Draws every parameter (any architecture, through its protocol ``arch.network``): a whole
    block's members by ``Network.draw``, evaluated by ``Network.apply``.
``"preactivations"`` (FCNs only; the default for them)
    Draws each layer's pre-activations on the split's n = m + k points from their Gaussian given
    the previous layer (:mod:`sampler.preactivations`): the same distribution of functions, far
    fewer random numbers when n is small against the input dimension (MNIST m = 8, k = 6, FCN
    2x64: about 25x, benchmarks/prior_sampling.py).
``"auto"`` (default) is ``"preactivations"`` for an FCN and ``"weights"`` otherwise. The two
samplers give the same distribution, not the same individual draws for a seed.

Randomness and invariance
-------------------------
Samples are grouped into consecutive blocks of ``block_size`` (:data:`BLOCK_SIZE`). Block ``b``
draws all its randomness from ``make_generator(seed, "prior", b)`` (``"weights"``: each parameter
of the whole block as one ``(block_size, *shape)`` tensor in ``named_parameters()`` order, biases
skipped when ``sigma_b == 0``; a ``Module`` with its own initialisation: members in a row) or
``make_generator(seed, "prior-preactivations", b)`` (each layer's noise for the whole block).
Sample ``j`` is therefore a pure function of ``(method, seed, block_size, j)`` (and the device's
generator), whatever ``batch_size``, ``shard_size``, interruptions or ``n_samples``. Memory: a
block's noise, ``block_size`` times the parameters or ``sum(rows * width)`` of an ``FCNPlan``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from . import preactivations as pre
from .checks import check_choice, check_device, check_int
from .architectures import Architecture, check_arch_split
from .data import Split
from .functions import FunctionCounts
from .seeding import make_generator
from .store import ShardProgress, count_table, fingerprint, merge_shards, run_shards, split_digest

#: Samples per block of randomness (see the module docstring).
BLOCK_SIZE = 4096
#: Networks per batched forward pass of the weight sampler when ``batch_size`` is None.
BATCH_SIZE = 256
#: Shard size (samples) used with a run folder, a multiple of the block size.
SHARD_SIZE = 1 << 20
PRIOR_KIND = "prior"
#: ``method`` values of :func:`sample_prior`.
METHODS = ("auto", "weights", "preactivations")
_STREAMS = {"weights": PRIOR_KIND, "preactivations": "prior-preactivations"}


def binomial_summary(n_fit: int, n_runs: int) -> dict:
    """P(S) from ``n_fit`` accepted of ``n_runs`` prior samples: ``acceptance_rate`` (``n_fit / n_runs``),
    ``p_s_se`` (binomial standard error), ``p_s_interval`` (Clopper-Pearson 95%, an upper bound also
    when nothing fit), ``log_p_s`` (natural; ``-inf`` when nothing fit), ``log_p_s_se`` (delta method)."""
    from scipy.stats import beta

    p = n_fit / n_runs
    se = math.sqrt(p * (1 - p) / n_runs)
    lo = 0.0 if n_fit == 0 else float(beta.ppf(0.025, n_fit, n_runs - n_fit + 1))
    hi = 1.0 if n_fit == n_runs else float(beta.ppf(0.975, n_fit + 1, n_runs - n_fit))
    log_p = math.log(p) if p > 0 else -math.inf
    log_se = se / p if p > 0 else math.inf
    return dict(acceptance_rate=p, p_s_se=se, p_s_interval=(lo, hi), log_p_s=log_p, log_p_s_se=log_se)


# --- drawing and evaluating batches of networks ---------------------------------------------------

def resolve_method(arch: Architecture, method: str) -> str:
    """``"weights"`` or ``"preactivations"``: what ``method`` (one of :data:`METHODS`) means for ``arch``
    (``"auto"`` is the spec's ``prior_method``)."""
    check_choice("method", method, METHODS)
    if method == "auto":
        return arch.prior_method
    if method != "weights" and arch.prior_method != method:
        raise ValueError(f"method={method!r} samples FCNs only, got arch kind {arch.kind!r}; "
                         f"use method='weights' or 'auto'")
    return method


def block_outputs(arch: Architecture, split_x: torch.Tensor, input_shape, block: int, n: int, *,
                  seed: int, block_size: int, batch_size: int | None, device, method: str = "weights",
                  plan: pre.FCNPlan | None = None) -> torch.Tensor:
    """Outputs ``(n, n_points)`` on ``split_x`` of the first ``n`` samples of block ``block``.

    ``method`` is ``"weights"`` (the whole block's members drawn by ``Network.draw`` and
    evaluated ``batch_size`` at a time, default :data:`BATCH_SIZE`) or ``"preactivations"``
    (``plan`` is ``preactivations.plan_fcn(arch, split_x)``, computed here when not given;
    ``batch_size=None`` is ``preactivations.evaluation_batch``).
    """
    gen = make_generator(seed, _STREAMS[method], block, device=device)
    if method == "preactivations":
        plan = plan if plan is not None else pre.plan_fcn(arch, split_x)  # type: ignore[arg-type]
        noise = [g[:n] for g in pre.draw_noise(plan, block_size, generator=gen, dtype=split_x.dtype)]
        return pre.outputs_from_noise(plan, noise, batch_size=batch_size)
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    net = arch.network(input_shape, dtype=split_x.dtype, device=device)
    params = net.draw(block_size, generator=gen)  # the whole block: sample j does not depend on n
    with torch.no_grad():
        return torch.cat([net.apply([p[lo:min(lo + batch_size, n)] for p in params], split_x)
                          for lo in range(0, n, batch_size)])


def _count_rows(bits: np.ndarray) -> Counter:
    """Counts of the distinct rows of a ``(n, k)`` 0/1 uint8 array, keyed by bitstring."""
    if bits.shape[0] == 0:
        return Counter()
    k = bits.shape[1]
    # Packing and np.unique are ~100x faster than one string per accepted sample.
    packed = np.packbits(bits, axis=1)
    uniq, cnt = np.unique(packed, axis=0, return_counts=True)
    rows = np.unpackbits(uniq, axis=1, count=k)
    strings = [r.tobytes().decode("ascii") for r in (rows + ord("0")).astype(np.uint8)]
    return Counter(dict(zip(strings, cnt.tolist())))


def prior_shard(arch: Architecture, split: Split, *, seed: int, start: int, stop: int,
                block_size: int = BLOCK_SIZE, batch_size: int | None = None, device="cpu", method: str = "auto",
                progress=None) -> pa.Table:
    """One shard of prior sampling (the unit of work of :func:`sample_prior` and of the pipeline's
    ``prior`` estimator): a count shard (:func:`sampler.store.shard_table`) of the functions on E of
    samples ``[start, stop)`` that fit S, ``start`` a multiple of ``block_size``; ``info`` names the
    ``method`` used. ``progress(n_done, n_fit)``, if given, hears after each block."""
    block_size = check_int("block_size", block_size, minimum=1)
    if check_int("start", start, minimum=0) % block_size or check_int("stop", stop, minimum=1) <= start:
        raise ValueError(f"start must be a multiple of block_size={block_size} and stop > start, got "
                         f"start={start}, stop={stop}")
    method = resolve_method(arch, method)
    y_train, m = split.y_train.to(device) == 1, split.n_train
    counts: Counter = Counter()
    n_fit = 0
    for lo, out in _blocks(arch, split.x_all(), split.input_shape, start, stop, seed=seed, block_size=block_size,
                           batch_size=batch_size, device=device, method=method):
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"non-finite network outputs in prior block {lo // block_size}")
        pos = out > 0
        fit = (pos[:, :m] == y_train).all(dim=1)
        n_fit += int(fit.sum())
        if fit.any():
            counts.update(_count_rows(pos[fit, m:].to(torch.uint8).cpu().numpy()))
        if progress is not None:
            progress(lo + len(out) - start, n_fit)
    return count_table(counts, n_samples=stop - start, info={"method": method})


def _blocks(arch, x, input_shape, start, stop, *, seed, block_size, batch_size, device, method):
    """``(lo, outputs (n, n_points))`` of samples ``[lo, lo + n)`` block by block over ``[start, stop)``."""
    device = torch.device(device)
    x = x.to(device=device, dtype=torch.float32)
    plan = pre.plan_fcn(arch, x) if method == "preactivations" else None  # type: ignore[arg-type]
    for lo in range(start, stop, block_size):
        yield lo, block_outputs(arch, x, input_shape, lo // block_size, min(block_size, stop - lo), seed=seed,
                                block_size=block_size, batch_size=batch_size, device=device, method=method, plan=plan)


def sample_prior(arch: Architecture, split: Split, n_samples: int, *, seed: int,
                 device: str | torch.device = "cpu", batch_size: int | None = None, block_size: int = BLOCK_SIZE,
                 progress=True, run_folder=None, shard_size: int = SHARD_SIZE, method: str = "auto") -> FunctionCounts:
    """P_B(f|S) by prior sampling: the functions on E of the random initialisations of ``arch`` that fit S.

    P(S) is ``n_fit / n_runs``; :func:`binomial_summary` gives its interval and log with errors.

    Parameters
    ----------
    n_samples : int
        Prior samples to draw in all (including those already on disk in ``run_folder``).
    seed : int
        Sample j is a function of ``(method, seed, block_size, j)`` (module docstring).
    batch_size : int, optional
        Networks evaluated per batched forward pass (memory ~ ``batch_size * (m + k) * width``
        floats); does not change the results. Default: :data:`BATCH_SIZE` for the weight sampler;
        for the pre-activation sampler as many as keep a layer's activations within 2**22 floats
        (``preactivations.evaluation_batch``), since fewer, larger passes lose much less when
        the cores are shared.
    block_size : int
        Samples per block of randomness; changes the random stream, not the distribution.
    progress : bool, callable or tqdm bar
        True: a tqdm progress bar; a callable gets ``(n_done, n_fit)``.
    run_folder : RunFolder or path, optional
        Write samples ``[s * shard_size, (s + 1) * shard_size)`` as shard ``s`` of kind ``"prior"``
        (:func:`prior_shard`, through :func:`sampler.store.run_shards`): finished shards are read,
        not redrawn, so an interrupted call resumes; shards of another seed, block size, method,
        architecture, split, device type or shard layout, and copied shard files, are refused.
    shard_size : int
        Samples per shard, a multiple of ``block_size``; does not change the results.
    method : {"auto", "weights", "preactivations"}
        The sampler (module docstring).

    Returns
    -------
    FunctionCounts
        ``n_runs`` samples drawn, ``n_fit`` of them reproduce every label of S.
    """
    device = check_device(device)
    check_arch_split(arch, split)
    check_int("n_samples", n_samples, minimum=1)
    check_int("seed", seed, minimum=0)
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1)
    check_int("block_size", block_size, minimum=1)
    check_int("shard_size", shard_size, minimum=1)
    if shard_size % block_size:
        raise ValueError(f"shard_size must be a multiple of block_size={block_size}, got shard_size={shard_size}")
    method = resolve_method(arch, method)
    device = torch.device(device)
    plan = [{"start": lo, "stop": min(lo + shard_size, n_samples)} for lo in range(0, n_samples, shard_size)]
    print_ = fingerprint({"seed": seed, "block_size": block_size, "method": method, "arch": arch.to_dict(),
                          "split": split_digest(split), "device": device.type})

    def compute(shard, callback):
        return prior_shard(arch, split, seed=seed, start=shard["start"], stop=shard["stop"], block_size=block_size,
                           batch_size=batch_size, device=device, method=method, progress=callback)

    with ShardProgress(progress, total=n_samples, desc="prior samples") as prog:
        return merge_shards(run_shards(run_folder, PRIOR_KIND, plan, compute, fingerprint=print_, progress=prog))


def iter_prior_outputs(arch: Architecture, x: torch.Tensor, n_samples: int, *, seed: int,
                       input_shape=None, block_size: int = BLOCK_SIZE, batch_size: int | None = None,
                       device: str | torch.device = "cpu", method: str = "auto") -> Iterator[torch.Tensor]:
    """Raw float32 outputs ``(n_block, n)`` on ``x`` ``(n, d)`` of the networks :func:`sample_prior`
    draws, block by block (with ``method="preactivations"`` drawn on these points only)."""
    device = check_device(device)
    check_int("n_samples", n_samples, minimum=1)
    check_int("block_size", block_size, minimum=1)
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1)
    shape = tuple(input_shape) if input_shape is not None else (x.shape[1],)
    for _, out in _blocks(arch, x, shape, 0, n_samples, seed=seed, block_size=block_size, batch_size=batch_size,
                          device=device, method=resolve_method(arch, method)):
        yield out
