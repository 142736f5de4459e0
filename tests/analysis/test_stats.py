import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

import analysis
from analysis.stats import _bootstrap_stats
from sampler.functions import FunctionCounts


def _data(seed, n=60, ties=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(-20, 3, size=n)
    y = 0.8 * x + rng.normal(0, 2, size=n)
    if ties:  # log P_SGD of counts has ties
        y = np.round(y)
    return y, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlate_matches_scipy(seed):
    y, x = _data(seed)
    c = analysis.correlate(y, x, n_boot=200, seed=seed)
    assert c.n == 60
    assert c.pearson == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
    assert c.spearman == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert c.pearson_pvalue == pytest.approx(sps.pearsonr(x, y).pvalue, rel=1e-9)
    assert c.spearman_pvalue == pytest.approx(sps.spearmanr(x, y).pvalue, rel=1e-9)
    lr = sps.linregress(x, y)
    assert (c.slope, c.intercept) == pytest.approx((lr.slope, lr.intercept), abs=1e-12)
    assert c.notes == () and c.n_boot_used == 200


def test_bootstrap_rows_match_scipy_on_the_same_resamples():
    y, x = _data(5, n=25)
    idx = np.random.default_rng(0).integers(0, 25, size=(20, 25))
    got = _bootstrap_stats(x, y, idx)
    for b in range(20):
        xb, yb = x[idx[b]], y[idx[b]]
        assert got[b, 0] == pytest.approx(sps.pearsonr(xb, yb).statistic, abs=1e-12)
        assert got[b, 1] == pytest.approx(sps.spearmanr(xb, yb).statistic, abs=1e-12)
        assert got[b, 2] == pytest.approx(sps.linregress(xb, yb).slope, abs=1e-12)


def test_bootstrap_ci_agrees_with_scipy_bootstrap():
    # Independent resamples on both sides: endpoints are percentiles of 4000 draws each. For this
    # data the bootstrap sd of r is ~0.06; the 2.5% quantile's Monte Carlo sd is then ~0.003 per
    # side, so 0.03 is > 5 sigma of the difference.
    y, x = _data(11, n=60, ties=False)
    c = analysis.correlate(y, x, n_boot=4000, seed=1)
    ref = sps.bootstrap((x, y), lambda a, b, axis=-1: sps.pearsonr(a, b, axis=axis).statistic, paired=True,
                        vectorized=True, n_resamples=4000, method="percentile", confidence_level=0.95,
                        rng=np.random.default_rng(2))
    assert c.pearson_ci == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.03)
    assert c.pearson_ci[0] < c.pearson < c.pearson_ci[1]
    assert c.spearman_ci[0] < c.spearman < c.spearman_ci[1]
    assert c.slope_ci[0] < c.slope < c.slope_ci[1]


def test_correlate_seeded_and_exact_cases():
    y, x = _data(3)
    a = analysis.correlate(y, x, n_boot=100, seed=4)
    assert a == analysis.correlate(y, x, n_boot=100, seed=4)
    assert a.pearson_ci != analysis.correlate(y, x, n_boot=100, seed=5).pearson_ci
    # P_SGD exactly proportional to P_B: r = rho = 1, slope 1, intercept = log of the factor.
    c = analysis.correlate(x + math.log(3.0), x, n_boot=50, seed=0)
    assert (c.pearson, c.spearman, c.slope, c.intercept) == pytest.approx((1, 1, 1, math.log(3.0)), abs=1e-9)
    assert c.pearson_ci == pytest.approx((1.0, 1.0), abs=1e-9)


def test_correlate_degenerate_inputs_give_nan_with_reasons():
    x = np.array([-3.0, -2.0, -1.0, -5.0])
    c = analysis.correlate(np.full(4, -1.0), x, n_boot=20, seed=0)
    assert math.isnan(c.pearson) and math.isnan(c.spearman)
    assert c.slope == pytest.approx(0.0)
    assert any("log_p_sgd is constant" in note for note in c.notes)
    c = analysis.correlate(x, np.full(4, -1.0), n_boot=20, seed=0)
    assert math.isnan(c.slope) and any("slope is undefined" in note for note in c.notes)
    c = analysis.correlate(x, x[::-1], n_boot=0)
    assert all(math.isnan(v) for v in c.pearson_ci) and any("n_boot=0" in note for note in c.notes)
    # Tiny n: some resamples repeat one point only and are left out, with a note.
    c = analysis.correlate(x[:3], np.array([1.0, 2.0, 4.0]), n_boot=400, seed=0)
    assert c.n_boot_used < 400 and any("left out" in note for note in c.notes)
    assert all(np.isfinite(c.pearson_ci))


