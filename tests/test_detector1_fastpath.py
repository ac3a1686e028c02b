"""The clean-pixel fast path of the fused detector1 walk equals the exact stcal walk.

``jump.jump_pixel_fast`` / ``jump.screen_row`` (jump candidates screened per row) and
``ramp_fit.fit_pixel_fast`` / ``ramp_fit.fit_clean_row`` (clean pixels fitted per row)
against ``jump.jump_pixel`` and ``ramp_fit.fit_pixel`` (tested against stcal in
test_detector1_stcal.py), bit for bit, on pixels built to hit every branch: clean ramps
over the whole S/N range (every optimal-weight power), cosmic rays, many tied differences
(integer DN), NaN groups, SATURATED / DO_NOT_USE groups, zero / NaN / negative gain, zero
and NaN read noise. The fused kernel as a whole against the step-by-step path is in
test_detector1_fused.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import jump as _jump
from nirbeam.transforms import ramp_fit as _rf

SAT = dqflags.SATURATED
DNU = dqflags.DO_NOT_USE
TG = float(np.float32(10.737))


def _pixels(ng, n, seed):
    """(d (n, ng) float32, gdq (n, ng) uint8, gain (n,), rn (n,)) covering the branches."""
    rng = np.random.default_rng(seed)
    rate = 10.0 ** rng.uniform(-2, 4, n)  # DN per group: S/N from < 5 to > 100
    d = (np.cumsum(rng.poisson(np.repeat(rate[:, None], ng, 1)), axis=1)
         + rng.normal(0, 8, (n, ng)) + rng.normal(0, 300, (n, 1)))
    kind = rng.integers(0, 10, n)
    d[kind == 1] = np.round(d[kind == 1] / 7.0)  # integer steps: many tied differences
    d[kind == 2] = 100.0 + np.round(rng.normal(0, 1, ((kind == 2).sum(), ng)))
    cr = kind == 3
    at = rng.integers(1, ng, cr.sum())
    d[np.flatnonzero(cr)[:, None], np.arange(ng)] += (np.arange(ng) >= at[:, None]) * \
        rng.uniform(50, 3000, (cr.sum(), 1))
    d = d.astype(np.float32)
    d[kind == 4, rng.integers(0, ng)] = np.nan
    gdq = np.zeros((n, ng), np.uint8)
    s = np.flatnonzero(kind == 5)
    for i, g0 in zip(s, rng.integers(1, ng, s.size), strict=True):
        gdq[i, g0:] = SAT
    gdq[kind == 6, rng.integers(0, ng)] |= DNU
    gain = rng.uniform(0.8, 2.5, n).astype(np.float32)
    gain[(kind == 1) | (kind == 2)] = 1.0  # integer electrons: the ties stay ties
    gain[kind == 7] = rng.choice(np.array([0.0, np.nan, -1.0], np.float32), (kind == 7).sum())
    rn = rng.uniform(5, 20, n).astype(np.float32)
    rn[kind == 8] = rng.choice(np.array([0.0, np.nan], np.float32), (kind == 8).sum())
    return d, gdq, gain, rn


def _bufs(ng):
    return (np.empty(ng + 1, np.float64), np.empty(ng + 1, np.float64),
            np.zeros(ng + 1, np.uint8), np.empty(ng + 1, np.float32),
            np.empty(ng + 1, np.int64))


def _jump_ref(d, q, ng, gain, rn, single=False):
    fd, wk, nb, keys, kpos = _bufs(ng)
    q = q.copy()
    out = _jump.jump_pixel(d, q, ng, gain, rn, 1, single, 4.0, 6.0, 5.0, True, 10.0, 1000.0,
                           fd, wk, nb, keys, kpos)
    return out, q, nb[:ng].copy()


@pytest.mark.parametrize("ng", [3, 4, 5, 6, 8, 10, 12])
def test_jump_pixel_fast_equals_jump_pixel(ng):
    d, gdq, gain, rn = _pixels(ng, 1500, seed=ng)
    single = ng >= 11
    n_jump = 0
    for i in range(d.shape[0]):
        ref, q_ref, nb_ref = _jump_ref(d[i], gdq[i], ng, gain[i], rn[i], single)
        fd, wk, nb, keys, kpos = _bufs(ng)
        q = gdq[i].copy()
        out = _jump.jump_pixel_fast(d[i], q, ng, gain[i], rn[i], 1, single, 4.0, 6.0, 5.0,
                                    True, 10.0, 1000.0, fd, wk, nb, keys, kpos)
        assert out == ref, (i, out, ref)
        assert np.array_equal(q, q_ref), i
        if out[1]:  # nb is defined where any_nb
            assert np.array_equal(nb[:ng], nb_ref), i
        n_jump += ref[0] > 0
    assert n_jump > 50  # the data have jump candidates (the exact walk runs for them)


@pytest.mark.parametrize("ng", [5, 6, 7, 10, 11, 12, 20])
def test_screen_row_agrees_with_jump_pixel(ng):
    nx = 2000
    single = ng >= 11  # jump_mode: >= 10 usable differences -> single pass
    d, gdq, gain, rn = _pixels(ng, nx, seed=100 + ng)
    nd = ng - 1
    A = np.empty((nd, nx), np.float64)
    K = np.empty((nd, nx), np.float32)
    R = np.empty((nd, nx), np.int32)
    W = np.empty((5, nx), np.float64)
    II = np.empty((3, nx), np.int32)
    ok = np.zeros(nx, np.bool_)
    lo = np.empty(nx, np.int64)
    hi = np.empty(nx, np.int64)
    _jump.screen_row(np.ascontiguousarray(d.T), np.ascontiguousarray(gdq.T), gain, rn, 1, 4.0,
                     A, K, R, W, II, ok, lo, hi, single)
    n_ok = n_jump = 0
    for i in range(nx):
        (n, anynb, klo, khi), q_ref, _ = _jump_ref(d[i], gdq[i], ng, gain[i], rn[i], single)
        if ok[i]:
            n_ok += 1
            assert (n, anynb, klo, khi) == (0, False, lo[i], hi[i]), i
            assert np.array_equal(q_ref, gdq[i])
        n_jump += n > 0
        if n > 0:
            assert not ok[i]
        clean = not (gdq[i] & (SAT | DNU)).any() and np.isfinite(d[i] * gain[i]).all()
        if clean and np.isfinite(gain[i]):  # not over-cautious either: the exact screen
            assert ok[i] == (n == 0), i
    assert n_ok > nx // 2 and n_jump > 50


def _fit_ref(d, q, ng, pdq, gain, rn, klo, khi, have_k):
    keys = np.empty(ng + 1, np.float32)
    ss = np.empty(ng + 1, np.int64)
    se = np.empty(ng + 1, np.int64)
    w, s = _rf.weight_tables(ng)
    return _rf.fit_pixel(d, q.copy(), ng, pdq, gain, rn, 1, TG, TG, 0.0, True, w, s, keys, ss,
                         se, klo, khi, have_k)


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               and np.signbit(x) == np.signbit(y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("ng", [2, 3, 5, 9, 14])
def test_fit_pixel_fast_equals_fit_pixel(ng):
    d, gdq, gain, rn = _pixels(ng, 1500, seed=200 + ng)
    w, s = _rf.weight_tables(ng)
    rng = np.random.default_rng(ng)
    pdq = rng.choice(np.array([0, 0, 0, DNU, SAT, dqflags.HOT], np.uint32), d.shape[0])
    for i in range(d.shape[0]):
        (_, _, klo, khi), q, _ = _jump_ref(d[i], gdq[i], ng, gain[i], rn[i]) if ng > 2 else \
            ((0, False, 0, 0), gdq[i].copy(), None)
        # without have_k, fit_pixel ranks differences that may be NaN (a NaN group not
        # flagged): median_positions then finds no median (a known hazard of the exact
        # walk, not of the fast path): only finite ramps there
        for have_k in (True, False) if np.isfinite(d[i]).all() else (True,):
            ref = _fit_ref(d[i], q, ng, pdq[i], gain[i], rn[i], klo, khi, have_k)
            keys = np.empty(ng + 1, np.float32)
            ss = np.empty(ng + 1, np.int64)
            se = np.empty(ng + 1, np.int64)
            out = _rf.fit_pixel_fast(d[i], q.copy(), ng, pdq[i], gain[i], rn[i], 1, TG, TG,
                                     0.0, True, w, s, keys, ss, se, klo, khi, have_k)
            assert _same(out, ref), (i, have_k, out, ref)


@pytest.mark.parametrize("ng", [3, 5, 6, 10])
def test_fit_clean_row_equals_fit_pixel(ng):
    nx = 3000
    d, _, gain, rn = _pixels(ng, nx, seed=300 + ng)
    gain = np.where(gain > 0, gain, np.float32(1.5)).astype(np.float32)  # clean: gain > 0
    lo = np.empty(nx, np.int64)
    hi = np.empty(nx, np.int64)
    q0 = np.zeros(ng, np.uint8)
    for i in range(nx):  # median positions as the jump step gives them
        (_, _, lo[i], hi[i]), _, _ = _jump_ref(d[i], q0, ng, gain[i], rn[i])
    w, s = _rf.weight_tables(ng)
    outs = [np.empty(nx, np.float64) for _ in range(4)]
    _rf.fit_clean_row(np.ascontiguousarray(d.T), gain, rn, 1, TG, 0.0, w, s, lo, hi,
                      np.empty((8, nx), np.float64), np.empty(nx, np.int64), *outs)
    powers = set()
    for i in range(nx):
        slope, err, dq, vp, vr = _fit_ref(d[i], q0, ng, np.uint32(0), gain[i], rn[i], lo[i],
                                          hi[i], True)
        got = (outs[0][i], outs[1][i], outs[2][i], outs[3][i])
        assert _same(got, (slope, err, vp, vr)), (i, got, (slope, err, vp, vr))
        assert dq == 0
        dd = (np.float64(d[i, -1]) - np.float64(d[i, 0])) * np.float64(gain[i])
        powers.add(int(np.searchsorted([5, 10, 20, 50, 100], dd / max(np.sqrt(abs(dd)), 1e-9),
                                       side="right")))
    assert len(powers) >= 5  # the optimal-weight powers are exercised
