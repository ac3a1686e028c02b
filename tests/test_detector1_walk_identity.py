"""Session 8 (walk): the hooked fused path's rows copied group-major only, the pixel-major
copy per pixel on demand (detector1._load_px). Oracle: ``old_fused_band``, a verbatim copy
of the previous ``detector1._fused_band`` (only renamed); new == old bit for bit (uint32 /
uint64 views) on seeded simulator-like ramps with jumps, saturation, NaN references,
DO_NOT_USE pixels, zero gain / read noise, 3 / 5 / 20 / 70 groups, both jump modes, and
the step path (fused=False) equal too."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numba import njit
from test_detector1_fused import _offset_hook, _rich_refs
from test_detector1_sim import simulate

from nirbeam import dqflags
from nirbeam.transforms import jump as _jump
from nirbeam.transforms import ramp_fit as _rf
from nirbeam.transforms.detector1 import (
    _BAD,
    _JUMP,
    _SCREEN_MAX_DIFFS,
    _U_BADGAIN,
    _U_DNU,
    _U_SAT,
    Detector1Params,
    RampTiming,
    _calib_row,
    _calib_setup,
    _calibrate_cube,
    _empty_result,
    _fit_args,
    _fused_band,
    _hook_output,
    run_detector1,
)
from nirbeam.transforms.jump import JumpParams
from nirbeam.transforms.refpix import SubarrayGeometry

FIELDS = ("rate", "err", "dq", "var_poisson", "var_rnoise")


@njit(cache=True, error_model="numpy")
def old_fused_band(ramp, r0, r1, pre, g_in, q_in, p_in,
                do_dqinit, mask,
                do_sat, satidx, psat, n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1,
                bias, sb_dq,
                refmeans, parity0, do_refpix,
                do_lin, coeffs, lin_dq,
                do_dark, dark, dark_dq,
                do_jump, readnoise, gain, nframes, single_pass, rej, thr2, thr3, do_nb, nb_min,
                nb_max,
                tgroup, tframe, suppress1g, wtab, stab,
                rate, err, dq, var_p, var_r):
    ng, ny, nx = ramp.shape
    D = np.empty((3, nx, ng), np.float32)
    Q = np.empty((3, nx, ng), np.uint8)
    NB = np.zeros((3, nx, ng), np.uint8)
    PANY = np.zeros((3, nx), np.bool_)
    RANY = np.zeros(3, np.bool_)
    PDQ = np.zeros((3, nx), np.uint32)
    fd = np.empty(ng + 1, np.float64)
    wk = np.empty(ng + 1, np.float64)
    keys = np.empty(ng + 1, np.float32)
    kpos = np.empty(ng + 1, np.int64)
    LOK = np.zeros(nx, np.bool_)
    LG = np.zeros(nx, np.bool_)
    VR = np.empty(nx, np.float32)
    RR = np.empty(nx, np.float32)
    KLO = np.full((3, nx), -1, np.int64)
    KHI = np.full((3, nx), -1, np.int64)
    ss = np.empty(ng + 1, np.int64)
    se = np.empty(ng + 1, np.int64)
    gl = np.empty(ng, np.uint8)
    # the row screen of clean pixels (jump.screen_row): its rank counts cost (ng - 1)^2
    # per pixel, slower than the scalar walk beyond _SCREEN_MAX_DIFFS differences
    screen = do_jump and 4 <= ng - 1 <= _SCREEN_MAX_DIFFS
    SA = np.empty((max(ng - 1, 1), nx), np.float64)
    SK = np.empty((max(ng - 1, 1), nx), np.float32)
    SR = np.empty((max(ng - 1, 1), nx), np.int32)
    SW = np.empty((5, nx), np.float64)
    SI = np.empty((3, nx), np.int32)
    GR = np.empty((3, ng, nx), np.float32)  # the ring's rows, group-major (screen, fit)
    QR = np.empty((ng, nx), np.uint8)
    FW = np.empty((8, nx), np.float64)
    FPW = np.empty(nx, np.int64)
    SOK = np.zeros(nx, np.bool_)
    SLO = np.empty(nx, np.int64)
    SHI = np.empty(nx, np.int64)
    SOKR = np.zeros((3, nx), np.bool_)  # SOK of the ring's rows
    FS = np.empty(nx, np.float64)  # ramp_fit.fit_clean_row outputs of the row finalized
    FE = np.empty(nx, np.float64)
    FP = np.empty(nx, np.float64)
    FR = np.empty(nx, np.float64)
    dcur = 0.0
    total = 0
    c0 = max(r0 - 1, 0)
    c1 = min(r1 + 1, ny)
    for cr in range(c0, c1 + 1):
        if cr < c1:
            # ---- calibrate (or load) + jump-test row cr into ring slot s
            s = cr % 3
            rany = False
            if pre:  # calibrated (and group-hooked) groups given: load the row
                for x in range(nx):
                    PDQ[s, x] = p_in[cr, x]
                for g in range(ng):
                    for x in range(nx):
                        D[s, x, g] = g_in[g, cr, x]
                        Q[s, x, g] = q_in[g, cr, x]
            else:
                _calib_row(ramp, cr, s, D, Q, PDQ, LOK, VR, RR, LG, do_dqinit, mask, do_sat, satidx, psat,
                           n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1, bias,
                           sb_dq, refmeans, parity0, do_refpix, do_lin, coeffs, lin_dq,
                           do_dark, dark, dark_dq)
            if screen:
                for g in range(ng):
                    if pre:
                        for x in range(nx):
                            GR[s, g, x] = g_in[g, cr, x]
                            QR[g, x] = q_in[g, cr, x]
                    else:
                        for x in range(nx):
                            GR[s, g, x] = D[s, x, g]
                            QR[g, x] = Q[s, x, g]
                _jump.screen_row(GR[s], QR, gain[cr], readnoise[cr], nframes, rej, SA, SK, SR,
                                 SW, SI, SOK, SLO, SHI, single_pass)
                for x in range(nx):
                    SOKR[s, x] = SOK[x]
            for x in range(nx):
                anynb = False
                if do_jump:
                    gn = gain[cr, x]
                    if not (gn > 0):
                        PDQ[s, x] |= _U_BADGAIN
                    if screen and SOK[x]:  # no jump: what jump_pixel would return
                        KLO[s, x] = SLO[x]
                        KHI[s, x] = SHI[x]
                        PANY[s, x] = False
                        continue
                    n, anynb, klo, khi = _jump.jump_pixel(
                        D[s, x], Q[s, x], ng, gn, readnoise[cr, x], nframes, single_pass, rej,
                        thr2, thr3, do_nb, nb_min, nb_max, fd, wk, NB[s, x], keys, kpos)
                    KLO[s, x] = klo
                    KHI[s, x] = khi
                    if cr >= r0 and cr < r1:  # halo rows are counted by their own band
                        total += n
                PANY[s, x] = anynb
                rany = rany or anynb
            RANY[s] = rany
        # ---- finalize row f = cr - 1 (its neighbours cr - 2 and cr are done)
        f = cr - 1
        if f < r0 or f >= r1:
            continue
        sf = f % 3
        up = (f - 1) % 3 if f - 1 >= c0 else -1
        dn = (f + 1) % 3 if f + 1 < c1 else -1
        near = RANY[sf] or (up >= 0 and RANY[up]) or (dn >= 0 and RANY[dn])
        if screen:
            _rf.fit_clean_row(GR[sf], gain[f], readnoise[f], nframes, tgroup, dcur, wtab, stab,
                              KLO[sf], KHI[sf], FW, FPW, FS, FE, FP, FR)
        for x in range(nx):
            q = Q[sf, x]
            if near:
                cand = ((up >= 0 and PANY[up, x]) or (dn >= 0 and PANY[dn, x])
                        or (x > 0 and PANY[sf, x - 1]) or (x < nx - 1 and PANY[sf, x + 1]))
                if cand:
                    for g in range(1, ng):
                        if q[g] & _BAD:
                            continue
                        # NB of a pixel is valid only where PANY (jump_pixel_fast)
                        if ((up >= 0 and PANY[up, x] and NB[up, x, g])
                                or (dn >= 0 and PANY[dn, x] and NB[dn, x, g])
                                or (x > 0 and PANY[sf, x - 1] and NB[sf, x - 1, g])
                                or (x < nx - 1 and PANY[sf, x + 1] and NB[sf, x + 1, g])):
                            q[g] |= _JUMP
            pq = PDQ[sf, x]
            clean = screen and SOKR[sf, x] and gain[f, x] > 0 and not (pq & (_U_DNU | _U_SAT))
            if clean:
                for g in range(ng):
                    if q[g] != 0:
                        clean = False
                        break
            if clean:
                rate[f, x] = FS[x]  # fit_pixel's result for a clean pixel (fit_clean_row)
                err[f, x] = FE[x]
                dq[f, x] = pq
                var_p[f, x] = FP[x]
                var_r[f, x] = FR[x]
                continue
            for g in range(ng):
                gl[g] = q[g]
            rr, ee, qq, vp, vr = _rf.fit_pixel(D[sf, x], gl, ng, PDQ[sf, x], gain[f, x],
                                               readnoise[f, x], nframes, tgroup, tframe, dcur,
                                               suppress1g, wtab, stab, keys, ss, se,
                                               KLO[sf, x], KHI[sf, x], do_jump)
            rate[f, x] = rr
            err[f, x] = ee
            dq[f, x] = qq
            var_p[f, x] = vp
            var_r[f, x] = vr
    return total


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def _case(ng, seed, ny=13, nx=37):
    sim = simulate(seed=seed, ng=ng, ny=ny, nx=nx, rate_range=(0.5, 3000.0),
                   ncr=min(ny * nx // 4, max(3, ny * nx * ng // 60)), cr_amp=(60, 20000))
    refs = _rich_refs(sim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    mask = refs.mask.copy()
    mask[rng.random((ny, nx)) < 0.03] |= dqflags.DO_NOT_USE
    bias = refs.superbias.copy()
    bias[rng.random((ny, nx)) < 0.02] = np.nan
    sat = refs.saturation.copy()
    sat[rng.random((ny, nx)) < 0.02] = np.nan
    sat[ny // 2, :5] = 10500.0  # saturates early
    ramp = sim.ramp.copy()
    ramp[:, ny - 2, 2:5] = 0  # A/D floor
    return ramp, dataclasses.replace(refs, mask=mask, superbias=bias, saturation=sat)


def _hooks(ny, nx):
    from nirbeam.transforms.flicker import FlickerParams, make_group_hook

    m = np.ones((ny, nx), bool)
    m[ny // 3: ny // 2] = False
    return {"offset": _offset_hook, "flicker": make_group_hook(FlickerParams(), m)}


def _both(ramp, refs, timing, params, geom, hook, single):
    """Old and new _fused_band on the same hooked cube, forced jump mode ``single``."""
    ng, ny, nx = ramp.shape
    calib, _ = _calib_setup(ramp, refs, timing, params, geom)
    g = np.empty(ramp.shape, np.float32)
    q = np.empty(ramp.shape, np.uint8)
    p = np.empty((ny, nx), np.uint32)
    _calibrate_cube(ramp, *calib, g, q, p)
    g, _ = _hook_output(hook(g, q, p))
    res = []
    for fn in (old_fused_band, _fused_band):
        out = _empty_result(ny, nx)
        fit = _fit_args(refs, timing, params, True, single, out)
        n = fn(g, 0, ny, True, g, q, p, *calib, *fit)
        res.append((n, out))
    return res


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("hook", ["offset", "flicker"])
@pytest.mark.parametrize("ng", [3, 5, 20, 70])
def test_new_fused_band_equals_old(ng, hook, single):
    ny, nx = 13, 37
    ramp, refs = _case(ng, seed=ng * 7 + single)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    geom = SubarrayGeometry(2030, nx, 1, ny)
    params = Detector1Params()
    (n0, a), (n1, b) = _both(ramp, refs, timing, params, geom, _hooks(ny, nx)[hook], single)
    assert n0 == n1
    for f in FIELDS:
        np.testing.assert_array_equal(_bits(getattr(a, f)), _bits(getattr(b, f)), err_msg=f)
    # the inputs reach the fallback: flagged groups, jumps, NaN
    assert (a.dq & dqflags.JUMP_DET).any() if ng >= 5 else True
    assert (a.dq & dqflags.DO_NOT_USE).any()


@pytest.mark.parametrize("ng", [3, 5, 20, 70])
def test_hooked_fused_equals_step_path(ng):
    ny, nx = 13, 37
    ramp, refs = _case(ng, seed=ng + 101)
    timing = RampTiming(ng, 1, 0, 1.0, 1.0)
    geom = SubarrayGeometry(2030, nx, 1, ny)
    for name, params in {"default": Detector1Params(),
                         "no_neighbours": Detector1Params(
                             jump=JumpParams(flag_4_neighbors=False))}.items():
        for hook in _hooks(ny, nx).values():
            a = run_detector1(ramp, refs, timing, params, geom, hook)
            b = run_detector1(ramp, refs, timing, params, geom, hook, fused=False)
            for f in FIELDS:
                np.testing.assert_array_equal(_bits(getattr(a, f)), _bits(getattr(b, f)),
                                              err_msg=f"{name} {f}")
            assert a.n_jumps == b.n_jumps
