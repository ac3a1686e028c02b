"""1-D spectral extraction kernels: curved box, straight box, optimal (Horne 1986).

Kernels only (numpy): no Beam imports. Images are (ny, nx) = (spatial, dispersion),
rates in DN/s, variances in (DN/s)^2. Pixel ``j`` spans ``[j - 0.5, j + 0.5]``.

Bad pixels (any of ``bad_bits`` in DQ, or non-finite) never enter a sum directly:

* box extraction replaces them by ``profile x flux`` when a profile is given, otherwise
  by the weighted mean of the good aperture pixels of that column scaled by the missing
  weight (a flat-profile assumption), and ORs their DQ into the column flag;
* optimal extraction simply gives them zero weight (the profile accounts for the missing
  light) and ORs their DQ into the column flag.

Columns are flagged, never dropped: ``Spectrum.dq`` holds the OR of the DQ of every
pixel that was masked or rejected in the aperture (plus ``OUTLIER`` for pixels rejected by
the optimal-extraction sigma clip, ``DO_NOT_USE`` if no usable pixel was left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        bkg, bvar = column_background(
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
    nonfinite = (bad & (w > 0) & (flag[None, :] == 0)).any(axis=0)
    flag = flag | np.where(nonfinite, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    none_left = ~np.isfinite(flux) | (gsum <= 0)
    flag = flag | np.where(none_left, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    flux = np.where(np.isfinite(flux), flux, 0.0)
    ferr = np.sqrt(np.where(np.isfinite(ferr2), ferr2, 0.0))
    return Spectrum(
        flux=flux,
        flux_error=ferr,
        dq=flag.astype(np.uint32),
        npixels=gsum,
        background=bkg,
        method=_method,
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
    flag = flag | np.where(rejected.any(axis=0), np.uint32(dqflags.OUTLIER), np.uint32(0))
    nonfin = (bad & sup & ~np.isfinite(r)).any(axis=0)
    flag = flag | np.where(nonfin, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    empty = ~M.any(axis=0)
    flag = flag | np.where(empty, np.uint32(dqflags.DO_NOT_USE), np.uint32(0))
    ferr = np.sqrt(np.where(np.isfinite(fvar), fvar, 0.0))
    return Spectrum(
        flux=np.where(empty, 0.0, f),
        flux_error=ferr,
        dq=flag.astype(np.uint32),
        npixels=M.sum(axis=0).astype(np.float64),
        background=bkg,
        method="optimal",
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
