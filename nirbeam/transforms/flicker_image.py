"""1/f cleaning of one image (a rate image or one group difference): per-column
robust offsets (:func:`clean_median`), a low-pass cosine series per column
(:func:`clean_fft`), jwst's subarray NSClean layout (:func:`clean_nsclean`), and
:func:`clean_rate` over a cube of rate images. numpy/scipy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nirbeam.transforms.flicker_params import (
    MAD_TO_SIGMA,
    METHODS,
    STATISTICS,
    check_2d,
    fill_columns,
    masked_column_median,
    out_dtype,
    resolve_background,
    robust_sigma,
)


# --------------------------------------------------------------------------- median
def clean_median(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    background=None,
    statistic: str = "median",
    clip_sigma: float = 3.0,
    min_pixels: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove per-column 1/f offsets measured on background pixels.

    Parameters
    ----------
    image : float32 or float64, (ny, nx), DN (group difference) or DN/s (rate)
    mask : bool, (ny, nx)
        True on background pixels usable for the fit. Non-finite pixels are ignored.
    background : None, 'median', float or float (ny, nx)
        Smooth background removed before measuring the offsets and kept in the
        output: None (zero), the scalar median of the masked pixels, or given values
        (e.g. a scaled median image across integrations).
    statistic : {'median', 'mean'}
        Column median, or sigma-clipped mean (first clip about the median at
        ``clip_sigma`` MAD-sigma, then 3 rounds about the mean at ``clip_sigma`` std).
    clip_sigma : float
        Clip threshold for ``statistic='mean'``.
    min_pixels : int
        Columns with fewer usable pixels get the mean offset of the nearest usable
        column on each side.

    Returns
    -------
    cleaned : same float dtype as ``image`` (float32 for other dtypes), (ny, nx)
        ``image - model``.
    model : float64, (ny, nx)
        Fitted noise (the column offsets, broadcast along y).
    """
    img = check_2d("clean_median image", image)
    msk = check_2d("clean_median mask", mask, img.shape).astype(bool)
    if statistic not in STATISTICS:
        raise ValueError(
            f"clean_median statistic: expected one of {STATISTICS}, got {statistic!r}"
        )
    x = img.astype(np.float64)
    use = msk & np.isfinite(x)
    bg = resolve_background(background, x, use)
    d = np.where(use, x - bg, np.nan)
    off = masked_column_median(d, use)
    if statistic == "mean":
        # robust start (median, MAD), then 3 rounds of mean/std clipping: 2 sorts only
        dz = np.where(use, d, 0.0)
        with np.errstate(invalid="ignore"):
            scale = MAD_TO_SIGMA * masked_column_median(np.abs(d - off[None, :]), use)
        for _ in range(3):
            with np.errstate(invalid="ignore"):
                lim = clip_sigma * np.where(np.isfinite(scale), scale, 0.0)
                keep = use & (np.abs(dz - off[None, :]) <= lim[None, :])
            n = keep.sum(axis=0)
            nn = np.maximum(n, 1)
            off = np.where(n > 0, np.where(keep, dz, 0.0).sum(axis=0) / nn, np.nan)
            resid2 = np.where(keep, (dz - np.where(n > 0, off, 0.0)[None, :]) ** 2, 0.0)
            scale = np.sqrt(resid2.sum(axis=0) / nn)
    good = (use.sum(axis=0) >= int(min_pixels)) & np.isfinite(off)
    off = fill_columns(np.where(good, off, 0.0), good)
    model = np.broadcast_to(off[None, :], x.shape).copy()
    cleaned = (x - model).astype(out_dtype(img))
    return cleaned, model


# --------------------------------------------------------------------------- fft
def cosine_basis(ny: int, n_freq: int, alternating: bool = False) -> np.ndarray:
    """Low-pass Fourier cosine basis along a column.

    Parameters
    ----------
    ny : int
        Pixels along the column (fast-read direction).
    n_freq : int
        Non-constant terms: ``cos(pi * k * (y + 1/2) / ny)`` for ``k = 1..n_freq``
        (half-cycles over the column readout), after the constant ``k = 0``.
    alternating : bool
        Append ``(-1)**y`` (the Nyquist term).

    Returns
    -------
    basis : float64, (ny, 1 + n_freq [+ 1])
    """
    y = np.arange(ny, dtype=np.float64)
    k = np.arange(int(n_freq) + 1, dtype=np.float64)
    basis = np.cos(np.pi * k[None, :] * (y[:, None] + 0.5) / ny)
    if alternating:
        basis = np.hstack([basis, np.where(np.arange(ny) % 2 == 0, 1.0, -1.0)[:, None]])
    return basis


