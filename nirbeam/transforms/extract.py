"""1-D spectral extraction kernels: curved box, straight box, optimal (Horne 1986).

Kernels only (numpy + numba): no Beam imports. Images are (ny, nx) = (spatial,
dispersion), rates in DN/s, variances in (DN/s)^2. Pixel ``j`` spans ``[j - 0.5, j + 0.5]``.

:func:`column_background`, :func:`box_extract` and :func:`optimal_extract` run numba
kernels (one fused pass per integration, per-model geometry cached per trace). The
previous numpy implementations are kept as ``_column_background_reference``,
``_box_extract_reference`` and ``_optimal_extract_reference``: the kernels evaluate the
same float64 expressions in the same order and agree with them to rounding (bit for bit
on the simulator scenes; ``tests/test_extract.py``, ``bench/extract_cost.py``).

Bad pixels (any of ``bad_bits`` in DQ, or non-finite) never enter a sum directly:

* box extraction replaces them by ``profile x flux`` when a profile is given, otherwise
  by the weighted mean of the good aperture pixels of that column scaled by the missing
  weight (a flat-profile assumption), and ORs their DQ into the column flag;
* optimal extraction simply gives them zero weight (the profile accounts for the missing
  light) and ORs their DQ into the column flag.

Columns are flagged, never dropped: ``Spectrum.dq`` holds the OR of the DQ of every
pixel that was masked or rejected in the aperture, less ``DO_NOT_USE`` (the profile or
the rescaling fixed those pixels), plus ``OUTLIER`` for pixels rejected by the
optimal-extraction sigma clip. A column with no usable pixel has flux and error NaN and
``DO_NOT_USE`` (never a 0 that a sum would count as flux).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.trace import BAD_PIXEL_BITS, TraceModel, _window_weights

__all__ = [
    "Spectrum",
    "aperture_weights",
    "column_background",
    "box_extract",
    "straight_box_extract",
    "build_profile",
    "optimal_extract",
    "ProfileAccumulator",
]


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One integration's extracted spectrum.

    Attributes
    ----------
    flux : float64, (nx,), DN/s
        Background-subtracted flux per column.
    flux_error : float64, (nx,), DN/s
        1-sigma uncertainty (pixel variances propagated; background error included).
    dq : uint32, (nx,)
        OR of the DQ of masked/rejected pixels in the aperture (0 = clean column).
    npixels : float64, (nx,)
        Aperture weight summed over good pixels (box) or number of pixels used (optimal).
    background : float64, (nx,), DN/s per pixel
        Background level subtracted per pixel.
    method : str
        ``"box"``, ``"straight_box"`` or ``"optimal"``.
    """

    flux: np.ndarray
    flux_error: np.ndarray
    dq: np.ndarray
    npixels: np.ndarray
    background: np.ndarray
    method: str = "box"


def _bad_mask(rate: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, bad_bits: int):
    bad = ~np.isfinite(rate)
    if var is not None:
        bad |= ~np.isfinite(var)
    if dq is not None:
        bad |= (np.asarray(dq).astype(np.uint32) & np.uint32(bad_bits)) != 0
    return bad


def aperture_weights(trace: TraceModel, shape: tuple[int, int], half_width: float) -> np.ndarray:
    """Fractional-pixel weights of a curved aperture ``|y - y_c(x)| <= half_width``.

    Parameters
    ----------
    trace : TraceModel
    shape : (ny, nx)
    half_width : float, px

    Returns
    -------
    float64, (ny, nx)
        Overlap (0..1) of each pixel with the aperture; column sums are ``2*half_width``
        where the aperture is fully on the detector.
    """
    ny, nx = shape
    return _window_weights(np.arange(ny, dtype=np.float64), trace.center(np.arange(nx)), half_width)


# ---------------------------------------------------------------------------------------
# Per-model geometry, cached (the trace and aperture do not change between integrations)
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _center_cached(trace: TraceModel, nx: int) -> np.ndarray:
    c = np.ascontiguousarray(trace.center(np.arange(nx)), dtype=np.float64)
    c.setflags(write=False)
    return c


@lru_cache(maxsize=16)
def _weights_cached(trace: TraceModel, ny: int, nx: int, half_width: float) -> np.ndarray:
    w = np.ascontiguousarray(
        _window_weights(np.arange(ny, dtype=np.float64), _center_cached(trace, nx), half_width),
        dtype=np.float64,
    )
    w.setflags(write=False)
    return w


def _trace_center(trace: TraceModel, nx: int) -> np.ndarray:
    """``trace.center(arange(nx))`` (float64, read-only), cached per (trace, nx)."""
    try:
        return _center_cached(trace, int(nx))
    except TypeError:  # unhashable trace-like object: no cache
        return np.ascontiguousarray(trace.center(np.arange(nx)), dtype=np.float64)


def _aperture_weights_fast(trace: TraceModel, shape: tuple[int, int], half_width: float):
    """:func:`aperture_weights` (read-only), cached per (trace, shape, half_width)."""
    ny, nx = (int(s) for s in shape)
    try:
        return _weights_cached(trace, ny, nx, float(half_width))
    except TypeError:
        return np.ascontiguousarray(aperture_weights(trace, (ny, nx), half_width))


def _as_f64(a, shape) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a)


def _as_dq(dq, shape) -> np.ndarray:
    """DQ as C-contiguous uint32 of ``shape`` (zeros for None: no bits, no flags)."""
    if dq is None:
        return np.zeros(shape, np.uint32)
    d = np.asarray(dq)
    if d.dtype != np.uint32:
        d = d.astype(np.uint32)
    if d.shape != shape:
        d = np.broadcast_to(d, shape)
    return np.ascontiguousarray(d)


# ---------------------------------------------------------------------------------------
# numba kernels. Each reproduces the numpy reference (``_*_reference`` below) operation by
# operation in float64: sums run over rows in increasing y, as numpy's axis-0 reductions
# of C-ordered (ny, nx) arrays do, and medians of <= ny values are the mean of the two
# middle order statistics, as np.nanmedian's; so results agree to rounding (in practice
# bit for bit; the tests allow 1e-12 relative).
# ---------------------------------------------------------------------------------------

_DNU = np.uint32(dqflags.DO_NOT_USE)
_OUTLIER = np.uint32(dqflags.OUTLIER)


