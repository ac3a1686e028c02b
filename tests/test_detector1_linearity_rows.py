"""detector1's row-wise linearity (``_lin_status_row``, ``_lin_dark_row``: the six-
coefficient polynomial per pixel in registers, other counts a pass per coefficient) ==
the step path's per-pixel :mod:`nirbeam.transforms.linearity`, bit for bit: the
calibrated cube (``_calibrate_cube``, the hooked path's input) and the rates of the
fused paths (unhooked: ``_calib_row``; hooked), for 1 .. 7 coefficients with NaN
coefficients, zero linear terms, NO_LIN_CORR in the reference DQ and saturated groups."""

from __future__ import annotations

import pytest
from _detector1_helpers import assert_cube_equals_step, assert_fused_equal_step, lin_refs
from test_detector1_sim import simulate

from nirbeam import dqflags
from nirbeam.transforms.detector1 import Detector1Params, RampTiming
from nirbeam.transforms.refpix import SubarrayGeometry


@pytest.mark.parametrize("nc", [1, 2, 3, 5, 6, 7])
def test_row_linearity_equals_step_path(nc):
    ng = 7
    sim = simulate(seed=40 + nc, ng=ng, ny=17, nx=37, rate_range=(0.5, 6000.0), ncr=10,
                   cr_amp=(100, 20000))
    refs = lin_refs(sim, nc, seed=nc)
    geom = SubarrayGeometry(2030, 37, 1, 17)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    params = Detector1Params()
    (_, q, p), _ = assert_cube_equals_step(sim.ramp, refs, timing, params, geom)
    assert (p & dqflags.NO_LIN_CORR).any() and (q & dqflags.SATURATED).any()
    assert_fused_equal_step(sim.ramp, refs, timing, params, geom)
