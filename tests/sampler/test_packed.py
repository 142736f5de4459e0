"""Packed counts of long functions: checked against plain Python counting of the same rows."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sampler.packed import PackedCounts, count_codes, pack_bits, unpack_bits


def _rows(seed, n=500, k=37, distinct=40):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, size=(distinct, k))
    return pool[rng.integers(0, distinct, size=n)]


@pytest.mark.parametrize("k", [1, 7, 8, 9, 128])
def test_pack_round_trip_and_bit_order(k):
    bits = np.random.default_rng(k).integers(0, 2, size=(20, k))
    codes = pack_bits(bits)
    assert codes.shape == (20, (k + 7) // 8)
    assert np.array_equal(unpack_bits(codes, k), bits)
    # the first point is the most significant bit of the first byte
    one = np.zeros((1, k), dtype=int)
    one[0, 0] = 1
    assert pack_bits(one)[0, 0] == 128


def test_counts_equal_a_python_counter():
    bits = _rows(0)
    counts = PackedCounts.from_bits(bits)
    expected = Counter("".join(map(str, r)) for r in bits)
    got = dict(zip(counts.strings(), counts.counts.tolist()))
    assert got == dict(expected)
    assert counts.n_samples == 500 and counts.n_functions == len(expected)
    assert list(counts.counts) == sorted(counts.counts, reverse=True)
    assert np.array_equal(counts.ones(), counts.bits().sum(1))
    assert np.allclose(np.exp(counts.log_p()).sum(), 1.0)


def test_merge_equals_counting_the_concatenation():
    a, b = _rows(1), _rows(2)
    merged = PackedCounts.merge([PackedCounts.from_bits(a), PackedCounts.from_bits(b)])
    whole = PackedCounts.from_bits(np.concatenate([a, b]))
    assert dict(zip(merged.strings(), merged.counts)) == dict(zip(whole.strings(), whole.counts))
    assert merged.n_samples == 1000


def test_weighted_count_codes():
    codes = pack_bits(np.array([[1, 0], [0, 1], [1, 0]]))
    unique, counts = count_codes(codes, np.array([2, 5, 3]))
    assert dict(zip(map(bytes, unique), counts.tolist())) == {bytes([128]): 5, bytes([64]): 5}


def test_save_load_round_trip(tmp_path):
    counts = PackedCounts.from_bits(_rows(3, k=128))
    path = counts.save(tmp_path / "f.parquet")
    back = PackedCounts.load(path)
    assert back.k == 128 and back.n_samples == counts.n_samples
    assert np.array_equal(back.codes, counts.codes) and np.array_equal(back.counts, counts.counts)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        pack_bits(np.zeros(5))
    with pytest.raises(ValueError, match="only 0 and 1"):
        pack_bits(np.full((2, 3), 2))
    with pytest.raises(ValueError, match="sum to 3, not n_samples=4"):
        PackedCounts(pack_bits(np.eye(3, dtype=int)), np.ones(3, dtype=np.int64), 3, 4)
    with pytest.raises(ValueError, match=r"codes must have shape \(n, 1\)"):
        PackedCounts(np.zeros((2, 2), np.uint8), np.ones(2, np.int64), 3, 2)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a packed counts table"):
        PackedCounts.load(tmp_path / "other.parquet")
