"""jump: two-point-difference cosmic-ray detection for one integration (stcal twopoint_difference).

Per pixel, as stcal 1.20 ``find_crs`` called on a single integration (so the
across-integration sigma-clipping branch never applies):

* data are scaled to electrons (``data * gain``), groups flagged DO_NOT_USE or
  SATURATED are NaN, first differences are taken;
* sigma = sqrt(|median diff| + (readnoise * gain)**2 / NFRAMES): the READNOISE
  reference is the noise of a CDS (two-read) difference;
* with >= ``min_diffs_single_pass`` (10) usable differences (counted over groups
  that are DO_NOT_USE in every pixel), one pass flags every difference whose
  ``|diff - median| / sigma`` exceeds ``rejection_threshold``;
* otherwise iterative: median of the absolute differences with the largest clipped
  (>= 4 usable), plain median (3) or minimum (2); flag the largest ratio when it
  exceeds the threshold for the number of usable differences (4 / 5 / 6 sigma for
  >= 4 / 3 / 2 differences), mask it and repeat;
* the 4 neighbours of a jump whose ratio (against the plain median) lies between
  ``min_jump_to_flag_neighbors`` and ``max_jump_to_flag_neighbors`` are flagged in
  the same group unless that group is SATURATED or DO_NOT_USE;
* JUMP_DET is removed from groups that are also DO_NOT_USE or SATURATED;
* skipped (recorded by the caller) when fewer than ``minimum_groups`` (3) groups are
  usable; pixels with gain <= 0 or NaN get NO_GAIN_VALUE | DO_NOT_USE.

Size note: over 650 lines because the row screen (``screen_row``) keeps two rankings of
the same order side by side: pairwise rank counts (faster for few differences) and a
sorting network with its generator (``_oddeven_network``, faster from ~21 differences),
both bit-identical to the per-pixel walk they screen for, and its exact early-out
(``_screen_bound_row``: most pixels provably pass from their smallest and largest
difference alone; the others are screened per pixel, ``_screen_pixel``, or for the
row); splitting them from it would separate the code from the arithmetic it must
reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms._select import select_kth

__all__ = ["JumpParams", "jump_mode", "jump_pixel", "jump_pixel_fast", "screen_row", "flag_neighbours", "detect_jumps",
           "nanmedian_inplace"]

_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_JUMP = np.uint8(dqflags.JUMP_DET)
_BAD = np.uint8(dqflags.SATURATED | dqflags.DO_NOT_USE)


@dataclass(frozen=True)
class JumpParams:
    """Jump step parameters (jwst/stcal defaults)."""

    enabled: bool = True
    rejection_threshold: float = 4.0
    three_group_rejection_threshold: float = 6.0
    four_group_rejection_threshold: float = 5.0
    flag_4_neighbors: bool = True
    max_jump_to_flag_neighbors: float = 1000.0
    min_jump_to_flag_neighbors: float = 10.0
    minimum_groups: int = 3
    min_diffs_single_pass: int = 10


def jump_mode(ngroups: int, n_all_dnu_groups: int, params: JumpParams) -> tuple[bool, bool]:
    """(skip, single_pass) for one integration.

    ``n_all_dnu_groups`` is the number of groups that are DO_NOT_USE in every pixel.
    """
    usable = ngroups - n_all_dnu_groups
    skip = usable < params.minimum_groups
    single = (usable - 1) >= params.min_diffs_single_pass
    return skip, single


@njit(cache=True, nogil=True, error_model="numpy")
def count_all_dnu_groups(groupdq):
    """Number of groups where every pixel has DO_NOT_USE."""
    ng, ny, nx = groupdq.shape
    n = 0
    for g in range(ng):
        alldnu = True
        for y in range(ny):
            for x in range(nx):
                if not (groupdq[g, y, x] & _DNU):
                    alldnu = False
                    break
            if not alldnu:
                break
        if alldnu:
            n += 1
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def nanmedian_inplace(a, m):
    """Median of ``a[:m]`` (finite values already compacted); reorders ``a``. NaN if m == 0."""
    if m == 0:
        return np.nan
    if m == 1:
        return a[0]
    if m == 2:
        return (a[0] + a[1]) / 2.0
    k = m // 2
    hi = select_kth(a, m, k)
    if m % 2 == 1:
        return hi
    lo = a[0]
    for i in range(1, k):
        if a[i] > lo:
            lo = a[i]
    return (lo + hi) / 2.0


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def median_positions(keys, m):
    """Positions (lo, hi) of the two middle elements of ``keys[:m]`` (lo == hi for odd m).

    Ranks are by (value, position), so ties resolve deterministically. Branch-free rank
    counting (vectorised compares) beats quickselect for the short arrays of a ramp.
    Returns (-1, -1) for m == 0.
    """
    if m == 0:
        return -1, -1
    k = m // 2
    even = m % 2 == 0
    p_hi = -1
    p_lo = -1 if even else 0
    for i in range(m):
        v = keys[i]
        r = 0
        for j in range(m):
            kj = keys[j]
            r += np.int32(kj < v) + np.int32((kj == v) & (j < i))
        if r == k:
            p_hi = i
            if p_lo >= 0:
                break
        elif even and r == k - 1:
            p_lo = i
            if p_hi >= 0:
                break
    if not even:
        p_lo = p_hi
    return p_lo, p_hi


@njit(cache=True, nogil=True, error_model="numpy")
def jump_pixel(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3, do_nb, nb_min,
               nb_max, fd, wk, nb, keys, kpos):
    """Two-point-difference jump detection of one pixel.

    Parameters
    ----------
    d : float32, (>= ng,), DN, calibrated groups of the pixel
    gdq : uint8, (>= ng,); JUMP_DET ORed in place
    ng : int, number of groups
    gain : float32, e-/DN
    rn : float32, DN, CDS read noise
    nframes : int
    single_pass : bool
    rej, thr2, thr3 : float, thresholds for >= 4 (and single pass), 2 and 3 usable
        differences
    do_nb : bool, compute neighbour flags
    nb_min, nb_max : float, neighbour-flag ratio window
    fd, wk : float64, (>= ng,), work buffers
    nb : uint8, (>= ng,); set to 1 at groups whose jump qualifies for neighbour
        flagging, 0 elsewhere
    keys : float32, (>= ng,), kpos : int64, (>= ng,), work buffers

    Returns
    -------
    n_primary : int, number of groups flagged here
    any_nb : bool, True if any ``nb`` entry is set
    k_lo, k_hi : int, difference indices of the median of the usable differences, ranked
        by ``float32(d[k+1] - d[k])`` (-1 when none); ramp fitting reuses them
    """
    nd = ng - 1
    g32 = np.float32(gain)
    rn_e = np.float32(np.float32(rn) * g32)
    rn2 = np.float64(np.float32(rn_e * rn_e))
    noise = rn2 / (0.5 * 2.0 * nframes)
    # first differences in electrons (float32 values held in float64)
    prev = np.float32(np.nan)
    if not (gdq[0] & _BAD):
        prev = np.float32(d[0] * g32)
    m = 0
    for k in range(nd):
        cur = np.float32(np.nan)
        if not (gdq[k + 1] & _BAD):
            cur = np.float32(d[k + 1] * g32)
        v = np.float64(np.float32(cur - prev))
        fd[k] = v
        prev = cur
        if np.isfinite(v):
            keys[m] = np.float32(d[k + 1] - d[k])
            kpos[m] = k
            m += 1
    p_lo, p_hi = median_positions(keys, m)
    k_lo = kpos[p_lo] if m > 0 else -1
    k_hi = kpos[p_hi] if m > 0 else -1
    if m == 0:
        med = np.nan
    elif m % 2 == 1:
        med = fd[k_hi]
    else:
        med = (fd[k_lo] + fd[k_hi]) / 2.0
    sigma = np.sqrt(np.abs(med) + noise)
    if sigma == 0.0:
        sigma = np.nan
    n_primary = 0
    if single_pass:
        for k in range(nd):
            v = fd[k]
            if np.isfinite(v) and np.abs(v - med) / sigma > rej:
                gdq[k + 1] |= _JUMP
                n_primary += 1
    else:
        # iterative on absolute differences; nb holds a "masked" marker meanwhile
        for k in range(nd):
            nb[k] = 0
        for it in range(nd):
            n = 0
            vmax = -np.inf
            for k in range(nd):
                if nb[k] == 0 and np.isfinite(fd[k]):
                    a = np.abs(fd[k])
                    wk[n] = a
                    n += 1
                    if a > vmax:
                        vmax = a
            if n >= 4:
                j = 0
                for i in range(n):
                    if wk[i] != vmax:
                        wk[j] = wk[i]
                        j += 1
                mi = nanmedian_inplace(wk, j)
            elif n == 3:
                mi = nanmedian_inplace(wk, 3)
            elif n == 2:
                mi = min(wk[0], wk[1])
            else:
                break
            if it > 0:
                mi = np.float64(np.float32(mi))
            sig = np.sqrt(np.abs(mi) + noise)
            if sig == 0.0:
                sig = np.nan
            if n >= 4:
                thr = rej
            elif n == 3:
                thr = thr3
            else:
                thr = thr2
            rmax = -1.0
            for k in range(nd):
                if nb[k] == 0 and np.isfinite(fd[k]):
                    r = np.abs(np.float32(np.abs(fd[k]) - mi)) / sig
                    if r > rmax:
                        rmax = r
            if not (rmax > thr):
                break
            for k in range(nd):
                if nb[k] == 0 and np.isfinite(fd[k]):
                    r = np.abs(np.float32(np.abs(fd[k]) - mi)) / sig
                    if r == rmax:
                        gdq[k + 1] |= _JUMP
                        nb[k] = 1
                        n_primary += 1
    any_nb = False
    nb[ng - 1] = 0
    for k in range(nd - 1, -1, -1):
        flag = np.uint8(0)
        if do_nb and (gdq[k + 1] & _JUMP):
            r = np.abs(fd[k] - med) / sigma
            if r < nb_max and r > nb_min:
                flag = np.uint8(1)
                any_nb = True
        nb[k + 1] = flag
    nb[0] = 0
    return n_primary, any_nb, k_lo, k_hi


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def jump_pixel_fast(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3, do_nb,
                    nb_min, nb_max, fd, wk, nb, keys, kpos):
    """:func:`jump_pixel` with a screen for the common clean pixel; identical results.

    A pixel with no group SATURATED or DO_NOT_USE, finite differences, at least 4 of
    them and the iterative mode (not ``single_pass``) is tested with the first
    iteration of :func:`jump_pixel` alone: the same differences, median positions,
    clipped median and sigma, and the largest ratio taken as ``max |..| / sigma`` (a
    correctly rounded division by a positive number is monotonic, so this is the largest
    of the per-difference ratios, bit for bit; a NaN sigma gives NaN, no jump, as there).
    When that ratio is not above the threshold the pixel has no jump: ``gdq`` is left
    as it is, ``nb`` is **not written** (callers read it only where ``any_nb``) and
    ``(0, False, k_lo, k_hi)`` is returned. Every other pixel (a jump candidate, flagged
    groups, NaN, fewer differences, single pass) runs :func:`jump_pixel` from scratch.
    """
    nd = ng - 1
    if single_pass or nd < 4:
        return jump_pixel(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3, do_nb,
                          nb_min, nb_max, fd, wk, nb, keys, kpos)
    for k in range(ng):
        if gdq[k] & _BAD:
            return jump_pixel(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3,
                              do_nb, nb_min, nb_max, fd, wk, nb, keys, kpos)
    g32 = np.float32(gain)
    rn_e = np.float32(np.float32(rn) * g32)
    rn2 = np.float64(np.float32(rn_e * rn_e))
    noise = rn2 / (0.5 * 2.0 * nframes)
    prev = np.float32(d[0] * g32)
    vmax = -np.inf
    for k in range(nd):
        cur = np.float32(d[k + 1] * g32)
        v = np.float64(np.float32(cur - prev))
        prev = cur
        if not np.isfinite(v):
            return jump_pixel(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3,
                              do_nb, nb_min, nb_max, fd, wk, nb, keys, kpos)
        fd[k] = v
        keys[k] = np.float32(d[k + 1] - d[k])
        a = np.abs(v)
        if a > vmax:
            vmax = a
    # first iteration of the iterative search (n = nd >= 4): the largest |diff| clipped
    j = 0
    for k in range(nd):
        a = np.abs(fd[k])
        if a != vmax:
            wk[j] = a
            j += 1
    mi = nanmedian_inplace(wk, j)
    sig = np.sqrt(np.abs(mi) + noise)
    if sig == 0.0:
        sig = np.nan
    amax = -1.0
    for k in range(nd):
        a = np.abs(np.float32(np.abs(fd[k]) - mi))
        if a > amax:
            amax = a
    if amax / sig > rej:  # a jump candidate: the exact walk
        return jump_pixel(d, gdq, ng, gain, rn, nframes, single_pass, rej, thr2, thr3, do_nb,
                          nb_min, nb_max, fd, wk, nb, keys, kpos)
    p_lo, p_hi = median_positions(keys, nd)
    return 0, False, p_lo, p_hi


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def pair_ranks(X, n, nx, R):
    """``R[i, x]``: the rank of ``X[i, x]`` among ``X[0 .. n - 1, x]`` by (value, position),
    for columns ``0 .. nx - 1``: pairwise counts, the pixel the innermost index (vectorises).
    Equal values rank by position; NaN compares false (ranks 0 against the others)."""
    for i in range(n):
        for x in range(nx):
            R[i, x] = 0
        for j in range(i):
            for x in range(nx):
                R[i, x] += np.int32(X[j, x] <= X[i, x])
        for j in range(i + 1, n):
            for x in range(nx):
                R[i, x] += np.int32(X[j, x] < X[i, x])


#: :func:`screen_row` screens the pixels that fail its early-out bound one by one
#: (:func:`_screen_pixel`) while fewer than ``nx / _SCREEN_FULL_ROW_FRACTION`` do, else
#: the whole row at once (:func:`_screen_full_row`); the same results either way.
_SCREEN_FULL_ROW_FRACTION = 8


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _screen_noise(g32, rn, nframes):
    """The read-noise term of sigma (:func:`jump_pixel`'s ``noise``)."""
    rn_e = np.float32(np.float32(rn) * g32)
    rn2 = np.float64(np.float32(rn_e * rn_e))
    return rn2 / (0.5 * 2.0 * nframes)


@njit(cache=True, nogil=True, error_model="numpy")
def _screen_bound_row(A, nd, gain, rn, nframes, rej, single, ok, W, IW):
    """The exact early-out of :func:`screen_row`: ``IW[0, x]`` = 1 where pixel ``x`` is
    ``ok`` and must be screened in full, 0 where its screen result is already known (not
    ``ok``, or provably no jump candidate); returns how many are 1. ``W[0:2]``: work.

    The bound, from the smallest and largest differences ``lo``, ``hi`` of ``A[:nd, x]``
    (finite where ``ok``): the median ``mi`` the full screen takes is one of them or the
    float64 mean of two, so ``lo <= mi <= hi``; rounding (float64, float32) is monotonic
    and symmetric, so every numerator ``|float32(A - mi)|`` (iterative; single pass
    ``|A - mi|``) is at most ``U = float32(hi - lo)`` (single pass ``hi - lo``); and
    ``|mi| >= L`` (iterative ``L = lo >= 0``; single pass ``lo``, ``-hi`` or 0, the
    smallest ``|value|`` of ``[lo, hi]``), so ``sigma = sqrt(|mi| + noise) >= sqrt(L +
    noise)`` (a NaN or zero sigma there is no jump either). Correctly rounded division is
    monotonic in both operands: ``U / sqrt(L + noise) <= rej`` means every ratio is
    ``<= rej``, no jump candidate, as the full screen finds. A NaN or zero bound fails
    the test (screened in full)."""
    nx = ok.shape[0]
    for x in range(nx):
        W[0, x] = A[0, x]
        W[1, x] = A[0, x]
    for k in range(1, nd):
        for x in range(nx):
            a = A[k, x]
            W[0, x] = a if a < W[0, x] else W[0, x]
            W[1, x] = a if a > W[1, x] else W[1, x]
    nf = 0
    for x in range(nx):
        lo = W[0, x]
        hi = W[1, x]
        if single:
            low = lo if lo > 0.0 else (-hi if hi < 0.0 else 0.0)
            u = hi - lo
        else:
            low = lo
            u = np.float64(np.float32(hi - lo))
        lb = np.sqrt(low + _screen_noise(gain[x], rn[x], nframes))
        f = ok[x] and not (u / lb <= rej)
        IW[0, x] = np.int32(f)
        nf += np.int64(f)
    return nf


@njit(cache=True, nogil=True, error_model="numpy")
def _screen_pixel(A, nd, x, g32, rn, nframes, rej, single, klo, khi):
    """:func:`_screen_full_row`'s result (``ok``) for one pixel ``x`` that is ``ok``
    before it (finite differences), the same operations per pixel: the median ``mi``
    (single pass: of the differences at the key median positions ``klo``, ``khi``;
    iterative: of the ``|diff|``s without the largest and its ties, ranked by (value,
    position)), sigma, and ``not (max |..| / sigma > rej)``."""
    noise = _screen_noise(g32, rn, nframes)
    w1 = 0.0
    w2 = 0.0
    if single:
        j = nd
        w1 = A[khi, x] if 0 <= khi < nd else 0.0
        w2 = A[klo, x] if 0 <= klo < nd else 0.0
    else:
        vmax = -np.inf
        for k in range(nd):
            a = A[k, x]
            vmax = a if a > vmax else vmax
        cnt = 0
        for k in range(nd):
            cnt += A[k, x] == vmax
        j = nd - cnt
        t_hi = j >> 1
        t_lo = t_hi - 1 if (j & 1) == 0 else t_hi
        for i in range(nd):
            ai = A[i, x]
            r = 0
            for m in range(i):
                r += A[m, x] <= ai
            for m in range(i + 1, nd):
                r += A[m, x] < ai
            w1 = ai if r == t_hi else w1
            w2 = ai if r == t_lo else w2
    mi = w1 if (j & 1) == 1 else (w2 + w1) / 2.0
    mi = np.nan if j == 0 else mi
    sig = np.sqrt(np.abs(mi) + noise)
    sig = np.nan if sig == 0.0 else sig
    amax = -1.0
    for k in range(nd):
        a = np.abs(A[k, x] - mi) if single else np.float64(np.abs(np.float32(A[k, x] - mi)))
        amax = a if a > amax else amax
    return not (amax / sig > rej)


@njit(cache=True, nogil=True, error_model="numpy")
def screen_row(G, Q, gain, rn, nframes, rej, A, K, R, W, IW, ok, klo, khi, single=False):
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
    _median_positions_row(K, R, nd, klo, khi)
    # the exact early-out (:func:`_screen_bound_row`): most pixels provably pass; the
    # others (IW[0] set) are screened in full, per pixel or, when many, for the row
    nf = _screen_bound_row(A, nd, gain, rn, nframes, rej, single, ok, W, IW)
    if nf == 0:
        return
    if nf * _SCREEN_FULL_ROW_FRACTION < nx:
        for x in range(nx):
            if IW[0, x] != 0:
                ok[x] = _screen_pixel(A, nd, x, gain[x], rn[x], nframes, rej, single,
                                      klo[x], khi[x])
        return
    _screen_full_row(A, R, W, IW, ok, gain, rn, nframes, rej, nd, nx, klo, khi, single)


@njit(cache=True, nogil=True, error_model="numpy")
def _screen_full_row(A, R, W, IW, ok, gain, rn, nframes, rej, nd, nx, klo, khi, single):
    """The full screen of :func:`screen_row` after the key median positions, for every
    pixel of the row at once (the vectorised form of :func:`_screen_pixel`, the same
    arithmetic; a pixel that passes the early-out bound passes here too): used when many
    pixels fail the bound."""
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
        for x in range(nx):
            j = np.int32(nd) - IW[0, x]
            IW[0, x] = j
            t_hi = j >> 1
            IW[1, x] = t_hi
            IW[2, x] = t_hi - 1 if (j & 1) == 0 else t_hi
        if nd >= _NET_MIN_RANKS:
            # the values of ranks IW[1], IW[2] of |diff| by (value, position): the sorted
            # |diff|s at those indices (equal values are interchangeable here; a pixel with
            # a NaN |diff| is not ok whatever is selected)
            _select_sorted_row(A, nd, IW, W)
    if single or nd < _NET_MIN_RANKS:
        if not single:
            # ranks of |diff| by (value, position)
            pair_ranks(A, nd, nx, R)
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




#: Fewest differences for which the row screen ranks with a sorting network (median
#: positions of the keys; in the iterative mode, the ranked |diff| values) instead of
#: pairwise rank counts, ``(nd - 1) nd`` compares per pixel (measured crossover:
#: bench/jump_screen_cost.py).
_NET_MIN_MEDIAN = 21
_NET_MIN_RANKS = 20
#: Pixels sorted together (the block's keys stay in L1 while the network runs).
_NET_BLOCK = 128


@njit(cache=True, nogil=True, error_model="numpy")
def _oddeven_pairs(n, net, write):
    """Count (and with ``write``, store in ``net``) the comparators of Batcher's odd-even
    merge sort of ``n`` wires, those reaching a wire >= n left out."""
    c = 0
    p = 1
    while p < n:
        k = p
        while k >= 1:
            j = k % p
            while j + k < n:
                for i in range(k):
                    if i + j + k < n and (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        if write:
                            net[c, 0] = i + j
                            net[c, 1] = i + j + k
                        c += 1
                j += 2 * k
            k //= 2
        p *= 2
    return c


@njit(cache=True, nogil=True, error_model="numpy")
def _oddeven_network(n, w_lo, w_hi):
    """Batcher's odd-even merge sort comparators for ``n`` wires, pruned to those the
    outputs ``w_lo .. w_hi`` depend on.

    The network is the one for the next power of two with the comparators that reach a
    wire >= n dropped (wires padded with +inf: those comparators would be no-ops). Each
    comparator (a, b), a < b, puts the smaller value on wire a. Returns int64 (c, 2).
    """
    cap = _oddeven_pairs(n, np.empty((0, 2), np.int64), False)
    net = np.empty((cap, 2), np.int64)
    _oddeven_pairs(n, net, True)
    need = np.zeros(max(n, 1), np.bool_)
    for w in range(w_lo, w_hi + 1):
        need[w] = True
    keep = np.zeros(cap, np.bool_)
    nk = 0
    for c in range(cap - 1, -1, -1):
        a = net[c, 0]
        b = net[c, 1]
        if need[a] or need[b]:
            keep[c] = True
            need[a] = True
            need[b] = True
            nk += 1
    out = np.empty((nk, 2), np.int64)
    o = 0
    for c in range(cap):
        if keep[c]:
            out[o, 0] = net[c, 0]
            out[o, 1] = net[c, 1]
            o += 1
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _median_positions_col(K, nd, x, klo, khi):
    """The rank-count median positions of ``K[:nd, x]`` for one pixel (any keys, NaN
    included: a NaN ranks 0, finite keys rank among the finite ones)."""
    kk = nd // 2
    even = nd % 2 == 0
    klo[x] = -1
    khi[x] = -1
    for i in range(nd):
        r = 0
        for j in range(i):
            r += np.int32(K[j, x] <= K[i, x])
        for j in range(i + 1, nd):
            r += np.int32(K[j, x] < K[i, x])
        khi[x] = i if r == kk else khi[x]
        klo[x] = i if (even and r == kk - 1) else klo[x]
    if not even:
        klo[x] = khi[x]


@njit(cache=True, nogil=True, error_model="numpy")
def _median_positions_row(K, R, nd, klo, khi):
    """:func:`median_positions` of ``K[:nd, x]`` for every pixel x (distinct ranks: the
    keys of a pixel the screen passes are finite).

    Below ``_NET_MIN_MEDIAN`` differences, pairwise rank counts. From there, per block of
    pixels: the keys sorted by a sorting network (pruned to the two middle outputs), which
    gives the median values ``v``; the element of rank r in the (value, position) order
    is then the ``(r - #{keys < v})``-th key equal to ``v`` in position order (the rank of
    a key is ``#{smaller keys} + #{equal keys before it}``), found in two passes. A pixel
    with a NaN key takes the rank counts (:func:`_median_positions_col`), whose results
    the order argument does not cover.
    """
    nx = K.shape[1]
    kk = nd // 2
    even = nd % 2 == 0
    if nd < _NET_MIN_MEDIAN:
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
        return
    wl = kk - 1 if even else kk
    net = _oddeven_network(nd, wl, kk)
    nc = net.shape[0]
    B = _NET_BLOCK
    S = np.empty((nd, B), np.float32)
    vh = np.empty(B, np.float32)
    vl = np.empty(B, np.float32)
    th = np.empty(B, np.int32)
    tl = np.empty(B, np.int32)
    eh = np.empty(B, np.int32)
    el = np.empty(B, np.int32)
    ph = np.empty(B, np.int32)
    pl = np.empty(B, np.int32)
    nn = np.empty(B, np.int32)
    for x0 in range(0, nx, B):
        nb = min(B, nx - x0)
        for b in range(nb):
            nn[b] = 0
        for k in range(nd):
            for b in range(nb):
                v = K[k, x0 + b]
                S[k, b] = v
                nn[b] += np.int32(v != v)
        for c in range(nc):
            sp = S[net[c, 0]]
            sq = S[net[c, 1]]
            for b in range(nb):
                u = sp[b]
                w = sq[b]
                lt = w < u
                sp[b] = w if lt else u
                sq[b] = u if lt else w
        for b in range(nb):
            vh[b] = S[kk, b]
            vl[b] = S[wl, b]
            th[b] = kk
            tl[b] = wl
            eh[b] = 0
            el[b] = 0
            ph[b] = -1
            pl[b] = -1
        # th, tl: the occurrence (in position order) of the median values that has the rank
        for k in range(nd):
            Kk = K[k, x0:x0 + nb]
            for b in range(nb):
                v = Kk[b]
                th[b] -= np.int32(v < vh[b])
                tl[b] -= np.int32(v < vl[b])
        for k in range(nd):
            Kk = K[k, x0:x0 + nb]
            for b in range(nb):
                v = Kk[b]
                qh = v == vh[b]
                ql = v == vl[b]
                ph[b] = np.int32(k) if (qh and eh[b] == th[b]) else ph[b]
                pl[b] = np.int32(k) if (ql and el[b] == tl[b]) else pl[b]
                eh[b] += np.int32(qh)
                el[b] += np.int32(ql)
        for b in range(nb):
            khi[x0 + b] = ph[b]
            klo[x0 + b] = pl[b]
        for b in range(nb):
            if nn[b] > 0:
                _median_positions_col(K, nd, x0 + b, klo, khi)


@njit(cache=True, nogil=True, error_model="numpy")
def _select_sorted_row(A, nd, IW, W):
    """``W[1, x]``, ``W[2, x]`` = the values of ranks ``IW[1, x]``, ``IW[2, x]`` of
    ``A[:nd, x]`` (0.0 for a rank outside 0 .. nd // 2), by a sorting network per block of
    pixels (pruned to the outputs 0 .. nd // 2). Equal to selecting by (value, position)
    ranks for finite values that are not -0.0 (the screen's |diff|s)."""
    nx = A.shape[1]
    top = nd // 2
    net = _oddeven_network(nd, np.int64(0), top)
    nc = net.shape[0]
    B = _NET_BLOCK
    S = np.empty((nd, B), np.float64)
    for x0 in range(0, nx, B):
        nb = min(B, nx - x0)
        for k in range(nd):
            for b in range(nb):
                S[k, b] = A[k, x0 + b]
        for c in range(nc):
            sp = S[net[c, 0]]
            sq = S[net[c, 1]]
            for b in range(nb):
                u = sp[b]
                w = sq[b]
                lt = w < u
                sp[b] = w if lt else u
                sq[b] = u if lt else w
        for b in range(nb):
            W[1, x0 + b] = 0.0
            W[2, x0 + b] = 0.0
        for k in range(top + 1):
            for b in range(nb):
                a = S[k, b]
                W[1, x0 + b] = a if k == IW[1, x0 + b] else W[1, x0 + b]
                W[2, x0 + b] = a if k == IW[2, x0 + b] else W[2, x0 + b]


@njit(cache=True, nogil=True, error_model="numpy")
def flag_neighbours(groupdq, nbflags):
    """Flag the 4 neighbours of qualifying jumps (same group, not SAT/DNU) in place.

    Parameters
    ----------
    groupdq : uint8, (ngroups, ny, nx)
    nbflags : uint8, (ngroups, ny, nx), 1 where the pixel's jump qualifies
    """
    ng, ny, nx = groupdq.shape
    for g in range(ng):
        for y in range(ny):
            for x in range(nx):
                if groupdq[g, y, x] & _BAD:
                    continue
                f = False
                if y > 0 and nbflags[g, y - 1, x]:
                    f = True
                elif y < ny - 1 and nbflags[g, y + 1, x]:
                    f = True
                elif x > 0 and nbflags[g, y, x - 1]:
                    f = True
                elif x < nx - 1 and nbflags[g, y, x + 1]:
                    f = True
                if f:
                    groupdq[g, y, x] |= _JUMP


@njit(cache=True, nogil=True, error_model="numpy")
def _detect_cube(groups, groupdq, pixeldq, readnoise, gain, nframes, single_pass, rej, thr2,
                 thr3, do_nb, nb_min, nb_max):
    ng, ny, nx = groups.shape
    d = np.empty(ng, np.float32)
    gdq = np.empty(ng, np.uint8)
    fd = np.empty(ng, np.float64)
    wk = np.empty(ng, np.float64)
    nb = np.empty(ng, np.uint8)
    keys = np.empty(ng, np.float32)
    kpos = np.empty(ng, np.int64)
    nbflags = np.zeros((ng, ny, nx), np.uint8)
    total = 0
    for y in range(ny):
        for x in range(nx):
            g = gain[y, x]
            if not (g > 0):
                pixeldq[y, x] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
            for k in range(ng):
                d[k] = groups[k, y, x]
                gdq[k] = groupdq[k, y, x]
            n, anynb, _, _ = jump_pixel(d, gdq, ng, g, readnoise[y, x], nframes, single_pass,
                                        rej, thr2, thr3, do_nb, nb_min, nb_max, fd, wk, nb, keys,
                                        kpos)
            total += n
            for k in range(ng):
                groupdq[k, y, x] = gdq[k]
                nbflags[k, y, x] = nb[k]
    if do_nb:
        flag_neighbours(groupdq, nbflags)
    jd = np.uint8(dqflags.JUMP_DET)
    for k in range(ng):
        for y in range(ny):
            for x in range(nx):
                q = groupdq[k, y, x]
                if (q & jd) and (q & _BAD):
                    groupdq[k, y, x] = q & ~jd
    return total


def detect_jumps(groups, groupdq, pixeldq, readnoise, gain, nframes: int,
                 params: JumpParams = JumpParams()) -> tuple[int, bool]:
    """Detect jumps in one integration, updating ``groupdq``/``pixeldq`` in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN, calibrated (bias, linearity, dark done)
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx)
    readnoise : float32, (ny, nx), DN (CDS)
    gain : float32, (ny, nx), e-/DN
    nframes : int
    params : JumpParams

    Returns
    -------
    n_primary : int
        Number of groups flagged as primary jumps (before neighbour flagging).
    skipped : bool
        True when too few groups were usable (nothing flagged).
    """
    ng = groups.shape[0]
    skip, single = jump_mode(ng, int(count_all_dnu_groups(groupdq)), params)
    if skip:
        bad = ~(np.asarray(gain) > 0)
        pixeldq[bad] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
        return 0, True
    n = _detect_cube(
        groups, groupdq, pixeldq, np.asarray(readnoise, np.float32), np.asarray(gain, np.float32),
        int(nframes), single, float(params.rejection_threshold),
        float(params.three_group_rejection_threshold),
        float(params.four_group_rejection_threshold), bool(params.flag_4_neighbors),
        float(params.min_jump_to_flag_neighbors), float(params.max_jump_to_flag_neighbors),
    )
    return int(n), False