def _exclude_outliers(d: np.ndarray, use: np.ndarray, n_sigma: float) -> np.ndarray:
    """Drop background pixels deviating > n_sigma (MAD) from their column median, and
    their 4 nearest neighbours (as jwst's subarray NSClean)."""
    colmed = masked_column_median(d, use)
    resid = np.where(use, d - np.where(np.isfinite(colmed), colmed, 0.0)[None, :], 0.0)
    sig = robust_sigma(resid, use)
    out = use & (np.abs(resid) > n_sigma * sig)
    if not out.any():
        return use
    grown = out.copy()
    grown[1:] |= out[:-1]
    grown[:-1] |= out[1:]
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return use & ~grown


def clean_fft(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    n_freq: int = 1,
    ridge: float = 4.0,
    alternating: bool = False,
    weights: np.ndarray | None = None,
    background=None,
    min_pixels: int = 4,
    exclude_outliers: bool = True,
    outlier_sigma: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove 1/f noise with a low-pass Fourier series per column (NSClean style).

    For every column the noise along its readout is modelled as
    ``m(y) = sum_k a_k cos(pi k (y + 1/2) / ny)``, ``k = 0..n_freq`` (plus
    ``b (-1)**y`` if ``alternating``), fitted by weighted least squares to the masked
    pixels of that column, with a ridge penalty ``ridge`` on the non-constant terms
    (so a column with a masked trace in its middle does not extrapolate wildly across
    it) and none on the constant. A pure per-column offset is therefore fitted exactly.
    Columns with fewer than ``3 * nterms`` usable pixels drop their highest terms;
    columns with fewer than ``min_pixels`` take the mean model of the nearest usable
    column on each side.

    Parameters
    ----------
    image : float32 or float64, (ny, nx), DN or DN/s
    mask : bool, (ny, nx)
        True on background pixels. Non-finite pixels are ignored.
    n_freq : int
        Non-constant cosine terms (half-cycles over the column readout).
    ridge : float
        Penalty on non-constant coefficients, in units of fully weighted pixels.
    alternating : bool
        Also fit the alternating-row (Nyquist) term.
    weights : float, (ny, nx), optional
        Fit weights (e.g. inverse variance); normalised to mean 1 over usable pixels.
    background : None, 'median', float or float (ny, nx)
        Removed before fitting and kept in the output (see :func:`clean_median`).
    min_pixels : int
        Minimum usable pixels for a column to be fitted on its own.
    exclude_outliers : bool
        Drop background pixels beyond ``outlier_sigma`` (MAD about the column median)
        and their 4 neighbours from the fit.
    outlier_sigma : float
        Threshold for ``exclude_outliers``.

    Returns
    -------
    cleaned : same float dtype as ``image`` (float32 for other dtypes), (ny, nx)
    model : float64, (ny, nx)
        Fitted noise.

    Notes
    -----
    jwst's subarray variant (``fft_clean_subarray``) fits one Fourier series in
    readout time (12-pixel line overhead, 10 us per pixel) to sections of ~512 usable
    pixels with a ~1.1 kHz low-pass, i.e. it smooths offsets over ~2 columns. Here
    every column keeps its own offset (exact per-column removal) and the low-pass
    series models the structure within the column's readout. Information is not
    shared between columns except through the neighbour fill.
    """
    img = check_2d("clean_fft image", image)
    msk = check_2d("clean_fft mask", mask, img.shape).astype(bool)
    ny, nx = img.shape
    x = img.astype(np.float64)
    use = msk & np.isfinite(x)
    w = np.ones_like(x)
    if weights is not None:
        w = check_2d("clean_fft weights", weights, img.shape).astype(np.float64)
        use &= np.isfinite(w) & (w > 0)
    bg = resolve_background(background, x, use)
    d = np.where(use, x - bg, 0.0)
    if exclude_outliers:
        use = _exclude_outliers(d, use, outlier_sigma)
    w = np.where(use, w, 0.0)
    if use.any():
        w /= w[use].mean()
    d = np.where(use, d, 0.0)

    basis = cosine_basis(ny, n_freq, alternating)  # (ny, p)
    p = basis.shape[1]
    # p is small (2-4): p*(p+1)/2 weighted column sums beat einsum/BLAS here (a
    # multithreaded BLAS in every worker process also oversubscribes the cores)
    normal = np.empty((nx, p, p))
    for a in range(p):
        wa = w * basis[:, a, None]
        for b in range(a, p):
            normal[:, a, b] = normal[:, b, a] = (wa * basis[:, b, None]).sum(axis=0)
    wd = w * d
    rhs = np.stack([(wd * basis[:, a, None]).sum(axis=0) for a in range(p)], axis=1)  # (nx, p)
    n_use = use.sum(axis=0)
    # penalties: ridge on non-constant terms; drop high terms where data are scarce
    pen = np.full((nx, p), float(ridge))
    pen[:, 0] = 0.0
    n_terms = np.clip(n_use // 3, 1, p)
    order = np.arange(p)[None, :]
    pen = np.where(order >= n_terms[:, None], 1e12, pen)
    good = n_use >= max(int(min_pixels), 1)
    normal[np.arange(nx)[:, None], order, order] += pen
    normal[~good] = np.eye(p)
    rhs[~good] = 0.0
    coef = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]  # (nx, p)
    coef[~good] = 0.0
    coef = fill_columns(coef, good)
    model = np.zeros((ny, nx))
    for a in range(p):
        model += basis[:, a, None] * coef[None, :, a]
    cleaned = (x - model).astype(out_dtype(img))
    return cleaned, model


# --------------------------------------------------------------------------- nsclean
#: jwst's BOTS apodizer corners, Hz: unity below fc[0], cosine roll-off to zero at
#: fc[1], zero until fc[2], cosine roll-on to unity at fc[3] (Nyquist side).
NSCLEAN_FC = (1061.0, 1211.0, 49943.0, 49957.0)


def make_apodizer(freq: np.ndarray, fc) -> np.ndarray:
    f0, f1, f2, f3 = (float(v) for v in fc)
    a = np.zeros(freq.shape)
    a[freq < f0] = 1.0
    here = (freq >= f0) & (freq < f1)
    a[here] = 0.5 * (np.cos(np.pi * (freq[here] - f0) / (f1 - f0)) + 1.0)
    here = (freq >= f2) & (freq < f3)
    a[here] = 0.5 * (np.cos(np.pi * (freq[here] - f2) / (f3 - f2) + np.pi) + 1.0)
    a[freq >= f3] = 1.0
    return a


def clean_nsclean(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    fc=NSCLEAN_FC,
    tpix: float = 10e-6,
    nloh: int = 12,
    npix_iter: int = 512,
    minfrac: float = 0.05,
    reverse_columns: bool = False,
    background=None,
    exclude_outliers: bool = True,
    outlier_sigma: float = 4.0,
    min_pixels: int = 4,
    damping: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove 1/f noise with an apodized Fourier series in readout time (NSClean subarray).

    The image is a single time series: pixel ``(y, x)`` is read at tick
    ``t = x' * (ny + nloh) + y`` (``x' = x``, or ``nx - 1 - x`` with
    ``reverse_columns``, e.g. for NRS2 whose slow axis runs the other way), ``tpix``
    seconds per tick. Sections of consecutive columns holding about ``npix_iter``
    usable pixels, overlapping by half, are each fitted by least squares with the
    real Fourier basis of the section's length at the frequencies the apodizer
    ``fc`` keeps; the fitted spectrum is apodized and evaluated at every pixel, and
    the sections are blended with triangular weights (as jwst's
    ``fft_clean_subarray``). Sections with at most ``minfrac`` usable pixels get no
    correction.

    Unlike :func:`clean_fft` this does not remove arbitrary per-column offsets
    exactly: column-to-column variations faster than ``fc[0]`` (about one column
    every 2 at the defaults) are left in.

    Parameters
    ----------
    image : float32 or float64, (ny, nx), DN or DN/s
    mask : bool, (ny, nx)
        True on background pixels.
    fc : 4 floats, Hz
        Apodizer corners (jwst defaults for BOTS).
    tpix : float, s
        Pixel dwell time.
    nloh : int
        Idle ticks at the end of each column (new-line overhead).
    npix_iter : int
        Usable pixels per fitting section.
    minfrac : float
        Minimum usable fraction for a section to be corrected.
    reverse_columns : bool
        Columns are read from high x to low x.
    background : None, 'median', float or float (ny, nx)
        Removed before fitting and kept in the output.
    exclude_outliers : bool
        Drop background pixels beyond ``outlier_sigma`` (MAD about the global median)
        and their 4 neighbours.
    outlier_sigma : float
    min_pixels : int
        Below this many usable pixels in the whole image, nothing is corrected.
    damping : float
        Ridge on every non-constant coefficient, relative to the mean diagonal of the normal
        matrix (jwst uses a pseudo-inverse; without damping, a section whose usable
        pixels leave gaps of a few columns, e.g. after jump flags, can blow up).

    Returns
    -------
    cleaned : same float dtype as ``image`` (float32 for other dtypes), (ny, nx)
    model : float64, (ny, nx)
    """
    img = check_2d("clean_nsclean image", image)
    msk = check_2d("clean_nsclean mask", mask, img.shape).astype(bool)
    ny, nx = img.shape
    x = img.astype(np.float64)
    use = msk & np.isfinite(x)
    bg = resolve_background(background, x, use)
    d = np.where(use, x - bg, 0.0)
    if reverse_columns:
        d, use = d[:, ::-1], use[:, ::-1]
    if exclude_outliers and use.any():
        med = np.median(d[use])
        sig = MAD_TO_SIGMA * np.median(np.abs(d[use] - med))
        out = use & (np.abs(d - med) > outlier_sigma * sig)
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        use = use & ~grown
    model = np.zeros((ny, nx))
    if use.sum() < max(int(min_pixels), 1):
        cleaned = (x - model).astype(out_dtype(img))
        return cleaned, model
    per_col = use.sum(axis=0)
    csum = np.concatenate([[0], np.cumsum(per_col)])
    cols = np.flatnonzero(per_col > 0)
    i1, imax = int(cols[0]), int(cols[-1])
    period = ny + int(nloh)
    yy = np.arange(ny)
    acc = np.zeros((ny, nx))
    wsum = np.zeros(nx)
    while i1 <= imax:
        k = imax + 1
        for kk in range(i1 + 1, imax + 2):
            if csum[kk] - csum[i1] > npix_iter and csum[-1] - csum[i1] > 1.5 * npix_iter:
                k = kk
                break
        di = k - i1
        sec = slice(i1, i1 + di)
        sec_model = np.zeros((ny, di))
        if use[:, sec].mean() > minfrac:
            n = di * period
            freq = np.fft.rfftfreq(n, tpix)
            apod = make_apodizer(freq, fc)
            kk_idx = np.flatnonzero(apod > 0)
            t = (np.arange(di)[None, :] * period + yy[:, None]).astype(np.float64)  # (ny, di)
            ph = (2 * np.pi / n) * t[:, :, None] * kk_idx[None, None, :].astype(np.float64)
            has_sin = (kk_idx > 0) & (kk_idx < n / 2)
            basis = np.concatenate([np.cos(ph), np.sin(ph[:, :, has_sin])], axis=-1)  # (ny, di, p)
            scales = np.concatenate([apod[kk_idx], apod[kk_idx[has_sin]]])
            u = use[:, sec]
            bu = basis[u]
            normal = np.einsum("ip,iq->pq", bu, bu)  # not BLAS: avoids thread oversubscription
            # Tikhonov damping relative to the mean diagonal: negligible where the data
            # constrain a frequency, keeps coefficients bounded across wide gaps
            damp = np.full(len(normal), damping * np.trace(normal) / len(normal))
            damp[: (kk_idx == 0).sum()] = 0.0  # the constant is always constrained
            normal[np.diag_indices_from(normal)] += damp
            coef = np.linalg.solve(normal, np.einsum("ip,i->p", bu, d[:, sec][u]))
            sec_model = np.einsum("ycp,p->yc", basis, coef * scales)
        wgt = 1.001 - np.abs(np.linspace(-1, 1, di))
        acc[:, sec] += wgt[None, :] * sec_model
        wsum[sec] += wgt
        if k == imax + 1:
            break
        i1 += max(int(round(di / 2)), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        model = np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1.0), 0.0)
    if reverse_columns:
        model = model[:, ::-1]
    cleaned = (x - model).astype(out_dtype(img))
    return cleaned, model