@njit(cache=True, inline="always", error_model="numpy")
def _np_maximum(a, b):
    # np.maximum for a NaN-free ``b``: NaN in ``a`` propagates
    if a != a:
        return a
    return a if a >= b else b


@njit(cache=True, inline="always", error_model="numpy")
def _median_sorted(a, n):
    # as np.ma.median along an axis (np.nanmedian of <= 600 rows): (low + high) / 2,
    # with low = high for odd n
    h = n // 2
    lo = a[h] if n % 2 == 1 else a[h - 1]
    return (lo + a[h]) / 2.0


@njit(cache=True, error_model="numpy")
def _sort_columns(S, n):
    """Sort each column of ``S[:n, :]`` ascending (Batcher odd-even merge network).

    Branch-free min/max compare-exchanges along rows, i.e. vectorised over columns.
    ``S`` must hold +inf below each column's values; comparators reaching past ``n``
    would compare against +inf and are left out. No NaN allowed.
    """
    nx = S.shape[1]
    N = 1
    while N < n:
        N *= 2
    p = 1
    while p < N:
        k = p
        while k >= 1:
            for j in range(k % p, N - k, 2 * k):
                for i in range(min(k, N - j - k)):
                    a = i + j
                    b = a + k
                    if b < n and a // (2 * p) == b // (2 * p):
                        sa = S[a]
                        sb = S[b]
                        for x in range(nx):
                            u = sa[x]
                            v = sb[x]
                            sa[x] = u if u <= v else v
                            sb[x] = v if u <= v else u
            k //= 2
        p *= 2


@njit(cache=True, error_model="numpy")
def _column_background_kernel(
    r, dq, center, inner, outer, bad_bits, use_median, do_clip, clip, bkg, bvar
):
    """:func:`column_background` for all columns at once.

    The usable region pixels of column ``x`` go, in row order, to ``R[:cnt[x], x]``;
    medians come from column-sorted copies (see :func:`_sort_columns`). The sigma clip
    keeps ``|v - med| <= thr``, an interval of values around the median (rounding is
    monotonic), so the kept values are the contiguous run ``S[a:a + m]`` of the sorted
    column, ``a`` = number of rejected values below the median.
    """
    ny, nx = r.shape
    R = np.full((ny, nx), np.inf)
    cnt = np.zeros(nx, np.int64)
    for y in range(ny):
        for x in range(nx):
            d = abs(y - center[x])
            if d >= inner and d <= outer:
                v = r[y, x]
                if math.isfinite(v) and (dq[y, x] & bad_bits) == 0:
                    R[cnt[x], x] = v
                    cnt[x] += 1
    n = 0
    for x in range(nx):
        if cnt[x] > n:
            n = cnt[x]
    S = R[:n].copy()
    _sort_columns(S, n)
    med = np.empty(nx)
    for x in range(nx):
        c = cnt[x]
        med[x] = _median_sorted(S[:, x], c) if c > 0 else np.nan
    thr = np.full(nx, np.inf)
    if do_clip:
        A = np.full((n, nx), np.inf)
        for i in range(n):
            for x in range(nx):
                if i < cnt[x]:
                    A[i, x] = abs(R[i, x] - med[x])
        _sort_columns(A, n)
        for x in range(nx):
            c = cnt[x]
            if c > 0:
                mad = 1.4826 * _median_sorted(A[:, x], c)
                thr[x] = clip * (mad if mad > 0 else np.inf)
    # kept values: row-order sums (as the reference's axis-0 sums), sorted-run median
    tot = np.zeros(nx)
    m = np.zeros(nx, np.int64)
    below = np.zeros(nx, np.int64)
    for i in range(n):
        for x in range(nx):
            if i < cnt[x]:
                v = R[i, x]
                if abs(v - med[x]) <= thr[x]:
                    tot[x] += v
                    m[x] += 1
                elif v < med[x]:
                    below[x] += 1
    avg = np.empty(nx)
    for x in range(nx):
        avg[x] = tot[x] / m[x] if m[x] > 0 else np.nan
    ss = np.zeros(nx)
    for i in range(n):
        for x in range(nx):
            if i < cnt[x]:
                v = R[i, x]
                if abs(v - med[x]) <= thr[x]:
                    dv = v - avg[x]
                    ss[x] += dv * dv
    fac = np.pi / 2 if use_median else 1.0
    for x in range(nx):
        mx = m[x]
        if mx == 0:
            bkg[x] = 0.0
            bvar[x] = 0.0
            continue
        if use_median:
            b = _median_sorted(S[below[x] :, x], mx)
        else:
            b = avg[x]
        bkg[x] = b if math.isfinite(b) else 0.0
        bv = 0.0
        if mx > 1:
            sd = math.sqrt(ss[x] / (mx - 1))
            bv = fac * (sd * sd) / mx
            if not math.isfinite(bv):
                bv = 0.0
        bvar[x] = bv


@njit(cache=True, error_model="numpy")
def _box_kernel(
    r,
    v,
    dq,
    w,
    prof,
    has_prof,
    center,
    has_bkg,
    inner,
    outer,
    bad_bits,
    use_median,
    flux,
    ferr,
    flag,
    npix,
    bkg,
):
    """Curved box (see :func:`box_extract`); fills the (nx,) outputs."""
    ny, nx = r.shape
    bvar = np.zeros(nx)
    if has_bkg:
        _column_background_kernel(
            r, dq, center, inner, outer, bad_bits, use_median, True, 3.0, bkg, bvar
        )
    else:
        bkg[:] = 0.0
    s_good = np.zeros(nx)
    var_good = np.zeros(nx)
    wsum = np.zeros(nx)
    gsum = np.zeros(nx)
    pw_good = np.zeros(nx)
    pw_all = np.zeros(nx)
    fl = np.zeros(nx, np.uint32)
    anybad = np.zeros(nx, np.bool_)
    for y in range(ny):  # rows outer: the reference's axis-0 sums, in the same order
        for x in range(nx):
            rv = r[y, x]
            vv = v[y, x]
            d = dq[y, x]
            wy = w[y, x]
            if (not math.isfinite(rv)) or (not math.isfinite(vv)) or (d & bad_bits) != 0:
                gw = 0.0
                sub = 0.0
                vz = 0.0
                if wy > 0:
                    fl[x] |= d
                    anybad[x] = True
            else:
                gw = wy
                sub = rv - bkg[x]
                vz = vv
            s_good[x] += gw * sub
            var_good[x] += gw * gw * vz
            wsum[x] += wy
            gsum[x] += gw
            if has_prof:
                p = prof[y, x]
                pw_good[x] += gw * p
                pw_all[x] += wy * p
    for x in range(nx):
        if has_prof:
            scale = pw_all[x] / pw_good[x] if pw_good[x] > 0 else np.nan
        else:
            scale = wsum[x] / gsum[x] if gsum[x] > 0 else np.nan
        if wsum[x] - gsum[x] > 1e-12:
            f = s_good[x] * scale
            fe2 = var_good[x] * (scale * scale)
        else:
            f = s_good[x]
            fe2 = var_good[x]
        fe2 = fe2 + wsum[x] * wsum[x] * bvar[x]
        # masked pixels the rescaling fixed keep their bits but not DO_NOT_USE; a column
        # with no usable pixel is NaN with DO_NOT_USE (never a 0 that sums as flux)
        f_x = fl[x] & ~_DNU
        if (not math.isfinite(f)) or gsum[x] <= 0:
            f_x |= _DNU
            flux[x] = np.nan
            ferr[x] = np.nan
        else:
            flux[x] = f
            ferr[x] = math.sqrt(fe2 if math.isfinite(fe2) else 0.0)
        flag[x] = f_x
        npix[x] = gsum[x]


