"""detector1 kernels against stcal 1.20 on identical arrays."""

from __future__ import annotations

import numpy as np
import pytest
from test_detector1_sim import DQFLAGS, simulate, stcal_jump, stcal_ramp_fit

from nirbeam import dqflags
from nirbeam.transforms import jump as jump_mod
from nirbeam.transforms.detector1 import (
    Detector1Params,
    RampTiming,
    calibrate_groups,
    fit_ramps,
    run_detector1,
)
from nirbeam.transforms.reference import ReferenceArrays
from nirbeam.transforms.refpix import SubarrayGeometry

pytest.importorskip("stcal")


def _groups(sim):
    return (sim.ramp.astype(np.float32) - np.float32(sim.refs.superbias[0, 0])).astype(np.float32)


@pytest.mark.parametrize("ng", [3, 4, 5, 8, 11, 25])
def test_jump_flags_match_stcal(ng):
    sim = simulate(seed=100 + ng, ng=ng, ny=40, nx=40, rate_range=(1.0, 500.0), ncr=150,
                   cr_amp=(50.0, 4000.0))
    groups = _groups(sim)
    gdq0 = np.zeros(groups.shape, np.uint8)
    # a few saturated tails and DO_NOT_USE groups
    gdq0[ng - 1, :3, :] = dqflags.SATURATED
    gdq0[1, 5, :7] = dqflags.DO_NOT_USE
    pdq = np.zeros(groups.shape[1:], np.uint32)
    gain = sim.refs.gain.copy()
    gain[0, 0] = np.nan
    gain[0, 1] = 0.0
    mine_gdq = gdq0.copy()
    mine_pdq = pdq.copy()
    n, skipped = jump_mod.detect_jumps(groups.copy(), mine_gdq, mine_pdq, sim.refs.readnoise,
                                       gain, 1)
    ref_gdq, ref_pdq, ref_n = stcal_jump(groups, gdq0, pdq, sim.refs.readnoise, gain)
    assert not skipped
    assert n == ref_n
    np.testing.assert_array_equal(mine_pdq, ref_pdq)
    jm = (mine_gdq & dqflags.JUMP_DET) > 0
    js = (ref_gdq & dqflags.JUMP_DET) > 0
    assert np.mean(jm == js) > 0.999
    at_cr = [(g, y, x) for g, y, x, _ in sim.crs]
    agree = np.mean([jm[k] == js[k] for k in at_cr])
    assert agree >= 0.99
    np.testing.assert_array_equal(mine_gdq & ~np.uint8(dqflags.JUMP_DET),
                                  ref_gdq & ~np.uint8(dqflags.JUMP_DET))


def test_jump_skipped_below_three_groups():
    sim = simulate(seed=1, ng=2, ny=8, nx=8, ncr=5)
    gdq = np.zeros(sim.ramp.shape, np.uint8)
    n, skipped = jump_mod.detect_jumps(_groups(sim), gdq, np.zeros((8, 8), np.uint32),
                                       sim.refs.readnoise, sim.refs.gain, 1)
    ref_gdq, _, ref_n = stcal_jump(_groups(sim), gdq, np.zeros((8, 8), np.uint32),
                                   sim.refs.readnoise, sim.refs.gain)
    assert skipped and n == 0 and ref_n == -99
    assert not np.any(gdq) and not np.any(ref_gdq)


def _compare_fit(res, ref, slope_rtol=1e-3):
    slope, dq, vp, vr, err = ref
    np.testing.assert_array_equal(res.dq, dq)
    both = np.isfinite(res.rate) & np.isfinite(slope)
    np.testing.assert_array_equal(np.isfinite(res.rate), np.isfinite(slope))
    d = np.abs(res.rate[both] - slope[both])
    scale = np.maximum(np.abs(slope[both]), 1e-3)
    assert np.all(d <= slope_rtol * scale + 1e-6), np.max(d / scale)
    assert np.median(d / scale) < 1e-5
    for a, b in ((res.var_poisson, vp), (res.var_rnoise, vr), (res.err, err)):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-12)
    return both


