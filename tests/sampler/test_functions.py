import numpy as np
import pytest
import torch

from sampler import FunctionCounts
from sampler.functions import bits_to_strings, outputs_to_strings, strings_to_bits
from sampler.store import count_table, merge_shards


def test_outputs_to_strings_uses_strict_positive_threshold():
    out = torch.tensor([[0.5, -0.1, 0.0, 2.0], [-1.0, 1e-9, -0.0, 0.0]])
    assert outputs_to_strings(out) == ["1001", "0100"]


def test_bits_round_trip():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(50, 37)).astype(np.uint8)
    assert np.array_equal(strings_to_bits(bits_to_strings(bits)), bits)


def test_from_bits_counts_only_fitted_runs():
    bits = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    c = FunctionCounts.from_bits(bits, fitted=np.array([True, True, True, False]))
    assert c.counts == {"10": 2, "01": 1} and c.n_runs == 4 and c.n_fit == 3
    assert c.fit_fraction == 0.75 and c.k == 2 and c.n_functions == 2


def test_merge_of_shards_is_exact():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, size=(1000, 4))
    fitted = rng.random(1000) < 0.9
    whole = FunctionCounts.from_bits(bits, fitted)
    cuts = [0, 7, 300, 301, 1000]
    parts = [FunctionCounts.from_bits(bits[a:b], fitted[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    assert merge_shards([count_table(p.counts, n_samples=p.n_runs) for p in parts]) == whole


@pytest.mark.parametrize("kwargs, match", [
    (dict(counts={"01": 2}, n_runs=5, n_fit=3), "n_fit must equal the sum"),
    (dict(counts={"01": 2}, n_runs=1, n_fit=2), "n_fit must be <= n_runs"),
    (dict(counts={"0a": 1}, n_runs=1, n_fit=1), "string of '0' and '1'"),
    (dict(counts={"01": 1, "011": 1}, n_runs=2, n_fit=2), "same length"),
])
def test_invalid_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FunctionCounts(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(counts=None), r"counts must be a mapping of bitstring -> count .*, got NoneType"),
    (dict(counts=[("01", 1)], n_runs=1, n_fit=1), r"counts must be a mapping .*, got list"),
    (dict(counts={3: 1}, n_runs=1, n_fit=1), r"counts key 3 must be a bitstring \(str of '0'/'1'\), got int"),
    (dict(counts={"01": 1, 5: 1}, n_runs=2, n_fit=2), r"counts key 5 must be a bitstring"),
])
def test_wrong_types_of_counts_are_named(kwargs, match):
    """Guards (issue 26): None and an integer key raised unnamed TypeErrors ('NoneType' object is not
    iterable, object of type 'int' has no len())."""
    with pytest.raises(TypeError, match=match):
        FunctionCounts(**kwargs)


def test_function_counts_is_a_read_only_mapping():
    import collections.abc
    import pickle

    c = FunctionCounts({"01": 3, "11": 1}, n_runs=5, n_fit=4)  # k = 2: iterating pairs of chars misreads a dict
    assert isinstance(c, collections.abc.Mapping)
    assert dict(c) == {"01": 3, "11": 1} and sorted(c.items()) == [("01", 3), ("11", 1)]
    assert c["00"] == 0 and c.get("00") is None and c.get("01") == 3 and "00" not in c
    with pytest.raises(TypeError):
        c.counts["01"] = 7
    assert pickle.loads(pickle.dumps(c)) == c