@njit(cache=True, error_model="numpy")
def _solve_all(M, V, P, Dz, y0, f, fvar):
    """Horne's f and var(f) for every column; sums over work rows in increasing y."""
    H, nx = M.shape
    den = np.zeros(nx)
    num = np.zeros(nx)
    psum = np.zeros(nx)
    for i in range(H):
        pr = P[y0 + i]
        mr = M[i]
        vr = V[i]
        dr = Dz[i]
        for x in range(nx):
            p = pr[x]
            pv = p / vr[x] if mr[x] else 0.0
            den[x] += pv * p
            num[x] += pv * dr[x]
            psum[x] += p if mr[x] else 0.0
    for x in range(nx):
        if den[x] > 0:
            f[x] = num[x] / den[x]
            fvar[x] = psum[x] / den[x]
        else:
            f[x] = 0.0
            fvar[x] = np.inf


@njit(cache=True, error_model="numpy")
def _solve_one(M, V, P, Dz, y0, x):
    H = M.shape[0]
    den = 0.0
    num = 0.0
    psum = 0.0
    for i in range(H):
        p = P[y0 + i, x]
        pv = p / V[i, x] if M[i, x] else 0.0
        den += pv * p
        num += pv * Dz[i, x]
        psum += p if M[i, x] else 0.0
    if den > 0:
        return num / den, psum / den
    return 0.0, np.inf


@njit(cache=True, error_model="numpy")
def _optimal_kernel(
    r,
    v0,
    dq,
    P,
    bkg,
    bvar,
    has_bvar,
    vr_in,
    vp,
    model_var,
    do_clip,
    thr,
    max_iter,
    bad_bits,
    flux,
    ferr,
    flag,
    npix,
):
    """Optimal extraction with iterative rejection (see :func:`optimal_extract`).

    The reference's passes, fused and vectorised over columns. Work arrays cover rows
    ``y0:y1``, the rows holding any support pixel (``P > 0``): elsewhere the
    reference's mask is False, so those rows add exact zeros to its sums (unless the
    profile has a non-finite value, which it propagates as 0 x NaN: then all rows).
    """
    ny, nx = r.shape
    y0 = ny
    y1 = 0
    allfin = True
    pmax = np.full(nx, -np.inf)  # np.max(P, axis=0): NaN propagates
    for y in range(ny):
        for x in range(nx):
            p = P[y, x]
            if p > 0:
                y0 = min(y0, y)
                y1 = max(y1, y + 1)
            if not math.isfinite(p):
                allfin = False
            if p != p or pmax[x] != pmax[x]:
                pmax[x] = np.nan
            elif p > pmax[x]:
                pmax[x] = p
    if not allfin:
        y0 = 0
        y1 = ny
    elif y1 <= y0:
        y0 = 0
        y1 = 0
    H = y1 - y0
    M = np.zeros((H, nx), np.bool_)
    V = np.full((H, nx), np.inf)
    Dz = np.zeros((H, nx))
    Vr = np.empty((H, nx)) if model_var else np.empty((1, 1))
    ratio = np.empty(H * nx) if model_var else np.empty(1)
    nr = 0
    base = np.zeros(nx, np.uint32)  # OR of the DQ of bad support pixels
    nonfin = np.zeros(nx, np.bool_)
    for i in range(H):
        y = y0 + i
        for x in range(nx):
            rv = r[y, x]
            p = P[y, x]
            d = dq[y, x]
            b = (not math.isfinite(rv)) or (not math.isfinite(v0[y, x])) or (d & bad_bits) != 0
            sup = p > 0
            m = sup and not b
            M[i, x] = m
            if m:
                V[i, x] = _np_maximum(v0[y, x], 1e-30)
                Dz[i, x] = rv - bkg[x]
            if b and sup:
                base[x] |= d
                if not math.isfinite(rv):
                    nonfin[x] = True
            if model_var:
                t = vr_in[y, x]
                Vr[i, x] = t if math.isfinite(t) else np.inf
                q = vp[y, x]
                # k = median(var_poisson / rate) over bright aperture pixels
                if m and rv > 0 and math.isfinite(q) and p > 0.5 * pmax[x]:
                    ratio[nr] = q / rv
                    nr += 1
    k = 0.0
    if nr > 0:
        k = np.median(ratio[:nr])  # an order statistic: independent of the pixel order
    f = np.empty(nx)
    fvar = np.empty(nx)
    _solve_all(M, V, P, Dz, y0, f, fvar)
    rejflag = np.zeros(nx, np.uint32)
    anyrej = np.zeros(nx, np.bool_)
    if do_clip or model_var:
        f_old = np.empty(nx)
        zmax = np.empty(nx)
        jmax = np.empty(nx, np.int64)
        hasnan = np.empty(nx, np.bool_)
        for _ in range(max_iter):
            if model_var:
                f_old[:] = f
                for i in range(H):
                    pr = P[y0 + i]
                    mr = M[i]
                    vrow = V[i]
                    vrr = Vr[i]
                    for x in range(nx):
                        mod = _np_maximum(pr[x] * f[x] + bkg[x], 0.0)
                        vrow[x] = _np_maximum(vrr[x] + k * mod, 1e-30) if mr[x] else np.inf
                _solve_all(M, V, P, Dz, y0, f, fvar)
                if not do_clip:
                    same = True
                    for x in range(nx):
                        if f[x] != f_old[x]:
                            same = False
                            break
                    if same:  # a fixed point: further passes change nothing
                        break
                    continue
            zmax[:] = -np.inf
            jmax[:] = -1
            hasnan[:] = False
            for i in range(H):
                pr = P[y0 + i]
                mr = M[i]
                vrow = V[i]
                dr = Dz[i]
                for x in range(nx):
                    dd = dr[x] - pr[x] * f[x]
                    z = dd * dd / vrow[x] if mr[x] else 0.0
                    hasnan[x] |= z != z  # np.argmax would pick the first NaN: no hit
                    if z > zmax[x]:
                        zmax[x] = z
                        jmax[x] = i
            anyhit = False
            for x in range(nx):
                if (not hasnan[x]) and zmax[x] > thr:
                    j = jmax[x]
                    M[j, x] = False
                    V[j, x] = np.inf
                    rejflag[x] |= dq[y0 + j, x]
                    anyrej[x] = True
                    f[x], fvar[x] = _solve_one(M, V, P, Dz, y0, x)
                    anyhit = True
            if not anyhit:
                break
    if has_bvar:
        den = np.zeros(nx)
        spv = np.zeros(nx)
        for i in range(H):
            for x in range(nx):
                p = P[y0 + i, x]
                pv = p / V[i, x] if M[i, x] else 0.0
                den[x] += pv * p
                spv[x] += pv
        for x in range(nx):
            g = spv[x] / den[x] if den[x] > 0 else 0.0
            fvar[x] = fvar[x] + g * g * bvar[x]
    nm = np.zeros(nx, np.int64)
    for i in range(H):
        for x in range(nx):
            if M[i, x]:
                nm[x] += 1
    for x in range(nx):
        # pixels the profile fixed keep their bits but not DO_NOT_USE; a column with no
        # usable pixel is NaN with DO_NOT_USE (never a 0 that sums as flux)
        fl = (base[x] | rejflag[x]) & ~_DNU
        if anyrej[x]:
            fl |= _OUTLIER
        fv = fvar[x]
        if nm[x] == 0:
            fl |= _DNU
            flux[x] = np.nan
            ferr[x] = np.nan
        else:
            flux[x] = f[x]
            ferr[x] = math.sqrt(fv if math.isfinite(fv) else 0.0)
        flag[x] = fl
        npix[x] = nm[x]