@pytest.mark.parametrize("nframes,tframe,tgroup", [(1, 1.0, 1.0), (4, 0.25, 1.25)])
@pytest.mark.parametrize("ng", [1, 2, 3, 5, 12, 30])
def test_ramp_fit_matches_stcal(ng, nframes, tframe, tgroup):
    sim = simulate(seed=200 + ng, ng=ng, ny=30, nx=30, rate_range=(0.2, 3000.0),
                   ncr=60 if ng > 2 else 0)
    groups = _groups(sim)
    gdq = np.zeros(groups.shape, np.uint8)
    rng = np.random.default_rng(ng)
    # saturation from a random group on, in 10% of pixels (incl. group 0 = fully saturated)
    sat = rng.random(groups.shape[1:]) < 0.1
    first = rng.integers(0, ng, groups.shape[1:])
    for g in range(ng):
        gdq[g][sat & (first <= g)] |= dqflags.SATURATED
    if ng > 2:
        gdq, _, _ = stcal_jump(groups, gdq, np.zeros(groups.shape[1:], np.uint32),
                               sim.refs.readnoise, sim.refs.gain)
        gdq[2, 3, :5] |= dqflags.DO_NOT_USE
        gdq[1:, 4, :4] |= dqflags.JUMP_DET  # every group a jump: 2-group / 1-group segments
    pdq = np.zeros(groups.shape[1:], np.uint32)
    pdq[0, :3] = dqflags.HOT
    gain = sim.refs.gain.copy()
    gain[1, 1] = 0.0
    refs = ReferenceArrays(sim.refs.mask, sim.refs.saturation, sim.refs.saturation_dq,
                           sim.refs.superbias, sim.refs.superbias_dq, None,
                           sim.refs.linearity_dq, None, sim.refs.dark_dq, sim.refs.readnoise,
                           gain)
    timing = RampTiming(ng, nframes, 1 if nframes > 1 else 0, tframe, tgroup)
    res = fit_ramps(groups, gdq, pdq, refs, timing)
    ref = stcal_ramp_fit(groups, gdq, pdq, sim.refs.readnoise, gain, tgroup, tframe,
                         nframes=nframes)
    both = _compare_fit(res, ref)
    assert both.mean() > 0.8


