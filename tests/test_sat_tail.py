"""Session 9 (satfast): saturated-tail pixels (group DQ 0 up to a first flagged group S,
SATURATED / DO_NOT_USE from there) screened and fitted per row (``sat_tail``) equal the
exact walk (``jump.jump_pixel``, ``ramp_fit.fit_pixel``) bit for bit: S = 0 .. ng - 1
(stcal's 0-, 1-, 2-group segments and 1, 2, 3 differences included), both jump modes,
jumps just before the tail, NaN groups, ties (integer DN), zero / NaN gain and read noise,
suppress_one_group on and off, SATURATED, DO_NOT_USE and both in the tail."""

from __future__ import annotations

import numpy as np
import pytest
from test_detector1_fastpath import TG, _bufs, _same

from nirbeam import dqflags
from nirbeam.transforms import jump as _jump
from nirbeam.transforms import ramp_fit as _rf
from nirbeam.transforms import sat_tail as _tail

SAT = dqflags.SATURATED
DNU = dqflags.DO_NOT_USE


def tail_pixels(ng, n, seed):
    """(d (n, ng) float32, gdq (n, ng) uint8, S (n,), gain, rn): saturated tails."""
    rng = np.random.default_rng(seed)
    rate = 10.0 ** rng.uniform(-2, 4, n)
    d = (np.cumsum(rng.poisson(np.repeat(rate[:, None], ng, 1)), axis=1)
         + rng.normal(0, 8, (n, ng)) + rng.normal(0, 300, (n, 1)))
    S = rng.integers(0, ng, n)
    S[: 4 * min(ng, 8)] = np.arange(4 * min(ng, 8)) % min(ng, 8)  # every short S
    kind = rng.integers(0, 10, n)
    d[kind == 1] = np.round(d[kind == 1] / 7.0)
    d[kind == 2] = 100.0 + np.round(rng.normal(0, 1, ((kind == 2).sum(), ng)))
    for i in np.flatnonzero(kind == 3):  # a jump, often just before the tail
        at = max(S[i] - 1, 1) if rng.random() < 0.6 else rng.integers(1, ng)
        d[i, at:] += rng.uniform(50, 3000)
    d[kind == 8] += np.where(rng.random((int((kind == 8).sum()), ng)) < 0.5, 0.0,
                             np.nan)  # NaN groups (before or inside the tail)
    d = d.astype(np.float32)
    gdq = np.zeros((n, ng), np.uint8)
    tail = rng.choice(np.array([SAT, SAT, SAT | DNU, DNU], np.uint8), n)
    mixed = rng.random(n) < 0.2
    for i in range(n):
        gdq[i, S[i]:] = tail[i]
        if mixed[i] and S[i] < ng - 1:
            gdq[i, ng - 1] = SAT | DNU
    gain = rng.uniform(0.8, 2.5, n).astype(np.float32)
    gain[(kind == 1) | (kind == 2)] = 1.0
    gain[kind == 7] = rng.choice(np.array([0.0, np.nan], np.float32), (kind == 7).sum())
    rn = rng.uniform(5, 20, n).astype(np.float32)
    rn[kind == 9] = rng.choice(np.array([0.0, np.nan], np.float32), (kind == 9).sum())
    return d, gdq, S.astype(np.int64), gain, rn


def _screen(d, S, gain, rn, single):
    n, ng = d.shape
    nd = ng - 1
    ok = np.zeros(n, np.bool_)
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    _tail.screen_tail_row(np.ascontiguousarray(d.T), S, n, gain, rn, 1, single, 4.0, 6.0, 5.0,
                          np.full((nd, n), 7.0), np.full((nd, n), np.float32(3.0)),
                          np.full((nd, n), 5, np.int32), np.full((5, n), 9.0),
                          np.full((4, n), 11, np.int32), ok, lo, hi)
    return ok, lo, hi