def column_background(
    rate: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    region: tuple[float, float],
    *,
    method: str = "median",
    sigma_clip: float | None = 3.0,
    bad_bits: int = BAD_PIXEL_BITS,
) -> tuple[np.ndarray, np.ndarray]:
    """Background per column from pixels with ``inner <= |y - y_c(x)| <= outer``.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    dq : uint32, (ny, nx) or None
    trace : TraceModel
    region : (float, float)
        Inner and outer distance (px) from the trace centre (pixel centres).
    method : {"median", "mean"}
        Statistic of the (optionally 3-sigma clipped, about the median) region pixels.

    Returns
    -------
    background : float64, (nx,), DN/s per pixel
        0 where no region pixel is usable.
    background_var : float64, (nx,), (DN/s)^2
        Variance of the per-pixel background estimate (scatter^2 / n, x pi/2 for median).

    Notes
    -----
    numba kernel, one column at a time (insertion-sorted medians of the <= ny region
    pixels); equal to :func:`_column_background_reference` (numpy) to rounding.
    """
    if method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {method!r}")
    r = np.ascontiguousarray(rate, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"column_background: rate must be 2-D (ny, nx), got shape {r.shape}")
    ny, nx = r.shape
    bkg = np.empty(nx)
    bvar = np.empty(nx)
    _column_background_kernel(
        r,
        _as_dq(dq, r.shape),
        _trace_center(trace, nx),
        float(region[0]),
        float(region[1]),
        np.uint32(bad_bits),
        method == "median",
        sigma_clip is not None,
        0.0 if sigma_clip is None else float(sigma_clip),
        bkg,
        bvar,
    )
    return bkg, bvar


def box_extract(
    rate: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    half_width: float,
    background_region: tuple[float, float] | None = None,
    *,
    background_method: str = "median",
    profile: np.ndarray | None = None,
    bad_bits: int = BAD_PIXEL_BITS,
    _method: str = "box",
) -> Spectrum:
    """Curved-box extraction following the trace, with fractional edge weights.

    ``flux(x) = sum_y w(y, x) * (rate - bkg(x))`` with ``w`` from :func:`aperture_weights`.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    var : float, (ny, nx), (DN/s)^2
        Total variance per pixel (e.g. ERR**2 or VAR_POISSON + VAR_RNOISE).
    dq : uint32, (ny, nx) or None
    trace : TraceModel
    half_width : float, px
        Aperture half-width about the trace centre.
    background_region : (inner, outer) px, optional
        Distance range from the trace used for the per-column background; None: no
        background subtraction.
    background_method : {"median", "mean"}
    profile : float, (ny, nx), optional
        Normalised spatial profile (see :func:`build_profile`) used to fill bad pixels.

    Returns
    -------
    Spectrum

    Notes
    -----
    One numba pass over the columns (background as :func:`column_background`, 3-sigma
    clipped); the aperture weights are cached per (trace, shape, half_width). Equal to
    :func:`_box_extract_reference` (numpy) to rounding.
    """
    if background_region is not None and background_method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {background_method!r}")
    r = np.asarray(rate, np.float64)
    v = np.asarray(var, np.float64)
    if r.ndim != 2 or v.shape != r.shape:
        raise ValueError(
            f"box_extract: rate and var must be equal 2-D shapes, got {r.shape}, {v.shape}"
        )
    ny, nx = r.shape
    r = np.ascontiguousarray(r)
    v = np.ascontiguousarray(v)
    has_prof = profile is not None
    prof = _as_f64(profile, r.shape) if has_prof else np.zeros((1, 1))
    has_bkg = background_region is not None
    inner, outer = (
        (float(background_region[0]), float(background_region[1])) if has_bkg else (0.0, 0.0)
    )
    flux = np.empty(nx)
    ferr = np.empty(nx)
    flag = np.empty(nx, np.uint32)
    npix = np.empty(nx)
    bkg = np.empty(nx)
    _box_kernel(
        r,
        v,
        _as_dq(dq, r.shape),
        _aperture_weights_fast(trace, r.shape, half_width),
        prof,
        has_prof,
        _trace_center(trace, nx),
        has_bkg,
        inner,
        outer,
        np.uint32(bad_bits),
        background_method == "median",
        flux,
        ferr,
        flag,
        npix,
        bkg,
    )
    return Spectrum(
        flux=flux, flux_error=ferr, dq=flag, npixels=npix, background=bkg, method=_method
    )


