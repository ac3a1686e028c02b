"""The calibrated cube of the hooked fused path (detector1._calibrate_cube, vectorised in
session 7) against the step path, with the sparse saturation flags it sets pixel by pixel:
partial saturation of a neighbour (NFRAMES > 1) and the group-2 read-pattern check."""

from __future__ import annotations

import pytest
from _detector1_helpers import assert_cube_equals_step, crafted_saturation
from test_detector1_fused import _assert_same, _offset_hook, _rich_refs
from test_detector1_sim import simulate

from nirbeam import dqflags
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, run_detector1
from nirbeam.transforms.refpix import SubarrayGeometry


def _crafted(ng, seed):
    sim = simulate(seed=seed, ng=ng, ny=14, nx=19, rate_range=(0.5, 3000.0), ncr=8,
                   cr_amp=(100, 20000))
    return crafted_saturation(sim.ramp, _rich_refs(sim, seed=seed))


@pytest.mark.parametrize("nframes,groupgap", [(1, 0), (2, 1), (4, 1)])
@pytest.mark.parametrize("ng", [4, 6, 12])
def test_cube_and_hooked_fused_equal_step_path_with_sparse_flags(ng, nframes, groupgap):
    ramp, refs = _crafted(ng, seed=ng + 10 * nframes)
    timing = RampTiming(ng, nframes, groupgap, 1.0 / nframes, 1.0)
    geom = SubarrayGeometry(2030, 19, 1, 14)
    params = Detector1Params()
    (_, q, _), _ = assert_cube_equals_step(ramp, refs, timing, params, geom)  # float bits
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
