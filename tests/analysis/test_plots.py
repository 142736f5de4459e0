import math

import numpy as np
import pytest

import analysis
from analysis import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    lpb = rng.normal(-10, 3, size=n)
    lsgd = np.log(rng.integers(1, 50, size=n) / 1000.0)
    return lpb, lsgd, np.exp(lsgd) * 1000, rng.random(n)


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_psgd_vs_pb_content():
    lpb, lsgd, counts, err = _data()
    lpb[3] = -np.inf  # not drawn, and said so
    fig = plots.figure_psgd_vs_pb(lsgd, lpb, counts=counts, color=err, color_label="test error",
                                  yerr=np.full(30, 0.5), title="t")
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    assert offsets.shape == (29, 2)
    keep = np.arange(30) != 3
    np.testing.assert_allclose(offsets[:, 0], lpb[keep] / math.log(10))  # log10 on the axes
    np.testing.assert_allclose(offsets[:, 1], lsgd[keep] / math.log(10))
    sizes = ax.collections[0].get_sizes()
    assert sizes[np.argmax(counts[keep])] == sizes.max() > sizes.min()
    assert ax.get_xlabel() == "log10 P_B(f|S)" and ax.get_ylabel() == "log10 P_SGD(f|S)"
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "test error"  # colour bar
    diag = [ln for ln in ax.lines if ln.get_label() == "y = x"]
    assert len(diag) == 1 and np.allclose(*diag[0].get_data())
    assert any("1 point(s) not shown" in t.get_text() for t in ax.texts)


def test_psgd_vs_pb_draws_the_fit_with_r_and_slope():
    lpb, lsgd, counts, _ = _data()
    c = analysis.correlate(lsgd, lpb, n_boot=50, seed=0)
    fit = {"slope": c.slope, "intercept": c.intercept, "r": c.pearson, "r_ci": c.pearson_ci, "note": "over 30"}
    ax = plots.figure_psgd_vs_pb(lsgd, lpb, counts=counts, fit=fit).axes[0]
    line = [ln for ln in ax.lines if ln.get_label().startswith("fit")][0]
    gx, gy = line.get_data()
    # the line of ln P_SGD = a + b ln P_B, in log10 units on both axes
    np.testing.assert_allclose(gy * math.log(10), c.intercept + c.slope * gx * math.log(10), rtol=1e-12)
    np.testing.assert_allclose(gx, [lpb.min() / math.log(10), lpb.max() / math.log(10)])
    text = [t.get_text() for t in ax.texts if t.get_text().startswith("r = ")][0]
    assert f"r = {c.pearson:.2f}" in text and f"slope {c.slope:.2f}" in text and "over 30" in text


def test_error_bars_are_drawn_in_log10_units():
    lpb, lsgd, _, _ = _data()
    ax = plots.figure_psgd_vs_pb(lsgd, lpb, xerr=np.full(30, math.log(10))).axes[0]
    segments = ax.collections[1].get_segments()  # one horizontal bar per point: +-1 in log10
    assert np.allclose([s[1][0] - s[0][0] for s in segments], 2.0)


def test_plots_write_pngs(tmp_path):
    lpb, lsgd, counts, err = _data()
    lz = np.random.default_rng(1).uniform(10, 60, size=30)
    paths = [
        analysis.plot_psgd_vs_pb(lsgd, lpb, tmp_path / "a" / "psgd.png", counts=counts, color=err,
                                 color_label="test error", xerr=np.vstack([np.full(30, 0.2), np.full(30, 0.4)])),
        analysis.plot_psgd_vs_pb(lsgd, lpb, tmp_path / "plain.png"),
        analysis.plot_p_vs_complexity(lz, lsgd, lpb, tmp_path / "cx.png", counts=counts),
        analysis.plot_p_vs_error(err, lsgd, lpb, tmp_path / "err.png"),
        analysis.plot_cumulative_mass(lsgd, lpb, tmp_path / "cum.png"),
    ]
    for p in paths:
        assert p.is_file() and _is_png(p), p
    assert not list(tmp_path.rglob("*.tmp"))


def test_p_vs_complexity_and_error_content():
    lpb, lsgd, counts, err = _data(n=12)
    fig = plots.figure_p_vs_complexity(np.arange(12.0), lsgd, lpb, counts=counts)
    ax = fig.axes[0]
    assert [c.get_offsets().shape[0] for c in ax.collections] == [12, 12]
    np.testing.assert_allclose(ax.collections[1].get_offsets()[:, 1], lpb / math.log(10))
    assert ax.get_xlabel() == "LZ complexity" and "log10" in ax.get_ylabel()
    fig = plots.figure_p_vs_error(err, lsgd, None)
    assert [c.get_offsets().shape[0] for c in fig.axes[0].collections] == [12]
    assert fig.axes[0].get_xlabel() == "test error on E"


def test_cumulative_mass_content():
    lpb, lsgd, _, _ = _data(n=20)
    fig = plots.figure_cumulative_mass(lsgd, lpb)
    by_pb, by_sgd = fig.axes[0].lines[:2]
    cm = analysis.cumulative_mass(lsgd, lpb)
    np.testing.assert_allclose(by_pb.get_ydata(), cm.by_pb)
    np.testing.assert_allclose(by_sgd.get_ydata(), cm.by_sgd)
    assert np.all(cm.by_sgd >= cm.by_pb - 1e-15)


def test_plot_input_errors(tmp_path):
    lpb, lsgd, counts, _ = _data()
    with pytest.raises(ValueError, match="log_p_sgd must have length 30"):
        analysis.plot_psgd_vs_pb(lsgd[:5], lpb, tmp_path / "x.png")
    with pytest.raises(ValueError, match="yerr must have shape"):
        analysis.plot_psgd_vs_pb(lsgd, lpb, tmp_path / "x.png", yerr=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        analysis.plot_psgd_vs_pb(lsgd, lpb, tmp_path / "x.png", yerr=-np.ones(30))
    assert not (tmp_path / "x.png").exists()


def test_long_titles_are_wrapped_to_fit(tmp_path):
    """pairs.png and the sweep figure cut their titles at the figure's edge (issue 25)."""
    from analysis.compare_plots import Panel, Series, figure_compare

    lpb, lsgd, _, _ = _data()
    long = "each estimator against its reference (functions seen by both, counts >= min_count) " * 2
    panels = [Panel(title="main: vs ep, " + long, reference="ep", series=(Series("sgd", lpb, lsgd),))]
    fig = figure_compare(panels, ncols=1, title=long)
    plots.save_figure(fig, tmp_path / "f.png")
    renderer = fig.canvas.get_renderer()
    for text, width in ((fig.axes[0].title, fig.axes[0].get_window_extent(renderer).width),
                        (fig._suptitle, fig.bbox.width)):
        assert "\n" in text.get_text() and text.get_window_extent(renderer).width <= width