def straight_box_extract(
    rate: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    row: float | TraceModel,
    half_width: float,
    background_region: tuple[float, float] | None = None,
    **kwargs,
) -> Spectrum:
    """Rectangular box at a fixed row (for comparison with the curved box).

    Parameters
    ----------
    row : float or TraceModel
        Box centre row; a TraceModel gives its mean centre over all columns.
    Other parameters as :func:`box_extract`.
    """
    nx = np.asarray(rate).shape[1]
    if isinstance(row, TraceModel):
        row = float(np.mean(row.center(np.arange(nx))))
    flat = TraceModel.from_config(float(row), 1.0, (0.0, float(nx - 1)))
    return box_extract(
        rate, var, dq, flat, half_width, background_region, _method="straight_box", **kwargs
    )


def build_profile(
    images: np.ndarray,
    trace: TraceModel,
    half_width: float,
    *,
    dq: np.ndarray | None = None,
    background: np.ndarray | None = None,
    background_region: tuple[float, float] | None = None,
    smooth: int = 9,
    bad_bits: int = BAD_PIXEL_BITS,
) -> np.ndarray:
    """Spatial profile for optimal extraction from a stack of rate images.

    Each integration's columns are normalised to unit sum inside the aperture (removing
    transit and flux variations), the median over integrations is taken (bad pixels
    ignored), smoothed along x (Savitzky-Golay, ``smooth`` columns), normalised to
    unit column sum and then clipped to be non-negative (no renormalisation after the
    clip, which would bias the optimal flux high by the clipped wing noise; column sums
    are therefore 1 + the positive part of the wing noise, typically < 1e-3).

    Parameters
    ----------
    images : float, (nint, ny, nx) or (ny, nx), DN/s
    trace : TraceModel
    half_width : float, px
        Profile support ``|y - y_c(x)| <= half_width`` (use >= 4 PSF sigma).
    dq : uint32, same shape as images, optional
    background : float, (nint, nx) or (nx,), optional
        Per-column background to subtract first.
    background_region : (inner, outer) px, optional
        If given (and ``background`` is None), the background of each image is
        estimated with :func:`column_background` (median) and subtracted. Without
        either, any background pedestal becomes part of the profile and biases the
        optimal flux (by ~ pedestal x support pixels / column flux).
    smooth : int
        Savitzky-Golay window (columns, made odd; quadratic) along x; <= 2: none.

    Returns
    -------
    profile : float64, (ny, nx)
        >= 0, each column normalised to 1 over the support pixels (whole pixels touched
        by the aperture ``|y - y_c| <= half_width``; 0 outside) before the clip of
        negatives; columns without usable pixels are all-zero.
    """
    im = np.asarray(images, np.float64)
    if im.ndim == 2:
        im = im[None]
    if im.ndim != 3:
        raise ValueError(f"build_profile: images must be (nint, ny, nx), got {im.shape}")
    nint, ny, nx = im.shape
    if background is None and background_region is not None:
        d3 = None if dq is None else np.asarray(dq)
        if d3 is not None and d3.ndim == 2:
            d3 = np.broadcast_to(d3, im.shape)
        background = np.stack(
            [
                column_background(
                    im[i],
                    None if d3 is None else d3[i],
                    trace,
                    background_region,
                    bad_bits=bad_bits,
                )[0]
                for i in range(nint)
            ]
        )
    if background is not None:
        b = np.asarray(background, np.float64)
        im = im - (b[:, None, :] if b.ndim == 2 else b[None, None, :])
    bad = ~np.isfinite(im)
    if dq is not None:
        d = np.asarray(dq).astype(np.uint32)
        if d.ndim == 2:
            d = d[None]
        bad |= (d & np.uint32(bad_bits)) != 0
    w = aperture_weights(trace, (ny, nx), half_width)
    sup = w > 0
    vals = np.where(bad | ~sup[None], np.nan, im)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            csum = np.nansum(vals, axis=1)  # (nint, nx), whole support pixels
            norm = vals / np.where(csum > 0, csum, np.nan)[:, None, :]
            med = np.nanmedian(norm, axis=0)
    med = np.where(np.isfinite(med) & sup, med, 0.0)
    if smooth > 2 and nx > smooth:
        # Savitzky-Golay (local quadratic) rather than a running mean: a curved trace moves
        # the profile by (slope x window) px, which a running mean blurs (biasing the
        # optimal flux high where the PSF is narrow); a local quadratic follows it.
        from scipy.signal import savgol_filter

        win = int(smooth) | 1
        med = savgol_filter(med, win, 2, axis=1, mode="interp")
    med = med * sup
    # Normalise BEFORE clipping negatives: the noise in the faint wings has zero mean, so
    # the column sum is unbiased; clipping first would bias the sum high (and the optimal
    # flux high by ~ sum of the clipped noise, 0.1% in tests). Clipped wing pixels then
    # carry P = 0 without renormalisation, which leaves f = sum(PD/V)/sum(P^2/V) unbiased.
    col = np.sum(med, axis=0)
    prof = np.where(col > 0, med / np.where(col > 0, col, 1.0), 0.0)
    return np.clip(prof, 0.0, None)


