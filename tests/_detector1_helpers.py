"""Shared set-ups of the detector1 calibration tests (test_detector1_cube,
_calib_prepass, _linearity_rows): reference arrays with crafted saturation pixels or
linearity coefficients, and the checks that the calibrated cube (``_calibrate_cube``,
the hooked path's input) and the fused paths equal the step path bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
from test_detector1_fused import _assert_same, _rich_refs

from nirbeam import dqflags
from nirbeam.transforms.detector1 import (
    _calib_setup,
    _calibrate_cube,
    calibrate_groups,
    run_detector1,
)
from nirbeam.transforms.jump import JumpParams


def lin_refs(sim, nc, seed):
    """:func:`_rich_refs` with ``nc`` linearity coefficients: NaN coefficients, zero linear
    terms, NO_LIN_CORR and DO_NOT_USE in the linearity DQ (one NO_LIN_CORR pixel with a NaN
    coefficient)."""
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


def crafted_saturation(ramp, refs):
    """Copies of ``ramp`` and ``refs`` with the pixels of the sparse saturation flags
    (frames of at least 14 x 16): no saturation of its own in [1:13, 1:16]; partial
    saturation at [4:6, 4:6] (group 2 above threshold * dilution, group 3 saturated: a
    neighbour's DO_NOT_USE with NFRAMES > 1); the group-2 check at [9, 10:13] (saturated
    from group 2 after a 1 -> 2 jump above the remaining range over the reads of group 2,
    possible with NFRAMES > 1 only); the A/D floor at [12, 3:6]."""
    ramp = ramp.copy()
    sat = refs.saturation.copy()
    sat[1:13, 1:16] = 60000.0
    ramp[0, 4:6, 4:6], ramp[1, 4:6, 4:6], ramp[2, 4:6, 4:6] = 20000, 40000, 59000
    ramp[3:, 4:6, 4:6] = 65535
    ramp[0, 9, 10:13], ramp[1, 9, 10:13] = 10500, 40000
    ramp[2:, 9, 10:13] = 65535
    ramp[:, 12, 3:6] = 0
    return ramp, dataclasses.replace(refs, saturation=sat)


def assert_cube_equals_step(ramp, refs, timing, params, geom):
    """``_calib_setup`` + ``_calibrate_cube`` == ``calibrate_groups`` (the step path), with
    the jump step off: groups as float32 bits, group and pixel DQ. Returns the step path's
    ``(groups, gdq, pdq)`` and ``_calib_setup``'s tuple."""
    no_jump = dataclasses.replace(params, jump=JumpParams(enabled=False))
    g, q, p, _ = calibrate_groups(ramp, refs, timing, no_jump, geom)
    calib, _ = _calib_setup(ramp, refs, timing, no_jump, geom)
    cg, cq, cp = np.empty_like(g), np.empty_like(q), np.empty_like(p)
    _calibrate_cube(ramp, *calib, cg, cq, cp)
    np.testing.assert_array_equal(cg.view(np.uint32), g.view(np.uint32))
    np.testing.assert_array_equal(cq, q)
    np.testing.assert_array_equal(cp, p)
    return (g, q, p), calib


def assert_fused_equal_step(ramp, refs, timing, params, geom):
    """The unhooked fused path (``_calib_row``) and the hooked one with an identity hook
    (the cube) == the step path."""
    step = run_detector1(ramp, refs, timing, params, geom, fused=False)
    _assert_same(run_detector1(ramp, refs, timing, params, geom), step)
    _assert_same(run_detector1(ramp, refs, timing, params, geom,
                               group_hook=lambda g, q, p: g), step)