@pytest.mark.parametrize("a, b, match", [
    ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
    ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "log_p_sgd must be finite"),
    ([1.0, 2.0, 3.0], [1.0, -np.inf, 3.0], "log_p_b must be finite"),
    ([1.0, 2.0], [1.0, 2.0], "at least 3"),
    ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], "1-d"),
])
def test_correlate_input_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        analysis.correlate(a, b)


def test_correlate_parameter_errors():
    y, x = _data(0)
    with pytest.raises(ValueError, match="ci"):
        analysis.correlate(y, x, ci=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        analysis.correlate(y, x, n_boot=-1)
    with pytest.raises(TypeError, match="seed"):
        analysis.correlate(y, x, seed=1.5)


# ---------------------------------------------------------------------------------------------
def test_distances_match_scipy_on_full_support():
    rng = np.random.default_rng(0)
    p, q = rng.random(40), rng.random(40) ** 3
    d = analysis.compare_distributions(p, q)
    pn, qn = p / p.sum(), q / q.sum()
    assert d.kl == pytest.approx(sps.entropy(pn, qn), rel=1e-10)
    assert d.kl_reverse == pytest.approx(sps.entropy(qn, pn), rel=1e-10)
    assert d.tv == pytest.approx(0.5 * np.abs(pn - qn).sum(), rel=1e-12)
    assert d.js == pytest.approx(jensenshannon(pn, qn) ** 2, rel=1e-8)
    assert (d.n_shared, d.n_sgd, d.n_b) == (40, 40, 40)
    assert (d.mass_sgd, d.mass_b) == pytest.approx((p.sum(), q.sum()))
    # logs give the same numbers, and an overall scale of P_B (here e^-800, which underflows) does not matter
    dl = analysis.compare_distributions(np.log(p), np.log(q) - 800.0, log=True)
    assert (dl.kl, dl.tv, dl.js) == pytest.approx((d.kl, d.tv, d.js), rel=1e-9)


def test_distances_shared_support_is_renormalised():
    p_sgd = {"00": 0.5, "01": 0.3, "10": 0.2}
    p_b = {"00": 0.1, "01": 0.2, "11": 0.7}
    d = analysis.compare_distributions(p_sgd, p_b, top_n=(1, 2, 5))
    # shared {00, 01}: P_SGD -> (5/8, 3/8), P_B -> (1/3, 2/3)
    a, b = np.array([5 / 8, 3 / 8]), np.array([1 / 3, 2 / 3])
    assert d.n_shared == 2 and (d.n_sgd, d.n_b) == (3, 3)
    assert (d.mass_sgd, d.mass_b) == pytest.approx((0.8, 0.3))
    assert d.kl == pytest.approx(np.sum(a * np.log(a / b)))
    assert d.tv == pytest.approx(5 / 8 - 1 / 3)
    # P_B ranks 01 first: it carries 3/8 of P_SGD's (renormalised) mass; P_SGD's own top-1 carries 5/8
    assert d.top_share == pytest.approx({1: 3 / 8, 2: 1.0, 5: 1.0})
    assert d.top_share_by_sgd == pytest.approx({1: 5 / 8, 2: 1.0, 5: 1.0})
    flat = d.as_dict()
    assert flat["top1_share"] == pytest.approx(3 / 8) and flat["kl"] == d.kl and "top_share" not in flat


def test_distances_identical_and_top_share_worked_example():
    p = np.array([0.5, 0.3, 0.2])
    d = analysis.compare_distributions(p, p)
    assert d.kl == pytest.approx(0, abs=1e-15) and d.tv == pytest.approx(0, abs=1e-15)
    d = analysis.compare_distributions(p, np.array([0.1, 0.2, 0.7]), top_n=(1, 2))
    assert d.top_share == pytest.approx({1: 0.2, 2: 0.5})
    assert d.top_share_by_sgd == pytest.approx({1: 0.5, 2: 0.8})
    # zeros leave the shared support
    d = analysis.compare_distributions(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5]))
    assert d.n_shared == 1 and d.kl == pytest.approx(0, abs=1e-15)


def test_distances_errors():
    with pytest.raises(ValueError, match="share no function"):
        analysis.compare_distributions(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="p_b must hold finite probabilities"):
        analysis.compare_distributions(np.array([1.0, 0.0]), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="same length"):
        analysis.compare_distributions(np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="both be mappings"):
        analysis.compare_distributions({"0": 1.0}, np.ones(1))
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        analysis.compare_distributions(np.array([0.0, np.nan]), np.zeros(2), log=True)
    with pytest.raises(ValueError, match="top_n"):
        analysis.compare_distributions(np.ones(2), np.ones(2), top_n=(0,))


