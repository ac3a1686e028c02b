"""Trace finding and wavelength solutions against simulator truth."""

from __future__ import annotations

import numpy as np
import pytest
from test_extract import make_scene, true_center, true_sigma

from nirbeam import dqflags
from nirbeam.transforms.trace import (
    TraceModel,
    WavelengthSolution,
    find_trace,
    robust_polyfit,
)


@pytest.mark.parametrize(
    ("deg", "flux_level", "nint"), [(2, 2000.0, 15), (3, 2000.0, 15), (2, 100.0, 5)]
)
def test_find_trace_recovers_center(deg, flux_level, nint):
    sc = make_scene(nint=nint, seed=2, flux_level=flux_level)
    med = np.median(sc.rate, axis=0)
    nx = med.shape[1]
    tr, meas = find_trace(med, deg=deg, return_measurement=True)
    x = np.arange(nx)
    rms = np.sqrt(np.mean((tr.center(x) - true_center(x, nx)) ** 2))
    print(
        f"deg={deg} flux={flux_level}: trace centre rms error {rms:.4f} px, fit rms {tr.rms:.4f} px"
    )
    assert rms < 0.05
    # width: second moment in a +-4.5 px window (truncation makes it slightly low)
    werr = tr.width(x) - true_sigma(x, nx)
    assert np.max(np.abs(werr)) < 0.1
    assert tr.source == "fit" and meas.used.sum() > 0.8 * nx


def test_find_trace_ignores_bad_pixels_and_outlier_columns():
    sc = make_scene(nint=15, seed=12)
    med = np.median(sc.rate, axis=0).astype(np.float64)
    nx = med.shape[1]
    dq = np.zeros(med.shape, np.uint32)
    rng = np.random.default_rng(0)
    cols = rng.choice(nx, 12, replace=False)
    for c in cols:  # hot pixels two rows off the trace, flagged
        y = int(round(true_center(c, nx))) + 3
        med[y, c] += 5e4
        dq[y, c] = dqflags.HOT
    # and a few unflagged bad columns the sigma-clipped fit must reject
    for c in (20, 21, 90):
        med[2, c] += 1e5
    tr = find_trace(med, dq, deg=2)
    x = np.arange(nx)
    rms = np.sqrt(np.mean((tr.center(x) - true_center(x, nx)) ** 2))
    assert rms < 0.05


def test_robust_polyfit_clips_outliers():
    rng = np.random.default_rng(3)
    x = np.linspace(-1, 1, 200)
    y = 1 + 2 * x - 0.5 * x**2 + rng.normal(0, 0.01, x.size)
    y[::17] += 5
    c, used, rms = robust_polyfit(x, y, 2)
    np.testing.assert_allclose(c, [1, 2, -0.5], atol=0.01)
    assert not used[::17].any() and rms < 0.015


def test_trace_from_config_scaled_and_unscaled():
    x = np.arange(512.0)
    coef_x = [10.0, 0.01, -2e-5]  # in plain x
    tr = TraceModel.from_config(coef_x, [1.0, 0.001], (0, 511), scaled=False)
    np.testing.assert_allclose(tr.center(x), np.polynomial.polynomial.polyval(x, coef_x), atol=1e-9)
    np.testing.assert_allclose(tr.width(x), 1.0 + 0.001 * x, atol=1e-12)
    tr2 = TraceModel.from_config(tr.coefficients, tr.width_coefficients, (0, 511))
    np.testing.assert_allclose(tr2.center(x), tr.center(x))
    assert TraceModel.from_config(15.5).center(7) == 15.5
    assert tr.source == "config"
    with pytest.raises(ValueError):
        TraceModel.from_config([[1, 2]])


def test_wavelength_solutions():
    nx, ny = 300, 32
    x = np.arange(nx)
    # (a) truth table on a coarse grid
    xt = np.linspace(0, nx - 1, 31)
    ws = WavelengthSolution.from_table(xt, 2.8 + 0.003 * xt, nx)
    np.testing.assert_allclose(ws.wavelength, 2.8 + 0.003 * x, rtol=1e-12)
    assert ws.source == "table:truth"
    # (b) 2-D map with a y-dependence: value along a curved trace
    tr = TraceModel.from_config([14.0, 0.0, 2.0], 1.0, (0, nx - 1))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    wmap = 2.8 + 0.003 * xx + 0.0005 * yy
    wmap[:3] = np.nan
    wm = WavelengthSolution.from_map(wmap, tr)
    np.testing.assert_allclose(wm.wavelength, 2.8 + 0.003 * x + 0.0005 * tr.center(x), atol=1e-12)
    assert wm.source == "map:WAVELENGTH"
    # (c) polynomial coefficients
    wp = WavelengthSolution.from_coefficients([2.8, 0.003], nx)
    np.testing.assert_allclose(wp.wavelength, ws.wavelength)
    assert wp.source == "polynomial"
    with pytest.raises(ValueError, match="wavelength table"):
        WavelengthSolution.from_table([1.0], [2.0], nx)
