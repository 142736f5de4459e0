"""Counts of many long functions, stored packed: 8 bits of a function per byte.

Prior sampling without a training set finds millions of distinct functions (FCN 7-40-40-1 on the 128
Boolean inputs: most of 10^7 samples are distinct); as ``str`` keys of a dict
(:class:`sampler.FunctionCounts`) they would take ~200 bytes each and minutes to count. Here a
function of ``k`` bits is a row of ``ceil(k / 8)`` bytes (``numpy.packbits``, bit ``i`` of f is bit
``7 - i % 8`` of byte ``i // 8``: the first point is the most significant bit), and counting is a sort:
16 bytes per function for k = 128, 10^7 functions counted in seconds.

On disk (:meth:`PackedCounts.save`): a parquet table with a ``fixed_size_binary(ceil(k/8))`` column
``function`` and an ``int64`` column ``count``, most frequent first, ``k`` and ``n_samples`` in the
schema's metadata; written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write_table
from .checks import check_int


def pack_bits(bits) -> np.ndarray:
    """``(n, k)`` 0/1 (or bool) rows -> ``(n, ceil(k / 8))`` uint8 rows (``numpy.packbits``, big-endian bits)."""
    arr = np.asarray(bits)
    if arr.ndim != 2:
        raise ValueError(f"bits must have shape (n, k), got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError("bits must hold only 0 and 1")
    return np.packbits(arr.astype(bool), axis=1)


def unpack_bits(codes: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(n, ceil(k / 8))`` uint8 -> ``(n, k)`` uint8 of 0/1."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=k)


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int64)


def _as_void(codes: np.ndarray) -> np.ndarray:
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return codes.view(np.dtype((np.void, codes.shape[1]))).ravel()


def count_codes(codes: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``codes`` ``(n, B)`` uint8 and how often each occurs (summing ``weights``
    ``(n,)`` int where given: merging counts). Rows in byte order; counts int64."""
    if codes.shape[0] == 0:
        return codes.reshape(0, codes.shape[1]).astype(np.uint8), np.zeros(0, dtype=np.int64)
    unique, inverse, counts = np.unique(_as_void(codes), return_inverse=True, return_counts=True)
    if weights is not None:
        counts = np.bincount(inverse.ravel(), weights=np.asarray(weights, dtype=np.float64)).astype(np.int64)
    return unique.view(np.uint8).reshape(-1, codes.shape[1]), counts


@dataclass(frozen=True)
class PackedCounts:
    """How often each function of ``k`` bits was drawn in ``n_samples`` samples, packed.

    Attributes
    ----------
    codes : ndarray ``(n_functions, ceil(k / 8))`` uint8
        The distinct functions (:func:`pack_bits`), most frequent first (ties in byte order).
    counts : ndarray ``(n_functions,)`` int64
        Times each was drawn; sums to ``n_samples``.
    k : int
        Bits per function (points of E).
    n_samples : int
        Samples drawn.
    """

    codes: np.ndarray
    counts: np.ndarray
    k: int
    n_samples: int

    def __post_init__(self):
        check_int("k", self.k, minimum=1)
        check_int("n_samples", self.n_samples, minimum=0)
        codes = np.asarray(self.codes, dtype=np.uint8)
        counts = np.asarray(self.counts, dtype=np.int64)
        n_bytes = (self.k + 7) // 8
        if codes.ndim != 2 or codes.shape[1] != n_bytes:
            raise ValueError(f"codes must have shape (n, {n_bytes}) for k={self.k}, got shape {codes.shape}")
        if counts.shape != (codes.shape[0],):
            raise ValueError(f"counts must have shape ({codes.shape[0]},), got {counts.shape}")
        if counts.size and counts.min() < 1:
            raise ValueError("counts must be >= 1")
        if int(counts.sum()) != self.n_samples:
            raise ValueError(f"the counts sum to {int(counts.sum())}, not n_samples={self.n_samples}")
        order = np.lexsort((np.arange(len(counts)), -counts))  # most frequent first, stable
        codes, counts = codes[order], counts[order]
        codes.flags.writeable = counts.flags.writeable = False
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "counts", counts)

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_bits(cls, bits) -> "PackedCounts":
        """Counts of the rows of a ``(n, k)`` 0/1 array, one function per sample."""
        arr = np.asarray(bits)
        codes, counts = count_codes(pack_bits(arr))
        return cls(codes, counts, int(arr.shape[1]), int(arr.shape[0]))

    @classmethod
    def merge(cls, parts: list["PackedCounts"]) -> "PackedCounts":
        """One table of several (e.g. blocks of one run): counts of the same function add."""
        if not parts:
            raise ValueError("merge needs at least one PackedCounts")
        ks = {p.k for p in parts}
        if len(ks) > 1:
            raise ValueError(f"all parts must have the same k, got {sorted(ks)}")
        codes, counts = count_codes(np.concatenate([p.codes for p in parts]),
                                    np.concatenate([p.counts for p in parts]))
        return cls(codes, counts, parts[0].k, sum(p.n_samples for p in parts))

    # reading -----------------------------------------------------------------------------------
    @property
    def n_functions(self) -> int:
        return int(self.counts.size)

    def log_p(self) -> np.ndarray:
        """Natural log of each function's frequency ``count / n_samples`` ``(n_functions,)``."""
        return np.log(self.counts) - np.log(self.n_samples)

    def ones(self) -> np.ndarray:
        """Number of ones of each function ``(n_functions,)`` int64 (a popcount of the packed rows)."""
        return _POPCOUNT[self.codes].sum(axis=1, dtype=np.int64)

    def bits(self, index=slice(None)) -> np.ndarray:
        """0/1 rows ``(n, k)`` uint8 of the functions at ``index`` (default: all; an int gives one row)."""
        return unpack_bits(self.codes[index].reshape(-1, self.codes.shape[1]), self.k)

    def strings(self, index=slice(None)) -> list[str]:
        """The functions at ``index`` as '0'/'1' strings (the project's bitstrings)."""
        return ["".join("1" if b else "0" for b in row) for row in self.bits(index)]

    # disk --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the table as parquet (see the module docstring), atomically."""
        width = self.codes.shape[1]
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(self.counts),
                                                       [None, pa.py_buffer(self.codes.tobytes())])
        table = pa.table({"function": column, "count": pa.array(self.counts, type=pa.int64())})
        table = table.replace_schema_metadata({"sgdbayes": json.dumps({"k": self.k, "n_samples": self.n_samples})})
        return atomic_write_table(table, path)

    @classmethod
    def load(cls, path: str | Path) -> "PackedCounts":
        """Read a table written by :meth:`save`."""
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"sgdbayes", b"null"))
        if not meta or {"k", "n_samples"} - set(meta):
            raise ValueError(f"{path} is not a packed counts table (no k / n_samples in its metadata)")
        k = int(meta["k"])
        column = table.column("function").combine_chunks()
        codes = np.frombuffer(column.buffers()[1], dtype=np.uint8)[: len(column) * ((k + 7) // 8)]
        return cls(codes.reshape(len(column), (k + 7) // 8).copy(), table.column("count").to_numpy(), k,
                   int(meta["n_samples"]))
