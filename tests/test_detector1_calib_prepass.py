"""Session 14's faster calibration passes of detector1, bit for bit against the old ones.

* ``saturation.first_saturated_group`` (row selects, the value compared in float32 where
  that is exact) and ``saturation.grow_min`` (separable row passes) == the per-pixel
  loops they replaced (written here in numpy), for uint16, float32 and float64 ramps,
  growth radii 0..3, values on and next to the thresholds, NaN thresholds, thin frames;
* ``detector1._calibrate_cube``'s one-pass six-coefficient branch == the step path and
  the fused row calibration, with saturated groups (grown, the sparse read-pattern
  flags with NFRAMES > 1), A/D floor, DQ flags, NaN linearity and dark values, the
  reference-pixel correction on and off, each step on and off;
* ``uncal.read_ramp``'s one-pass flip == byteswap then top-bit flip, on every uint16.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _detector1_helpers import (
    assert_cube_equals_step,
    assert_fused_equal_step,
    crafted_saturation,
    lin_refs,
)
from test_detector1_sim import simulate

from nirbeam import dqflags
from nirbeam.transforms import saturation as sat
from nirbeam.transforms.detector1 import (
    Detector1Params,
    RampTiming,
    _calib_setup,
    _calibrate_cube,
    calibrate_groups,
)
from nirbeam.transforms.jump import JumpParams
from nirbeam.transforms.refpix import RefPixParams, SubarrayGeometry, reference_mask


def _first_sat_old(ramp, thresh):
    """The loop first_saturated_group had: the first group with ramp >= thresh (numba
    compared uint16 and float64 values with a float32 threshold in float64)."""
    ng = ramp.shape[0]
    wide = ramp.astype(np.float64) if ramp.dtype != np.float32 else ramp
    out = np.full(thresh.shape, ng, np.int16)
    for g in range(ng - 1, -1, -1):
        out[wide[g] >= (thresh if ramp.dtype == np.float32 else thresh.astype(np.float64))] = g
    return out


def _grow_old(idx, n):
    ny, nx = idx.shape
    out = idx.copy()
    if n <= 0:
        return out
    for y in range(ny):
        for x in range(nx):
            out[y, x] = idx[max(0, y - n):y + n + 1, max(0, x - n):x + n + 1].min()
    return out


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 17, 23), (3, 1, 9), (4, 7, 1), (1, 5, 5)])
def test_first_saturated_group_and_growth_equal_old_loops(dtype, shape):
    rng = np.random.default_rng(sum(shape) + len(np.dtype(dtype).name))
    ng, ny, nx = shape
    thresh = rng.uniform(20000, 60000, (ny, nx)).astype(np.float32)
    thresh[rng.integers(0, ny, 2), rng.integers(0, nx, 2)] = np.nan
    thresh.flat[::7] = np.round(thresh.flat[::7])  # integer thresholds: equality cases
    ramp = rng.uniform(0, 65535, shape)
    # values on the threshold, one ulp (float32 / float64) below and above it
    finite = np.where(np.isnan(thresh), np.float32(30000.0), thresh)
    t64 = finite.astype(np.float64)
    picks = rng.integers(0, 6, shape)
    f32_below = np.nextafter(finite, np.float32(0)).astype(np.float64)
    f32_above = np.nextafter(finite, np.float32(1e9)).astype(np.float64)
    near = [t64, f32_below, f32_above, np.nextafter(t64, 0), np.nextafter(t64, 1e9), t64 - 1]
    for k, v in enumerate(near):
        ramp = np.where(picks == k, np.broadcast_to(v, shape), ramp)
    if dtype == np.uint16:
        ramp = np.clip(np.floor(ramp), 0, 65535)
    ramp = np.ascontiguousarray(ramp.astype(dtype))
    first = sat.first_saturated_group(ramp, thresh)
    old = _first_sat_old(ramp, thresh)
    assert first.dtype == np.int16
    np.testing.assert_array_equal(first, old)
    assert (old < ng).any() and (old == ng).any()
    for n in range(4):
        np.testing.assert_array_equal(sat.grow_min(first, n), _grow_old(old, n))


def test_first_saturated_group_float64_not_rounded_to_float32():
    # 0.49999999 DN under a float32 threshold: float32(value) == threshold, but the
    # value is below it; a float64 ramp keeps its float64 comparison
    thresh = np.full((1, 3), 50000.5, np.float32)
    ramp = np.full((2, 1, 3), 50000.49999999, np.float64)
    assert np.float32(ramp[0, 0, 0]) == thresh[0, 0]
    np.testing.assert_array_equal(sat.first_saturated_group(ramp, thresh), [[2, 2, 2]])
    np.testing.assert_array_equal(sat.first_saturated_group(ramp.astype(np.float32), thresh),
                                  [[0, 0, 0]])


def _crafted(ng, seed):
    sim = simulate(seed=seed, ng=ng, ny=14, nx=37, rate_range=(0.5, 6000.0), ncr=8,
                   cr_amp=(100, 20000))
    ramp, refs = crafted_saturation(sim.ramp, lin_refs(sim, 6, seed=seed))
    rng = np.random.default_rng(seed)
    ramp[rng.integers(0, ng, 5), rng.integers(0, 14, 5), rng.integers(0, 37, 5)] = 0
    dk = refs.dark.copy()
    dk[rng.integers(0, ng, 6), rng.integers(0, 14, 6), rng.integers(0, 37, 6)] = np.nan
    mask = refs.mask.copy()
    mask[7, 20:23] = dqflags.DO_NOT_USE
    sdq = np.zeros_like(mask)
    sdq[2, 30] = dqflags.NO_SAT_CHECK
    bdq = np.zeros_like(mask)
    bdq[11, 33] = dqflags.UNRELIABLE_BIAS
    return ramp, dataclasses.replace(refs, dark=dk, mask=mask, saturation_dq=sdq,
                                     superbias_dq=bdq)


_OFF = ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark")


@pytest.mark.parametrize("off", [None, *_OFF])
@pytest.mark.parametrize("refpix_geom", [True, False])
@pytest.mark.parametrize("nframes,groupgap", [(1, 0), (4, 1)])
def test_six_coefficient_cube_equals_step_and_fused_paths(off, refpix_geom, nframes, groupgap):
    ng = 6
    ramp, refs = _crafted(ng, seed=3 + nframes + (off is None))
    timing = RampTiming(ng, nframes, groupgap, 1.0 / nframes, 1.0)
    geom = SubarrayGeometry(2030, 37, 1, 14) if refpix_geom else None
    params = Detector1Params()
    if off is not None:
        params = dataclasses.replace(
            params, **{off: dataclasses.replace(getattr(params, off), enabled=False)})
    (_, q, _), calib = assert_cube_equals_step(ramp, refs, timing, params, geom)
    assert calib[17] == (off != "linearity") and calib[18].shape[0] == (6 if calib[17] else 2)
    assert calib[16] == (refpix_geom and off != "refpix")  # refpix applied or not
    if off != "saturation":
        assert (q & dqflags.SATURATED).any() and (q & dqflags.AD_FLOOR).any()
        if nframes > 1:
            dnu_only = ((q & dqflags.DO_NOT_USE) != 0) & ((q & dqflags.AD_FLOOR) == 0)
            assert dnu_only[1, 9, 10:13].all() and dnu_only[2, 3:7, 3:7].all()
    assert_fused_equal_step(ramp, refs, timing, params, geom)  # _calib_row and the cube


def test_refpix_pdq_cache_follows_the_step_switches():
    # the cached pixel DQ of the reference-pixel means is per (dq_init, saturation,
    # superbias) switches: a reference pixel DO_NOT_USE in the mask only counts with
    # dq_init on
    ramp, refs = _crafted(5, seed=9)
    timing = RampTiming(5, 1, 0, 1.0, 1.0)
    geom = SubarrayGeometry(2030, 37, 1, 14)
    ys, xs = np.nonzero(reference_mask(geom, ramp.shape[1:], RefPixParams(), refs.mask))
    mask = refs.mask.copy()
    mask[ys[:3], xs[:3]] = dqflags.DO_NOT_USE  # reference pixels left out of the means
    refs = dataclasses.replace(refs, mask=mask)
    means = {}
    for on in (True, False):
        params = dataclasses.replace(Detector1Params(), dq_init=dataclasses.replace(
            Detector1Params().dq_init, enabled=on), jump=JumpParams(enabled=False))
        means[on] = _calib_setup(ramp, refs, timing, params, geom)[0][14].copy()
        g, _, _, _ = calibrate_groups(ramp, refs, timing, params, geom)
        calib, _ = _calib_setup(ramp, refs, timing, params, geom)
        cg = np.empty_like(g)
        _calibrate_cube(ramp, *calib, cg, np.empty(g.shape, np.uint8),
                        np.empty(g.shape[1:], np.uint32))
        np.testing.assert_array_equal(cg.view(np.uint32), g.view(np.uint32))
    assert not np.array_equal(means[True], means[False])


def test_read_ramp_flip_equals_byteswap_then_flip(tmp_path, monkeypatch):
    from nirbeam.stream import irs2_layout
    from nirbeam.stream.uncal import read_ramp

    # every uint16 value, as the file stores it: big-endian int16 with BZERO=32768
    values = np.arange(65536, dtype=np.uint16)
    stored = (values ^ np.uint16(0x8000)).astype(">u2").tobytes()
    old = np.frombuffer(stored, np.uint16).copy()  # the old two passes
    if np.little_endian:
        old.byteswap(inplace=True)
    old ^= np.uint16(0x8000)
    np.testing.assert_array_equal(old, values)
    pad = 2880
    path = tmp_path / "raw.bin"
    path.write_bytes(b"\0" * pad + stored + stored[::-1])
    info = type("Info", (), dict(path=str(path), intstart=1, intend=2, data_offset=pad,
                                 meta=None))()
    monkeypatch.setattr(irs2_layout, "raw_shape", lambda meta: (4, 128, 128))
    r1, r2 = read_ramp(info, 1), read_ramp(info, 2)
    assert r1.dtype == np.uint16 and r1.dtype.isnative and r1.flags.c_contiguous
    np.testing.assert_array_equal(r1.ravel(), values)
    old2 = np.frombuffer(stored[::-1], np.uint16).copy()
    if np.little_endian:
        old2.byteswap(inplace=True)
    old2 ^= np.uint16(0x8000)
    np.testing.assert_array_equal(r2.ravel(), old2)
