"""1/f cleaning, numba building blocks of the group kernels: column sorts by a sorting
network, exact medians (numpy's values), column filling, the usable pixels of one
group difference in blocks of columns."""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from nirbeam.transforms._select import select_kth

# --------------------------------------------------------------------------- group kernels
# Fast path of :func:`clean_groups`: numba kernels over the whole cube (group
# differences, per-column statistics of the usable background pixels of every
# difference, ramp re-integration), vectorised across columns. Every floating-point
# operation is the one the numpy reference (:func:`clean_groups_reference`) does, in
# the same order (column sums run along y from 0.0, medians are
# ``0.5 * (s[(n-1)//2] + s[n//2])`` of the sorted values), so results are identical.
BG_NONE, BG_SCALAR, BG_MEDIAN = 0, 1, 2
BLOCK = 64  # columns per block of the column sorts (ny x 64 float64 stay in L1)


@functools.lru_cache(maxsize=16)
def sorting_network(n: int) -> np.ndarray:
    """Batcher odd-even merge sorting network for ``n`` values.

    Built for the next power of two; comparators touching positions ``>= n`` are
    dropped (positions padded with +inf are never moved by them).

    Returns
    -------
    int64, (ncomparators, 2)
        Pairs ``(i, j)``, ``i < j``: after ``a[i], a[j] = min, max`` over all pairs in
        order, ``a`` is sorted.
    """
    size = 1
    while size < n:
        size *= 2
    comps = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        comps.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(comps, dtype=np.int64).reshape(-1, 2)


@njit(cache=True, error_model="numpy")
def sort_columns(s, comps, w):
    """Sort each of the first ``w`` columns of ``s`` (float64, (ny, B)) along axis 0
    with the comparators ``comps`` (:func:`sorting_network` of ny); no NaN allowed."""
    for t in range(comps.shape[0]):
        i = comps[t, 0]
        j = comps[t, 1]
        for cc in range(w):
            a = s[i, cc]
            b = s[j, cc]
            s[i, cc] = a if a <= b else b
            s[j, cc] = b if a <= b else a


@njit(cache=True, error_model="numpy")
def _median_inplace(a, n, lo, hi):
    """``0.5 * (s[lo] + s[hi])`` of ``s = sorted(a[:n])`` (``hi`` is ``lo`` or ``lo + 1``);
    reorders ``a[:n]``."""
    v = select_kth(a, n, lo)
    w = v
    if hi != lo:
        w = a[hi]
        for i in range(hi + 1, n):
            if a[i] < w:
                w = a[i]
    return 0.5 * (v + w)


