"""MOS kernels on seeded synthetic cut-outs: bar-shadow measurement, unplanned light,
closed shutters, the fitted profile and the flux conversion."""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam.sim.mos import bar_shadow_profile
from nirbeam.transforms import barshadow as bs
from nirbeam.transforms import mos_extract as mx
from nirbeam.transforms import msa_light

ROWS, MARGIN, PITCH, OPEN = 20, 1, 6, 4.6


def _sky_cutouts(rng, t, n=6, nx=200, level=2.0):
    cuts, vs, qs = [], [], []
    sky = level * (1 + 0.3 * np.sin(np.linspace(0, 3, nx)))
    for _ in range(n):
        model = t[:, None] * sky[None, :]
        var = model / 50.0 + 0.01
        c = model + rng.normal(0, np.sqrt(var))
        q = np.zeros(c.shape, np.uint32)
        cuts.append(c)
        vs.append(var)
        qs.append(q)
    return cuts, vs, qs


def test_bar_shadow_recovers_truth_and_beats_reference():
    rng = np.random.default_rng(4)
    truth = bar_shadow_profile(ROWS, MARGIN, PITCH, OPEN, 0.55, 0.75)
    ref = bar_shadow_profile(ROWS, MARGIN, PITCH, OPEN, 0.42, 1.05)
    cuts, vs, qs = _sky_cutouts(rng, truth)
    p = bs.measure_bar_shadow(cuts, vs, qs, ref)
    rows = truth > 0.2
    z = (p.transmission - truth)[rows] / p.error[rows]
    assert np.mean(z ** 2) < 3           # unbiased within its errors (a mean of per-column
    assert abs(np.mean(z)) < 1.0         # ratios would sit percents low at this S/N)
    assert bs.profile_rms(p.transmission, truth, rows) < 0.2 * bs.profile_rms(ref, truth, rows)
    # a flagged (stuck) shutter in one cut-out is left out, not averaged in as dark
    cuts2, vs2, qs2 = _sky_cutouts(rng, truth)
    cuts2[0][14:19] = 0.0
    qs2[0][14:19] = 1
    p2 = bs.measure_bar_shadow(cuts2, vs2, qs2, ref)
    assert bs.profile_rms(p2.transmission, truth, rows) < 0.02


def test_apply_bar_shadow_flags_closed_rows():
    t = bar_shadow_profile(ROWS, MARGIN, PITCH, OPEN, 0.55, 0.75)
    r, v, q = bs.apply_bar_shadow(np.ones((2, ROWS, 5)) * t[None, :, None], np.ones((2, ROWS, 5)),
                                  np.zeros((2, ROWS, 5), np.uint32), t)
    good = t >= 0.2
    np.testing.assert_allclose(r[:, good], 1.0)
    assert np.all(q[:, ~good] & 1) and np.all(np.isnan(r[:, ~good]))


def test_unplanned_light_and_closed_shutters():
    rng = np.random.default_rng(7)
    ny, nx = 120, 80
    rates = rng.normal(0, 0.05, (3, ny, nx))
    planned = np.zeros(ny, bool)
    planned[10:30] = planned[60:80] = True
    rates[:, 10:30] += 1.0
    rates[:, 60:80] += 1.0
    rates[:, 44:48, 5:70] += 0.4              # a failed-open shutter's sky
    dq = np.zeros(rates.shape, np.uint32)
    found = msa_light.unplanned_light(rates, dq, planned)
    assert len(found) == 1 and found[0]["rows"] == [44, 48]
    assert found[0]["columns"] == [5, 70] and found[0]["level_dn_s"] == pytest.approx(0.4, abs=0.03)
    assert msa_light.unplanned_light(rates[:, :40], dq[:, :40], planned[:40]) == []
    # closed shutters: the source's nod makes one shutter bright, one shutter is dark
    cut = np.ones((3, ROWS, 40))
    cut[1, 2:7] += 20                          # source in shutter 0 in nod 2
    cut[:, 14:19] = 0.01                       # shutter 2 stuck closed
    rows = [(2, 7), (8, 13), (14, 19)]
    assert msa_light.closed_shutters(cut, np.zeros(cut.shape, np.uint32), rows) == [2]
    assert msa_light.closed_shutters(np.ones((3, ROWS, 40)), np.zeros(cut.shape, np.uint32), rows) == []


def test_fitted_profile_recovers_width_and_centres():
    rng = np.random.default_rng(11)
    ny, nx = 20, 120
    wl = np.tile(np.linspace(1, 5, nx), (ny, 1))
    along = mx.rows_coordinate(wl)
    truth = mx.GaussianProfile((9.7, 3.7, 15.7), 1.3)
    P = truth.profiles(along, wl, mx.slit_limits(along))
    flux = 50 + 20 * np.sin(np.linspace(0, 6, nx))
    sky = 3.0 * np.ones((ny, nx))
    model = sky[None] + flux[None, None, :] * P
    var = model / 20.0 + 0.05
    data = model + rng.normal(0, np.sqrt(var))
    dq = np.zeros(data.shape, np.uint32)
    c0 = mx.initial_centers(data, var, np.ones(data.shape, bool), along)
    assert np.all(np.abs(c0 - truth.centers) <= 1.0)
    g = mx.fit_profile(data, var, dq, along, wl, c0)
    assert g.s0 == pytest.approx(1.3, abs=0.05)
    np.testing.assert_allclose(g.centers, truth.centers, atol=0.05)
    assert g.chi2 / g.dof == pytest.approx(1.0, abs=0.1)


def test_surface_brightness_to_ujy():
    assert mx.surface_brightness_to_ujy(2.0, 4.8e-13) == pytest.approx(2.0 * 4.8e-13 * 1e12)
    with pytest.raises(ValueError, match="PIXAR_SR"):
        mx.surface_brightness_to_ujy(1.0, None)
    s = mx.snr_per_bin(np.linspace(1, 2, 10), np.ones(10), np.full(10, 0.25), [1.0, 1.5, 2.01])
    assert s["n"] == [5, 5] and s["snr"] == pytest.approx([2 * np.sqrt(5)] * 2)
