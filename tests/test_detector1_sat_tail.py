"""Session 9 (satfast): the fused walk's saturated-tail path (``sat_tail``: pixels clean up
to their first SATURATED / DO_NOT_USE group, screened and fitted per row) against the
step path and the previous kernel (``old_fused_band`` of test_detector1_walk_identity),
bit for bit: a bright trace saturating at every group 0 .. ng - 1 (grown to the
neighbours), jumps just before the saturation, NaN groups before and in the tail (a
hook), both jump modes, hook and no hook, suppress_one_group on and off."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_detector1_fused import _offset_hook, _rich_refs
from test_detector1_sim import simulate
from test_detector1_walk_identity import FIELDS, _bits, old_fused_band

from nirbeam import dqflags
from nirbeam.transforms.detector1 import (
    _NO_CUBE,
    Detector1Params,
    RampTiming,
    _calib_setup,
    _calibrate_cube,
    _empty_result,
    _fit_args,
    _fused_band,
    _hook_output,
    run_detector1,
)
from nirbeam.transforms.jump import JumpParams
from nirbeam.transforms.ramp_fit import RampFitParams
from nirbeam.transforms.refpix import SubarrayGeometry

NY, NX = 12, 40


def sat_case(ng, seed):
    """Ramp and references: rows 3..8 bright, saturating at group ``gs`` (every value
    0 .. ng - 1 present), some with a jump at gs - 1 or gs - 2."""
    sim = simulate(seed=seed, ng=ng, ny=NY, nx=NX, rate_range=(0.5, 300.0),
                   ncr=NY * NX // 10, cr_amp=(60, 5000))
    refs = _rich_refs(sim, seed=seed)
    rng = np.random.default_rng(seed + 5)
    ramp = sim.ramp.astype(np.float64)
    sat = refs.saturation.copy()
    rows = np.arange(3, 9)
    # smooth in x (the saturation grows to the 8 neighbours: their minimum counts)
    gs = (np.arange(NX)[None, :] // 3 + np.arange(rows.size)[:, None] // 3) % ng
    if ng > 12:
        gs = (gs * 5 + rng.integers(0, 2, gs.shape)) % ng
    for i, y in enumerate(rows):
        ramp[:, y, :] = (10000.0 + np.cumsum(rng.poisson(1500.0, (ng, NX)), axis=0)
                         + rng.normal(0, 10, (ng, NX)))
        for x in range(NX):
            g0 = int(gs[i, x])
            if g0 >= 2 and rng.random() < 0.3:  # a jump just before the saturation
                ramp[g0 - 1 - int(rng.random() < 0.3):, y, x] += rng.uniform(200, 3000)
            sat[y, x] = np.float32(np.round(ramp[g0, y, x]) - 0.5)
    ramp = np.clip(np.round(ramp), 0, 65535).astype(np.uint16)
    return ramp, dataclasses.replace(refs, saturation=sat)


def nan_hook(groups, gdq, pdq):
    """The offset hook, then NaN in a few groups (before and inside the tails)."""
    out, var = _offset_hook(groups, gdq, pdq)
    rng = np.random.default_rng(int(groups.shape[0]))
    ng, ny, nx = groups.shape
    for _ in range(max(6, ny * nx // 20)):
        out[rng.integers(0, ng), rng.integers(0, ny), rng.integers(0, nx)] = np.nan
    return out, var


PARAMS = {
    "default": Detector1Params(),
    "iterative": Detector1Params(jump=JumpParams(min_diffs_single_pass=1000)),
    "no_suppress": Detector1Params(ramp_fit=RampFitParams(suppress_one_group=False)),
}
HOOKS = {"none": None, "offset": _offset_hook, "nan": nan_hook}


def _same(a, b, msg=""):
    for f in FIELDS:
        np.testing.assert_array_equal(_bits(getattr(a, f)), _bits(getattr(b, f)),
                                      err_msg=f"{msg} {f}")
    assert a.n_jumps == b.n_jumps, msg


@pytest.mark.parametrize("hook", list(HOOKS))
@pytest.mark.parametrize("name", list(PARAMS))
@pytest.mark.parametrize("ng", [5, 6, 8, 20, 70])
def test_fused_sat_tail_equals_step_path(ng, name, hook):
    ramp, refs = sat_case(ng, seed=ng + 17)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    geom = SubarrayGeometry(2030, NX, 1, NY)
    params = PARAMS[name]
    a = run_detector1(ramp, refs, timing, params, geom, HOOKS[hook])
    b = run_detector1(ramp, refs, timing, params, geom, HOOKS[hook], fused=False)
    _same(a, b, f"{ng} {name} {hook}")
    # the trace reaches the tail path: saturated pixels with a finite rate, short and long
    tr = slice(3, 9)
    sat = (a.dq[tr] & dqflags.SATURATED) != 0
    assert (sat & np.isfinite(a.rate[tr])).sum() > NX
    assert (sat & np.isnan(a.rate[tr])).any()  # saturated from group 0 (and 1, suppressed)


def _cube(ramp, refs, timing, params, geom, hook):
    ng, ny, nx = ramp.shape
    calib, _ = _calib_setup(ramp, refs, timing, params, geom)
    g = np.empty(ramp.shape, np.float32)
    q = np.empty(ramp.shape, np.uint8)
    p = np.empty((ny, nx), np.uint32)
    _calibrate_cube(ramp, *calib, g, q, p)
    if hook is not None:
        g, _ = _hook_output(hook(g, q, p))
    return calib, g, q, p


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("hook", list(HOOKS))
@pytest.mark.parametrize("ng", [5, 7, 20, 70])
def test_fused_band_sat_tail_equals_old(ng, hook, single):
    ramp, refs = sat_case(ng, seed=3 * ng + single)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    geom = SubarrayGeometry(2030, NX, 1, NY)
    for name in ("default", "no_suppress"):
        params = PARAMS[name]
        calib, g, q, p = _cube(ramp, refs, timing, params, geom, HOOKS[hook])
        res = []
        for fn in (old_fused_band, _fused_band):
            out = _empty_result(NY, NX)
            fit = _fit_args(refs, timing, params, True, single, out)
            if hook == "none":  # the fused kernel calibrating rows itself
                n = fn(ramp, 0, NY, False, *_NO_CUBE, *calib, *fit)
            else:
                n = fn(g, 0, NY, True, g, q, p, *calib, *fit)
            out.n_jumps = n
            res.append(out)
        _same(res[0], res[1], f"{ng} {hook} {single} {name}")
