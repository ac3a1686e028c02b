"""Ramp fitting of a ramp holding a NaN group that is not flagged DO_NOT_USE.

Before session 7, ``ramp_fit.fit_pixel`` (the step path's fit, and the fused path's for
pixels with a JUMP_DET group) ranked the NaN differences of such a group with the others:
``median_positions`` then found no median and the fit read an uninitialised work buffer.
Now NaN differences are left out of the median rate, as stcal 1.20 does (``slope_fitter.c``
``median_rate_integration``: NaN-sorted first differences, median of the non-NaN ones).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_detector1_sim import stcal_ramp_fit

from nirbeam import dqflags
from nirbeam.transforms import ramp_fit as rf

TG = float(np.float32(10.737))


def _ramps(ng, nan_group, seed):
    """(ng, 4, 6) float32 ramps, rates 5..2000 DN/s, group ``nan_group`` NaN everywhere."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(5.0, 2000.0, (4, 6))
    t = np.arange(ng)[:, None, None] * TG
    d = (rate * t + rng.normal(0.0, 8.0, (ng, 4, 6))).astype(np.float32)
    d[nan_group] = np.nan
    return d


def _fit_cube(d, gdq, buffers_garbage=True):
    ng, ny, nx = d.shape
    out = [np.zeros((ny, nx), np.float32) for _ in range(5)]
    out[2] = np.zeros((ny, nx), np.uint32)
    rf.fit_ramps_cube(d, gdq, np.zeros((ny, nx), np.uint32), np.full((ny, nx), 12.0, np.float32),
                      np.full((ny, nx), 1.5, np.float32), 1, TG, TG,
                      np.zeros((ny, nx), np.float32), True, *out)
    return out  # rate, err, dq, var_poisson, var_rnoise


def _median_rate_reference(d, gdq):
    """Plain numpy: the median of the finite first differences (DN/s) of usable groups,
    differences into a JUMP_DET group left out."""
    ng = d.shape[0]
    bad = (gdq & (dqflags.SATURATED | dqflags.DO_NOT_USE)) != 0
    ok = ~bad[:-1] & ~bad[1:] & ((gdq[1:] & dqflags.JUMP_DET) == 0)
    diffs = np.where(ok, d[1:].astype(np.float64) / TG - d[:-1].astype(np.float64) / TG, np.nan)
    assert diffs.shape[0] == ng - 1
    return np.nanmedian(diffs, axis=0)


@pytest.mark.parametrize("ng,nan_group", [(6, 3), (7, 0), (9, 8), (12, 5)])
@pytest.mark.parametrize("jump_group", [None, 2])
def test_fit_pixel_nan_group_not_flagged(ng, nan_group, jump_group):
    d = _ramps(ng, nan_group, seed=ng * 10 + nan_group)
    gdq = np.zeros(d.shape, np.uint8)
    if jump_group is not None and jump_group != nan_group:
        gdq[jump_group] = dqflags.JUMP_DET  # fit_pixel recomputes the median (fused path too)
    # the fit reads no stale state: the same result whatever the work buffers held
    rate, err, dq, vp, vr = _fit_cube(d.copy(), gdq.copy())
    mrate = _median_rate_reference(d, gdq)
    # one segment per pixel of every group (the NaN one counts 0, as stcal): var_poisson is
    # median rate / (tgroup gain (n - 1)) when there is no jump; with the JUMP_DET group the
    # ramp splits in two, so compare with stcal there
    if jump_group is None:
        np.testing.assert_allclose(vp, mrate / (TG * 1.5 * (ng - 1)), rtol=1e-6)
    s_slope, s_dq, s_vp, s_vr, s_err = stcal_ramp_fit(d, gdq, np.zeros((4, 6), np.uint32),
                                                      np.full((4, 6), 12.0, np.float32),
                                                      np.full((4, 6), 1.5, np.float32), TG, TG)
    np.testing.assert_allclose(vp, s_vp, rtol=1e-5)
    np.testing.assert_array_equal(dq, s_dq)
    np.testing.assert_allclose(vr, s_vr, rtol=1e-5)
    np.testing.assert_allclose(rate, s_slope, rtol=1e-4, equal_nan=True)


def test_fit_pixel_median_ignores_nan_like_flagged_median():
    """The median rate of a ramp with an unflagged NaN group equals the one computed on
    its finite differences with fit_pixel's own ranking (jump step positions)."""
    ng = 8
    d = _ramps(ng, 4, seed=3)[:, 0, 0].copy()
    keys = np.empty(ng + 1, np.float32)
    wtab, stab = rf.weight_tables(ng)
    for fill in (0, 7, 2**40):
        ss = np.full(ng + 1, fill, np.int64)  # what an earlier pixel left in the buffers
        se = np.full(ng + 1, fill, np.int64)
        gdq = np.zeros(ng, np.uint8)
        gdq[2] = dqflags.JUMP_DET
        r = rf.fit_pixel(d, gdq, ng, 0, 1.5, 12.0, 1, TG, TG, 0.0, True, wtab, stab, keys, ss,
                         se, -1, -1, False)
        ref = _median_rate_reference(d[:, None, None], gdq[:, None, None])[0, 0]
        assert np.isfinite(r[3]) and r[3] > 0
        if fill == 0:
            first = r
        assert r == first
        assert np.isfinite(ref)
