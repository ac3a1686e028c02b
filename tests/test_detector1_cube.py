"""The calibrated cube of the hooked fused path (detector1._calibrate_cube, vectorised in
session 7) against the step path, with the sparse saturation flags it sets pixel by pixel:
partial saturation of a neighbour (NFRAMES > 1) and the group-2 read-pattern check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_detector1_fused import _assert_same, _offset_hook, _rich_refs
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


def _crafted(ng, seed):
    sim = simulate(seed=seed, ng=ng, ny=14, nx=19, rate_range=(0.5, 3000.0), ncr=8,
                   cr_amp=(100, 20000))
    refs = _rich_refs(sim, seed=seed)
    ramp = sim.ramp.copy()
    sat = refs.saturation.copy()
    sat[1:13, 1:16] = 60000.0  # no saturation of its own around the crafted pixels
    # partial saturation: group 2 above threshold * dilution, group 3 saturated
    ramp[0, 4:6, 4:6], ramp[1, 4:6, 4:6], ramp[2, 4:6, 4:6] = 20000, 40000, 59000
    ramp[3:, 4:6, 4:6] = 65535
    # the group-2 check: saturated from group 2, a 1 -> 2 jump above the remaining range
    # over the reads of group 2 (possible with NFRAMES > 1 only)
    ramp[0, 9, 10:13], ramp[1, 9, 10:13] = 10500, 40000
    ramp[2:, 9, 10:13] = 65535
    ramp[:, 12, 3:6] = 0  # A/D floor
    return ramp, dataclasses.replace(refs, saturation=sat)


@pytest.mark.parametrize("nframes,groupgap", [(1, 0), (2, 1), (4, 1)])
@pytest.mark.parametrize("ng", [4, 6, 12])
def test_cube_and_hooked_fused_equal_step_path_with_sparse_flags(ng, nframes, groupgap):
    ramp, refs = _crafted(ng, seed=ng + 10 * nframes)
    timing = RampTiming(ng, nframes, groupgap, 1.0 / nframes, 1.0)
    geom = SubarrayGeometry(2030, 19, 1, 14)
    params = Detector1Params()
    no_jump = dataclasses.replace(params, jump=JumpParams(enabled=False))
    g, q, p, _ = calibrate_groups(ramp, refs, timing, no_jump, geom)
    calib, _ = _calib_setup(ramp, refs, timing, no_jump, geom)
    cg, cq, cp = np.empty_like(g), np.empty_like(q), np.empty_like(p)
    _calibrate_cube(ramp, *calib, cg, cq, cp)
    np.testing.assert_array_equal(cg, g)
    np.testing.assert_array_equal(cq, q)
    np.testing.assert_array_equal(cp, p)
    dnu_only = ((q & dqflags.DO_NOT_USE) != 0) & ((q & dqflags.AD_FLOOR) == 0)
    # the crafted pixels get their DO_NOT_USE flags (the test exercises the sparse path)
    if nframes > 1:
        assert dnu_only[1, 9, 10:13].all()  # the group-2 check
        assert dnu_only[2, 3:7, 3:7].all()  # partial saturation, grown to the neighbours
    else:
        assert not dnu_only[1:3, 1:13, 1:16].any()
    assert (q[:, 12, 3:6] & dqflags.AD_FLOOR).all()
    for hook in (_offset_hook, lambda a, b, c: a):
        fused = run_detector1(ramp, refs, timing, params, geom, hook)
        _assert_same(fused, run_detector1(ramp, refs, timing, params, geom, hook, fused=False))
        _assert_same(fused, run_detector1(ramp, refs, timing, params, geom, hook,
                                          parallel=True))