def optimal_extract(
    rate: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    profile: np.ndarray,
    *,
    background: np.ndarray | None = None,
    background_var: np.ndarray | None = None,
    var_rnoise: np.ndarray | None = None,
    var_poisson: np.ndarray | None = None,
    sigma_clip: float | None = 5.0,
    max_iter: int = 20,
    bad_bits: int = BAD_PIXEL_BITS,
) -> Spectrum:
    """Optimal extraction (Horne 1986) with iterative outlier rejection.

    For each column, with profile ``P`` (unit sum), data ``D`` (background-subtracted),
    variance ``V`` and mask ``M``::

        f = sum(M P D / V) / sum(M P^2 / V),   var(f) = sum(M P) / sum(M P^2 / V)

    Then the pixel with the largest ``(D - P f)^2 / V`` above ``sigma_clip^2`` in each
    column is masked and ``f`` recomputed, until no column changes (Horne's step 8, one
    pixel per column per pass).

    Variance model: if ``var_rnoise`` and ``var_poisson`` are given, ``V`` is revised from
    the model each pass, ``V = var_rnoise + k * max(P f + bkg, 0)`` with
    ``k = median(var_poisson / rate)`` over bright aperture pixels (1 / (gain x time)),
    which avoids the bias of weighting by data-derived Poisson variances. Otherwise the
    given ``var`` is used as is.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    var : float, (ny, nx), (DN/s)^2
        Total variance (used as given, and as a start when modelled).
    dq : uint32, (ny, nx) or None
    profile : float, (ny, nx)
        From :func:`build_profile`; support = profile > 0.
    background : float, (nx,), optional
        Per-pixel background per column (e.g. from :func:`column_background`).
    background_var : float, (nx,), optional
        Its variance; adds ``(sum_support P ... )`` ~ ``npix_eff^2 var_b`` to the error.
    var_rnoise, var_poisson : float, (ny, nx), optional
        Read-noise and Poisson variance (DN/s)^2 for the variance model.
    sigma_clip : float or None
        Rejection threshold (None: no rejection).

    Returns
    -------
    Spectrum
        ``npixels`` = number of unmasked support pixels per column.

    Notes
    -----
    numba kernel; the passes are global as in :func:`_optimal_extract_reference` (numpy),
    but a column that a pass leaves unchanged is not recomputed. Equal to the reference to
    rounding.
    """
    r = np.asarray(rate, np.float64)
    v0 = np.asarray(var, np.float64)
    P = np.asarray(profile, np.float64)
    if r.shape != P.shape or v0.shape != r.shape:
        raise ValueError(
            f"optimal_extract: rate {r.shape}, var {v0.shape} and profile {P.shape} must match"
        )
    if r.ndim != 2:
        raise ValueError(f"optimal_extract: rate must be 2-D (ny, nx), got shape {r.shape}")
    ny, nx = r.shape
    bkg = np.zeros(nx) if background is None else np.asarray(background, np.float64)
    model_var = var_rnoise is not None and var_poisson is not None
    if model_var:
        vr = _as_f64(var_rnoise, r.shape)
        vp = _as_f64(var_poisson, r.shape)
    else:
        vr = vp = np.zeros((1, 1))
    has_bvar = background_var is not None
    bvar = _as_f64(background_var, (nx,)) if has_bvar else np.zeros(1)
    thr = 0.0 if sigma_clip is None else float(sigma_clip) ** 2
    flux = np.empty(nx)
    ferr = np.empty(nx)
    flag = np.empty(nx, np.uint32)
    npix = np.empty(nx)
    _optimal_kernel(
        np.ascontiguousarray(r),
        np.ascontiguousarray(v0),
        _as_dq(dq, r.shape),
        np.ascontiguousarray(P),
        _as_f64(bkg, (nx,)),
        bvar,
        has_bvar,
        vr,
        vp,
        model_var,
        sigma_clip is not None,
        thr,
        int(max_iter),
        np.uint32(bad_bits),
        flux,
        ferr,
        flag,
        npix,
    )
    return Spectrum(
        flux=flux, flux_error=ferr, dq=flag, npixels=npix, background=bkg, method="optimal"
    )


class ProfileAccumulator:
    """Streaming profile: collect the first ``n_first`` integrations, then refine.

    ``add`` returns the current profile (None until ``n_first`` images were seen; then the
    median profile of those, as :func:`build_profile`). After that, each further image
    updates a running mean of column-normalised images (a pixel deviating from the
    current profile by more than half the column's profile peak is skipped) and the
    profile is rebuilt from that mean every ``refresh`` images.

    Parameters
    ----------
    trace : TraceModel
    shape : (ny, nx)
    half_width : float
    n_first : int
    smooth : int
    refresh : int
    """

    def __init__(
        self,
        trace: TraceModel,
        shape: tuple[int, int],
        half_width: float,
        *,
        n_first: int = 20,
        smooth: int = 9,
        refresh: int = 50,
    ):
        self.trace = trace
        self.shape = tuple(shape)
        self.half_width = float(half_width)
        self.n_first = int(n_first)
        self.smooth = int(smooth)
        self.refresh = int(refresh)
        self._first: list[np.ndarray] = []
        self._first_dq: list[np.ndarray] = []
        self._sum = np.zeros(self.shape)
        self._n = np.zeros(self.shape)
        self._since = 0
        self.profile: np.ndarray | None = None

    def add(self, rate: np.ndarray, dq: np.ndarray | None = None) -> np.ndarray | None:
        """Feed one (background-subtracted) rate image; return the current profile."""
        rate = np.asarray(rate, np.float64)
        dq = np.zeros(self.shape, np.uint32) if dq is None else np.asarray(dq, np.uint32)
        if self.profile is None:
            self._first.append(rate)
            self._first_dq.append(dq)
            if len(self._first) >= self.n_first:
                st = np.stack(self._first)
                self.profile = build_profile(
                    st, self.trace, self.half_width, dq=np.stack(self._first_dq), smooth=self.smooth
                )
                w = aperture_weights(self.trace, self.shape, self.half_width) > 0
                csum = np.sum(np.where(np.isfinite(st), st, 0) * w[None], axis=1)
                norm = st / np.where(csum > 0, csum, np.nan)[:, None, :]
                ok = np.isfinite(norm)
                self._sum = np.sum(np.where(ok, norm, 0.0), axis=0)
                self._n = ok.sum(axis=0).astype(np.float64)
                self._first.clear()
                self._first_dq.clear()
            return self.profile
        w = aperture_weights(self.trace, self.shape, self.half_width) > 0
        good = np.isfinite(rate) & ((dq & np.uint32(BAD_PIXEL_BITS)) == 0)
        csum = np.sum(np.where(good, rate, 0.0) * w, axis=0)
        norm = rate / np.where(csum > 0, csum, np.nan)[None, :]
        pnorm = self.profile
        ok = good & np.isfinite(norm) & (np.abs(norm - pnorm) <= 0.5 * np.max(pnorm, axis=0))
        self._sum += np.where(ok, norm, 0.0)
        self._n += ok
        self._since += 1
        if self._since >= self.refresh:
            self._since = 0
            with np.errstate(all="ignore"):
                mean = np.where(self._n > 0, self._sum / np.maximum(self._n, 1), np.nan)
            self.profile = build_profile(
                np.where(w, mean, np.nan), self.trace, self.half_width, smooth=self.smooth
            )
        return self.profile


