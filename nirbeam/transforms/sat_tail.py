"""sat_tail: the row screen and fit of pixels clean up to a saturated tail.

A pixel whose group DQ is 0 for groups ``0 .. S - 1`` and has SATURATED or DO_NOT_USE
(and no other bit) in every group from ``S`` on (``0 <= S < ng``) is a *saturated tail*
pixel: the jump step sees ``m = max(S - 1, 0)`` finite differences (the later ones are
NaN), the ramp fit one segment ``0 .. S - 1``. These kernels give, for a row's such
pixels gathered together (column ``t`` of ``G``: the pixel's groups, ``S[t]`` its first
flagged group), the same results as :func:`~nirbeam.transforms.jump.jump_pixel` and
:func:`~nirbeam.transforms.ramp_fit.fit_pixel` bit for bit, in loops over the pixels:

* :func:`screen_tail_row`: True where ``jump_pixel`` flags nothing (then it returns
  ``(0, False, klo, khi)``), with the key median positions ``klo, khi``; the first
  iteration of the iterative mode with stcal's rules for ``m`` differences (``m >= 4``:
  the largest clipped, threshold ``rej``; 3: the plain median, ``thr3``; 2: the smaller,
  ``thr2``; 0-1: no test), or the single pass (every finite difference against the median
  at the key positions, ``rej``);
* :func:`fit_tail_row`: ``fit_pixel``'s one-segment arithmetic for ``n = S`` groups
  (``n >= 3``: optimal weights; 2: the difference; 1: the 0th-group rate when
  ``suppress_one_group`` is off, else no good group; 0: saturated from the first group)
  for a pixel with positive gain and no DO_NOT_USE / SATURATED in its pixel DQ.

Ranks are pairwise counts over the first ``mmax`` (the largest ``m`` of the pixels given)
differences, the missing differences of shorter pixels padded with +inf at the end (they
rank after every difference of the pixel, and no wanted rank reaches them).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.jump import pair_ranks
from nirbeam.transforms.ramp_fit import median_rate, one_segment_result, segment_fit

__all__ = ["tail_pattern_row", "screen_tail_row", "fit_tail_row"]

_BAD = np.uint8(dqflags.SATURATED | dqflags.DO_NOT_USE)
_NBAD = np.uint8(0xFF ^ (dqflags.SATURATED | dqflags.DO_NOT_USE))
_SAT = np.uint8(dqflags.SATURATED)
_U_DNU = np.uint32(dqflags.DO_NOT_USE)
_U_SAT = np.uint32(dqflags.SATURATED)


@njit(cache=True, nogil=True, error_model="numpy")
def tail_pattern_row(Q, S, T, TS):
    """Per pixel of a row's group DQ ``Q`` (uint8, (ng, nx)): ``S[x]`` the first group
    with a nonzero DQ (``ng`` if none), ``T[x]`` True when every group from there has
    SATURATED or DO_NOT_USE and no other bit (a saturated tail; False when ``S == ng``),
    ``TS[x]`` True when one of those groups has SATURATED."""
    ng, nx = Q.shape
    for x in range(nx):
        S[x] = ng
        T[x] = True
        TS[x] = False
    for g in range(ng):
        for x in range(nx):
            q = Q[g, x]
            s = np.int64(g) if (q != 0 and S[x] == ng) else S[x]
            S[x] = s
            tail = s <= g
            T[x] = T[x] & ((not tail) or ((q & _BAD) != 0 and (q & _NBAD) == 0))
            TS[x] = TS[x] | ((q & _SAT) != 0)
    for x in range(nx):
        T[x] = T[x] & (S[x] < ng)


@njit(cache=True, nogil=True, error_model="numpy")
def screen_tail_row(G, S, nt, gain, rn, nframes, single, rej, thr2, thr3, A, K, R, W, IW,
                    ok, klo, khi):
    """The jump screen of saturated-tail pixels (columns ``0 .. nt - 1``).

    Parameters
    ----------
    G : float32, (ng, >= nt), DN, the pixels' groups; S : int64, (>= nt,) first flagged group
    gain, rn : float32, (>= nt,); nframes : int; single : bool (single-pass mode)
    rej, thr2, thr3 : float, jump thresholds (>= 4 or single pass; 2; 3 differences)
    A : float64, K : float32, R : int32, each (>= ng - 1, >= nt); W : float64, (5, >= nt);
    IW : int32, (4, >= nt): work buffers
    ok : bool, klo, khi : int64, each (>= nt,): outputs; ``ok[t]`` True when
    ``jump_pixel`` flags nothing, then ``klo, khi`` are its median positions.
    """
    mmax = 0
    for t in range(nt):
        m = S[t] - 1
        m = 0 if m < 0 else m
        mmax = m if m > mmax else mmax
    for t in range(nt):
        ok[t] = True
        klo[t] = -1
        khi[t] = -1
    for k in range(mmax):
        for t in range(nt):
            g32 = gain[t]
            prev = np.float32(G[k, t] * g32)
            cur = np.float32(G[k + 1, t] * g32)
            v = np.float64(np.float32(cur - prev))
            valid = k + 1 < S[t]
            ok[t] = ok[t] & ((not valid) or np.isfinite(v))
            A[k, t] = (v if single else np.abs(v)) if valid else np.inf
            K[k, t] = np.float32(G[k + 1, t] - G[k, t]) if valid else np.float32(np.inf)
    # key median positions (ranks among the m valid keys: the padding ranks after them)
    for t in range(nt):
        m = S[t] - 1
        m = 0 if m < 0 else m
        IW[3, t] = np.int32(m)
    pair_ranks(K, mmax, nt, R)
    for i in range(mmax):
        for t in range(nt):
            m = IW[3, t]
            kk = m >> 1
            r = R[i, t]
            inr = i < m
            khi[t] = i if (inr and r == kk) else khi[t]
            klo[t] = i if (inr and (m & 1) == 0 and r == kk - 1) else klo[t]
    for t in range(nt):
        klo[t] = khi[t] if (IW[3, t] & 1) == 1 else klo[t]
    # the values wanted (W[1], W[2]) and their count rule (IW[0]: j, the median's size)
    if single:
        for t in range(nt):
            W[1, t] = 0.0
            W[2, t] = 0.0
        for k in range(mmax):
            for t in range(nt):
                a = A[k, t]
                W[1, t] = a if k == khi[t] else W[1, t]
                W[2, t] = a if k == klo[t] else W[2, t]
        for t in range(nt):
            m = IW[3, t]
            # the median of the m differences: odd m -> W[1], even -> their mean
            IW[0, t] = 1 if (m > 0 and klo[t] == khi[t]) else (2 if m > 0 else 0)
            W[0, t] = rej
    else:
        # the largest |diff| and its ties (clipped when m >= 4)
        for t in range(nt):
            W[0, t] = -np.inf
            IW[0, t] = 0
        for k in range(mmax):
            for t in range(nt):
                a = A[k, t]
                valid = k < IW[3, t]
                W[0, t] = a if (valid and a > W[0, t]) else W[0, t]
        for k in range(mmax):
            for t in range(nt):
                IW[0, t] += np.int32((k < IW[3, t]) & (A[k, t] == W[0, t]))
        for t in range(nt):
            m = IW[3, t]
            j = m - IW[0, t] if m >= 4 else m
            j = 1 if m == 2 else j  # the smaller of two: rank 0
            IW[0, t] = j
            t_hi = j >> 1
            IW[1, t] = t_hi
            IW[2, t] = t_hi - 1 if (j & 1) == 0 else t_hi
            W[0, t] = rej if m >= 4 else (thr3 if m == 3 else thr2)
        # ranks of |diff| by (value, position); padding +inf after the valid ones
        pair_ranks(A, mmax, nt, R)
        for t in range(nt):
            W[1, t] = 0.0
            W[2, t] = 0.0
        for k in range(mmax):
            for t in range(nt):
                sel = R[k, t]
                a = A[k, t]
                W[1, t] = a if sel == IW[1, t] else W[1, t]
                W[2, t] = a if sel == IW[2, t] else W[2, t]
    # the median (NaN when nothing remains), sigma, the largest ratio's numerator
    for t in range(nt):
        j = IW[0, t]
        mi = W[1, t] if (j & 1) == 1 else (W[2, t] + W[1, t]) / 2.0
        mi = np.nan if j == 0 else mi
        W[3, t] = mi
        g32 = gain[t]
        rn_e = np.float32(np.float32(rn[t]) * g32)
        rn2 = np.float64(np.float32(rn_e * rn_e))
        noise = rn2 / (0.5 * 2.0 * nframes)
        sig = np.sqrt(np.abs(mi) + noise)
        W[4, t] = np.nan if sig == 0.0 else sig
        W[2, t] = -1.0
    for k in range(mmax):
        for t in range(nt):
            a = np.abs(A[k, t] - W[3, t]) if single else np.float64(
                np.abs(np.float32(A[k, t] - W[3, t])))
            W[2, t] = a if (k < IW[3, t] and a > W[2, t]) else W[2, t]
    for t in range(nt):
        # fewer than 2 differences: the iterative search stops before any test
        test = single or IW[3, t] >= 2
        ok[t] = ok[t] & (not (test and W[2, t] / W[4, t] > W[0, t]))


@njit(cache=True, nogil=True, error_model="numpy")
def fit_tail_row(G, S, TS, nt, pixeldq, gain, rn, nframes, tgroup, tframe, dcur, suppress1g,
                 wtab, stab, klo, khi, slope_o, err_o, dq_o, vp_o, vr_o):
    """:func:`~nirbeam.transforms.ramp_fit.fit_pixel` of saturated-tail pixels (columns
    ``0 .. nt - 1`` of ``G``; ``S`` first flagged group, ``TS`` whether a tail group has
    SATURATED) with positive gain and no DO_NOT_USE / SATURATED in ``pixeldq``, the
    median positions ``klo, khi`` from the jump step (no JUMP_DET group). ``ng >= 2``."""
    ng = G.shape[0]
    c = np.sqrt(2.0 * nframes)
    one_group_time = (np.float64(np.float32(nframes)) + 1.0) * np.float64(tframe) / 2.0
    sup = suppress1g and ng > 1
    for t in range(nt):
        n = S[t]
        g = np.float64(np.float32(gain[t]))
        rn_e = np.float64(np.float32(np.float64(rn[t]) * (g / c)))
        dq = np.uint32(pixeldq[t])
        sat = _U_SAT if TS[t] else np.uint32(0)
        if n == 0 or (n == 1 and sup):
            # saturated (or DO_NOT_USE) from the first group; or the one good group
            # suppressed: no usable group
            slope_o[t] = np.nan
            err_o[t] = 0.0
            dq_o[t] = dq | _U_DNU | sat
            vp_o[t] = 0.0
            vr_o[t] = 0.0
            continue
        # median rate
        if n == 1:  # the 0th-group rate (is_0th)
            mrate = np.float64(G[0, t]) / one_group_time
        else:  # khi >= 0: n >= 2 groups give at least one difference
            mrate = median_rate(G[:, t], klo[t], khi[t], tgroup)
        if np.isnan(mrate):
            mrate = 0.0
        if n == 1:
            timing = one_group_time
            sl = np.float64(G[0, t]) / timing
            pden = timing * g
            vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
            rnum = rn_e / timing
            vr = 12.0 * rnum * rnum / (6.0 * g * g)
        elif n == 2:
            sl = (np.float64(G[1, t]) - np.float64(G[0, t])) / tgroup
            pden = tgroup * g
            vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
            rnum = rn_e / tgroup
            vr = 12.0 * rnum * rnum / (6.0 * g * g)
        else:
            sl, vp, vr = segment_fit(G[:, t], n, g, rn_e, mrate, tgroup, dcur, wtab, stab)
        slope, err, var_p_out, var_r_out = one_segment_result(sl, vp, vr)
        slope_o[t] = slope
        err_o[t] = err
        dq_o[t] = dq | sat
        vp_o[t] = var_p_out
        vr_o[t] = var_r_out
