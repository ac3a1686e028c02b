"""Session 15 (d1hook): detector1's hooked path, bit for bit against the old results.

* ``flicker_hook.hook_median_kernel`` gathers each block's slots alone, then computes
  ``use`` / ``d`` / ``s`` / ``n`` in a second, vectorised pass: the default fused hook ==
  its general path (the numpy-equal cleaner + correction_variance) on PRISM-wide blocks
  (64 columns, up to ~20 slots) with NaN, flagged groups and DO_NOT_USE pixels;
* ``detector1._fused_band`` stores a screened row's KLO / KHI / PANY and a clean row's
  five outputs for every pixel (the later loop rewrites the others): the hooked fused
  run == the step path (calibrate_groups with the hook, jump, ramp_fit), with cosmic
  rays (neighbour flags), saturation and 8 groups (the row screen on).
"""

from __future__ import annotations

import numpy as np
from _detector1_helpers import lin_refs as _lin_refs
from test_detector1_fused import _assert_same
from test_detector1_sim import simulate
from test_flicker import _flagged_ramp

from nirbeam import dqflags
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, run_detector1
from nirbeam.transforms.flicker import make_group_hook
from nirbeam.transforms.flicker_params import FlickerParams


def _prism_mask(rng, ny, nx):
    """A background mask like PRISM's: a trace band of rows out, ragged edges."""
    yy = np.arange(ny)[:, None]
    centre = ny / 2 + 3 * np.sin(np.arange(nx)[None, :] / 40.0)
    half = 6 + rng.integers(0, 5, (1, nx))
    return (np.abs(yy - centre) > half) & (rng.random((ny, nx)) > 0.05)


def test_default_fused_hook_equals_general_on_prism_blocks():
    rng = np.random.default_rng(1501)
    ng, ny, nx = 8, 32, 512
    groups, gdq, pdq, _ = _flagged_ramp(rng, ng, ny, nx, dtype=np.float32)
    mask = _prism_mask(rng, ny, nx)
    groups[3][rng.random((ny, nx)) < 0.02] = np.nan
    groups[5, 2, 11] = np.inf
    hook = make_group_hook(FlickerParams(), mask)
    assert type(hook).__name__ == "_FusedMedianHook"
    assert hook.layout.blocks[:, 2].max() >= 16  # blocks of ~16-20 slots, as PRISM's
    (out, (var, kind)), (rout, (rvar, rkind)) = (hook(groups, gdq, pdq),
                                                 hook.general(groups, gdq, pdq))
    assert kind == rkind
    np.testing.assert_array_equal(out.view(np.uint32), rout.view(np.uint32))
    np.testing.assert_array_equal(var.view(np.uint64), rvar.view(np.uint64))
    assert (gdq != 0).any() and (pdq & dqflags.DO_NOT_USE).any()


def test_hooked_fused_band_equals_step_path():
    ng = 8
    sim = simulate(seed=15, ng=ng, ny=32, nx=96, rate_range=(0.5, 3000.0), ncr=40,
                   cr_amp=(200.0, 20000.0))
    refs = _lin_refs(sim, 6, seed=15)
    ramp = sim.ramp.copy()
    ramp[5:, 20:22, 30:33] = 65535  # saturated tails
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    rng = np.random.default_rng(15)
    mask = _prism_mask(rng, 32, 96)
    hook = make_group_hook(FlickerParams(), mask)
    params = Detector1Params()
    fused = run_detector1(ramp, refs, timing, params, None, group_hook=hook)
    step = run_detector1(ramp, refs, timing, params, None, group_hook=hook, fused=False)
    _assert_same(fused, step)
    assert fused.n_jumps > 0 and (fused.dq & dqflags.SATURATED).any()
