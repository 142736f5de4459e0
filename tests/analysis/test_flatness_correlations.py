"""analysis.flatness: correlations against scipy's own, non-finite points dropped, figures drawn."""

import numpy as np
import pytest
from scipy import stats

from analysis.flatness import flatness_correlations, plot_flatness


def test_correlations_match_scipy_and_drop_nonfinite_points():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=60)
    err = 0.1 * np.log(x) + rng.normal(scale=0.2, size=60)
    lpb = -3 * np.log(x) + rng.normal(size=60)
    lpb[[3, 7]] = np.nan
    out = {(c.measure, c.target): c for c in flatness_correlations({"sharp": x, "log_pb": lpb},
                                                                    {"test_error": err, "log_pb": lpb},
                                                                    n_boot=300, seed=1)}
    assert set(out) == {("sharp", "test_error"), ("sharp", "log_pb"), ("log_pb", "test_error")}
    c = out["sharp", "test_error"]
    assert c.n == 60 and c.spearman == pytest.approx(stats.spearmanr(x, err).statistic, rel=1e-12)
    assert c.pearson == pytest.approx(stats.pearsonr(x, err).statistic, rel=1e-12)
    assert c.spearman_ci[0] < c.spearman < c.spearman_ci[1]
    ok = np.isfinite(lpb)
    d = out["sharp", "log_pb"]
    assert d.n == 58 and d.spearman == pytest.approx(stats.spearmanr(x[ok], lpb[ok]).statistic, rel=1e-12)
    assert d.spearman < -0.5


def test_too_few_points_and_constant_inputs_say_why():
    few = flatness_correlations({"m": [1.0, 2.0, np.nan]}, {"t": [0.1, 0.2, 0.3]}, n_boot=10)[0]
    assert few.n == 2 and np.isnan(few.spearman) and "too few" in few.notes[0]
    flat = flatness_correlations({"m": [1.0, 1.0, 1.0, 1.0]}, {"t": [0.1, 0.2, 0.3, 0.4]}, n_boot=10)[0]
    assert np.isnan(flat.spearman) and any("m is constant" in n for n in flat.notes)
    with pytest.raises(ValueError, match="one length"):
        flatness_correlations({"m": [1.0, 2.0, 3.0]}, {"t": [1.0, 2.0]})


def test_plot_flatness_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=20)
    targets = {"test_error": rng.uniform(size=20), "log_pb": rng.normal(size=20)}
    corrs = {c.target: c for c in flatness_correlations({"top": x}, targets, n_boot=20)}
    path = plot_flatness(x, targets, tmp_path / "f.png", name="top", counts=np.arange(1, 21),
                         groups=np.array(["a", "b"] * 10), correlations=corrs)
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
