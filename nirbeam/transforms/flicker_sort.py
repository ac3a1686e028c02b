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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
def pair_inplace(a, n, lo, hi):
    """``(s[lo], s[hi])`` of ``s = sorted(a[:n])`` (``hi`` is ``lo`` or ``lo + 1``):
    ``select_kth``, then the least value above rank ``lo`` (reorders ``a[:n]``)."""
    v = select_kth(a, n, lo)
    w = v
    if hi != lo:
        w = a[hi]
        for i in range(hi + 1, n):
            if a[i] < w:
                w = a[i]
    return v, w


@njit(cache=True, nogil=True, error_model="numpy")
def _median_inplace(a, n, lo, hi):
    """``0.5 * (s[lo] + s[hi])`` of ``s = sorted(a[:n])`` (:func:`pair_inplace`);
    reorders ``a[:n]``."""
    v, w = pair_inplace(a, n, lo, hi)
    return 0.5 * (v + w)


ORDER_DIRECT = 768
"""Below this many values :func:`order_pair` selects directly (Wirth); above, it first
narrows the values to a bracket of the wanted ranks, as often as it pays."""


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def value_at(src, i, center, absdev):
    """``src[i]``, or ``|src[i] - center|`` when ``absdev``."""
    return np.abs(src[i] - center) if absdev else src[i]


@njit(cache=True, nogil=True, error_model="numpy")
def count_in(src, n, p1, p2, center, absdev):
    """(values of ``src[:n]`` below ``p1``, values in ``[p1, p2]``) (``|src - center|``
    when ``absdev``; NaN counts in neither): one branch-free pass (vectorises)."""
    nb = 0
    ni = 0
    for i in range(n):
        v = value_at(src, i, center, absdev)
        nb += v < p1
        ni += (v >= p1) & (v <= p2)
    return nb, ni


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def sample_pivots(buf, ns, n, lo):
    """Two pivots bracketing rank ``lo`` of ``n`` values from ``buf[:ns]``, an evenly
    spaced sample of them: the sample's ranks ``r -+ (2 sqrt(ns) + 2)`` around
    ``r = lo ns / n`` (reorders ``buf[:ns]``)."""
    delta = int(2.0 * np.sqrt(ns)) + 2
    r = (lo * ns) // n
    r1 = max(r - delta, 0)
    r2 = min(r + delta, ns - 1)
    p1 = select_kth(buf, ns, r1)
    # buf[r1:ns] now holds the sample's values >= p1: rank r2 is rank r2 - r1 there
    p2 = select_kth(buf[r1:], ns - r1, r2 - r1)
    return p1, p2


@njit(cache=True, nogil=True, error_model="numpy")
def _bracket(src, n, lo, hi, buf, dst, center, absdev, fused):
    """Narrow the values ``src[:n]`` (``|src - center|`` when ``absdev``) to those between
    two pivots that bracket ranks ``lo..hi``, into ``dst[:ni]``.

    The pivots come from an evenly spaced sample of the values (put in ``buf[:ns]``,
    ``buf`` disjoint from ``src[:n]``). ``fused`` (``dst`` disjoint from ``src``): one
    pass counts the values below the bracket and copies those in it; else (``dst`` may
    be ``src``: the copy runs forward) a counting pass checks the bracket first and only
    then a second pass copies. Returns ``(values below, values in the bracket)``,
    ``(-1, -1)`` when the bracket misses the ranks (``src`` then unchanged)."""
    ns = max(min(int(n ** (2.0 / 3.0)), n // 8), 64)
    for i in range(ns):
        buf[i] = value_at(src, (i * n) // ns, center, absdev)
    p1, p2 = sample_pivots(buf, ns, n, lo)
    if fused:
        nb = 0
        ni = 0
        for i in range(n):  # branch-free
            v = value_at(src, i, center, absdev)
            nb += v < p1
            dst[ni] = v
            ni += (v >= p1) & (v <= p2)
        if not (nb <= lo and nb + ni > hi):
            return -1, -1
        return nb, ni
    nb, ni = count_in(src, n, p1, p2, center, absdev)
    if not (nb <= lo and nb + ni > hi):
        return -1, -1
    m = 0
    for i in range(n):
        v = value_at(src, i, center, absdev)
        dst[m] = v
        m += (v >= p1) & (v <= p2)
    return nb, ni


@njit(cache=True, nogil=True, error_model="numpy")
def _order(a, n, lo, hi, buf, center, absdev):
    """:func:`order_pair` of ``a[:n]``, or of ``|a[:n] - center|`` when ``absdev``."""
    if n > ORDER_DIRECT:
        nb, ni = _bracket(a, n, lo, hi, buf, buf, center, absdev, True)
        if nb >= 0:
            lo -= nb
            hi -= nb
            # later rounds in place: the sample goes after the values (ns <= ni // 8)
            while ni > ORDER_DIRECT and ni + ni // 8 <= buf.shape[0]:
                nb, m = _bracket(buf, ni, lo, hi, buf[ni:], buf, 0.0, False, False)
                if nb < 0:
                    break
                lo -= nb
                hi -= nb
                done = m >= ni  # no narrower (ties): select on what is left
                ni = m
                if done:
                    break
            return _median_inplace(buf, ni, lo, hi)
    for i in range(n):
        buf[i] = value_at(a, i, center, absdev)
    return _median_inplace(buf, n, lo, hi)


@njit(cache=True, nogil=True, error_model="numpy")
def order_pair(a, n, lo, hi, buf):
    """``0.5 * (s[lo] + s[hi])`` of ``s = sorted(a[:n])`` (``hi`` is ``lo`` or ``lo + 1``;
    no NaN); ``a`` is kept, ``buf`` (>= n values) is scratch.

    Floyd-Rivest style: two pivots from an evenly spaced sample bracket the ranks, one
    branch-free pass counts the values below and collects those in the bracket;
    repeated (in place: a counting pass, then the copy) on the bracket while it holds
    more than :data:`ORDER_DIRECT` values (each round ~n^(1/3) times fewer), then a
    direct selection. A bracket that misses stops the narrowing (the values it had are
    selected directly), so the result is exact whatever the sample.
    """
    n = np.int64(n)  # a caller's Literal[int](0) while typing: no literal chain below
    return _order(a, n, lo, hi, buf, 0.0, False)


@njit(cache=True, nogil=True, error_model="numpy")
def order_pair_abs(a, n, center, lo, hi, buf):
    """:func:`order_pair` of the values ``|a[:n] - center|`` (not stored: computed as
    they are read); the MAD's second median."""
    return _order(a, n, lo, hi, buf, center, True)


@njit(cache=True, nogil=True, error_model="numpy")
def sorted_median(a, n, buf):
    """Median of ``a[:n]`` (n >= 1, no NaN) as numpy's ``np.median``; ``a`` is kept,
    ``buf`` (>= n values) is scratch."""
    n = np.int64(n)  # a caller's Literal[int](0) while typing: no literal chain below
    return order_pair(a, n, (n - 1) // 2, n // 2, buf)


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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
