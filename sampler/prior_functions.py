"""The prior over functions without a training set: random networks' functions on E, counted.

With m = 0 there is nothing to fit: every sample counts. :func:`sample_prior_functions` draws
``n_samples`` networks from the prior (the pre-activation sampler for FCNs, weights otherwise: the
same draws, block by block, as :func:`sampler.sample_prior` makes), takes each one's function on the
points ``x`` (1 where the output is > 0) and counts them packed (:class:`sampler.packed.PackedCounts`):
16 bytes per sample while sampling (for 128 points), then one sort.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .architectures import Architecture
from .checks import check_int
from .packed import PackedCounts, count_codes
from .prior import BLOCK_SIZE, iter_prior_outputs


def sample_prior_functions(arch: Architecture, x, n_samples: int, *, seed: int, input_shape=None,
                           block_size: int = BLOCK_SIZE, batch_size: int | None = None, device="cpu",
                           method: str = "auto", progress: bool = True) -> PackedCounts:
    """Counts of the functions on ``x`` of ``n_samples`` networks drawn from the prior.

    Parameters
    ----------
    arch : Architecture
        The network (any spec; FCNs use the exact pre-activation sampler under ``method="auto"``).
    x : tensor or array ``(k, d)``
        The points of E (e.g. all 128 inputs of the Boolean system), flattened.
    n_samples : int
        Networks to draw.
    seed : int
        Block ``b`` of ``block_size`` samples draws from a generator seeded by ``(seed, b)``: the
        counts depend on ``seed`` and ``block_size`` only (not on ``batch_size`` or the device count).
    input_shape : tuple, optional
        Shape of one input for CNN / LSTM / module architectures (default ``(d,)``).
    block_size, batch_size, device, method
        As :func:`sampler.sample_prior`.
    progress : bool
        A tqdm bar over the samples.

    Returns
    -------
    PackedCounts
        ``k`` bits per function, ``n_samples`` samples.
    """
    check_int("n_samples", n_samples, minimum=1)
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                        dtype=torch.float32)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (k, d) with k >= 1 points, got shape {tuple(x.shape)}")
    k = int(x.shape[0])
    codes = np.empty((n_samples, (k + 7) // 8), dtype=np.uint8)
    done = 0
    with tqdm(total=n_samples, desc="prior samples (m = 0)", unit="net", disable=not progress,
              smoothing=0.1) as bar:
        for out in iter_prior_outputs(arch, x, n_samples, seed=seed, input_shape=input_shape,
                                      block_size=block_size, batch_size=batch_size, device=device, method=method):
            n = out.shape[0]
            codes[done:done + n] = np.packbits((out > 0).cpu().numpy(), axis=1)
            done += n
            bar.update(n)
    unique, counts = count_codes(codes)
    return PackedCounts(unique, counts, k, n_samples)
