"""Per-column background from a region on both sides of the trace (numba + numpy reference)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nirbeam.transforms.extract_common import (
    as_dq,
    as_f64,
    bad_mask,
    median_sorted,
    sort_columns,
    trace_center,
)
from nirbeam.transforms.trace import BAD_PIXEL_BITS, TraceModel


@njit(cache=True, error_model="numpy")
def column_background_kernel(
    r, dq, center, inner, outer, bad_bits, use_median, do_clip, clip, bkg, bvar, pvar, has_v
):
    """:func:`column_background` for all columns at once.

    With ``has_v``, the variance of the estimate is propagated from the pixel variances
    ``pvar`` of the kept pixels (``sum v / m^2``, x pi/2 for the median), as jwst's
    extract_1d propagates them; otherwise it is their scatter^2 / m. A kept pixel with a
    non-finite variance falls back to the scatter for its column.

    The usable region pixels of column ``x`` go, in row order, to ``R[:cnt[x], x]``;
    medians come from column-sorted copies (see :func:`sort_columns`). The sigma clip
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
    n = np.int64(0)  # not the literal 0: one sort_columns specialisation (int64)
    for x in range(nx):
        if cnt[x] > n:
            n = cnt[x]
    S = R[:n].copy()
    sort_columns(S, n)
    med = np.empty(nx)
    for x in range(nx):
        c = cnt[x]
        med[x] = median_sorted(S[:, x], c) if c > 0 else np.nan
    thr = np.full(nx, np.inf)
    if do_clip:
        A = np.full((n, nx), np.inf)
        for i in range(n):
            for x in range(nx):
                if i < cnt[x]:
                    A[i, x] = abs(R[i, x] - med[x])
        sort_columns(A, n)
        for x in range(nx):
            c = cnt[x]
            if c > 0:
                mad = 1.4826 * median_sorted(A[:, x], c)
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
                val = R[i, x]
                if abs(val - med[x]) <= thr[x]:
                    dv = val - avg[x]
                    ss[x] += dv * dv
    vs = np.zeros(nx)
    vok = np.ones(nx, np.bool_)
    if has_v:
        # the same pixels, found again in row order (R holds them in row order too)
        k = np.zeros(nx, np.int64)
        for y in range(ny):
            for x in range(nx):
                d = abs(y - center[x])
                if d >= inner and d <= outer:
                    val = r[y, x]
                    if math.isfinite(val) and (dq[y, x] & bad_bits) == 0:
                        if abs(R[k[x], x] - med[x]) <= thr[x]:
                            pv = pvar[y, x]
                            if math.isfinite(pv) and pv >= 0:
                                vs[x] += pv
                            else:
                                vok[x] = False
                        k[x] += 1
    fac = np.pi / 2 if use_median else 1.0
    for x in range(nx):
        mx = m[x]
        if mx == 0:
            bkg[x] = 0.0
            bvar[x] = 0.0
            continue
        if use_median:
            b = median_sorted(S[below[x] :, x], mx)
        else:
            b = avg[x]
        bkg[x] = b if math.isfinite(b) else 0.0
        bv = 0.0
        if has_v and vok[x]:
            bv = fac * vs[x] / (mx * mx)
        elif mx > 1:
            sd = math.sqrt(ss[x] / (mx - 1))
            bv = fac * (sd * sd) / mx
        if not math.isfinite(bv):
            bv = 0.0
        bvar[x] = bv



def column_background(
    rate: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    region: tuple[float, float],
    *,
    method: str = "median",
    sigma_clip: float | None = 3.0,
    bad_bits: int = BAD_PIXEL_BITS,
    var: np.ndarray | None = None,
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
    var : float, (ny, nx), (DN/s)^2, optional
        Pixel variances (VAR_POISSON + VAR_RNOISE): the estimate's variance is then
        propagated from those of the kept pixels (jwst extract_1d), not taken from
        their scatter (a 9-dof estimate for ~10 region pixels, pulls 5% too wide).

    Returns
    -------
    background : float64, (nx,), DN/s per pixel
        0 where no region pixel is usable.
    background_var : float64, (nx,), (DN/s)^2
        Variance of the per-pixel background estimate (sum var / n^2, or scatter^2 / n
        without ``var``; x pi/2 for the median).

    Notes
    -----
    numba kernel, one column at a time (insertion-sorted medians of the <= ny region
    pixels); equal to :func:`column_background_reference` (numpy) to rounding.
    """
    if method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {method!r}")
    r = np.ascontiguousarray(rate, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"column_background: rate must be 2-D (ny, nx), got shape {r.shape}")
    ny, nx = r.shape
    bkg = np.empty(nx)
    bvar = np.empty(nx)
    column_background_kernel(
        r,
        as_dq(dq, r.shape),
        trace_center(trace, nx),
        float(region[0]),
        float(region[1]),
        np.uint32(bad_bits),
        method == "median",
        sigma_clip is not None,
        0.0 if sigma_clip is None else float(sigma_clip),
        bkg,
        bvar,
        as_f64(var, r.shape) if var is not None else np.zeros((1, 1)),
        var is not None,
    )
    return bkg, bvar



def column_background_reference(
    rate: np.ndarray,
    dq: np.ndarray | None,
    trace: TraceModel,
    region: tuple[float, float],
    *,
    method: str = "median",
    sigma_clip: float | None = 3.0,
    bad_bits: int = BAD_PIXEL_BITS,
    var: np.ndarray | None = None,
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
    background, background_var : float64, (nx,)
        As :func:`column_background`.
    """
    if method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {method!r}")
    r = np.asarray(rate, np.float64)
    ny, nx = r.shape
    inner, outer = float(region[0]), float(region[1])
    dist = np.abs(np.arange(ny)[:, None] - trace.center(np.arange(nx))[None, :])
    use = (dist >= inner) & (dist <= outer) & ~bad_mask(r, None, dq, bad_bits)
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
    if var is not None:
        pv = np.broadcast_to(np.asarray(var, np.float64), r.shape)
        kept = np.isfinite(vals)
        okv = np.isfinite(pv) & (pv >= 0)
        col_ok = ~np.any(kept & ~okv, axis=0) & (n > 0)
        vs = np.sum(np.where(kept & okv, pv, 0.0), axis=0)
        with np.errstate(all="ignore"):
            bprop = fac * vs / np.maximum(n, 1) ** 2
        bvar = np.where(col_ok, bprop, bvar)
    bkg = np.where(np.isfinite(bkg), bkg, 0.0)
    bvar = np.where(np.isfinite(bvar), bvar, 0.0)
    return bkg, bvar
