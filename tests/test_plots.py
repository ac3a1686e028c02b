"""Each plot writes a readable, non-empty PNG."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
from test_extract import make_scene, truth_trace

from nirbeam.sinks.plots import (
    bin_points,
    plot_fit,
    plot_rate_image,
    plot_spectroscopic_image,
    plot_transmission_spectrum,
    plot_white_light,
)
from nirbeam.transforms.transit import FitConfig, fit_transit, transit_model

TRUE = dict(t0=0.0, per=3.0, rp=0.12, a=10.0, inc=88.5, ecc=0.0, w=90.0, u1=0.15, u2=0.25)


def _check_png(path, min_w=300, min_h=150):
    assert path.exists() and path.stat().st_size > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_h and img.shape[1] >= min_w
    # not a blank canvas
    assert np.std(img[..., :3]) > 0.02


def _lc(seed=0):
    rng = np.random.default_rng(seed)
    t = 60000.0 + np.linspace(-0.15, 0.15, 300)
    f = transit_model(t, dict(TRUE, t0=60000.0)) + rng.normal(0, 500e-6, t.size)
    return t, f, np.full(t.size, 500e-6)


def test_bin_points():
    x = np.arange(10.0)
    xb, yb, eb = bin_points(x, 2 * x, 5)
    np.testing.assert_allclose(xb, [2, 7])
    np.testing.assert_allclose(yb, [4, 14])
    assert eb.shape == (2,)


def test_white_light_plot(tmp_path):
    t, f, e = _lc()
    r = fit_transit(
        t, f, e, FitConfig(per=3.0, t0=60000.0, rp=0.1, a=10.0, inc=88.5, u=(0.15, 0.25))
    )
    dq = np.zeros(t.size, np.uint32)
    dq[10] = 4
    _check_png(
        plot_white_light(
            r.time, r.flux * 5e4, tmp_path / "wl.png", error=e, model=r.model * 5e4, dq=dq
        )
    )
    _check_png(plot_white_light(t, f, tmp_path / "wl_nomodel.png"))
    _check_png(plot_fit(r, tmp_path / "fit.png"))


def test_spectroscopic_image_and_transmission(tmp_path):
    t, _, _ = _lc()
    wl = np.linspace(2.9, 5.1, 30)
    rp = 0.12 + 0.004 * np.sin(3 * wl)
    rng = np.random.default_rng(1)
    flux = np.stack([transit_model(t, dict(TRUE, t0=60000.0, rp=r)) for r in rp], axis=1)
    flux = flux * 1e4 + rng.normal(0, 5, flux.shape)
    _check_png(plot_spectroscopic_image(t, wl, flux, tmp_path / "spec.png"))
    edges = np.linspace(2.86, 5.14, 31)
    _check_png(
        plot_transmission_spectrum(
            wl, rp**2, np.full(30, 80e-6), tmp_path / "ts.png", bin_edges=edges, white_depth=0.0144
        )
    )


def test_rate_image_plot(tmp_path):
    sc = make_scene(nint=3, seed=2, nx=256)
    med = np.median(sc.rate, axis=0)
    tr = truth_trace(med.shape[1])
    _check_png(
        plot_rate_image(
            med, tmp_path / "rate.png", trace=tr, half_width=4.5, background_region=(8.0, 14.0)
        ),
        min_h=100,
    )
