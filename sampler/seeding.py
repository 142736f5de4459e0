"""Explicit, derivable randomness.

Every random quantity in the project is derived from a user seed and a tuple of integer keys
(for example ``(seed, run_index)``), so that the same run gets the same random numbers whatever
the ensemble size, the shard layout or the executor. Nothing here touches global seeds.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch

from .checks import check_device, check_int

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """A seed in ``[0, 2**63)``, a pure function of the user's ``seed`` (>= 0) and stream ``keys``
    (e.g. ``("init", run_index)``; different keys give independent streams)."""
    check_int("seed", seed, minimum=0)
    text = "/".join([str(int(seed))] + [str(k) for k in keys])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def make_generator(seed: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    gen = torch.Generator(device=check_device(device))
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


@contextlib.contextmanager
def forked_torch_rng(seed: int, device: str | torch.device = "cpu"):
    """Run the body with torch's global RNG seeded by ``seed``; put it back exactly as it was after.

    For code that can only draw from the global RNG (a torch module's own ``reset_parameters``):
    inside, ``torch.manual_seed(seed)`` has been called; after, the caller's global CPU (and, for a
    CUDA ``device``, that device's) RNG state *and* ``torch.initial_seed()`` are restored
    (``torch.random.fork_rng`` alone restores the state but not the initial seed), so the caller's
    random state neither influences nor is changed by the body.
    """
    check_int("seed", seed, minimum=0)
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    torch_seed, torch_state = torch.initial_seed(), torch.random.get_rng_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        torch.random.default_generator.manual_seed(torch_seed)
        torch.random.set_rng_state(torch_state)