def test_full_chain_matches_stcal_steps():
    """Saturation, superbias, linearity, dark (stcal/numpy), jump and OLS_C vs run_detector1."""
    from stcal.linearity.linearity import linearity_correction
    from stcal.saturation.saturation import flag_saturated_pixels

    ng, ny, nx = 9, 32, 48
    sim = simulate(seed=42, ng=ng, ny=ny, nx=nx, rate_range=(1.0, 3000.0), ncr=80,
                   saturation=30000.0)
    rng = np.random.default_rng(4)
    bias = (10000.0 + rng.normal(0, 30, (ny, nx))).astype(np.float32)
    bias[2, 2] = np.nan
    sat = np.full((ny, nx), 30000.0, np.float32)
    sat[3, 3] = np.nan
    sat_dq = np.zeros((ny, nx), np.uint32)
    sat_dq[4, 4] = dqflags.NO_SAT_CHECK
    coeffs = np.zeros((4, ny, nx), np.float32)
    coeffs[1] = 1.0
    coeffs[2] = 2e-6
    coeffs[3] = 1e-11
    coeffs[2, 5, 5] = np.nan
    coeffs[1, 6, 6] = 0.0
    lin_dq = np.zeros((ny, nx), np.uint32)
    lin_dq[7, 7] = dqflags.NO_LIN_CORR
    dark = (rng.normal(0, 2, (ng, ny, nx)) + np.arange(ng)[:, None, None] * 0.5).astype(np.float32)
    dark[0, 8, 8] = np.nan
    mask = np.zeros((ny, nx), np.uint32)
    mask[9, 9] = dqflags.DEAD | dqflags.DO_NOT_USE
    gain = sim.refs.gain
    rn = sim.refs.readnoise
    refs = ReferenceArrays(mask, sat, sat_dq, bias, np.zeros((ny, nx), np.uint32), coeffs,
                           lin_dq, dark, np.zeros((ny, nx), np.uint32), rn, gain)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    # placed away from the full-frame border (SUBSTRT2=100): no reference pixels, as in stcal
    res = run_detector1(sim.ramp, refs, timing, Detector1Params(), SubarrayGeometry(100, nx, 100, ny))

    # --- the stcal chain
    data = sim.ramp.astype(np.float32)[None].copy()
    gdq = np.zeros(data.shape, np.uint8)
    pdq = mask.copy()
    read_pattern = [[g + 1] for g in range(ng)]
    gdq, pdq, _ = flag_saturated_pixels(data, gdq, pdq, sat.copy(), sat_dq.copy(), 65535.0,
                                        DQFLAGS, n_pix_grow_sat=1, read_pattern=read_pattern,
                                        bias=np.nan_to_num(bias))
    data -= np.nan_to_num(bias)
    data, pdq, _ = linearity_correction(data, gdq, pdq, coeffs.copy(), lin_dq.copy(), DQFLAGS)
    data[0] -= np.nan_to_num(dark)
    jgdq, jpdq, _ = stcal_jump(data[0], gdq[0], pdq, rn, gain)
    ref = stcal_ramp_fit(data[0], jgdq, jpdq, rn, gain, 1.0, 1.0)
    groups, mygdq, mypdq, _ = calibrate_groups(sim.ramp, refs, timing, Detector1Params(),
                                               SubarrayGeometry(100, nx, 100, ny))
    np.testing.assert_array_equal(mygdq & ~np.uint8(dqflags.JUMP_DET),
                                  jgdq & ~np.uint8(dqflags.JUMP_DET))
    np.testing.assert_allclose(groups, data[0], rtol=1e-6, atol=1e-3)
    assert np.mean((mygdq & 4) == (jgdq & 4)) > 0.999
    agree = (res.dq == ref[1])
    assert agree.mean() > 0.99
    sel = agree & np.isfinite(res.rate) & np.isfinite(ref[0])
    rel = np.abs(res.rate[sel] - ref[0][sel]) / np.maximum(np.abs(ref[0][sel]), 1e-3)
    assert np.all(rel < 1e-3) and np.median(rel) < 1e-5
    assert mypdq[3, 3] & dqflags.NO_SAT_CHECK and mypdq[5, 5] & dqflags.NO_LIN_CORR
    assert mypdq[6, 6] & dqflags.NO_LIN_CORR


def test_saturation_matches_stcal_with_read_pattern():
    from stcal.saturation.saturation import flag_saturated_pixels

    from nirbeam.transforms.dq_init import dq_init
    from nirbeam.transforms.saturation import SaturationParams, flag_saturation

    rng = np.random.default_rng(8)
    for nframes, groupgap, ngrow in ((1, 0, 1), (4, 1, 1), (2, 0, 2), (1, 0, 0)):
        ng, ny, nx = 7, 20, 25
        ramp = np.cumsum(rng.integers(0, 9000, (ng, ny, nx)), axis=0).clip(0, 65535)
        ramp[:, 0, 0] = 0
        ramp[3, 1, 1] = 0
        ramp = ramp.astype(np.uint16)
        sat = rng.uniform(20000, 50000, (ny, nx)).astype(np.float32)
        sat[2, 2] = np.nan
        sat_dq = np.zeros((ny, nx), np.uint32)
        sat_dq[5, 5] = dqflags.NO_SAT_CHECK | dqflags.DO_NOT_USE
        bias = rng.uniform(100, 2000, (ny, nx)).astype(np.float32)
        gdq, pdq = dq_init(np.zeros((ny, nx), np.uint32), ng)
        flag_saturation(ramp, gdq, pdq, sat, sat_dq, bias, nframes, groupgap,
                        SaturationParams(n_pix_grow_sat=ngrow))
        rp = [[g * (nframes + groupgap) + k + 1 for k in range(nframes)] for g in range(ng)]
        rg, rpdq, _ = flag_saturated_pixels(
            ramp.astype(np.float32)[None].copy(), np.zeros((1, ng, ny, nx), np.uint8),
            np.zeros((ny, nx), np.uint32), sat.copy(), sat_dq.copy(), 65535.0, DQFLAGS,
            n_pix_grow_sat=ngrow, read_pattern=rp, bias=bias)
        np.testing.assert_array_equal(gdq, rg[0], err_msg=f"nframes={nframes}")
        np.testing.assert_array_equal(pdq, rpdq)
