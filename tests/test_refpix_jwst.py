"""Reference-pixel correction against an independent numpy version of jwst's subarray
algorithm (issue 13, cause 2).

The reference embeds the subarray in a full frame, transforms it to the detector frame as
jwst ``refpix`` does for NIRSpec (NRS1: transpose; NRS2: transpose + 180-degree
rotation), takes ``scipy.stats.sigmaclip(low=3, high=3)`` means of the reference pixels of
even and odd detector columns, subtracts them column by column and transforms back.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nirbeam import dqflags
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, calibrate_groups
from nirbeam.transforms.reference import ReferenceArrays
from nirbeam.transforms.refpix import (
    RefPixParams,
    SubarrayGeometry,
    apply_refpix,
    reference_mask,
    refpix_means,
)

RNG = np.random.default_rng(13)


def jwst_like_subarray_refpix(groups, pixeldq, geom, detector, refmask):
    """Plain numpy of jwst NIRDataset.do_subarray_corrections (odd_even_columns=True)."""
    out = groups.astype(np.float64).copy()
    ng, ny, nx = groups.shape
    ys = slice(geom.substrt2 - 1, geom.substrt2 - 1 + ny)
    xs = slice(geom.substrt1 - 1, geom.substrt1 - 1 + nx)
    ffdq = np.full((2048, 2048), dqflags.DO_NOT_USE, np.uint32)  # outside: not usable
    ffdq[ys, xs] = pixeldq | np.where(refmask, dqflags.REFERENCE_PIXEL, 0).astype(np.uint32)

    def to_det(a):
        a = np.swapaxes(a, 0, 1)
        return a[::-1, ::-1] if detector == "NRS2" else a

    def to_dms(a):
        a = a[::-1, ::-1] if detector == "NRS2" else a
        return np.swapaxes(a, 0, 1)

    ddq = to_det(ffdq)
    use = ((ddq & dqflags.REFERENCE_PIXEL) != 0) & ((ddq & dqflags.DO_NOT_USE) == 0)
    cols = np.arange(2048)[None, :]
    for g in range(ng):
        ff = np.zeros((2048, 2048))
        ff[ys, xs] = out[g]
        d = to_det(ff)
        for par in (0, 1):
            v = d[use & (cols % 2 == par)]
            if v.size:
                mean = stats.sigmaclip(v, 3.0, 3.0)[0].mean() if np.std(v) > 0 else v.mean()
                d[:, par::2] -= mean
        out[g] = to_dms(d)[ys, xs]
    return out


@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
@pytest.mark.parametrize("substrt2", [963, 1055, 2017])
def test_refpix_matches_jwst_subarray_algorithm(detector, substrt2):
    ng, ny, nx = 4, 32, 40
    geom = SubarrayGeometry(substrt1=2048 - nx + 1, subsize1=nx, substrt2=substrt2, subsize2=ny,
                            name="SUB2048")
    g = RNG.normal(0, 5, (ng, ny, nx)).astype(np.float32)
    # per-group offsets alternating along the fast axis (full-frame DMS row parity)
    yf = substrt2 - 1 + np.arange(ny)
    eo = RNG.normal(0, 20, ng)
    g += (eo[:, None] * np.where(yf % 2 == 0, 1.0, -1.0)[None, :])[:, :, None].astype(np.float32)
    g += RNG.normal(0, 10, ng).astype(np.float32)[:, None, None]
    g[:, 3, nx - 2] += 500.0  # a hot reference pixel: the 3-sigma clip drops it
    pdq = np.zeros((ny, nx), np.uint32)
    pdq[5, nx - 1] = dqflags.DO_NOT_USE
    g[:, 5, nx - 1] = 1e6
    refmask = reference_mask(geom, (ny, nx))
    assert refmask[:, nx - 4:].all() and refmask.sum() == 4 * ny + (4 * nx - 16 if substrt2 > 2013 else 0)
    expect = jwst_like_subarray_refpix(g, pdq, geom, detector, refmask)
    means = refpix_means(g, np.zeros((ny, nx), np.float32), pdq, refmask, geom.row_parity0,
                         True, 3.0)
    out = g.copy()
    apply_refpix(out, means, geom.row_parity0)
    np.testing.assert_allclose(out, expect, atol=2e-3)
    # the alternating pattern is gone from the science pixels
    sci = out[:, :, : nx - 4]
    assert np.abs(sci[:, 0::2].mean(axis=(1, 2)) - sci[:, 1::2].mean(axis=(1, 2))).max() < 3.0


def test_alternating_rows_are_removed_by_detector1():
    """Cause 2: the pattern alternating along DMS rows was left untouched by the old
    DMS-column split; detector1 now removes it (fused and unfused)."""
    ng, ny, nx = 5, 32, 64
    geom = SubarrayGeometry(1, nx, 963, ny, "SUB2048")
    raw = np.full((ng, ny, nx), 12000.0)
    eo = np.array([0.0, 30.0, -25.0, 40.0, 10.0])
    par = np.where((962 + np.arange(ny)) % 2 == 0, 1.0, -1.0)
    raw += eo[:, None, None] * par[None, :, None]
    raw += RNG.normal(0, 2, raw.shape)
    ramp = np.rint(raw).astype(np.uint16)
    refs = ReferenceArrays.flat(ny, nx, ng, bias=12000.0)
    params = Detector1Params()
    groups, _, _, _ = calibrate_groups(ramp, refs, RampTiming(ng), params, geom)
    resid = groups[:, 0::2, 4:-4].mean(axis=(1, 2)) - groups[:, 1::2, 4:-4].mean(axis=(1, 2))
    assert np.abs(resid).max() < 1.0, resid


def test_pseudo_reference_pixels_for_edgeless_subarrays():
    geom = SubarrayGeometry(1025, 512, 957, 32, "SUB512")
    m = reference_mask(geom, (32, 512))
    assert m[:, :4].all() and m[:, -4:].all() and m.sum() == 8 * 32
    off = reference_mask(geom, (32, 512), RefPixParams(pseudo_reference=False))
    assert not off.any()
    # a subarray with real reference columns keeps only those
    g2 = SubarrayGeometry(1, 2048, 963, 32, "SUB2048")
    m2 = reference_mask(g2, (32, 2048))
    assert m2[:, :4].all() and m2[:, -4:].all() and m2.sum() == 8 * 32