# --------------------------------------------------------------------------- levels
def make_cleaner(method: str) -> Callable:
    if method == "median":
        return clean_median
    if method == "fft":
        return clean_fft
    if method == "nsclean":
        return clean_nsclean
    raise ValueError(f"1/f cleaning method: expected one of {METHODS}, got {method!r}")


def clean_rate(
    rate: np.ndarray, mask: np.ndarray, method: str = "median", **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Clean 1/f stripes from rate images.

    Parameters
    ----------
    rate : float32, (ny, nx) or (nint, ny, nx), DN/s
    mask : bool, (ny, nx) or (nint, ny, nx)
        Background pixels (one mask for all integrations, or one per integration).
    method : {'median', 'fft', 'nsclean'}
    **kwargs
        Passed to :func:`clean_median` or :func:`clean_fft`.

    Returns
    -------
    cleaned : float32 (float64 for float64 input), shape of ``rate``
    model : float64, shape of ``rate``
    """
    fn = make_cleaner(method)
    r = np.asarray(rate)
    m = np.asarray(mask, dtype=bool)
    if r.ndim == 2:
        return fn(r, m, **kwargs)
    if r.ndim != 3:
        raise ValueError(
            f"clean_rate rate: expected (ny, nx) or (nint, ny, nx), got shape {r.shape}"
        )
    if m.shape not in (r.shape, r.shape[1:]):
        raise ValueError(
            f"clean_rate mask: expected shape {r.shape[1:]} or {r.shape}, got {m.shape}"
        )
    cleaned = np.empty(r.shape, out_dtype(r))
    model = np.empty(r.shape, np.float64)
    for i in range(r.shape[0]):
        cleaned[i], model[i] = fn(r[i], m if m.ndim == 2 else m[i], **kwargs)
    return cleaned, model
