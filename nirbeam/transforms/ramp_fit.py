"""ramp_fit: optimally weighted OLS ramp fitting of one integration (stcal ``OLS_C``).

Conventions copied from stcal 1.20 ``slope_fitter.c`` for one integration:

* read noise per read in electrons: ``rn_e = READNOISE * gain / sqrt(2 * NFRAMES)``
  (the reference is a CDS noise);
* segments are runs of good groups (group DQ 0, PERSISTENCE ignored), a segment may
  start with a group flagged only JUMP_DET; one-group segments are dropped when a
  longer one exists, else only the first is kept;
* per segment of n >= 3 groups: weights ``|(i - mid)/mid|**P`` with P from the segment
  S/N (<5: 0, <10: 0.4, <20: 1, <50: 3, <100: 6, else 10); 2 groups: plain
  difference; 1 group: value / time (the 0th group uses ``(NFRAMES+1)/2 * TFRAME``);
* Poisson variance ``(median rate + dark rate) / (tgroup * gain * (n - 1))`` (n - 1 -> 1
  for 1-2 group segments), read-noise variance ``12 rn_e**2 / ((n**3 - n) tgroup**2
  gain**2)`` (n=1, 2 use the n=2 value), total = their sum; the median rate is the
  median of the first differences of non-jump, non-DNU/SAT groups;
* segments combine with inverse variances; the slope is weighted by the read-noise
  inverse variances only (JP-4318); ERR = sqrt(1 / sum(1/var_total));
* DQ = pixel DQ (| DO_NOT_USE | NO_GAIN_VALUE for bad gain) | JUMP_DET if any group has
  it | SATURATED if any group has it | DO_NOT_USE when no group is usable (rate NaN,
  variances and ERR 0); a ramp saturated from group 1 gets SATURATED | DO_NOT_USE;
* ``suppress_one_group`` (jwst default True): ramps with exactly one good group are
  treated as having none.

Times: ``tgroup``/``tframe`` are rounded to float32 as stcal reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.jump import median_positions

__all__ = ["RampFitParams", "weight_tables", "fit_pixel", "fit_pixel_fast", "fit_clean_row", "fit_ramps_cube", "POWERS"]

_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_JUMP = np.uint8(dqflags.JUMP_DET)
_PERS = np.uint8(dqflags.PERSISTENCE)
_NPERS = np.uint8(0xFF ^ dqflags.PERSISTENCE)
_U_DNU = np.uint32(dqflags.DO_NOT_USE)
_U_SAT = np.uint32(dqflags.SATURATED)
_U_JUMP = np.uint32(dqflags.JUMP_DET)
_U_PERS = np.uint32(dqflags.PERSISTENCE)
_U_NGV = np.uint32(dqflags.NO_GAIN_VALUE)
LARGE_VARIANCE_THRESHOLD = 1.0e6
POWERS = np.array([0.0, 0.4, 1.0, 3.0, 6.0, 10.0], np.float32)


@dataclass(frozen=True)
class RampFitParams:
    """Ramp-fit parameters (jwst defaults)."""

    enabled: bool = True
    weighting: str = "optimal"
    suppress_one_group: bool = True

    def __post_init__(self):
        if self.weighting != "optimal":
            raise ValueError(f"ramp_fit: weighting={self.weighting!r}; only 'optimal' is supported")


@njit(cache=True, nogil=True, error_model="numpy")
def weight_tables(ng):
    """Optimal-weight tables for segment lengths 3..ng and the 6 S/N powers.

    Returns
    -------
    w : float64, (6, ng + 1, ng), weight of group i of an n-group segment
    sums : float64, (6, ng + 1, 3), (sum w, sum w i, sum w i^2 * sum w - (sum w i)^2)
    """
    w = np.zeros((6, ng + 1, max(ng, 1)), np.float64)
    sums = np.zeros((6, ng + 1, 3), np.float64)
    for p in range(6):
        pw = POWERS[p]
        for n in range(3, ng + 1):
            mid = (n - 1) / 2.0
            invmid = 1.0 / mid
            sw = 0.0
            sx = 0.0
            sxx = 0.0
            for i in range(n):
                a = np.float32(np.abs((i - mid) * invmid))
                wi = np.float64(a ** pw)
                w[p, n, i] = wi
                sw += wi
                sx += wi * i
                sxx += wi * i * i
            sums[p, n, 0] = sw
            sums[p, n, 1] = sx
            sums[p, n, 2] = sw * sxx - sx * sx
    return w, sums


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _power_index(snr):
    if snr < 5.0:
        return 0
    elif snr < 10.0:
        return 1
    elif snr < 20.0:
        return 2
    elif snr < 50.0:
        return 3
    elif snr < 100.0:
        return 4
    return 5


@njit(cache=True, nogil=True, error_model="numpy")
def fit_pixel(d, gdq, ng, pixeldq, gain, rn, nframes, tgroup, tframe, dcur, suppress1g,
              wtab, stab, keys, seg_s, seg_e, k_lo=-1, k_hi=-1, have_k=False):
    """Fit one pixel's ramp (one integration).

    Parameters
    ----------
    d : float32, (>= ng,), DN, calibrated groups
    gdq : uint8, (>= ng,); may be modified (suppress_one_group adds DO_NOT_USE)
    ng : int
    pixeldq : uint32
    gain : float32, e-/DN
    rn : float32, DN, CDS read noise (READNOISE reference)
    nframes : int
    tgroup, tframe : float, s (already rounded to float32 like stcal)
    dcur : float, DN/s, average dark current (0 in jwst for NIRSpec)
    suppress1g : bool
    wtab, stab : from :func:`weight_tables`
    keys : float32, (>= ng,) work buffer
    seg_s, seg_e : int64, (>= ng,) work buffers
    k_lo, k_hi, have_k : median difference indices from the jump step (see
        :func:`~nirbeam.transforms.jump.jump_pixel`), used when the pixel has no JUMP_DET
        group (then the usable differences are the same set); the median rate is then
        identical to recomputing it.

    Returns
    -------
    rate, err, dq, var_poisson, var_rnoise : float64, float64, uint32, float64, float64
    """
    suppress1g = suppress1g and ng > 1  # stcal never suppresses single-group exposures
    g = np.float64(np.float32(gain))
    rn_e = np.float64(np.float32(np.float64(rn) * (np.float64(np.float32(gain))
                                                   / np.sqrt(2.0 * nframes))))
    one_group_time = (np.float64(np.float32(nframes)) + 1.0) * np.float64(tframe) / 2.0
    dq = np.uint32(pixeldq)
    if not (g > 0.0):
        dq |= _U_DNU | _U_NGV
    # group statistics (one pass; redone if the one-good-group suppression applies)
    suppressed = False
    for _ in range(2):
        ngood_np = 0
        cnt_good = 0
        cnt_dnu_sat = 0
        cnt_sat = 0
        jump_det = False
        pers = False
        for k in range(ng):
            q = gdq[k]
            if (q & _NPERS) == 0:
                ngood_np += 1
            if q & _JUMP:
                jump_det = True
            if q & _PERS:
                pers = True
            if q == 0:
                cnt_good += 1
            if q & (_DNU | _SAT):
                cnt_dnu_sat += 1
            if q & _SAT:
                cnt_sat += 1
        if suppress1g and ng > 1 and ngood_np == 1 and not suppressed:
            suppressed = True
            for k in range(ng):
                gdq[k] |= _DNU
        else:
            break
    is_0th = (not suppress1g) and cnt_good == 1 and gdq[0] == 0
    if jump_det:
        dq |= _U_JUMP
    if pers:
        dq |= _U_PERS
    # median rate
    if ng == 1:
        mrate = np.nan
        if not (gdq[0] & _SAT):
            mrate = np.float64(d[0]) / one_group_time
    elif is_0th:
        mrate = np.float64(d[0]) / one_group_time
        if np.isnan(mrate):
            mrate = 0.0
    else:
        # median of the first differences (DN/s) of groups neither DO_NOT_USE nor
        # SATURATED, skipping differences into a JUMP_DET group and NaN differences (a
        # NaN group not flagged DO_NOT_USE: stcal's median_rate_integration sorts NaN
        # last and takes the median of the rest); ranked by float32(d[k+1] - d[k]) (the
        # order of d[k+1]/tg - d[k]/tg up to rounding)
        if have_k and not jump_det and not suppressed:
            lo = k_lo
            hi = k_hi
            m = 0 if k_hi < 0 else 1
        else:
            m = 0
            for k in range(ng - 1):
                if (gdq[k] & (_SAT | _DNU)) or (gdq[k + 1] & (_SAT | _DNU | _JUMP)):
                    continue
                key = np.float32(d[k + 1] - d[k])
                if key != key:  # a NaN group not flagged: left out, as stcal (NaN-sorted)
                    continue
                keys[m] = key
                seg_s[m] = k
                m += 1
            lo = -1
            hi = -1
            if m > 0:
                p_lo, p_hi = median_positions(keys, m)
                lo = seg_s[p_lo]
                hi = seg_s[p_hi]
        if m > 0:
            f_hi = np.float64(d[hi + 1]) / tgroup - np.float64(d[hi]) / tgroup
            if lo == hi:
                mrate = f_hi
            else:
                mrate = (np.float64(d[lo + 1]) / tgroup - np.float64(d[lo]) / tgroup + f_hi) / 2.0
        elif not (gdq[0] & (_SAT | _DNU)):
            mrate = np.float64(d[0]) / tgroup
        else:
            mrate = 0.0
        if np.isnan(mrate):
            mrate = 0.0
    slope = 0.0
    var_p_out = 0.0
    var_r_out = 0.0
    err = 0.0
    # whole ramp saturated from the first group
    if gdq[0] & _SAT:
        dq |= _U_DNU | _U_SAT
        return np.nan, 0.0, dq, 0.0, 0.0
    # segments
    nseg = 0
    in_seg = False
    start = 0
    maxlen = 0
    for k in range(ng):
        q = gdq[k] & _NPERS
        if q == 0:
            if not in_seg:
                if k > 0 and (gdq[k - 1] & _NPERS) == _JUMP:
                    start = k - 1
                else:
                    start = k
                in_seg = True
        elif in_seg:
            seg_s[nseg] = start
            seg_e[nseg] = k
            maxlen = max(maxlen, k - start)
            nseg += 1
            in_seg = False
    if in_seg:
        seg_s[nseg] = start
        seg_e[nseg] = ng
        maxlen = max(maxlen, ng - start)
        nseg += 1
    if cnt_dnu_sat == ng:
        dq |= _U_DNU
        if cnt_sat == ng:
            dq |= _U_SAT
        if cnt_sat > 0:
            dq |= _U_SAT
        return np.nan, 0.0, dq, 0.0, 0.0
    invvar_r = 0.0
    invvar_p = 0.0
    invvar_e = 0.0
    num = 0.0
    rn2 = rn_e * rn_e
    gvalid = g > 0.0
    if nseg > 0:
        for si in range(nseg):
            s0 = seg_s[si]
            n = seg_e[si] - s0
            if n == 1:
                if nseg > 1 and maxlen > 1:
                    continue
                if nseg > 1 and si > 0:
                    continue  # only the first one-group segment is kept
                timing = one_group_time if is_0th else tgroup
                sl = np.float64(d[s0]) / timing
                pden = timing * g
                vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
                rnum = rn_e / timing
                vr = 12.0 * rnum * rnum / (6.0 * g * g)
            elif n == 2:
                sl = (np.float64(d[s0 + 1]) - np.float64(d[s0])) / tgroup
                pden = tgroup * g
                vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
                rnum = rn_e / tgroup
                vr = 12.0 * rnum * rnum / (6.0 * g * g)
            else:
                dd = np.float64(d[s0 + n - 1]) - np.float64(d[s0])
                den = rn2 + dd * g
                if den <= 0.0 or g == 0.0:
                    snr = 0.0
                else:
                    snr = dd * g / np.sqrt(den)
                    if snr < 0.0:
                        snr = 0.0
                p = _power_index(snr)
                sy = 0.0
                sxy = 0.0
                for i in range(n):
                    v = np.float64(d[s0 + i])
                    v = v if v == v else 0.0  # NaN -> 0 as stcal
                    wv = wtab[p, n, i] * v
                    sy += wv
                    sxy += wv * i
                if rn_e == 0.0 or not np.isfinite(rn_e):
                    sl = np.nan
                else:
                    sl = (stab[p, n, 0] * sxy - stab[p, n, 1] * sy) / stab[p, n, 2] / tgroup
                pden = tgroup * g * (n - 1.0)
                vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
                if gvalid:
                    rnum = rn_e / tgroup
                    vr = 12.0 * rnum * rnum / ((n * n * n - n) * g * g)
                else:
                    vr = 0.0
            invvar_r += 1.0 / vr
            if vp > 0.0:
                invvar_p += 1.0 / vp
            invvar_e += 1.0 / (vp + vr)
            num += sl / vr
        if invvar_p > 0.0:
            var_p_out = 1.0 / invvar_p
        if var_p_out >= LARGE_VARIANCE_THRESHOLD:
            var_p_out = 0.0
        var_r_out = 1.0 / invvar_r
        if var_r_out >= LARGE_VARIANCE_THRESHOLD:
            var_r_out = 0.0
        if dq & (_U_DNU | _U_SAT):
            slope = np.nan
            var_p_out = 0.0
            var_r_out = 0.0
            err = 0.0
        else:
            ve = 1.0 / invvar_e
            slope = num * var_r_out
            err = 0.0 if ve > LARGE_VARIANCE_THRESHOLD else np.sqrt(ve)
    if dq & _U_DNU:
        slope = np.nan
    if dq & _U_SAT:
        slope = np.nan
    if cnt_sat > 0:
        dq |= _U_SAT
    return slope, err, dq, var_p_out, var_r_out


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def median_rate(d, k_lo, k_hi, tgroup):
    """:func:`fit_pixel`'s median rate from the jump step's median difference positions
    ``k_lo, k_hi`` (``d[0] / tgroup`` when ``k_hi < 0``); NaN is left to the caller."""
    if k_hi >= 0:
        f_hi = np.float64(d[k_hi + 1]) / tgroup - np.float64(d[k_hi]) / tgroup
        if k_lo == k_hi:
            mrate = f_hi
        else:
            mrate = (np.float64(d[k_lo + 1]) / tgroup - np.float64(d[k_lo]) / tgroup
                     + f_hi) / 2.0
    else:
        mrate = np.float64(d[0]) / tgroup
    return mrate


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def segment_fit(d, n, g, rn_e, mrate, tgroup, dcur, wtab, stab):
    """:func:`fit_pixel`'s slope and variances of one segment of ``n >= 3`` groups
    ``d[0 .. n - 1]`` (optimal weights by S/N, :func:`weight_tables`): ``(slope, var_poisson,
    var_rnoise)``, for gain ``g`` (e-/DN, float64 of the float32), read noise ``rn_e`` and
    median rate ``mrate`` (NaN already replaced by 0)."""
    rn2 = rn_e * rn_e
    dd = np.float64(d[n - 1]) - np.float64(d[0])
    den = rn2 + dd * g
    if den <= 0.0 or g == 0.0:
        snr = 0.0
    else:
        snr = dd * g / np.sqrt(den)
        if snr < 0.0:
            snr = 0.0
    p = _power_index(snr)
    sy = 0.0
    sxy = 0.0
    for i in range(n):
        v = np.float64(d[i])
        v = v if v == v else 0.0
        wv = wtab[p, n, i] * v
        sy += wv
        sxy += wv * i
    if rn_e == 0.0 or not np.isfinite(rn_e):
        sl = np.nan
    else:
        sl = (stab[p, n, 0] * sxy - stab[p, n, 1] * sy) / stab[p, n, 2] / tgroup
    pden = tgroup * g * (n - 1.0)
    vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
    rnum = rn_e / tgroup
    vr = 12.0 * rnum * rnum / ((n * n * n - n) * g * g)
    return sl, vp, vr


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def one_segment_result(sl, vp, vr):
    """:func:`fit_pixel`'s combination of a ramp with one segment ``(sl, vp, vr)``:
    ``(slope, err, var_poisson, var_rnoise)``, variances at or above
    ``LARGE_VARIANCE_THRESHOLD`` reported as 0."""
    invvar_r = 0.0 + 1.0 / vr
    invvar_p = 0.0
    if vp > 0.0:
        invvar_p += 1.0 / vp
    invvar_e = 0.0 + 1.0 / (vp + vr)
    num = 0.0 + sl / vr
    var_p_out = 0.0
    if invvar_p > 0.0:
        var_p_out = 1.0 / invvar_p
    if var_p_out >= LARGE_VARIANCE_THRESHOLD:
        var_p_out = 0.0
    var_r_out = 1.0 / invvar_r
    if var_r_out >= LARGE_VARIANCE_THRESHOLD:
        var_r_out = 0.0
    ve = 1.0 / invvar_e
    slope = num * var_r_out
    err = 0.0 if ve > LARGE_VARIANCE_THRESHOLD else np.sqrt(ve)
    return slope, err, var_p_out, var_r_out


@njit(cache=True, nogil=True, error_model="numpy")
def fit_pixel_fast(d, gdq, ng, pixeldq, gain, rn, nframes, tgroup, tframe, dcur, suppress1g,
                   wtab, stab, keys, seg_s, seg_e, k_lo=-1, k_hi=-1, have_k=False):
    """:func:`fit_pixel` with a short path for the clean pixel; identical results.

    A pixel with every group DQ 0, at least 3 groups, positive gain, no DO_NOT_USE or
    SATURATED in its pixel DQ and the median positions from the jump step (``have_k``)
    is one segment of all groups: the same arithmetic as :func:`fit_pixel` in the same
    order, without its group statistics and segment search. Every other pixel runs
    :func:`fit_pixel`.
    """
    g = np.float64(np.float32(gain))
    if not have_k or ng < 3 or not (g > 0.0) or (np.uint32(pixeldq) & (_U_DNU | _U_SAT)):
        return fit_pixel(d, gdq, ng, pixeldq, gain, rn, nframes, tgroup, tframe, dcur,
                         suppress1g, wtab, stab, keys, seg_s, seg_e, k_lo, k_hi, have_k)
    for k in range(ng):
        if gdq[k] != 0:
            return fit_pixel(d, gdq, ng, pixeldq, gain, rn, nframes, tgroup, tframe, dcur,
                             suppress1g, wtab, stab, keys, seg_s, seg_e, k_lo, k_hi, have_k)
    rn_e = np.float64(np.float32(np.float64(rn) * (np.float64(np.float32(gain))
                                                   / np.sqrt(2.0 * nframes))))
    dq = np.uint32(pixeldq)
    # median rate (fit_pixel with have_k, no JUMP_DET group, not suppressed)
    mrate = median_rate(d, k_lo, k_hi, tgroup)
    if np.isnan(mrate):
        mrate = 0.0
    # one segment of n = ng groups
    sl, vp, vr = segment_fit(d, ng, g, rn_e, mrate, tgroup, dcur, wtab, stab)
    slope, err, var_p_out, var_r_out = one_segment_result(sl, vp, vr)
    return slope, err, dq, var_p_out, var_r_out


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _select_power(p, c0, c1, c2, c3, c4, c5):
    """``(c0, .., c5)[p]`` for a power index ``p`` in 0..5, as a chain of selects (no
    branch, no memory access: vectorises inside a loop over pixels)."""
    c = c0
    c = c1 if p == 1 else c
    c = c2 if p == 2 else c
    c = c3 if p == 3 else c
    c = c4 if p == 4 else c
    c = c5 if p == 5 else c
    return c


@njit(cache=True, nogil=True, error_model="numpy")
def fit_clean_row(G, gain, rn, nframes, tgroup, dcur, wtab, stab, klo, khi, F, P, slope_o,
                  err_o, vp_o, vr_o):
    """:func:`fit_pixel_fast`'s clean-pixel arithmetic for a whole row, across pixels.

    For every pixel of the row as if it were clean (every group DQ 0, positive gain,
    median positions ``klo, khi`` from the jump step): one segment of all ``ng >= 3``
    groups, the same operations in the same order as :func:`fit_pixel`, written as
    loops whose innermost index is the pixel (the weight-table look-up as selects,
    :func:`_select_power`) so that the compiler vectorises them; the four groups of the
    median rate are read once per pixel by index (a select over every group position,
    ``k == khi`` for each ``k``, measured 1.8x slower for the whole function). The caller
    uses the results only for the pixels that are clean (others: :func:`fit_pixel`);
    the DQ of a clean pixel is its pixel DQ.

    Parameters
    ----------
    G : float32, (ng, nx), DN; gain, rn : float32, (nx,); nframes : int
    tgroup : float, s (float32-rounded); dcur : float, DN/s
    wtab, stab : :func:`weight_tables`; klo, khi : int64, (nx,)
    F : float64, (8, nx), P : int64, (nx,): work buffers
    slope_o, err_o, vp_o, vr_o : float64, (nx,), outputs
    """
    ng, nx = G.shape
    n = ng
    c = np.sqrt(2.0 * nframes)
    pden_n = n - 1.0
    nnn = n * n * n - n
    # F rows 4..7: the groups of the median differences (hi, hi + 1, lo, lo + 1), read
    # once per pixel by index (0 for a position outside 0..n-2), in a loop of their own
    # (in the arithmetic loop below they measured 1.2x slower for the whole function)
    for x in range(nx):
        kh = khi[x]
        kl = klo[x]
        okh = kh >= 0 and kh < n - 1
        okl = kl >= 0 and kl < n - 1
        jh = kh if okh else 0
        jl = kl if okl else 0
        F[4, x] = np.float64(G[jh, x]) if okh else 0.0
        F[5, x] = np.float64(G[jh + 1, x]) if okh else 0.0
        F[6, x] = np.float64(G[jl, x]) if okl else 0.0
        F[7, x] = np.float64(G[jl + 1, x]) if okl else 0.0
    for x in range(nx):
        g = np.float64(gain[x])
        rn_e = np.float64(np.float32(np.float64(rn[x]) * (g / c)))
        kh = khi[x]
        f_hi = F[5, x] / tgroup - F[4, x] / tgroup
        mr = f_hi if klo[x] == kh else (F[7, x] / tgroup - F[6, x] / tgroup + f_hi) / 2.0
        mrate = mr if kh >= 0 else np.float64(G[0, x]) / tgroup
        F[0, x] = 0.0 if np.isnan(mrate) else mrate
        F[1, x] = rn_e
        rn2 = rn_e * rn_e
        dd = np.float64(G[n - 1, x]) - np.float64(G[0, x])
        den = rn2 + dd * g
        snr = dd * g / np.sqrt(den)
        snr = 0.0 if snr < 0.0 else snr
        snr = 0.0 if (den <= 0.0 or g == 0.0) else snr
        p = (np.int64(snr >= 5.0) + np.int64(snr >= 10.0) + np.int64(snr >= 20.0)
             + np.int64(snr >= 50.0) + np.int64(snr >= 100.0))
        P[x] = 5 if snr != snr else p
        F[2, x] = 0.0  # sum w v
        F[3, x] = 0.0  # sum w v i
    for i in range(n):
        # the weights of group i for the 6 powers, hoisted (wtab may alias F for the
        # compiler), picked per pixel by a select (a gather was measured 1.7x slower)
        w0, w1, w2 = wtab[0, n, i], wtab[1, n, i], wtab[2, n, i]
        w3, w4, w5 = wtab[3, n, i], wtab[4, n, i], wtab[5, n, i]
        for x in range(nx):
            w = _select_power(P[x], w0, w1, w2, w3, w4, w5)
            v = np.float64(G[i, x])
            v = v if v == v else 0.0
            wv = w * v
            F[2, x] += wv
            F[3, x] += wv * i
    t00, t01, t02 = stab[0, n, 0], stab[0, n, 1], stab[0, n, 2]
    t10, t11, t12 = stab[1, n, 0], stab[1, n, 1], stab[1, n, 2]
    t20, t21, t22 = stab[2, n, 0], stab[2, n, 1], stab[2, n, 2]
    t30, t31, t32 = stab[3, n, 0], stab[3, n, 1], stab[3, n, 2]
    t40, t41, t42 = stab[4, n, 0], stab[4, n, 1], stab[4, n, 2]
    t50, t51, t52 = stab[5, n, 0], stab[5, n, 1], stab[5, n, 2]
    for x in range(nx):
        p = P[x]
        g = np.float64(gain[x])
        mrate = F[0, x]
        rn_e = F[1, x]
        sy = F[2, x]
        sxy = F[3, x]
        s0 = _select_power(p, t00, t10, t20, t30, t40, t50)
        s1 = _select_power(p, t01, t11, t21, t31, t41, t51)
        s2 = _select_power(p, t02, t12, t22, t32, t42, t52)
        sl = (s0 * sxy - s1 * sy) / s2 / tgroup
        sl = np.nan if (rn_e == 0.0 or not np.isfinite(rn_e)) else sl
        pden = tgroup * g * pden_n
        vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden
        rnum = rn_e / tgroup
        vr = 12.0 * rnum * rnum / (nnn * g * g)
        invvar_r = 0.0 + 1.0 / vr
        invvar_p = (0.0 + 1.0 / vp) if vp > 0.0 else 0.0
        invvar_e = 0.0 + 1.0 / (vp + vr)
        num = 0.0 + sl / vr
        var_p_out = 1.0 / invvar_p if invvar_p > 0.0 else 0.0
        var_p_out = 0.0 if var_p_out >= LARGE_VARIANCE_THRESHOLD else var_p_out
        var_r_out = 1.0 / invvar_r
        var_r_out = 0.0 if var_r_out >= LARGE_VARIANCE_THRESHOLD else var_r_out
        ve = 1.0 / invvar_e
        slope_o[x] = num * var_r_out
        err_o[x] = 0.0 if ve > LARGE_VARIANCE_THRESHOLD else np.sqrt(ve)
        vp_o[x] = var_p_out
        vr_o[x] = var_r_out


@njit(cache=True, nogil=True, error_model="numpy")
def fit_ramps_cube(groups, groupdq, pixeldq, readnoise, gain, nframes, tgroup, tframe, dcur,
                   suppress1g, rate, err, dq, var_poisson, var_rnoise):
    """Fit every pixel of one integration; outputs written to the given arrays.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx)
    readnoise, gain : float32, (ny, nx); DN (CDS), e-/DN
    nframes : int; tgroup, tframe : float, s; dcur : float32, (ny, nx), DN/s
    suppress1g : bool
    rate, err, var_poisson, var_rnoise : float32, (ny, nx), DN/s, (DN/s)^2
    dq : uint32, (ny, nx)
    """
    ng, ny, nx = groups.shape
    wtab, stab = weight_tables(ng)
    d = np.empty(ng, np.float32)
    gdq = np.empty(ng, np.uint8)
    keys = np.empty(ng + 1, np.float32)
    ss = np.empty(ng + 1, np.int64)
    se = np.empty(ng + 1, np.int64)
    for y in range(ny):
        for x in range(nx):
            for k in range(ng):
                d[k] = groups[k, y, x]
                gdq[k] = groupdq[k, y, x]
            r, e, q, vp, vr = fit_pixel(d, gdq, ng, pixeldq[y, x], gain[y, x], readnoise[y, x],
                                        nframes, tgroup, tframe, dcur[y, x], suppress1g, wtab,
                                        stab, keys, ss, se)
            rate[y, x] = r
            err[y, x] = e
            dq[y, x] = q
            var_poisson[y, x] = vp
            var_rnoise[y, x] = vr
