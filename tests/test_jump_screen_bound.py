"""jump.screen_row's exact early-out (``_screen_bound_row``) and its per-pixel screen
(``_screen_pixel``) against the verbatim pre-early-out screen (the oracle of
tests/test_jump_screen_identity.py), bit for bit.

The bound ``float32(hi - lo) / sqrt(lo + noise) <= rej`` (single pass: ``hi - lo`` over
the smallest ``|value|`` of ``[lo, hi]``) must never pass a pixel the full screen flags
as a jump candidate. Pixels whose differences are ``lo`` but for one ``hi`` meet the
bound with equality (the median is ``lo``, the largest numerator ``hi - lo``): rejection
thresholds at their exact ratio and one ulp either side decide them both ways, so a
bound that is too small by any amount turns one of them red.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_jump_screen_identity import _row, _same, _screen, old_screen_row

from nirbeam.transforms import jump as _jump


def _tight_row(nd, nx, seed):
    """Pixels with ``nd - 1`` differences ``lo`` (electrons, gain 1) and one ``lo + h``."""
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, 400, nx).astype(np.float64)
    h = rng.integers(20, 400, nx).astype(np.float64)
    D = np.repeat(lo[None, :], nd, 0)
    D[rng.integers(0, nd, nx), np.arange(nx)] += h
    G = np.concatenate([np.full((1, nx), 1000.0), 1000.0 + np.cumsum(D, 0)]).astype(np.float32)
    gain = np.ones(nx, np.float32)
    rn = rng.uniform(3, 15, nx).astype(np.float32)
    return np.ascontiguousarray(G), np.zeros(G.shape, np.uint8), gain, rn


def _ratios(G, gain, rn, nd):
    """The tight pixels' exact ratio float32(h) / sqrt(lo + noise) (float64)."""
    d = np.diff(G.astype(np.float32) * gain, axis=0).astype(np.float32).astype(np.float64)
    a = np.abs(d)
    lo, hi = a.min(0), a.max(0)
    rne = (rn * gain).astype(np.float32)
    noise = (rne * rne).astype(np.float32).astype(np.float64) / (0.5 * 2.0 * 1)
    return (hi - lo).astype(np.float32).astype(np.float64) / np.sqrt(lo + noise)


@pytest.mark.parametrize("nd", [4, 5, 7, 9, 12, 19, 20, 25])
def test_bound_tight_pixels(nd):
    nx = 64
    G, Q, gain, rn = _tight_row(nd, nx, seed=nd)
    r = _ratios(G, gain, rn, nd)
    flips = 0
    for x in range(0, nx, 8):
        for rej in (np.nextafter(r[x], -np.inf), r[x], np.nextafter(r[x], np.inf)):
            o = _screen(old_screen_row, G, Q, gain, rn, False, rej)
            n = _screen(_jump.screen_row, G, Q, gain, rn, False, rej)
            for a, b in zip(o, n, strict=True):
                assert _same(a, b)
            flips += int(o[0][x])
        assert not _screen(old_screen_row, G, Q, gain, rn, False,
                           np.nextafter(r[x], -np.inf))[0][x]  # the ratio is the bound
    assert flips == 2 * len(range(0, nx, 8))  # ok at the ratio and above, not below


def _clean_row(ng, nx, seed):
    """Poisson + read noise ramps, 1 % of them with a cosmic ray (most pass the bound)."""
    rng = np.random.default_rng(seed)
    rate = 10.0 ** rng.uniform(-1, 3, nx)
    G = (np.cumsum(rng.poisson(np.repeat(rate[None, :], ng, 0)), axis=0)
         + rng.normal(0, 10, (ng, nx)) + rng.normal(1e4, 300, (1, nx)))
    for x in rng.choice(nx, nx // 100, replace=False):
        G[rng.integers(1, ng):, x] += rng.uniform(100, 3000)
    G = np.ascontiguousarray(np.round(G).astype(np.float32))
    return G, np.zeros((ng, nx), np.uint8), np.full(nx, 1.4, np.float32), np.full(nx, 12.0,
                                                                              np.float32)


def _paths(G, Q, gain, rn, single, rej):
    """How many ok pixels fail the bound (screened in full)."""
    ng, nx = G.shape
    nd = ng - 1
    ok, _, _, _ = _screen(old_screen_row, G, Q, gain, rn, single, 1e30)  # ok before the test
    A = np.empty((nd, nx))
    g = gain[None, :]
    with np.errstate(all="ignore"):  # the kernel's differences (inf, NaN included)
        d = (G[1:] * g).astype(np.float32) - (G[:-1] * g).astype(np.float32)
    A[:] = d if single else np.abs(d)
    W = np.empty((5, nx))
    IW = np.zeros((3, nx), np.int32)
    nf = _jump._screen_bound_row(A, nd, gain, rn, 1, rej, single, ok, W, IW)
    return int(nf), ok, A, IW[0].astype(bool)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("nd", [4, 7, 10, 20, 40])
def test_bound_never_passes_a_candidate(nd, single):
    nx = 700
    seen = set()
    for rej, (G, Q, gain, rn) in [
            (rej, row) for row in (_row(nd + 1, nx, seed=7000 + nd + 100 * single),
                                   _clean_row(nd + 1, nx, seed=8000 + nd))
            for rej in (0.5, 1.5, 2.5, 4.0, 6.0, 20.0)]:
        o = _screen(old_screen_row, G, Q, gain, rn, single, rej)
        n = _screen(_jump.screen_row, G, Q, gain, rn, single, rej)
        for a, b in zip(o, n, strict=True):
            assert _same(a, b)
        nf, ok, A, full = _paths(G, Q, gain, rn, single, rej)
        assert not (ok & ~full & ~o[0]).any()  # passed by the bound => no candidate
        lo, hi = o[1], o[2]
        for x in np.flatnonzero(full):  # the per-pixel screen == the row screen
            assert _jump._screen_pixel(A, nd, x, gain[x], rn[x], 1, rej, single, lo[x],
                                       hi[x]) == o[0][x]
        seen.add(nf * _jump._SCREEN_FULL_ROW_FRACTION < nx)
        seen.add(2 + (nf == 0))
    assert {True, False} <= seen  # both the per-pixel and the whole-row paths ran
