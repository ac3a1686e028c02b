"""Diagnostic kernels against injected truth, and the plots' axes."""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam.sinks import plots
from nirbeam.sinks.diagnostics import baseline_model, column_offsets, measure_trace
from nirbeam.sinks.plots import allan_rms, edges_from_centers


def test_measure_trace_recovers_offset_and_width():
    rng = np.random.default_rng(1)
    n, ny, nx = 6, 32, 200
    x = np.arange(nx)
    yc = 15.0 + 0.01 * (x - 100)  # the fitted trace
    shift = np.linspace(-0.3, 0.4, n)  # true offsets from it
    sig = np.linspace(1.0, 1.3, n)
    y = np.arange(ny)[None, :, None]
    sci = 500 * np.exp(-0.5 * ((y - yc[None, None, :] - shift[:, None, None]) / sig[:, None, None]) ** 2)
    sci = sci + 7.0 + rng.normal(0, 0.5, sci.shape)  # background 7 DN/s
    dq = np.zeros(sci.shape, np.uint32)
    dq[:, 14, 50] = 1  # a bad pixel on the trace is skipped
    sci[:, 14, 50] = 1e6
    c, w = measure_trace(sci, dq, yc, half_width=5.0, background_region=(8.0, 14.0))
    np.testing.assert_allclose(c, shift, atol=0.01)
    np.testing.assert_allclose(w, sig, rtol=0.02)  # aperture +-7 px holds > 5 sigma


def test_column_offsets_recover_time_variable_stripes():
    rng = np.random.default_rng(2)
    n, ny, nx = 20, 32, 128
    static = rng.normal(0, 5, nx)  # per-column structure that does not change: removed
    stripes = rng.normal(0, 2, (n, nx))  # 1/f residual per integration and column
    sci = static[None, None, :] + stripes[:, None, :] + rng.normal(0, 0.1, (n, ny, nx))
    scene = np.zeros((ny, nx), bool)
    scene[12:20] = True
    sci[:, 12:20] += 1e4  # the source: masked
    got = column_offsets(sci, np.zeros(sci.shape, np.uint32), scene)
    # truth: the stripes about their median in time, then about each integration's median
    ref = stripes - np.median(stripes, axis=0, keepdims=True)
    ref = ref - np.median(ref, axis=1, keepdims=True)
    d = got - ref
    assert np.std(d) < 0.06 and np.max(np.abs(d)) < 0.3  # per-pixel noise 0.1 / sqrt(24 rows)
    assert np.std(got) > 1.5  # the stripes are there, not averaged away


def test_allan_white_noise_follows_expectation_and_red_noise_does_not():
    rng = np.random.default_rng(3)
    white = rng.normal(0, 1e-3, 4000)
    m, rms, err, exp = allan_rms(white)
    assert m[0] == 1 and m[-1] == 400
    assert np.all(np.abs(rms / exp - 1) < 4 * err / exp + 0.05)
    red = white + np.cumsum(rng.normal(0, 1e-4, 4000)) - 0  # a random walk on top
    red -= np.polyval(np.polyfit(np.arange(red.size), red, 1), np.arange(red.size))
    m, rms, err, exp = allan_rms(red)
    assert rms[-1] / exp[-1] > 3


def test_baseline_model_is_the_linear_least_squares_baseline():
    rng = np.random.default_rng(4)
    t = np.linspace(0, 0.2, 300)
    tr = 1 - 0.01 * ((t > 0.08) & (t < 0.12))
    c_true = np.array([5e4, 2e3, -1e4])
    bl = np.polynomial.polynomial.polyval(t - 0.1, c_true)
    e = np.full(t.size, 20.0)
    f = tr * bl + rng.normal(0, 20.0, t.size)
    model, c = baseline_model(t, f, e, tr, 0.1, 2)
    # reference: numpy polyfit of f / tr weighted by tr / e (the same normal equations)
    ref = np.polynomial.polynomial.polyfit(t - 0.1, f / tr, 2, w=tr / e)
    np.testing.assert_allclose(c, ref, rtol=1e-8)
    np.testing.assert_allclose(model, tr * np.polynomial.polynomial.polyval(t - 0.1, ref), rtol=1e-10)
    chi2 = np.sum(((f - model) / e) ** 2) / (t.size - 3)
    assert 0.8 < chi2 < 1.2


def test_edges_from_centers_exact_for_log_bins():
    e = np.geomspace(0.6, 5.3, 41)
    c = np.sqrt(e[1:] * e[:-1])
    np.testing.assert_allclose(edges_from_centers(c), e, rtol=1e-12)
    lin = np.linspace(1, 2, 11)
    np.testing.assert_allclose(edges_from_centers(-3 + 0.5 * (lin[1:] + lin[:-1])), lin - 3, atol=1e-12)


@pytest.fixture
def capture_figure(monkeypatch):
    figs = []

    def save(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", save)
    return figs


def test_spectroscopic_image_cells_span_the_bin_edges(capture_figure):
    """Log-spaced resolution bins sit at their true wavelengths on the linear axis."""
    edges = np.geomspace(0.6, 5.3, 31)
    centres = 0.5 * (edges[1:] + edges[:-1])
    t = 59771.0 + np.arange(40) * 0.001
    f = np.ones((40, 30)) + np.random.default_rng(5).normal(0, 1e-3, (40, 30))
    plots.plot_spectroscopic_image(t, centres, f, "x.png", bin_edges=edges)
    ax = capture_figure[0].axes[0]
    (mesh,) = ax.collections
    xy = mesh.get_coordinates()  # (ny + 1, nx + 1, 2): y along wavelength
    np.testing.assert_allclose(xy[:, 0, 1], edges)
    np.testing.assert_allclose(xy[0, :, 0], edges_from_centers(t - 59771.0))
    assert "BJD_TDB - 2400000.5" in ax.get_xlabel()
    with pytest.raises(ValueError, match="bin edges"):
        plots.plot_spectroscopic_image(t, centres, f, "x.png", bin_edges=edges[:-1])


def test_white_light_axis_names_the_time_scale(capture_figure):
    t = 59771.5 + np.arange(50) * 0.001
    plots.plot_white_light(t, np.ones(50), "x.png")
    ax = capture_figure[0].axes[0]
    assert ax.get_xlabel() == "BJD_TDB - 2400000.5 - 59771 [d]"


def test_trace_and_column_kernels_in_blocks_equal_one_pass(monkeypatch):
    """The products plots read up to MAX_SAMPLED integrations; both kernels work in blocks
    of ``_BLOCK`` integrations (memory flat in NINTS) and give exactly the one-pass result."""
    from nirbeam.sinks import diagnostics as d

    rng = np.random.default_rng(7)
    n, ny, nx = 70, 16, 40
    sci = rng.normal(5.0, 2.0, (n, ny, nx)).astype(np.float32)
    sci[:, 7:10] += 200.0
    sci[rng.random(sci.shape) < 0.01] = np.nan
    dq = (rng.random(sci.shape) < 0.02).astype(np.uint32)
    centre = np.full(nx, 8.3)
    mask = np.zeros((ny, nx), bool)
    mask[5:12] = True
    blocked = (d.measure_trace(sci, dq, centre, 2.0, (4.0, 7.0)), d.column_offsets(sci, dq, mask))
    assert d._BLOCK < n  # the default really cuts this stack into blocks
    monkeypatch.setattr(d, "_BLOCK", 10**6)
    whole = (d.measure_trace(sci, dq, centre, 2.0, (4.0, 7.0)), d.column_offsets(sci, dq, mask))
    for a, b in zip((*blocked[0], blocked[1]), (*whole[0], whole[1]), strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