def test_tail_pattern_row():
    ng, nx = 6, 9
    Q = np.zeros((ng, nx), np.uint8)
    Q[2:, 0] = SAT
    Q[0:, 1] = SAT | DNU
    Q[3:, 2] = DNU
    Q[3:, 3] = SAT
    Q[4, 3] = SAT | dqflags.JUMP_DET  # another bit in the tail
    Q[2, 4] = SAT  # a gap
    Q[5, 5] = SAT
    Q[1, 6] = dqflags.JUMP_DET  # not a tail
    Q[5, 8] = SAT | dqflags.PERSISTENCE
    S = np.empty(nx, np.int64)
    T = np.empty(nx, np.bool_)
    TS = np.empty(nx, np.bool_)
    _tail.tail_pattern_row(Q, S, T, TS)
    assert S.tolist() == [2, 0, 3, 3, 2, 5, 1, 6, 5]
    assert T.tolist() == [True, True, True, False, False, True, False, False, False]
    assert TS.tolist() == [True, True, False, True, True, True, False, False, True]


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("ng", [5, 6, 8, 12, 20, 26, 40])
def test_screen_tail_row_equals_jump_pixel(ng, single):
    n = 2500
    d, gdq, S, gain, rn = tail_pixels(ng, n, seed=900 + ng)
    ok, lo, hi = _screen(d, S, gain, rn, single)
    n_ok = n_jump = 0
    for i in range(n):
        fd, wk, nb, keys, kpos = _bufs(ng)
        q = gdq[i].copy()
        nj, anynb, klo, khi = _jump.jump_pixel(d[i], q, ng, gain[i], rn[i], 1, single, 4.0,
                                               6.0, 5.0, True, 10.0, 1000.0, fd, wk, nb, keys,
                                               kpos)
        finite = np.isfinite(np.float32(d[i, :S[i]] * gain[i])).all()
        if ok[i]:  # accepted: exactly jump_pixel's no-jump answer
            n_ok += 1
            assert nj == 0 and not anynb, i
            assert np.array_equal(q, gdq[i]), i
            assert (lo[i], hi[i]) == (klo, khi), (i, lo[i], hi[i], klo, khi)
        elif finite:  # not over-cautious: a finite ramp is refused only for a jump
            assert nj > 0, (i, S[i])
            n_jump += 1
    assert n_ok > n // 2 and n_jump > 20


@pytest.mark.parametrize("suppress", [True, False])
@pytest.mark.parametrize("ng", [5, 6, 9, 20, 40])
def test_fit_tail_row_equals_fit_pixel(ng, suppress):
    n = 2500
    d, gdq, S, gain, rn = tail_pixels(ng, n, seed=700 + ng)
    gain = np.where(gain > 0, gain, np.float32(1.3)).astype(np.float32)
    rng = np.random.default_rng(ng)
    pdq = rng.choice(np.array([0, 0, dqflags.HOT, dqflags.PERSISTENCE], np.uint32), n)
    ok, lo, hi = _screen(d, S, gain, rn, False)
    TS = (gdq & SAT).any(axis=1)
    w, s = _rf.weight_tables(ng)
    outs = [np.empty(n, np.float64), np.empty(n, np.float64), np.empty(n, np.uint32),
            np.empty(n, np.float64), np.empty(n, np.float64)]
    tframe = float(np.float32(0.9))
    _tail.fit_tail_row(np.ascontiguousarray(d.T), S, TS, n, pdq, gain, rn, 1, TG, tframe, 0.0,
                       suppress, w, s, lo, hi, *outs)
    keys = np.empty(ng + 1, np.float32)
    ss = np.empty(ng + 1, np.int64)
    se = np.empty(ng + 1, np.int64)
    seen = set()
    for i in np.flatnonzero(ok):
        ref = _rf.fit_pixel(d[i], gdq[i].copy(), ng, pdq[i], gain[i], rn[i], 1, TG, tframe, 0.0,
                            suppress, w, s, keys, ss, se, lo[i], hi[i], True)
        got = tuple(o[i] for o in outs)
        assert _same((got[0], got[1], got[3], got[4]), (ref[0], ref[1], ref[3], ref[4])), \
            (i, S[i], got, ref)
        assert got[2] == ref[2], (i, S[i], got[2], ref[2])
        seen.add(min(int(S[i]), 3))
    assert seen == {0, 1, 2, 3}
