"""Curved and straight box extraction (numba kernel + numpy reference)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.extract_background import (
    column_background_kernel,
    column_background_reference,
)
from nirbeam.transforms.extract_common import (
    DNU,
    Spectrum,
    aperture_weights,
    aperture_weights_fast,
    as_dq,
    as_f64,
    bad_mask,
    trace_center,
)
from nirbeam.transforms.trace import BAD_PIXEL_BITS, TraceModel


@njit(cache=True)
def box_outputs(nx):  # pragma: no cover - compiled
    """The column arrays :func:`box_kernel` fills, for ``nx`` columns: ``(flux,
    flux_error, flag, npixels, background, background_var)`` (float64, uint32 flag).
    Used by :func:`box_extract` and by the block kernel of
    :mod:`nirbeam.transforms.spectra_block` (one allocation per block there)."""
    return (np.empty(nx), np.empty(nx), np.empty(nx, np.uint32), np.empty(nx),
            np.empty(nx), np.empty(nx))


@njit(cache=True, error_model="numpy")
def box_kernel(
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
    bvar,
    bvar_from_pixels,
):
    """Curved box (see :func:`box_extract`); fills the (nx,) outputs."""
    ny, nx = r.shape
    bvar[:] = 0.0
    if has_bkg:
        column_background_kernel(
            r, dq, center, inner, outer, bad_bits, np.bool_(use_median), np.bool_(True), 3.0, bkg,
            bvar, v, np.bool_(bvar_from_pixels),  # bools, not literals: the specialisation
            # column_background calls from Python (one compile, not two)
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
        f_x = fl[x] & ~DNU
        if (not math.isfinite(f)) or gsum[x] <= 0:
            f_x |= DNU
            flux[x] = np.nan
            ferr[x] = np.nan
        else:
            flux[x] = f
            ferr[x] = math.sqrt(fe2 if math.isfinite(fe2) else 0.0)
        flag[x] = f_x
        npix[x] = gsum[x]



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
    background_variance: str = "pixels",
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
    background_variance : {"pixels", "scatter"}
        The background estimate's variance from the kept region pixels' ``var``
        (propagated, as jwst extract_1d) or from their scatter (see
        :func:`column_background`).

    Returns
    -------
    Spectrum
        With ``background_var`` (nx,), (DN/s)^2 (0 without a background region).

    Notes
    -----
    One numba pass over the columns (background as :func:`column_background`, 3-sigma
    clipped); the aperture weights are cached per (trace, shape, half_width). Equal to
    :func:`box_extract_reference` (numpy) to rounding.
    """
    if background_region is not None and background_method not in ("median", "mean"):
        raise ValueError(f"background method must be 'median' or 'mean', got {background_method!r}")
    if background_variance not in ("pixels", "scatter"):
        raise ValueError(f"background_variance must be 'pixels' or 'scatter', got {background_variance!r}")
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
    prof = as_f64(profile, r.shape) if has_prof else np.zeros((1, 1))
    has_bkg = background_region is not None
    inner, outer = (
        (float(background_region[0]), float(background_region[1])) if has_bkg else (0.0, 0.0)
    )
    flux, ferr, flag, npix, bkg, bvar = box_outputs(nx)
    box_kernel(
        r,
        v,
        as_dq(dq, r.shape),
        aperture_weights_fast(trace, r.shape, half_width),
        prof,
        has_prof,
        trace_center(trace, nx),
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
        bvar,
        background_variance == "pixels",
    )
    return Spectrum(
        flux=flux, flux_error=ferr, dq=flag, npixels=npix, background=bkg, method=_method,
        background_var=bvar,
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



def box_extract_reference(
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
    background_variance: str = "pixels",
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
        bkg, bvar = column_background_reference(
            r, dq, trace, background_region, method=background_method, bad_bits=bad_bits,
            var=v if background_variance == "pixels" else None,
        )
    else:
        bkg, bvar = np.zeros(nx), np.zeros(nx)
    bad = bad_mask(r, v, dq, bad_bits)
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
        background_var=bvar,
    )
