"""Headless figures of :mod:`analysis.plots`: axes returned, labels, data drawn, no pyplot state."""

from __future__ import annotations

import io

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import lbpcore  # noqa: E402
from analysis import plots  # noqa: E402
from analysis.errors import rank_sweep  # noqa: E402
from analysis.spectrum import energy_curves, energy_maps  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def smooth_tokens(seed=0, b=2, h=16, w=16, c=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.sin(2 * yy + 3 * xx).reshape(1, h * w, 1)
    return base + 0.2 * rng.standard_normal((b, h * w, c))


def png_bytes(ax):
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png")
    return buf.getvalue()


def test_new_axes_is_pyplot_free():
    ax = plots.new_axes((3, 2))
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert ax.figure.canvas.manager is None  # not registered with pyplot
    assert png_bytes(ax)[:8] == PNG


def test_plot_spectrum_log_heatmap_with_outline():
    res = energy_maps(smooth_tokens(), grid=(16, 16), patch=8)
    basis = lbpcore.select_bases(8, "lp_l1:6")
    ax = plots.plot_spectrum(res, bases=basis, title="t")
    assert ax.get_xlabel() == "horizontal sequency j"
    assert ax.get_ylabel() == "vertical sequency i"
    assert ax.get_title() == "t"
    (im,) = ax.get_images()
    assert isinstance(im.norm, LogNorm)
    shown = np.asarray(im.get_array())
    assert shown.shape == (8, 8)
    np.testing.assert_allclose(shown, res.energy_map / res.energy_map.sum(), rtol=1e-12)
    # the outline of lp_l1:6: a staircase of 2 * 6 + 2 * 6 unit edges... drawn as one LineCollection
    (lines,) = ax.collections
    segs = lines.get_segments()
    assert len(segs) == 24
    assert len(ax.figure.axes) == 2  # the colour bar
    assert png_bytes(ax)[:8] == PNG


def test_plot_spectrum_on_given_axes_and_edge_cases():
    fig = Figure()
    a1, a2 = fig.subplots(1, 2)
    assert plots.plot_spectrum(np.zeros((4, 4)), ax=a1, colorbar=False) is a1  # all zero: linear scale
    assert isinstance(a1.get_images()[0].norm, Normalize) and not isinstance(a1.get_images()[0].norm, LogNorm)
    m = np.eye(4)
    assert plots.plot_spectrum(m, ax=a2, log=False, normalize=False, colorbar=False) is a2
    np.testing.assert_array_equal(a2.get_images()[0].get_array(), m)
    assert plots.plot_spectrum({"energy_map": m.tolist()}, colorbar=False).get_images()[0].get_array().shape == (4, 4)
    for bad in (np.ones((3, 4)), -np.ones((2, 2)), np.full((2, 2), np.nan), np.ones((2, 2, 2))):
        with pytest.raises(ValueError):
            plots.plot_spectrum(bad)
    with pytest.raises(ValueError, match="bases"):
        plots.plot_spectrum(m, bases=lbpcore.select_bases(8, "lp_l1:2"))


def test_plot_energy_curves_percent_per_policy():
    res = energy_maps(smooth_tokens(), grid=(16, 16), patch=8)
    curves = energy_curves(res)
    ax = plots.plot_energy_curves(curves, highlight=21)
    lines = [ln for ln in ax.get_lines() if ln.get_label() and not ln.get_label().startswith("_")]
    assert len(lines) == len(curves)
    by_label = {ln.get_label(): ln for ln in lines}
    lp = by_label["LP-L1 (i+j<k)"]
    np.testing.assert_allclose(lp.get_xdata(), [p["rank"] for p in curves["lp_l1"]])
    np.testing.assert_allclose(lp.get_ydata(), [100 * p["kept"] for p in curves["lp_l1"]])
    assert max(max(ln.get_ydata()) for ln in lines) == pytest.approx(100.0)
    assert ax.get_ylabel() == "energy kept (%)"
    assert len(ax.get_lines()) == len(curves) + 1  # plus the highlight
    assert png_bytes(ax)[:8] == PNG


def test_plot_error_curves_from_a_rank_sweep():
    rng = np.random.default_rng(3)
    x = smooth_tokens(1, b=1, h=8, w=8, c=3)
    gy = smooth_tokens(2, b=1, h=8, w=8, c=2)
    w = rng.standard_normal((2, 3))
    sweep = rank_sweep(x, w, gy, grid=(8, 8), patch=4, methods=("dct", "random"), progress=False)
    ax = plots.plot_error_curves(sweep)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["LBP-WHT (lp_l1)", "DCT low-pass", "random bases"]
    lbp = ax.get_lines()[0]
    np.testing.assert_array_equal(lbp.get_xdata(), [r.rank for r in sweep])
    np.testing.assert_allclose(lbp.get_ydata(), [r.lbp.grad_weight["rel_error"] for r in sweep])
    assert lbp.get_ydata()[-1] < 1e-12  # every basis: exact
    # the same from plain dicts, for grad_x and on a log axis (exact zeros dropped)
    dicts = [r.to_dict() for r in sweep]
    dicts[-1]["lbp"]["grad_x"]["rel_error"] = 0.0
    ax = plots.plot_error_curves(dicts, which="grad_x", logy=True)
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()[0].get_xdata()) == len(sweep) - 1
    assert len(ax.get_lines()[1].get_xdata()) == len(sweep)
    assert "grad_x" in ax.get_ylabel()
    with pytest.raises(ValueError, match="which"):
        plots.plot_error_curves(sweep, which="grad_b")
    with pytest.raises(ValueError, match="metric"):
        plots.plot_error_curves(sweep, metric="l1")


def test_plot_layer_bars_groups_and_gaps():
    rows = [
        {"layer": "a", "energy_kept_grad_y": 0.9, "grad_weight_error": 0.1, "flops_saved": 0.5},
        {"layer": "b", "energy_kept_grad_y": 0.8, "grad_weight_error": None, "flops_saved": 0.4},
        {"layer": "head", "energy_kept_grad_y": 1.0, "flops_saved": 0.0},
    ]
    ax = plots.plot_layer_bars(rows)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "head"]
    bars = ax.containers
    assert len(bars) == len(plots.LAYER_METRICS)
    widths = [[p.get_width() for p in c.patches] for c in bars]
    np.testing.assert_allclose(widths[0], [90, 80, 100])
    assert widths[1][0] == pytest.approx(10) and np.isnan(widths[1][1]) and np.isnan(widths[1][2])
    assert ax.get_xlim()[1] >= 100
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [label for _, label in plots.LAYER_METRICS]
    ax = plots.plot_layer_bars(rows, metrics=[("flops_saved", "saved")], title="x")
    assert len(ax.containers) == 1 and ax.get_title() == "x"
    assert png_bytes(ax)[:8] == PNG
    with pytest.raises(ValueError):
        plots.plot_layer_bars([])
    with pytest.raises(ValueError):
        plots.plot_layer_bars(rows, metrics=[])
