"""Optimal extraction (Horne 1986) with iterative rejection (numba kernel + numpy reference)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.extract_common import (
    DNU,
    OUTLIER_BIT,
    Spectrum,
    as_dq,
    as_f64,
    bad_mask,
    np_maximum,
)
from nirbeam.transforms.trace import BAD_PIXEL_BITS


@njit(cache=True, error_model="numpy")
def _solve_cols(M, V, P, Dz, y0, f, fvar, x0, x1):
    """Horne's f and var(f) for columns ``x0 <= x < x1`` (all columns, or the one a
    rejection changed); sums over work rows in increasing y, per column."""
    H = M.shape[0]
    m = x1 - x0
    den = np.zeros(m)
    num = np.zeros(m)
    psum = np.zeros(m)
    for i in range(H):
        pr = P[y0 + i]
        mr = M[i]
        vr = V[i]
        dr = Dz[i]
        for k in range(m):
            x = x0 + k
            p = pr[x]
            pv = p / vr[x] if mr[x] else 0.0
            den[k] += pv * p
            num[k] += pv * dr[x]
            psum[k] += p if mr[x] else 0.0
    for k in range(m):
        x = x0 + k
        if den[k] > 0:
            f[x] = num[k] / den[k]
            fvar[x] = psum[k] / den[k]
        else:
            f[x] = 0.0
            fvar[x] = np.inf


@njit(cache=True, error_model="numpy")
def optimal_kernel(
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
                V[i, x] = np_maximum(v0[y, x], 1e-30)
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
    X0 = np.int64(0)  # all columns; not the literal 0 (one _solve_cols specialisation)
    _solve_cols(M, V, P, Dz, y0, f, fvar, X0, nx)
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
                        mod = np_maximum(pr[x] * f[x] + bkg[x], 0.0)
                        vrow[x] = np_maximum(vrr[x] + k * mod, 1e-30) if mr[x] else np.inf
                _solve_cols(M, V, P, Dz, y0, f, fvar, X0, nx)
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
                    _solve_cols(M, V, P, Dz, y0, f, fvar, x, x + 1)
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
        fl = (base[x] | rejflag[x]) & ~DNU
        if anyrej[x]:
            fl |= OUTLIER_BIT
        fv = fvar[x]
        if nm[x] == 0:
            fl |= DNU
            flux[x] = np.nan
            ferr[x] = np.nan
        else:
            flux[x] = f[x]
            ferr[x] = math.sqrt(fv if math.isfinite(fv) else 0.0)
        flag[x] = fl
        npix[x] = nm[x]



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
    numba kernel; the passes are global as in :func:`optimal_extract_reference` (numpy),
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
        vr = as_f64(var_rnoise, r.shape)
        vp = as_f64(var_poisson, r.shape)
    else:
        vr = vp = np.zeros((1, 1))
    has_bvar = background_var is not None
    bvar = as_f64(background_var, (nx,)) if has_bvar else np.zeros(1)
    thr = 0.0 if sigma_clip is None else float(sigma_clip) ** 2
    flux = np.empty(nx)
    ferr = np.empty(nx)
    flag = np.empty(nx, np.uint32)
    npix = np.empty(nx)
    optimal_kernel(
        np.ascontiguousarray(r),
        np.ascontiguousarray(v0),
        as_dq(dq, r.shape),
        np.ascontiguousarray(P),
        as_f64(bkg, (nx,)),
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



def optimal_extract_reference(
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
    bad = bad_mask(r, v0, dq, bad_bits)
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
