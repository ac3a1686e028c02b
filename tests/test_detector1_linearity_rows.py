"""detector1's row-wise linearity (``_lin_status_row``, ``_lin_dark_row``: the six-
coefficient polynomial per pixel in registers, other counts a pass per coefficient) ==
the step path's per-pixel :mod:`nirbeam.transforms.linearity`, bit for bit: the
calibrated cube (``_calibrate_cube``, the hooked path's input) and the rates of the
fused paths (unhooked: ``_calib_row``; hooked), for 1 .. 7 coefficients with NaN
coefficients, zero linear terms, NO_LIN_CORR in the reference DQ and saturated groups."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_detector1_fused import _assert_same, _rich_refs
from test_detector1_sim import simulate

from nirbeam import dqflags
from nirbeam.transforms.detector1 import (
    Detector1Params,
    RampTiming,
    _calib_setup,
    _calibrate_cube,
    calibrate_groups,
    run_detector1,
)
from nirbeam.transforms.jump import JumpParams
from nirbeam.transforms.refpix import SubarrayGeometry


def _lin_refs(sim, nc, seed):
    ng, ny, nx = sim.ramp.shape
    rng = np.random.default_rng(seed)
    refs = _rich_refs(sim, seed=seed)
    c = np.zeros((nc, ny, nx), np.float32)
    c[0] = rng.normal(0, 5, (ny, nx))
    if nc > 1:
        c[1] = rng.uniform(0.98, 1.02, (ny, nx))
    for k in range(2, nc):
        c[k] = rng.normal(0, 10.0 ** (-4 - 3 * (k - 2)), (ny, nx))
    c[rng.integers(0, nc, 6), rng.integers(0, ny, 6), rng.integers(0, nx, 6)] = np.nan
    if nc > 1:
        c[1, rng.integers(0, ny, 4), rng.integers(0, nx, 4)] = 0.0
    ld = np.zeros((ny, nx), np.uint32)
    ld[rng.integers(0, ny, 8), rng.integers(0, nx, 8)] = dqflags.NO_LIN_CORR
    ld[rng.integers(0, ny, 4), rng.integers(0, nx, 4)] = dqflags.DO_NOT_USE
    ld[2, 2] = dqflags.NO_LIN_CORR  # and a NaN coefficient (below)
    c[0, 2, 2] = np.nan
    return dataclasses.replace(refs, linearity=c, linearity_dq=ld)


@pytest.mark.parametrize("nc", [1, 2, 3, 5, 6, 7])
def test_row_linearity_equals_step_path(nc):
    ng = 7
    sim = simulate(seed=40 + nc, ng=ng, ny=17, nx=37, rate_range=(0.5, 6000.0), ncr=10,
                   cr_amp=(100, 20000))
    refs = _lin_refs(sim, nc, seed=nc)
    geom = SubarrayGeometry(2030, 37, 1, 17)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    params = Detector1Params()
    no_jump = dataclasses.replace(params, jump=JumpParams(enabled=False))
    g, q, p, _ = calibrate_groups(sim.ramp, refs, timing, no_jump, geom)
    assert (p & dqflags.NO_LIN_CORR).any() and (q & dqflags.SATURATED).any()
    calib, _ = _calib_setup(sim.ramp, refs, timing, no_jump, geom)
    cg, cq, cp = np.empty_like(g), np.empty_like(q), np.empty_like(p)
    _calibrate_cube(sim.ramp, *calib, cg, cq, cp)
    np.testing.assert_array_equal(cg.view(np.uint32), g.view(np.uint32))
    np.testing.assert_array_equal(cq, q)
    np.testing.assert_array_equal(cp, p)
    step = run_detector1(sim.ramp, refs, timing, params, geom, fused=False)
    _assert_same(run_detector1(sim.ramp, refs, timing, params, geom), step)
    _assert_same(run_detector1(sim.ramp, refs, timing, params, geom,
                               group_hook=lambda g, q, p: g), step)
