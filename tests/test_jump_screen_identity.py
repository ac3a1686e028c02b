"""jump.screen_row / jump._median_positions_row (sorting networks from ``_NET_MIN_*``
differences) equal the pairwise rank-count versions they replaced, bit for bit.

The oracle below is a verbatim copy of ``screen_row`` and ``_median_positions_row`` as
of 849d0cb (renamed ``old_*``). Seeded rows at nd = 2 .. 80 differences: ramps with
cosmic rays, integer (tied) keys and |diff|s, runs of equal groups, -0.0 / +0.0 keys,
+-inf, NaN groups, SATURATED / DO_NOT_USE groups, single-pass and iterative modes;
``ok``, ``klo``, ``khi`` compared as uint views (every pixel, not only the ok ones).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms import jump as _jump

_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_BAD = np.uint8(dqflags.SATURATED | dqflags.DO_NOT_USE)


# ---- oracle: verbatim copy (849d0cb), renamed --------------------------------------

@njit(cache=True, error_model="numpy")
def old_screen_row(G, Q, gain, rn, nframes, rej, A, K, R, W, IW, ok, klo, khi, single=False):
    """The clean-pixel screen of :func:`jump_pixel_fast` for a whole row, across pixels.

    Same arithmetic per pixel as :func:`jump_pixel`'s first iteration (iterative mode,
    ``ng - 1 >= 4`` differences), in loops whose innermost index is the pixel, so that
    the compiler vectorises them: differences in electrons, the largest ``|diff|``
    clipped (every value equal to it), the median of the rest (the values of rank
    ``(j - 1) // 2`` and ``j // 2``: the clipped values are the largest, so the rest is
    a prefix of the sorted order, and the median of a set of values does not depend on
    how it is found), sigma, and ``max |..| / sigma > rej`` (monotonic division, see
    :func:`jump_pixel_fast`). ``ok[x]`` is True when no group is SATURATED or
    DO_NOT_USE, every difference is finite and the pixel is no jump candidate: then
    :func:`jump_pixel` flags nothing and returns ``(0, False, klo[x], khi[x])``.
    Other pixels (``ok[x]`` False) must run :func:`jump_pixel`.

    Parameters
    ----------
    G : float32, (ng, nx), DN, the row's calibrated groups; Q : uint8, (ng, nx)
    gain, rn : float32, (nx,); nframes : int; rej : float
    A : float64, K : float32, R : int32, each (>= ng - 1, nx); W : float64, (5, nx);
    IW : int32, (3, nx): work buffers
    ok : bool, (nx,); klo, khi : int64, (nx,): outputs
    single : bool
        The single-pass mode instead: the median of all differences (at the key median
        positions, as :func:`jump_pixel`), sigma, and ``max |diff - median| / sigma >
        rej`` for a jump candidate.
    """
    ng, nx = G.shape
    nd = ng - 1
    for x in range(nx):
        ok[x] = True
    for k in range(ng):
        for x in range(nx):
            ok[x] = ok[x] & ((Q[k, x] & _BAD) == 0)
    for k in range(nd):
        for x in range(nx):
            g32 = gain[x]
            prev = np.float32(G[k, x] * g32)
            cur = np.float32(G[k + 1, x] * g32)
            v = np.float64(np.float32(cur - prev))
            ok[x] = ok[x] & np.isfinite(v)
            A[k, x] = v if single else np.abs(v)
            K[k, x] = np.float32(G[k + 1, x] - G[k, x])
    # median positions of the keys (the fit's median rate; the single-pass median)
    old_median_positions_row(K, R, nd, klo, khi)
    # the values wanted: single pass, all nd differences at the key median positions
    # (IW[1], IW[2] = khi, klo; position k selected); iterative, the |diff|s without the
    # largest and its ties (j of them remain) at ranks j // 2 and j // 2 - 1 (even j) or
    # j // 2 (odd j) of their order by (value, position) (R[k] selected)
    if single:
        for x in range(nx):
            IW[0, x] = np.int32(nd)
            IW[1, x] = np.int32(khi[x])
            IW[2, x] = np.int32(klo[x])
    else:
        # the largest |diff| and its ties
        for x in range(nx):
            W[0, x] = -np.inf
            IW[0, x] = 0
        for k in range(nd):
            for x in range(nx):
                a = A[k, x]
                W[0, x] = a if a > W[0, x] else W[0, x]
        for k in range(nd):
            for x in range(nx):
                IW[0, x] += np.int32(A[k, x] == W[0, x])
        # ranks of |diff| by (value, position)
        for i in range(nd):
            for x in range(nx):
                R[i, x] = 0
            for j in range(i):
                for x in range(nx):
                    R[i, x] += np.int32(A[j, x] <= A[i, x])
            for j in range(i + 1, nd):
                for x in range(nx):
                    R[i, x] += np.int32(A[j, x] < A[i, x])
        for x in range(nx):
            j = np.int32(nd) - IW[0, x]
            IW[0, x] = j
            t_hi = j >> 1
            IW[1, x] = t_hi
            IW[2, x] = t_hi - 1 if (j & 1) == 0 else t_hi
    for x in range(nx):
        W[1, x] = 0.0
        W[2, x] = 0.0
    for k in range(nd):
        for x in range(nx):
            sel = np.int32(k) if single else R[k, x]
            a = A[k, x]
            W[1, x] = a if sel == IW[1, x] else W[1, x]
            W[2, x] = a if sel == IW[2, x] else W[2, x]
    # the median (NaN when nothing remains), sigma, and the largest ratio's numerator
    for x in range(nx):
        j = IW[0, x]
        mi = W[1, x] if (j & 1) == 1 else (W[2, x] + W[1, x]) / 2.0
        mi = np.nan if j == 0 else mi
        W[3, x] = mi
        g32 = gain[x]
        rn_e = np.float32(np.float32(rn[x]) * g32)
        rn2 = np.float64(np.float32(rn_e * rn_e))
        noise = rn2 / (0.5 * 2.0 * nframes)
        sig = np.sqrt(np.abs(mi) + noise)
        W[4, x] = np.nan if sig == 0.0 else sig
        W[0, x] = -1.0
    for k in range(nd):
        for x in range(nx):
            # single pass: |d - med| (float64, jump_pixel's single pass); iterative:
            # |float32(|d| - median)| (jump_pixel's iterations)
            a = np.abs(A[k, x] - W[3, x]) if single else np.float64(
                np.abs(np.float32(A[k, x] - W[3, x])))
            W[0, x] = a if a > W[0, x] else W[0, x]
    for x in range(nx):
        ok[x] = ok[x] & (not (W[0, x] / W[4, x] > rej))


@njit(cache=True, error_model="numpy")
def old_median_positions_row(K, R, nd, klo, khi):
    """:func:`median_positions` of ``K[:nd, x]`` for every pixel x (distinct ranks: the
    keys of a pixel the screen passes are finite)."""
    nx = K.shape[1]
    kk = nd // 2
    even = nd % 2 == 0
    for x in range(nx):
        klo[x] = -1
        khi[x] = -1
    for i in range(nd):
        for x in range(nx):
            R[i, x] = 0
        for j in range(i):
            for x in range(nx):
                R[i, x] += np.int32(K[j, x] <= K[i, x])
        for j in range(i + 1, nd):
            for x in range(nx):
                R[i, x] += np.int32(K[j, x] < K[i, x])
        for x in range(nx):
            r = R[i, x]
            khi[x] = i if r == kk else khi[x]
            klo[x] = i if (even and r == kk - 1) else klo[x]
    if not even:
        for x in range(nx):
            klo[x] = khi[x]


# ---- seeded rows --------------------------------------------------------------------


def _row(ng, nx, seed):
    """(G (ng, nx) float32, Q (ng, nx) uint8, gain, rn): a row hitting the tie and NaN cases."""
    rng = np.random.default_rng(seed)
    rate = 10.0 ** rng.uniform(-2, 3.5, nx)
    G = (np.cumsum(rng.poisson(np.repeat(rate[None, :], ng, 0)), axis=0)
         + rng.normal(0, 8, (ng, nx)) + rng.normal(0, 300, (1, nx)))
    kind = rng.integers(0, 14, nx)
    G[:, kind == 1] = np.round(G[:, kind == 1] / 7.0)  # integer steps: tied keys / |diff|s
    G[:, kind == 2] = 100.0 + np.round(rng.normal(0, 1, (ng, (kind == 2).sum())))
    G[:, kind == 3] = 5.0 + np.round(rng.uniform(0, 1.6, (ng, (kind == 3).sum())))  # 2 values
    cr = np.flatnonzero(kind == 4)
    for x in cr:
        for _ in range(rng.integers(1, 4)):
            G[rng.integers(1, ng):, x] += rng.uniform(50, 3000)
    G = G.astype(np.float32)
    z = np.flatnonzero(kind == 5)  # -0.0 / +0.0 keys and differences mixed with others
    for x in z:
        G[:, x] = rng.choice(np.array([0.0, -0.0, 1.0, -1.0], np.float32), ng)
    G[rng.integers(0, ng, (kind == 6).sum()), np.flatnonzero(kind == 6)] = np.nan
    w = np.flatnonzero(kind == 7)  # +-inf keys (float32 overflow), no NaN
    for x in w:
        G[rng.integers(0, ng), x] = rng.choice(np.array([3e38, -3e38], np.float32))
    G[rng.integers(0, ng, (kind == 8).sum()), np.flatnonzero(kind == 8)] = np.inf
    Q = np.zeros((ng, nx), np.uint8)
    s = np.flatnonzero(kind == 9)
    for x, g0 in zip(s, rng.integers(1, ng, s.size), strict=True):
        Q[g0:, x] = _SAT
    Q[rng.integers(0, ng, (kind == 10).sum()), np.flatnonzero(kind == 10)] |= _DNU
    gain = rng.uniform(0.8, 2.5, nx).astype(np.float32)
    gain[(kind == 1) | (kind == 2) | (kind == 3) | (kind == 5)] = 1.0
    gain[kind == 11] = rng.choice(np.array([0.0, np.nan, -1.0], np.float32),
                                  (kind == 11).sum())
    rn = rng.uniform(5, 20, nx).astype(np.float32)
    rn[kind == 12] = rng.choice(np.array([0.0, np.nan], np.float32), (kind == 12).sum())
    return np.ascontiguousarray(G), np.ascontiguousarray(Q), gain, rn


def _screen(fn, G, Q, gain, rn, single, rej=4.0):
    ng, nx = G.shape
    nd = ng - 1
    A = np.full((nd, nx), 7.0, np.float64)  # the work buffers' prior contents must not matter
    K = np.full((nd, nx), 7.0, np.float32)
    R = np.full((nd, nx), 7, np.int32)
    W = np.full((5, nx), 7.0, np.float64)
    II = np.full((3, nx), 7, np.int32)
    ok = np.zeros(nx, np.bool_)
    lo = np.full(nx, 7, np.int64)
    hi = np.full(nx, 7, np.int64)
    fn(G, Q, gain, rn, 1, rej, A, K, R, W, II, ok, lo, hi, single)
    return ok, lo, hi, K


def _same(a, b):
    return np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


ND = list(range(2, 31)) + [31, 32, 33, 40, 47, 48, 49, 63, 64, 65, 69, 70, 79, 80]


@pytest.mark.parametrize("nd", ND)
def test_median_positions_row_identity(nd):
    nx = 1000  # not a multiple of the block: a partial last block
    G, Q, gain, rn = _row(nd + 1, nx, seed=1000 + nd)
    K = (G[1:] - G[:-1]).astype(np.float32)
    rng = np.random.default_rng(nd)
    K[:, :50] = rng.integers(-2, 3, (nd, 50))  # heavy ties
    K[:, 50:60] = 0.0
    K[::2, 55:60] = -0.0
    K[rng.integers(0, nd, 20), rng.integers(60, 120, 20)] = np.nan
    K[:, 120:125] = np.nan
    K = np.ascontiguousarray(K)
    out = []
    for fn in (old_median_positions_row, _jump._median_positions_row):
        R = np.full((nd, nx), 7, np.int32)
        lo = np.full(nx, 7, np.int64)
        hi = np.full(nx, 7, np.int64)
        fn(K.copy(), R, nd, lo, hi)
        out.append((lo.view(np.uint64), hi.view(np.uint64)))
    assert _same(out[0][0], out[1][0]) and _same(out[0][1], out[1][1])
    assert (np.asarray(out[1][1]).view(np.int64)[125:] >= 0).any()


@pytest.mark.parametrize("single", [True, False])
@pytest.mark.parametrize("nd", ND)
def test_screen_row_identity(nd, single):
    if not single and nd < 4:
        pytest.skip("the iterative screen needs >= 4 differences")
    nx = 700
    G, Q, gain, rn = _row(nd + 1, nx, seed=2000 + nd + 100 * single)
    for rej in (4.0, 2.5):
        o = _screen(old_screen_row, G, Q, gain, rn, single, rej)
        n = _screen(_jump.screen_row, G, Q, gain, rn, single, rej)
        for a, b in zip(o, n, strict=True):
            assert _same(a, b)
        assert o[0].sum() > nx // 4  # both outcomes occur
        assert (~o[0]).sum() > nx // 20


@pytest.mark.parametrize("n", list(range(1, 81)))
def test_network_sorts(n):
    net = _jump._oddeven_network(n, 0, n - 1)
    rng = np.random.default_rng(n)
    for t in range(200):
        v = rng.integers(0, 4 if t % 2 else 1000, n).astype(np.float64)
        w = v.copy()
        for a, b in net:
            assert a < b
            if w[b] < w[a]:
                w[a], w[b] = w[b], w[a]
        assert np.array_equal(w, np.sort(v))
    if n <= 14:  # the 0-1 principle: every 0/1 input sorted => a sorting network
        bits = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
        for a, b in net:
            lo = np.minimum(bits[:, a], bits[:, b])
            bits[:, b] = np.maximum(bits[:, a], bits[:, b])
            bits[:, a] = lo
        assert (np.diff(bits, axis=1) >= 0).all()


@pytest.mark.parametrize("n", [12, 19, 20, 69, 80])
def test_pruned_network_keeps_the_middle(n):
    full = _jump._oddeven_network(n, 0, n - 1)
    mid = _jump._oddeven_network(n, n // 2 - 1, n // 2)
    assert len(mid) < len(full)
    rng = np.random.default_rng(n)
    for _ in range(300):
        v = rng.integers(0, 6, n).astype(np.float64)
        w = v.copy()
        for a, b in mid:
            if w[b] < w[a]:
                w[a], w[b] = w[b], w[a]
        s = np.sort(v)
        assert w[n // 2] == s[n // 2] and w[n // 2 - 1] == s[n // 2 - 1]
