"""1/f cleaning: the scene mask of background pixels (:func:`scene_mask`) and its
draft from a ramp (:func:`draft_mask_from_groups`)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from nirbeam.transforms.flicker_params import (
    MASK_BAD_BITS,
    check_2d,
    masked_column_median,
    robust_sigma,
)


# --------------------------------------------------------------------------- scene mask
def _keep_extended(
    detected: np.ndarray, signif: np.ndarray, min_extent: int, min_peak: float
) -> np.ndarray:
    """Keep connected detections that extend >= min_extent columns along x (a trace)
    or peak above min_peak sigma (a compact bright source); drop noise clumps."""
    labels, n = ndimage.label(detected)
    if n == 0:
        return detected
    keep = np.zeros(n + 1, dtype=bool)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        if sl[1].stop - sl[1].start >= min_extent:
            keep[i] = True
    peaks = ndimage.maximum(signif, labels, index=np.arange(1, n + 1))
    keep[1:] |= np.asarray(peaks) >= min_peak
    return keep[labels]


def scene_mask(
    image: np.ndarray,
    err: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    trace_mask: np.ndarray | None = None,
    n_sigma: float = 2.0,
    *,
    sigma_lower: float = 3.0,
    dilate: int = 2,
    smooth: int = 9,
    bad_bits: int = MASK_BAD_BITS,
    user_mask: np.ndarray | None = None,
    background: np.ndarray | float | None = None,
    n_iter: int = 2,
    aperture: float = 0.0,
) -> np.ndarray:
    """Background pixels usable for the 1/f fit, from a draft rate image.

    Excluded: non-finite pixels, pixels with any of ``bad_bits`` in ``dq``, the pixels
    of ``trace_mask`` (e.g. from an aperture model), pixels outside ``user_mask``, the
    spectral trace detected in ``image``, and single-pixel outliers.

    Detection works on the residual ``r = image - background - column median``
    (median over the still-usable pixels of each column). Per pixel, ``r > n_sigma *
    sigma`` (signal) or ``r < -sigma_lower * sigma`` (bad low values) are excluded, as
    in jwst ``clip_to_background``. The trace is found on ``r`` averaged over
    ``smooth`` columns along x (the dispersion direction, where the trace is
    continuous) against ``n_sigma`` times the noise of that average; connected
    detections are kept if they extend over ``2 * smooth`` columns (a trace) or peak
    above 5 sigma (a compact source), so noise clumps are not grown into holes; the
    kept ones are grown by ``dilate`` rows along y and one column along x. ``sigma`` is ``err`` where given
    (finite, > 0), else the MAD-based sigma of ``r`` over usable pixels, re-estimated
    ``n_iter`` times after excluding what was found.

    Parameters
    ----------
    image : float, (ny, nx), DN/s or DN
        Draft rate image (or one group difference).
    err : float, (ny, nx), same unit as ``image``, optional
        Per-pixel 1-sigma uncertainty.
    dq : uint32, (ny, nx), optional
        Pixel DQ; pixels with any of ``bad_bits`` are excluded.
    trace_mask : bool, (ny, nx), optional
        True on known source pixels (excluded).
    n_sigma : float
        Upper clipping threshold, sigma.
    sigma_lower : float
        Lower clipping threshold, sigma.
    dilate : int
        Growth of the detected trace along y, pixels.
    smooth : int
        Columns averaged for trace detection (1 disables averaging).
    bad_bits : int
        DQ bits that exclude a pixel (default DO_NOT_USE | SATURATED | DEAD | HOT).
    user_mask : bool, (ny, nx), optional
        False excludes a pixel (combined with AND).
    background : float or float (ny, nx), optional
        Smooth background subtracted before detection.
    n_iter : int
        Iterations of sigma estimation / detection.
    aperture : float
        When > 0, the trace centre is fitted on ``image``
        (:func:`nirbeam.transforms.trace.find_trace`) and every pixel within
        ``aperture`` px of it along y is excluded too: the extraction aperture and
        the PSF wings below the clipping threshold, which would otherwise bias the
        column statistic. An image without a measurable trace keeps the rest of the
        mask.

    Returns
    -------
    mask : bool, (ny, nx)
        True where the pixel is background usable for the noise fit.
    """
    img = check_2d("scene_mask image", image).astype(np.float64)
    shape = img.shape
    valid = np.isfinite(img)
    if dq is not None:
        valid &= (
            check_2d("scene_mask dq", dq, shape).astype(np.uint32) & np.uint32(bad_bits)
        ) == 0
    if trace_mask is not None:
        valid &= ~check_2d("scene_mask trace_mask", trace_mask, shape).astype(bool)
    if user_mask is not None:
        valid &= check_2d("scene_mask user_mask", user_mask, shape).astype(bool)
    if background is not None:
        bg = np.asarray(background, dtype=np.float64)
        if bg.ndim:
            check_2d("scene_mask background", bg, shape)
        img = img - bg
    pix_sigma = None
    if err is not None:
        pix_sigma = check_2d("scene_mask err", err, shape).astype(np.float64)
        pix_sigma = np.where(np.isfinite(pix_sigma) & (pix_sigma > 0), pix_sigma, np.nan)

    use = valid.copy()
    smooth = max(int(smooth), 1)
    for _ in range(max(int(n_iter), 1)):
        colmed = masked_column_median(img, use)
        colmed = np.where(np.isfinite(colmed), colmed, 0.0)
        resid = np.where(valid, img - colmed[None, :], 0.0)
        glob = robust_sigma(resid, use)
        sig = (
            np.full(shape, glob)
            if pix_sigma is None
            else np.where(np.isnan(pix_sigma), glob, pix_sigma)
        )
        high = resid > n_sigma * sig
        low = resid < -sigma_lower * sig
        # trace: running mean along x of the residual, against its own noise
        w = valid.astype(np.float64)
        num = ndimage.uniform_filter1d(resid * w, smooth, axis=1, mode="nearest")
        den = ndimage.uniform_filter1d(w, smooth, axis=1, mode="nearest")
        var = ndimage.uniform_filter1d(sig**2 * w, smooth, axis=1, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = num / den
            noise = np.sqrt(var / den) / np.sqrt(den * smooth)
        signif = np.where(den > 0, mean / noise, 0.0)
        trace = signif > n_sigma
        trace = _keep_extended(trace, signif, min_extent=2 * smooth, min_peak=5.0)
        if dilate > 0 or smooth > 1:
            structure = np.ones((2 * int(dilate) + 1, 3 if smooth > 1 else 1), dtype=bool)
            trace = ndimage.binary_dilation(trace, structure=structure)
        use = valid & ~high & ~low & ~trace
    if aperture and aperture > 0:
        use &= ~_aperture_band(image, dq, float(aperture))
    return use


def _aperture_band(image: np.ndarray, dq, half_width: float) -> np.ndarray:
    """(ny, nx) True within ``half_width`` px (along y) of the trace fitted on ``image``;
    all False when no trace can be measured."""
    from nirbeam.transforms.trace import find_trace

    img = np.asarray(image, np.float64)
    ny, nx = img.shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tr = find_trace(np.where(np.isfinite(img), img, 0.0), dq)
            yc = np.asarray(tr.center(np.arange(nx, dtype=np.float64)), np.float64)
    except (ValueError, np.linalg.LinAlgError):
        return np.zeros((ny, nx), bool)
    if not np.all(np.isfinite(yc)):
        return np.zeros((ny, nx), bool)
    yy = np.arange(ny, dtype=np.float64)[:, None]
    return np.abs(yy - yc[None, :]) <= half_width


def draft_mask_from_groups(
    groups: np.ndarray, pixeldq: np.ndarray | None = None, **mask_kwargs
) -> np.ndarray:
    """Scene mask from a ramp when no draft rate image is available.

    The draft image is the per-pixel median of the group differences (DN/group).

    Parameters
    ----------
    groups : float, (ngroups, ny, nx), DN
    pixeldq : uint32, (ny, nx), optional
    **mask_kwargs
        Passed to :func:`scene_mask`.

    Returns
    -------
    mask : bool, (ny, nx)
    """
    g = np.asarray(groups, dtype=np.float64)
    if g.shape[0] < 2:
        draft = g[0]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            draft = np.nanmedian(np.diff(g, axis=0), axis=0)
    return scene_mask(draft, dq=pixeldq, **mask_kwargs)