# ---------------------------------------------------------------------------------------------
def test_cumulative_mass_worked_example():
    ls, lb = np.log([0.5, 0.3, 0.1]), np.log([0.1, 0.2, 0.7])
    cm = analysis.cumulative_mass(ls, lb)
    np.testing.assert_array_equal(cm.rank, [1, 2, 3])
    np.testing.assert_allclose(cm.by_pb, [0.1, 0.4, 0.9])
    np.testing.assert_allclose(cm.by_sgd, [0.5, 0.8, 0.9])
    np.testing.assert_allclose(analysis.cumulative_mass(ls, lb, normalise=True).by_sgd, [5 / 9, 8 / 9, 1.0])
    with pytest.raises(ValueError, match="same length"):
        analysis.cumulative_mass(ls, lb[:2])


def test_select_functions():
    counts = FunctionCounts({"00": 5, "01": 2, "11": 2, "10": 1}, n_runs=12, n_fit=10)
    assert analysis.select_functions(counts, 2) == ["00", "01", "11"]
    assert analysis.select_functions(counts, 1) == ["00", "01", "11", "10"]
    assert analysis.select_functions(counts, 6) == []
    with pytest.raises(ValueError, match="min_count"):
        analysis.select_functions(counts, 0)
    with pytest.raises(TypeError, match="FunctionCounts"):
        analysis.select_functions({"00": 1}, 1)


@pytest.mark.parametrize("bad", ["0110", {"a": 1.0}, ["x", "y", "z"]])
def test_correlate_names_non_numeric_input(bad):
    import analysis

    with pytest.raises(TypeError, match="log_p_sgd must"):
        analysis.correlate(bad, [1.0, 2.0, 3.0])


# --- chi-square tests of counts ---------------------------------------------------------------------
def _rejection_rate(test, n_rep, rng):
    return np.mean([test(rng) < 0.05 for _ in range(n_rep)])


def test_goodness_of_fit_has_its_level_under_the_null_and_power_against_a_wrong_model():
    import analysis

    rng = np.random.default_rng(123)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])  # the last ones pool into "other"
    shown = 5  # the model is given for 5 functions; the rest of its mass is "other"

    def null(r):
        c = r.multinomial(400, p)
        return analysis.goodness_of_fit(c[:shown], np.log(p[:shown]), n=400).pvalue

    # 2000 repetitions: the rejection rate at level 0.05 has binomial sd 0.005; allow 4 sd
    assert abs(_rejection_rate(null, 2000, rng) - 0.05) < 0.02
    q = p.copy()
    q[0], q[1] = 0.3, 0.35  # a wrong model, 0.1 of mass moved

    def alt(r):
        c = r.multinomial(400, p)
        return analysis.goodness_of_fit(c[:shown], np.log(q[:shown]), n=400).pvalue

    assert _rejection_rate(alt, 200, rng) > 0.9
    impossible = analysis.goodness_of_fit([10, 5], np.log([0.6, 0.4]), n=20)  # 5 samples where the model has none
    assert impossible.pvalue == 0.0


def test_homogeneity_has_its_level_under_the_null_and_power():
    import analysis

    rng = np.random.default_rng(7)
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.04, 0.01])

    def null(r):
        return analysis.homogeneity(r.multinomial(300, p), r.multinomial(500, p)).pvalue

    assert abs(_rejection_rate(null, 2000, rng) - 0.05) < 0.02
    q = np.array([0.35, 0.35, 0.15, 0.1, 0.04, 0.01])

    def alt(r):
        return analysis.homogeneity(r.multinomial(300, p), r.multinomial(500, q)).pvalue

    assert _rejection_rate(alt, 200, rng) > 0.9
    with pytest.raises(ValueError, match="same length"):
        analysis.homogeneity([1, 2], [1, 2, 3])


def test_z_scores_against_numpy_and_empty():
    from analysis import z_scores

    rng = np.random.default_rng(3)
    lp, ref, se = rng.normal(size=7), rng.normal(size=7), rng.uniform(0.1, 1.0, size=7)
    z = z_scores(lp, ref, se)
    np.testing.assert_allclose(z.z, (lp - ref) / se)
    assert z.median_abs_z == pytest.approx(np.median(np.abs((lp - ref) / se)))
    assert z.median_se == pytest.approx(np.median(se))
    empty = z_scores([], [], [])
    assert empty.z.size == 0 and empty.median_abs_z is None and empty.median_se is None
    with pytest.raises(ValueError, match="one length"):
        z_scores([1.0], [1.0, 2.0], [1.0])
