"""``sgdbayes prior-bias``: the NNGP's P(f) without a training set against closed forms (Sheppard, Genz),
the constant functions as sigma_b predicts, and the command end to end."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import nngp
import sampler
from sampler.data import boolean_inputs
from sampler.packed import PackedCounts
from sampler.prior_functions import sample_prior_functions
from sgdbayes.cli import main
from sgdbayes.prior_bias import load_prior_bias_config, nngp_scores

ARCH = sampler.FCN(depth=1, width=256, activation="relu", sigma_w=1.5, sigma_b=0.3)
X2 = torch.as_tensor(boolean_inputs()[[3, 100]], dtype=torch.float32)
PATTERNS2 = np.array([[1, 1], [0, 0], [1, 0], [0, 1]], dtype=np.uint8)


def _sheppard(rho):
    same = 0.25 + math.asin(rho) / (2 * math.pi)  # P(g1 > 0, g2 > 0) for unit-variance g, correlation rho
    return np.log([same, same, 0.5 - same, 0.5 - same])


def test_two_points_match_sheppard():
    K = nngp.kernel(ARCH, X2.double())
    rho = float(K[0, 1] / torch.sqrt(K[0, 0] * K[1, 1]))
    exact = _sheppard(rho)
    s = nngp_scores(ARCH, X2, (7,), PATTERNS2, n_ep=4, n_tilting=4, seed=0)
    assert np.all(np.abs(s["tilting"] - exact) <= 4 * s["tilting_se"] + 1e-9), (s, exact)
    assert np.allclose(s["ep"], exact, atol=0.05)  # EP is approximate even at k = 2 (issue 26: exact forms)
    # the finite network's sampled frequencies: binomial noise plus an O(1/width) finite-width term
    counts = sample_prior_functions(ARCH, X2, 40_000, seed=3, progress=False)
    freq = dict(zip(counts.strings(), counts.counts / counts.n_samples))
    for pattern, lp in zip(["11", "00", "10", "01"], exact):
        p = math.exp(lp)
        assert abs(freq.get(pattern, 0.0) - p) <= 4 * math.sqrt(p * (1 - p) / 40_000) + 0.01


def test_five_points_match_genz():
    x = torch.as_tensor(boolean_inputs()[[1, 17, 40, 77, 126]], dtype=torch.float32)
    K = nngp.kernel(ARCH, x.double()).numpy()
    bits = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 1, 1, 0]], dtype=np.uint8)
    s = nngp_scores(ARCH, x, (7,), bits, n_ep=3, n_tilting=3, seed=1)
    for i, y in enumerate(bits):
        d = np.diag(1.0 - 2.0 * y)  # g_i > 0 where y = 1  <=>  (D g)_i < 0
        genz = stats.multivariate_normal.cdf(np.zeros(5), mean=np.zeros(5), cov=d @ K @ d, abseps=1e-7, releps=1e-7)
        assert abs(s["tilting"][i] - math.log(genz)) <= 4 * s["tilting_se"][i] + 1e-3
        assert abs(s["ep"][i] - math.log(genz)) < 0.1


def _constants(sigma_b, n=20_000, seed=0):
    arch = sampler.FCN(depth=2, width=40, activation="relu", sigma_w=1.0, sigma_b=sigma_b)
    c = sample_prior_functions(arch, boolean_inputs(), n, seed=seed, progress=False)
    ones = c.ones()
    return (c.counts[ones == 0].sum() / n, c.counts[ones == c.k].sum() / n)


def test_constant_functions_as_sigma_b_predicts():
    """The check: (1) sign symmetry: negating the readout maps f to its complement, so P(all 0) = P(all 1)
    for sigma_b > 0; (2) a larger sigma_b makes constant functions likelier (the bias dominates every
    input), tending to 1/2 each as sigma_b -> infinity; (3) at sigma_b = 0 a relu network outputs exactly 0
    on the input 0000000, so the all-ones function has probability 0 and P(all 0) stays positive."""
    n = 20_000
    noise = 4 * math.sqrt(0.25 / n)
    shares = {sb: _constants(sb, n) for sb in (0.1, 1.0, 100.0)}
    for sb, (zeros, ones) in shares.items():
        assert abs(zeros - ones) <= 2 * noise + 0.005, (sb, zeros, ones)
    total = [sum(shares[sb]) for sb in (0.1, 1.0, 100.0)]
    assert total[0] + 2 * noise < total[1] < total[2] - 2 * noise
    assert abs(shares[100.0][0] - 0.5) < 0.02 and abs(shares[100.0][1] - 0.5) < 0.02
    zeros, ones = _constants(0.0, n)
    assert ones == 0.0 and zeros > 0.0


TOML = """
seed = 0
complexity_sample = 500
min_count = 3
[[cases]]
name = "boolean"
n_samples = 20000
nngp_functions = 5
tilting_functions = 2
[cases.arch]
kind = "fcn"
depth = 2
width = 16
sigma_b = 1.0
[sweep]
case = "boolean"
n_samples = 3000
sigma_w = [1.0, 4.0]
activation = ["relu"]
"""


def test_command_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "pb.toml"
    cfg.write_text(TOML)
    out = tmp_path / "out"
    assert main(["prior-bias", str(cfg), "--out", str(out), "--no-progress", "--set", "sweep.n_samples=2000"]) == 0
    assert "distinct functions" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    case = summary["cases"]["boolean"]
    counts = PackedCounts.load(out / "cases" / "boolean" / "functions.parquet")
    assert counts.n_samples == case["n_samples"] == 20_000 and counts.n_functions == case["n_functions"]
    assert case["top_functions"][0]["count"] == counts.counts[0]
    assert len(summary["sweep"]) == 2 and {r["sigma_w"] for r in summary["sweep"]} == {1.0, 4.0}
    assert all(r["n_functions"] > 0 for r in summary["sweep"])
    report = (out / "report.md").read_text()
    assert "Simplicity bias" in report and "Order and chaos" in report
    for fig in ("boolean.png", "order_chaos.png"):
        assert (out / "figures" / fig).stat().st_size > 5000


@pytest.mark.parametrize("text, match", [
    ('seed = 0\n', "at least one"),
    ('[[cases]]\nname = "a"\nn_sample = 3\n', "unknown key cases.0.n_sample"),
    ('[[cases]]\nname = "a"\ndataset = "boolean"\nn_points = 300\n', "n_points must be <= 128"),
    ('[[cases]]\nname = "a"\n[sweep]\ncase = "b"\n', "sweep.case must name one of the cases"),
])
def test_bad_config_is_one_line(tmp_path, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises((ValueError, TypeError), match=match):
        load_prior_bias_config(cfg)


def test_bad_config_exits_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[cases]]\nname = "a"\nn_samples = -1\n')
    assert main(["prior-bias", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "n_samples" in err and len(err.strip().splitlines()) == 1