@njit(cache=True, error_model="numpy")
def order_pair(a, n, lo, hi, buf):
    """``0.5 * (s[lo] + s[hi])`` of ``s = sorted(a[:n])`` (``hi`` is ``lo`` or ``lo + 1``;
    no NaN); ``a`` is kept, ``buf`` (>= n values) is scratch.

    Floyd-Rivest style: two pivots from an evenly spaced sample bracket the ranks, one
    branch-free pass counts the values below and collects those between, and the
    selection runs on those only; it falls back to a full selection if the bracket
    misses.
    """
    if n > 4096:
        ns = max(min(int(n ** (2.0 / 3.0)), n // 8), 64)
        for i in range(ns):
            buf[i] = a[(i * n) // ns]
        delta = int(2.0 * np.sqrt(ns)) + 2
        r = (lo * ns) // n
        r1 = max(r - delta, 0)
        r2 = min(r + delta, ns - 1)
        p1 = select_kth(buf, ns, r1)
        p2 = select_kth(buf, ns, r2)
        nb = 0
        ni = 0
        for i in range(n):
            v = a[i]
            nb += v < p1
            buf[ni] = v
            ni += (v >= p1) & (v <= p2)
        if nb <= lo and nb + ni > hi:
            return _median_inplace(buf, ni, lo - nb, hi - nb)
    for i in range(n):
        buf[i] = a[i]
    return _median_inplace(buf, n, lo, hi)


@njit(cache=True, error_model="numpy")
def sorted_median(a, n, buf):
    """Median of ``a[:n]`` (n >= 1, no NaN) as numpy's ``np.median``; ``a`` is kept,
    ``buf`` (>= n values) is scratch."""
    return order_pair(a, n, (n - 1) // 2, n // 2, buf)


@njit(cache=True, error_model="numpy")
def fill_columns_inplace(values, good):
    """:func:`fill_columns` in place on float64 (nx, p): bad columns get the mean of
    the nearest good column on each side (zeros everywhere if none is good)."""
    nx, p = values.shape
    n_good = 0
    for c in range(nx):
        if good[c]:
            n_good += 1
    if n_good == nx:
        return
    if n_good == 0:
        for c in range(nx):
            for a in range(p):
                values[c, a] = 0.0
        return
    right = np.empty(nx, np.int64)
    nxt = nx
    for c in range(nx - 1, -1, -1):
        if good[c]:
            nxt = c
        right[c] = nxt
    prv = -1
    for c in range(nx):
        if good[c]:
            prv = c
            continue
        hi = right[c]
        cnt = (1.0 if prv >= 0 else 0.0) + (1.0 if hi < nx else 0.0)
        for a in range(p):
            s = 0.0
            if prv >= 0:
                s += values[prv, a]
            if hi < nx:
                s += values[hi, a]
            values[c, a] = s / cnt


@njit(cache=True, error_model="numpy")
def diff_median_background(g, gdq, msk, other, jump, ka, kb, allv, buf):
    """Median of the usable background pixels of difference ``ka -> kb`` (0.0 if
    none): ``background='median'``."""
    ny, nx = msk.shape
    nall = 0
    for y in range(ny):
        for c in range(nx):
            v = np.float64(g[kb, y, c]) - np.float64(g[ka, y, c])
            q0 = np.int64(gdq[ka, y, c])
            q1 = np.int64(gdq[kb, y, c])
            u = msk[y, c] & (((q0 | q1) & other) == 0) & ((q1 & jump) == 0) & np.isfinite(v)
            allv[nall] = v
            nall += u
    return sorted_median(allv, nall, buf) if nall > 0 else 0.0


@njit(cache=True, error_model="numpy")
def diff_block(g, gdq, msk, other, jump, ka, kb, bg, c0, w, use, d, s, n):
    """Columns ``c0 : c0 + w`` of difference ``ka -> kb`` (``kb = ka + 1``, or ``ka = 0``
    for the cleaning against the first group): usable background pixels ``use`` (no
    ``other`` bit in either group, no ``jump`` bit in ``kb``), values ``d = x - bg`` (0
    where not usable), ``s`` = ``d`` with +inf where not usable (for sorting), usable
    count per column ``n``."""
    ny = use.shape[0]
    for cc in range(w):
        n[cc] = 0
    for y in range(ny):
        # row views: contiguous, non-negative indices (the loop vectorises)
        g1 = g[kb, y, c0 : c0 + w]
        g0 = g[ka, y, c0 : c0 + w]
        q1r = gdq[kb, y, c0 : c0 + w]
        q0r = gdq[ka, y, c0 : c0 + w]
        mr = msk[y, c0 : c0 + w]
        ur = use[y]
        dr = d[y]
        sr = s[y]
        for cc in range(w):
            v = np.float64(g1[cc]) - np.float64(g0[cc])
            q0 = np.int64(q0r[cc])
            q1 = np.int64(q1r[cc])
            u = mr[cc] & ((((q0 | q1) & other) | (q1 & jump)) == 0) & np.isfinite(v)
            dv = v - bg
            ur[cc] = u
            dr[cc] = dv if u else 0.0
            sr[cc] = dv if u else np.inf
            n[cc] += u
