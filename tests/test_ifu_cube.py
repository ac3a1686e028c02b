"""IFU cube kernels (nirbeam.transforms.cube) against plain-numpy references and analytic
scenes: weights, flux conservation, outliers across dithers, centroids and wander,
apertures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from nirbeam.transforms import cube as ck

DITHERS = ((0.0, 0.0), (0.05, 0.05), (0.025, -0.025), (-0.025, 0.075))


def _phi(z):
    return 0.5 * (1 + erf(z / np.sqrt(2)))


def _gauss_box(a0, a1, b0, b1, xc, yc, s):
    return (_phi((a1 - xc) / s) - _phi((a0 - xc) / s)) * (_phi((b1 - yc) / s) - _phi((b0 - yc) / s))


def _dithered_cloud(sigma=0.045, src=(-0.33, 0.21), nw=12, noise=0.0, seed=0, wander=None):
    """Pixels 0.1" x 0.1" tiling a 3" x 3" field in 4 dithers, a Gaussian point source of
    unit flux per plane (surface brightness = flux fraction / footprint area)."""
    rng = np.random.default_rng(seed)
    clouds = []
    a = (np.arange(30) - 14.5) * 0.1
    for e, (ox, oy) in enumerate(DITHERS):
        wl = 1.0 + 0.01 * np.arange(nw) + 0.0031 * e
        W, B, A = np.meshgrid(wl, a, a, indexing="ij")
        sx, sy = src
        if wander is not None:
            sx = sx + wander(W)
        frac = _gauss_box(A - 0.05, A + 0.05, B - 0.05, B + 0.05, sx + ox, sy + oy, sigma)
        f = frac / 0.01 + noise * rng.standard_normal(frac.shape)
        n = f.size
        clouds.append(ck.PointCloud(W.ravel(), np.full(n, 0.01), A.ravel() - ox, B.ravel() - oy,
                                    np.full(n, 0.1), np.full(n, 0.1), f.ravel(),
                                    np.full(n, max(noise, 1e-3) ** 2), np.full(n, e, np.int32)))
    return ck.concat_clouds(clouds)


def test_drizzle_matches_a_brute_force_overlap_reference():
    rng = np.random.default_rng(3)
    n = 200
    c = ck.PointCloud(rng.uniform(1.0, 1.05, n), rng.uniform(0.004, 0.012, n),
                      rng.uniform(-0.4, 0.4, n), rng.uniform(-0.4, 0.4, n),
                      rng.uniform(0.05, 0.15, n), rng.uniform(0.05, 0.15, n),
                      rng.normal(5, 1, n), rng.uniform(0.1, 1, n), np.zeros(n, np.int32))
    c = ck.concat_clouds([c])
    g = ck.CubeGrid(-0.5, -0.5, 11, 11, 0.1, 1.0, 0.008, 7)
    k = 3
    flux, var, w = ck.build_plane(c, g, k, "drizzle")
    # reference: every point against every spaxel, plain numpy
    xc, yc = np.meshgrid(g.xc, g.yc)

    def ov(a0, a1, b0, b1):
        return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)

    wc = g.wave[k]
    fw = ov(c.wave - c.dwave / 2, c.wave + c.dwave / 2, wc - g.dwave / 2, wc + g.dwave / 2) / g.dwave
    W = (ov(c.x[:, None, None] - c.dx[:, None, None] / 2, c.x[:, None, None] + c.dx[:, None, None] / 2,
            xc - 0.05, xc + 0.05)
         * ov(c.y[:, None, None] - c.dy[:, None, None] / 2, c.y[:, None, None] + c.dy[:, None, None] / 2,
              yc - 0.05, yc + 0.05) * fw[:, None, None])
    ws = W.sum(0)
    with np.errstate(invalid="ignore"):
        ref = (W * c.flux[:, None, None]).sum(0) / ws
        vref = (W**2 * c.var[:, None, None]).sum(0) / ws**2
    assert np.allclose(w, ws, rtol=1e-12, atol=1e-15)
    good = ws > 0
    assert good.sum() > 50
    np.testing.assert_allclose(flux[good], ref[good], rtol=1e-10)
    np.testing.assert_allclose(var[good], vref[good], rtol=1e-10)
    assert np.all(np.isnan(flux[~good]))


def test_emsm_matches_the_shepard_formula():
    rng = np.random.default_rng(4)
    n = 300
    c = ck.concat_clouds([ck.PointCloud(
        rng.uniform(1.0, 1.05, n), np.full(n, 0.008), rng.uniform(-0.4, 0.4, n),
        rng.uniform(-0.4, 0.4, n), np.full(n, 0.1), np.full(n, 0.1), rng.normal(5, 1, n),
        np.ones(n), np.zeros(n, np.int32))])
    g = ck.CubeGrid(-0.5, -0.5, 11, 11, 0.1, 1.0, 0.008, 7)
    k = 3
    flux, _, w = ck.build_plane(c, g, k, "emsm", roi_spatial=0.12, roi_spectral=0.01,
                                scalerad=0.05, scalerad_w=0.004)
    xc, yc = np.meshgrid(g.xc, g.yc)
    dx = xc[None] - c.x[:, None, None]
    dy = yc[None] - c.y[:, None, None]
    dw = (c.wave - g.wave[k])[:, None, None]
    W = np.exp(-(dx**2 + dy**2) / 0.05**2 - dw**2 / 0.004**2)
    W[(dx**2 + dy**2 > 0.12**2) | (np.abs(dw) > 0.01 + 0 * dx)] = 0.0
    ws = W.sum(0)
    good = ws > 0
    np.testing.assert_allclose(w[good], ws[good], rtol=1e-10)
    ref = (W * c.flux[:, None, None]).sum(0)[good] / ws[good]
    np.testing.assert_allclose(flux[good], ref, rtol=1e-10)


def test_nearest_is_a_mean_of_the_points_whose_centres_fall_in():
    c = ck.concat_clouds([ck.PointCloud(
        np.array([1.0, 1.0, 1.0]), np.full(3, 0.01), np.array([0.01, -0.02, 0.3]),
        np.array([0.0, 0.04, 0.0]), np.full(3, 0.1), np.full(3, 0.1), np.array([1.0, 3.0, 7.0]),
        np.ones(3), np.zeros(3, np.int32))])
    g = ck.CubeGrid(-0.1, -0.1, 5, 3, 0.1, 1.0, 0.01, 1)
    f, v, w = ck.build_plane(c, g, 0, "nearest")
    assert f[1, 1] == pytest.approx(2.0) and w[1, 1] == 2
    assert f[1, 4] == pytest.approx(7.0)
    assert v[1, 1] == pytest.approx(0.5)


@pytest.mark.parametrize("weighting,tol", [("drizzle", 0.01), ("emsm", 0.01)])
def test_cube_conserves_point_source_flux(weighting, tol):
    c = _dithered_cloud()
    g = ck.CubeGrid.covering(c, 0.1, 0.01, (1.02, 1.09))
    flux, _, _ = ck.build_cube(c, g, weighting)
    total = np.nansum(flux, axis=(1, 2)) * g.cdelt**2   # unit flux per plane
    np.testing.assert_allclose(total, 1.0, atol=tol)


def test_plane_members_is_the_points_that_reach_the_planes():
    c = _dithered_cloud(nw=8)
    g = ck.CubeGrid.covering(c, 0.1, 0.01, (1.02, 1.06))
    for k in range(g.nwave):
        m = ck.plane_members(c, g, k, k + 1, "drizzle")
        a = ck.build_plane(c.take(m), g, k, "drizzle")[0]
        b = ck.build_plane(c, g, k, "drizzle")[0]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12)


def test_outliers_across_dithers_find_spikes_and_keep_an_undersampled_source():
    rng = np.random.default_rng(7)
    ny, nx, ne = 60, 80, 4
    smap = np.repeat(np.arange(2), 30)[:, None].repeat(nx, 1)
    cols = np.arange(nx)
    imgs = []
    for e in range(ne):
        yc = 14.0 + 0.5 * e + 0.1 * cols          # a tilted, undersampled trace moving by dither
        rows = np.arange(ny)[:, None]
        prof = _phi((rows + 0.5 - yc) / 0.4) - _phi((rows - 0.5 - yc) / 0.4)
        imgs.append(300.0 * prof * (1 + 0.3 * np.sin(cols / 9.0)) + rng.normal(0, 1.0, (ny, nx)))
    imgs = np.stack(imgs)
    errs = np.ones_like(imgs)
    spikes = [(0, 40, 30), (1, 10, 50), (2, 15, 20), (3, 44, 61)]
    for e, y, x in spikes:
        imgs[e, y, x] += 80.0
    flags = ck.flag_dither_outliers(imgs, errs, smap)
    assert all(flags[e, y, x] for e, y, x in spikes)
    assert flags.sum() == len(spikes)
    # jwst's direction (along the slice) flags the undersampled source itself
    assert ck.flag_dither_outliers(imgs, errs, smap, direction="spatial").sum() > 2 * len(spikes)


def _gauss_cube(g, centres, sigma=0.09):
    X, Y = np.meshgrid(g.xc, g.yc)
    out = np.empty(g.shape)
    for k, (x, y) in enumerate(centres):
        out[k] = _gauss_box(X - 0.05, X + 0.05, Y - 0.05, Y + 0.05, x, y, sigma) / 0.01
    return out


def test_centroids_follow_a_moving_source_and_the_wander_is_removed():
    g = ck.CubeGrid(-1.5, -1.5, 31, 31, 0.1, 1.0, 0.01, 60)
    t = (g.wave - g.wave.mean()) / np.ptp(g.wave)
    truth = np.stack([0.2 + 0.08 * t + 0.05 * t**2, -0.3 - 0.04 * t], axis=1)
    cube = _gauss_cube(g, truth)
    cents = ck.plane_centroids(cube, g, (0.2, -0.3))
    assert np.nanmax(np.abs(cents - truth)) < 0.01
    model_vals, model = ck.smooth_wander(g.wave, cents, 3)
    assert np.ptp(cents[:, 0]) > 0.05  # > 0.5 spaxel before
    corrected = cents - model_vals
    assert np.ptp(corrected[:, 0]) < 0.01 and np.ptp(corrected[:, 1]) < 0.01  # < 0.1 spaxel
    # shift_cloud moves points by the same model
    c = ck.PointCloud(g.wave, np.full(g.nwave, 0.01), truth[:, 0], truth[:, 1], np.full(g.nwave, 0.1),
                      np.full(g.nwave, 0.1), np.ones(g.nwave), np.ones(g.nwave), np.zeros(g.nwave, np.int32))
    s = ck.shift_cloud(c, model)
    np.testing.assert_allclose(s.x, truth[:, 0] - model_vals[:, 0])


def test_circle_fraction_and_aperture_flux():
    g = ck.CubeGrid(-1.5, -1.5, 31, 31, 0.1, 1.0, 0.01, 3)
    fr = ck.circle_fraction(g, 0.013, -0.021, 0.45, sub=16)
    assert fr.sum() * 0.01 == pytest.approx(np.pi * 0.45**2, rel=0.01)
    cube = _gauss_cube(g, [(0.1, 0.05)] * 3, sigma=0.08)        # unit flux, MJy/sr-scaled
    f, e, n = ck.aperture_spectrum(cube / ck.MJYSR_ARCSEC2_TO_UJY, np.ones(g.shape), g,
                                   np.tile([0.1, 0.05], (3, 1)), ck.aperture_radius(g.wave, 0.4, 1.0))
    np.testing.assert_allclose(f, 1 - np.exp(-0.5 * (0.4 * g.wave / 0.08) ** 2), rtol=0.01)
    assert np.all(np.diff(ck.aperture_radius(g.wave, 0.4, 1.0)) > 0)


def test_pixel_dwave_and_surface_brightness():
    wave = np.tile(1.0 + 0.002 * np.arange(6), (2, 1))
    smap = np.array([[0, 0, 0, 0, -1, -1], [1, 1, 1, 1, 1, 1]])
    dw = ck.pixel_dwave(wave, smap)
    np.testing.assert_allclose(dw[0, :4], 0.002)
    assert np.all(np.isnan(dw[0, 4:]))
    f, v = ck.surface_brightness(np.full((2, 6), 10.0), np.full((2, 6), 2.0), wave, lambda w: 2.0 * w)
    np.testing.assert_allclose(f, 10.0 / (2 * wave))
    np.testing.assert_allclose(v, (2.0 / (2 * wave)) ** 2)
