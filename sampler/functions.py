"""Functions as bitstrings on the test set E, and their counts over many runs or samples.

A function f is the network's predicted labels on E in E's order, ``'1'`` where the scalar output
is > 0: a ``str`` of '0'/'1' of length k (docs/DESIGN.md).
"""

from __future__ import annotations

import math
import types
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from .checks import check_int


def _bits_array(bits) -> np.ndarray:
    arr = np.asarray(bits.detach().cpu() if isinstance(bits, torch.Tensor) else bits, dtype=np.uint8)
    if arr.ndim != 2:
        raise ValueError(f"bits must be a 2-d (n, k) array, got shape {arr.shape}")
    return arr


def bits_to_strings(bits: torch.Tensor | np.ndarray) -> list[str]:
    """Rows of a ``(n, k)`` 0/1 array -> ``n`` bitstrings of length ``k``."""
    arr = _bits_array(bits)
    # One bytes() call per row is ~50x faster than joining characters.
    ascii_rows = (arr + ord("0")).astype(np.uint8)
    return [row.tobytes().decode("ascii") for row in ascii_rows]


def outputs_to_strings(outputs: torch.Tensor) -> list[str]:
    """``(n, k)`` network outputs -> ``n`` bitstrings (``'1'`` where output > 0)."""
    return bits_to_strings((outputs > 0).to(torch.uint8))


def string_to_bits(bitstring: str) -> np.ndarray:
    """A bitstring -> ``(k,)`` uint8 array of 0/1."""
    check_bitstring("bitstring", bitstring)
    return np.frombuffer(bitstring.encode("ascii"), dtype=np.uint8) - ord("0")


def strings_to_bits(bitstrings: Iterable[str]) -> np.ndarray:
    """``n`` bitstrings of equal length k -> ``(n, k)`` uint8 array."""
    rows = [string_to_bits(s) for s in bitstrings]
    if not rows:
        return np.zeros((0, 0), dtype=np.uint8)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"functions must all have the same length, got lengths {sorted(lengths)}")
    return np.stack(rows)


def check_bitstring(name: str, value, length: int | None = None) -> str:
    """Return ``value`` if it is a non-empty '0'/'1' string (of ``length`` if given)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a bitstring (str of '0'/'1'), got {type(value).__name__}")
    if not value or set(value) - {"0", "1"}:
        bad = sorted(set(value) - {"0", "1"})
        raise ValueError(f"{name} must be a non-empty string of '0' and '1', got {value[:40]!r}"
                         + (f" (characters {bad})" if bad else ""))
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have length {length}, got length {len(value)}")
    return value


@dataclass(frozen=True)
class FunctionCounts(Mapping):
    """How often each function was found, out of how many runs: a read-only mapping
    ``bitstring -> count`` (``dict(counts)``, ``counts.items()``, ``len``, ``in`` work as for a dict).

    As for ``collections.Counter``, ``counts[f]`` is 0 for a function never found (``get``
    follows ``dict.get``). ``n_runs``: runs started (or prior samples drawn); ``n_fit``: those that
    reached 100% training accuracy (or fitted S), ``sum(counts.values())``.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    n_runs: int = 0
    n_fit: int = 0

    def __post_init__(self):
        check_int("n_runs", self.n_runs, minimum=0)
        check_int("n_fit", self.n_fit, minimum=0)
        if not isinstance(self.counts, Mapping):
            raise TypeError(f"counts must be a mapping of bitstring -> count (a dict or Counter), got "
                            f"{type(self.counts).__name__}")
        counts = dict(self.counts)
        for k, v in counts.items():
            check_bitstring(f"counts key {k!r}" if not isinstance(k, str) else "function", k)
            check_int(f"count of {k[:16]}...", v, minimum=1)
        lengths = {len(k) for k in counts}
        if len(lengths) > 1:
            raise ValueError(f"functions must all have the same length, got lengths {sorted(lengths)}")
        total = sum(counts.values())
        if total != self.n_fit:
            raise ValueError(f"n_fit must equal the sum of the counts ({total}), got n_fit={self.n_fit}")
        if self.n_fit > self.n_runs:
            raise ValueError(f"n_fit must be <= n_runs={self.n_runs}, got n_fit={self.n_fit}")
        object.__setattr__(self, "counts", types.MappingProxyType(counts))

    def __reduce__(self):
        # a mapping proxy does not pickle (Ray ships counts between processes): rebuild from a dict
        return (FunctionCounts, (dict(self.counts), self.n_runs, self.n_fit))

    def get(self, f, default=None):
        """``counts[f]`` if ``f`` was found, else ``default`` (as ``dict.get``)."""
        return self.counts.get(f, default)

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_bits(cls, bits, fitted=None, n_runs: int | None = None) -> "FunctionCounts":
        """Counts of the rows of a ``(n, k)`` 0/1 array (one function per run), of the rows
        ``fitted`` ``(n,)`` marks if given; ``n_runs`` defaults to ``n``."""
        arr = _bits_array(bits)
        if fitted is not None:
            mask = np.asarray(fitted.cpu() if isinstance(fitted, torch.Tensor) else fitted, dtype=bool)
            if mask.shape != (arr.shape[0],):
                raise ValueError(f"fitted must have shape ({arr.shape[0]},), got {mask.shape}")
            arr = arr[mask]
        n = int(arr.shape[0]) if fitted is None else int(len(mask))
        counts = Counter(bits_to_strings(arr))
        return cls(dict(counts), n_runs=n if n_runs is None else n_runs, n_fit=int(arr.shape[0]))

    @classmethod
    def from_strings(cls, functions: Iterable[str], n_runs: int | None = None) -> "FunctionCounts":
        """Counts of a sequence of bitstrings (each one fitted run)."""
        counts = Counter(functions)
        n_fit = sum(counts.values())
        return cls(dict(counts), n_runs=n_fit if n_runs is None else n_runs, n_fit=n_fit)

    # views --------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Length of the functions (0 if there are none)."""
        return len(next(iter(self.counts))) if self.counts else 0

    @property
    def n_functions(self) -> int:
        """Number of distinct functions found."""
        return len(self.counts)

    @property
    def fit_fraction(self) -> float:
        """``n_fit / n_runs`` (nan when no run was started)."""
        return self.n_fit / self.n_runs if self.n_runs else math.nan

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, f: str) -> int:
        return self.counts.get(f, 0)

    def __contains__(self, f) -> bool:
        return f in self.counts

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """``(function, count)`` pairs, most frequent first (ties by bitstring)."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return items if n is None else items[:n]