# ---------------------------------------------------------------------------------------
# numpy reference implementations (the code before the numba kernels): the tests and
# bench/extract_cost.py compare the kernels against these.
# ---------------------------------------------------------------------------------------


def _column_background_reference(
    rate: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    region: tuple[float, float],
    *,
    method: str = "median",
    sigma_clip: float | None = 3.0,
    bad_bits: int = BAD_PIXEL_BITS,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference of :func:`column_background` (the implementation before the numba
    kernels; kept for tests and ``bench/extract_cost.py``).

    Background per column from pixels with ``inner <= |y - y_c(x)| <= outer``.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    dq : uint32, (ny, nx) or None
    trace : TraceModel
    region : (float, float)
        Inner and outer distance (px) from the trace centre (pixel centres).
    method : {"median", "mean"}
        Statistic of the (optionally 3-sigma clipped, about the median) region pixels.

    Returns
    -------
    background : float64, (nx,), DN/s per pixel
        0 where no region pixel is usable.
    background_var : float64, (nx,), (DN/s)^2
        Variance of the per-pixel background estimate (scatter^2 / n, x pi/2 for median).
    """
    if method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {method!r}")
    r = np.asarray(rate, np.float64)
    ny, nx = r.shape
    inner, outer = float(region[0]), float(region[1])
    dist = np.abs(np.arange(ny)[:, None] - trace.center(np.arange(nx))[None, :])
    use = (dist >= inner) & (dist <= outer) & ~_bad_mask(r, None, dq, bad_bits)
    vals = np.where(use, r, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(vals, axis=0)
            if sigma_clip is not None:
                mad = 1.4826 * np.nanmedian(np.abs(vals - med), axis=0)
                keep = np.abs(vals - med) <= sigma_clip * np.where(mad > 0, mad, np.inf)
                vals = np.where(keep, vals, np.nan)
            n = np.sum(np.isfinite(vals), axis=0)
            bkg = np.nanmedian(vals, axis=0) if method == "median" else np.nanmean(vals, axis=0)
            sd = np.nanstd(vals, axis=0, ddof=1)
    fac = np.pi / 2 if method == "median" else 1.0
    bvar = np.where(n > 1, fac * sd**2 / np.maximum(n, 1), 0.0)
    bkg = np.where(np.isfinite(bkg), bkg, 0.0)
    bvar = np.where(np.isfinite(bvar), bvar, 0.0)
    return bkg, bvar


def _box_extract_reference(
    rate: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    half_width: float,
    background_region: tuple[float, float] | None = None,
    *,
    background_method: str = "median",
    profile: np.ndarray | None = None,
    bad_bits: int = BAD_PIXEL_BITS,
    _method: str = "box",
) -> Spectrum:
    """numpy reference of :func:`box_extract` (previous implementation).

    Curved-box extraction following the trace, with fractional edge weights.

    ``flux(x) = sum_y w(y, x) * (rate - bkg(x))`` with ``w`` from :func:`aperture_weights`.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    var : float, (ny, nx), (DN/s)^2
        Total variance per pixel (e.g. ERR**2 or VAR_POISSON + VAR_RNOISE).
    dq : uint32, (ny, nx) or None
    trace : TraceModel
    half_width : float, px
        Aperture half-width about the trace centre.
    background_region : (inner, outer) px, optional
        Distance range from the trace used for the per-column background; None: no
        background subtraction.
    background_method : {"median", "mean"}
    profile : float, (ny, nx), optional
        Normalised spatial profile (see :func:`build_profile`) used to fill bad pixels.

    Returns
    -------
    Spectrum
    """
    r = np.asarray(rate, np.float64)
    v = np.asarray(var, np.float64)
    if r.ndim != 2 or v.shape != r.shape:
        raise ValueError(
            f"box_extract: rate and var must be equal 2-D shapes, got {r.shape}, {v.shape}"
        )
    ny, nx = r.shape
    w = aperture_weights(trace, r.shape, half_width)
    if background_region is not None:
        bkg, bvar = _column_background_reference(
            r, dq, trace, background_region, method=background_method, bad_bits=bad_bits
        )
    else:
        bkg, bvar = np.zeros(nx), np.zeros(nx)
    bad = _bad_mask(r, v, dq, bad_bits)
    sub = r - bkg[None, :]
    good_w = np.where(bad, 0.0, w)
    s_good = np.sum(good_w * np.where(bad, 0.0, sub), axis=0)
    var_good = np.sum(good_w**2 * np.where(bad, 0.0, v), axis=0)
    wsum = np.sum(w, axis=0)
    gsum = np.sum(good_w, axis=0)
    missing = wsum - gsum
    if profile is not None:
        p = np.asarray(profile, np.float64)
        pw_good = np.sum(good_w * p, axis=0)
        pw_all = np.sum(w * p, axis=0)
        with np.errstate(all="ignore"):
            scale = np.where(pw_good > 0, pw_all / pw_good, np.nan)
    else:
        with np.errstate(all="ignore"):
            scale = np.where(gsum > 0, wsum / gsum, np.nan)
    has_missing = missing > 1e-12
    flux = np.where(has_missing, s_good * scale, s_good)
    ferr2 = np.where(has_missing, var_good * scale**2, var_good) + wsum**2 * bvar
    flag = np.zeros(nx, np.uint32)
    if dq is not None:
        d = np.asarray(dq).astype(np.uint32)
        flag = np.bitwise_or.reduce(np.where(bad & (w > 0), d, 0).astype(np.uint32), axis=0)
    flag = flag & np.uint32(~dqflags.DO_NOT_USE & 0xFFFFFFFF)
    none_left = ~np.isfinite(flux) | (gsum <= 0)
    flag = flag | np.where(none_left, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    ferr = np.sqrt(np.where(np.isfinite(ferr2), ferr2, 0.0))
    flux = np.where(none_left, np.nan, flux)
    ferr = np.where(none_left, np.nan, ferr)
    return Spectrum(
        flux=flux,
        flux_error=ferr,
        dq=flag.astype(np.uint32),
        npixels=gsum,
        background=bkg,
        method=_method,
    )


def _optimal_extract_reference(
    rate: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray | None,
    profile: np.ndarray,
    *,
    background: np.ndarray | None = None,
    background_var: np.ndarray | None = None,
    var_rnoise: np.ndarray | None = None,
    var_poisson: np.ndarray | None = None,
    sigma_clip: float | None = 5.0,
    max_iter: int = 20,
    bad_bits: int = BAD_PIXEL_BITS,
) -> Spectrum:
    """numpy reference of :func:`optimal_extract` (previous implementation).

    Optimal extraction (Horne 1986) with iterative outlier rejection.

    For each column, with profile ``P`` (unit sum), data ``D`` (background-subtracted),
    variance ``V`` and mask ``M``::

        f = sum(M P D / V) / sum(M P^2 / V),   var(f) = sum(M P) / sum(M P^2 / V)

    Then the pixel with the largest ``(D - P f)^2 / V`` above ``sigma_clip^2`` in each
    column is masked and ``f`` recomputed, until no column changes (Horne's step 8, one
    pixel per column per pass).

    Variance model: if ``var_rnoise`` and ``var_poisson`` are given, ``V`` is revised from
    the model each pass, ``V = var_rnoise + k * max(P f + bkg, 0)`` with
    ``k = median(var_poisson / rate)`` over bright aperture pixels (1 / (gain x time)),
    which avoids the bias of weighting by data-derived Poisson variances. Otherwise the
    given ``var`` is used as is.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    var : float, (ny, nx), (DN/s)^2
        Total variance (used as given, and as a start when modelled).
    dq : uint32, (ny, nx) or None
    profile : float, (ny, nx)
        From :func:`build_profile`; support = profile > 0.
    background : float, (nx,), optional
        Per-pixel background per column (e.g. from :func:`column_background`).
    background_var : float, (nx,), optional
        Its variance; adds ``(sum_support P ... )`` ~ ``npix_eff^2 var_b`` to the error.
    var_rnoise, var_poisson : float, (ny, nx), optional
        Read-noise and Poisson variance (DN/s)^2 for the variance model.
    sigma_clip : float or None
        Rejection threshold (None: no rejection).

    Returns
    -------
    Spectrum
        ``npixels`` = number of unmasked support pixels per column.
    """
    r = np.asarray(rate, np.float64)
    v0 = np.asarray(var, np.float64)
    P = np.asarray(profile, np.float64)
    if r.shape != P.shape or v0.shape != r.shape:
        raise ValueError(
            f"optimal_extract: rate {r.shape}, var {v0.shape} and profile {P.shape} must match"
        )
    ny, nx = r.shape
    bkg = np.zeros(nx) if background is None else np.asarray(background, np.float64)
    D = r - bkg[None, :]
    sup = P > 0
    bad = _bad_mask(r, v0, dq, bad_bits)
    M = sup & ~bad
    V = np.where(M, np.maximum(v0, 1e-30), np.inf)
    model_var = var_rnoise is not None and var_poisson is not None
    if model_var:
        vr = np.asarray(var_rnoise, np.float64)
        vp = np.asarray(var_poisson, np.float64)
        bright = M & (r > 0) & np.isfinite(vp) & (P > 0.5 * P.max(axis=0, keepdims=True))
        ratio = vp[bright] / r[bright] if bright.any() else np.array([])
        k = float(np.median(ratio)) if ratio.size else 0.0
        vr = np.where(np.isfinite(vr), vr, np.inf)
    rejected = np.zeros_like(M)
    Dz = np.where(M, D, 0.0)

    def solve(mask, Vm):
        pv = np.where(mask, P / Vm, 0.0)
        den = np.sum(pv * P, axis=0)
        num = np.sum(pv * Dz, axis=0)
        with np.errstate(all="ignore"):
            f = np.where(den > 0, num / den, 0.0)
            fv = np.where(den > 0, np.sum(np.where(mask, P, 0.0), axis=0) / den, np.inf)
        return f, fv

    f, fvar = solve(M, V)
    for _ in range(max_iter):
        if model_var:
            mod = np.maximum(P * f[None, :] + bkg[None, :], 0.0)
            V = np.where(M, np.maximum(vr + k * mod, 1e-30), np.inf)
            f, fvar = solve(M, V)
        if sigma_clip is None:
            if not model_var:
                break
            continue
        z2 = np.where(M, (Dz - P * f[None, :]) ** 2 / V, 0.0)
        jmax = np.argmax(z2, axis=0)
        zmax = z2[jmax, np.arange(nx)]
        hit = zmax > sigma_clip**2
        if not hit.any():
            if model_var:
                # one more pass converged the variance model with the final mask
                pass
            break
        cols = np.nonzero(hit)[0]
        M[jmax[cols], cols] = False
        rejected[jmax[cols], cols] = True
        V = np.where(M, V, np.inf)
        f, fvar = solve(M, V)
    if background_var is not None:
        # background error enters through the profile-weighted sum of the support
        pv = np.where(M, P / V, 0.0)
        den = np.sum(pv * P, axis=0)
        with np.errstate(all="ignore"):
            g = np.where(den > 0, np.sum(pv, axis=0) / den, 0.0)
        fvar = fvar + g**2 * np.asarray(background_var, np.float64)
    flag = np.zeros(nx, np.uint32)
    if dq is not None:
        d = np.asarray(dq).astype(np.uint32)
        flag = np.bitwise_or.reduce(
            np.where((bad | rejected) & sup, d, 0).astype(np.uint32), axis=0
        )
    flag = flag & np.uint32(~dqflags.DO_NOT_USE & 0xFFFFFFFF)
    flag = flag | np.where(rejected.any(axis=0), np.uint32(dqflags.OUTLIER), np.uint32(0))
    empty = ~M.any(axis=0)
    flag = flag | np.where(empty, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    ferr = np.sqrt(np.where(np.isfinite(fvar), fvar, 0.0))
    return Spectrum(
        flux=np.where(empty, np.nan, f),
        flux_error=np.where(empty, np.nan, ferr),
        dq=flag.astype(np.uint32),
        npixels=M.sum(axis=0).astype(np.float64),
        background=bkg,
        method="optimal",
    )
