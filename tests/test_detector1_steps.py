"""Each calibration step against a plain numpy version of what it should do."""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms.dark import subtract_dark
from nirbeam.transforms.dq_init import dq_init
from nirbeam.transforms.linearity import apply_linearity
from nirbeam.transforms.refpix import (
    SubarrayGeometry,
    reference_columns,
)
from nirbeam.transforms.saturation import SaturationParams, flag_saturation
from nirbeam.transforms.superbias import subtract_superbias

RNG = np.random.default_rng(2024)


def test_dq_init():
    mask = RNG.integers(0, 2**31, (5, 6)).astype(np.uint32)
    gdq, pdq = dq_init(mask, 4)
    assert gdq.shape == (4, 5, 6) and gdq.dtype == np.uint8 and not gdq.any()
    np.testing.assert_array_equal(pdq, mask)
    assert pdq is not mask


def test_superbias_numpy():
    g = RNG.normal(1e4, 100, (4, 6, 7)).astype(np.float32)
    b = RNG.normal(1e4, 50, (6, 7)).astype(np.float32)
    b[1, 1] = np.nan
    bdq = np.zeros((6, 7), np.uint32)
    bdq[2, 2] = dqflags.UNRELIABLE_BIAS
    expect = g - np.nan_to_num(b)[None]
    pdq = np.zeros((6, 7), np.uint32)
    subtract_superbias(g, pdq, b, bdq)
    np.testing.assert_array_equal(g, expect)
    np.testing.assert_array_equal(pdq, bdq)


def test_dark_numpy():
    g = RNG.normal(100, 10, (5, 4, 3)).astype(np.float32)
    d = RNG.normal(1, 1, (6, 4, 3)).astype(np.float32)
    d[2, 0, 0] = np.nan
    ddq = np.full((4, 3), dqflags.WARM, np.uint32)
    expect = g - np.nan_to_num(d[:5])
    pdq = np.zeros((4, 3), np.uint32)
    subtract_dark(g, pdq, d, ddq)
    np.testing.assert_array_equal(g, expect)
    np.testing.assert_array_equal(pdq, ddq)


def test_linearity_numpy():
    ng, ny, nx = 5, 6, 7
    g = RNG.uniform(0, 40000, (ng, ny, nx)).astype(np.float32)
    c = np.zeros((5, ny, nx), np.float32)
    c[1] = 1.0
    c[2] = RNG.uniform(0, 3e-6, (ny, nx))
    c[3] = RNG.uniform(-1e-11, 1e-11, (ny, nx))
    c[4] = 1e-17
    c[0] = RNG.uniform(-2, 2, (ny, nx))
    c[2, 0, 0] = np.nan
    c[1, 0, 1] = 0.0
    ldq = np.zeros((ny, nx), np.uint32)
    ldq[0, 2] = dqflags.NO_LIN_CORR
    ldq[0, 3] = dqflags.NONLINEAR
    gdq = np.zeros((ng, ny, nx), np.uint8)
    gdq[3:, 1, :] = dqflags.SATURATED
    x = g.astype(np.float64)
    expect = sum(c[k].astype(np.float64) * x**k for k in range(5))
    skip = np.zeros((ny, nx), bool)
    skip[0, :3] = True
    expect = np.where(skip[None] | (gdq & dqflags.SATURATED > 0), x, expect)
    pdq = np.zeros((ny, nx), np.uint32)
    out = g.copy()
    apply_linearity(out, gdq, pdq, c, ldq)
    np.testing.assert_allclose(out, expect, rtol=2e-6)
    assert pdq[0, 0] == dqflags.NO_LIN_CORR and pdq[0, 1] == dqflags.NO_LIN_CORR
    assert pdq[0, 2] == dqflags.NO_LIN_CORR and pdq[0, 3] == dqflags.NONLINEAR
    assert not pdq[1:].any()


@pytest.mark.parametrize("ngrow", [0, 1, 2])
def test_saturation_numpy(ngrow):
    ng, ny, nx = 6, 9, 11
    ramp = np.cumsum(RNG.integers(0, 12000, (ng, ny, nx)), axis=0).clip(0, 65535)
    ramp[2, 4, 4] = 0
    ramp = ramp.astype(np.uint16)
    sat = RNG.uniform(20000, 60000, (ny, nx)).astype(np.float32)
    sat[0, 0] = np.nan
    sdq = np.zeros((ny, nx), np.uint32)
    sdq[1, 1] = dqflags.NO_SAT_CHECK
    gdq, pdq = dq_init(np.zeros((ny, nx), np.uint32), ng)
    flag_saturation(ramp, gdq, pdq, sat, sdq, None, 1, 0,
                    SaturationParams(n_pix_grow_sat=ngrow, use_readpatt=False))
    thr = np.where(np.isnan(sat) | (sdq > 0), 65536.0, sat)
    own = np.maximum.accumulate(ramp >= thr[None], axis=0)
    grown = np.zeros_like(own)
    for dy in range(-ngrow, ngrow + 1):
        for dx in range(-ngrow, ngrow + 1):
            sh = np.zeros_like(own)
            ys = slice(max(dy, 0), ny + min(dy, 0))
            yd = slice(max(-dy, 0), ny + min(-dy, 0))
            xs = slice(max(dx, 0), nx + min(dx, 0))
            xd = slice(max(-dx, 0), nx + min(-dx, 0))
            sh[:, yd, xd] = own[:, ys, xs]
            grown |= sh
    expect = grown * dqflags.SATURATED | (ramp <= 0) * (dqflags.AD_FLOOR | dqflags.DO_NOT_USE)
    np.testing.assert_array_equal(gdq, expect.astype(np.uint8))
    assert pdq[0, 0] == dqflags.NO_SAT_CHECK and pdq[1, 1] == dqflags.NO_SAT_CHECK
    assert own.any() and (grown.sum() > own.sum() or ngrow == 0)


# even/odd reference-pixel means (jwst frame, DMS-row parity): tests/test_refpix_jwst.py


def test_refpix_geometry():
    assert reference_columns(SubarrayGeometry(1025, 512), 512).size == 0  # SUB512: none
    np.testing.assert_array_equal(reference_columns(SubarrayGeometry(1, 2048), 2048),
                                  [0, 1, 2, 3, 2044, 2045, 2046, 2047])
    with pytest.raises(ValueError, match="SUBSIZE1"):
        reference_columns(SubarrayGeometry(1, 2048), 512)
