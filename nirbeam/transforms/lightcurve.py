"""Light-curve binning kernels: white light and spectroscopic channels.

Kernels only (numpy): no Beam imports. Every stacked function has a per-integration
twin that runs the *same* code on a length-1 stack, so a streaming pipeline emitting one
point per integration gives bit-identical numbers to the batch path.

Binning rule (as Eureka! Stage 4): column ``x`` belongs to bin ``k`` when
``edges[k] <= wavelength[x] < edges[k + 1]``.

Statistic per bin and integration, over the columns of the bin whose DQ has none of
``skip_bits`` and whose flux is finite ("good" columns):

* ``"sum"`` (default): ``n_bin * mean(good)``: the plain sum when every column is good,
  and insensitive to a masked column otherwise (no jump in the light curve);
* ``"mean"``: ``mean(good)`` (Eureka's Stage 4 convention).

Errors: quadrature sum of the good columns' errors scaled the same way. DQ: OR of the DQ of
all columns in the bin; ``DO_NOT_USE`` added when no good column is left. Integrations with
bad data are flagged, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags

__all__ = [
    "LightCurves",
    "flag_lightcurve_outliers",
    "edges_from_resolution",
    "native_edges",
    "bin_index",
    "bin_spectra",
    "bin_spectrum",
    "white_light",
    "white_light_point",
]

#: Column DQ bits excluded from the bin statistic (the column is still OR'ed into DQ).
SKIP_BITS = dqflags.DO_NOT_USE


@njit(cache=True)
def _bin_core(f, e, d, idx, ncols, skip_bits, as_sum):
    """Sequential per-row sums (identical arithmetic for any number of rows)."""
    nint, nx = f.shape
    nbin = ncols.size
    out_f = np.zeros((nint, nbin))
    out_e = np.zeros((nint, nbin))
    out_d = np.zeros((nint, nbin), np.uint32)
    out_n = np.zeros((nint, nbin), np.int64)
    for i in range(nint):
        for x in range(nx):
            k = idx[x]
            if k < 0:
                continue
            out_d[i, k] |= d[i, x]
            if (d[i, x] & skip_bits) != 0 or not np.isfinite(f[i, x]) or not np.isfinite(e[i, x]):
                continue
            out_f[i, k] += f[i, x]
            out_e[i, k] += e[i, x] * e[i, x]
            out_n[i, k] += 1
        for k in range(nbin):
            n = out_n[i, k]
            if n == 0:
                out_f[i, k] = np.nan
                out_e[i, k] = np.nan
                out_d[i, k] |= np.uint32(1)  # DO_NOT_USE
                continue
            out_e[i, k] = np.sqrt(out_e[i, k])
            if as_sum:
                if n != ncols[k]:
                    scale = ncols[k] / n
                    out_f[i, k] *= scale
                    out_e[i, k] *= scale
            else:
                out_f[i, k] /= n
                out_e[i, k] /= n
    return out_f, out_e, out_d, out_n


#: Stacks of at least this many spectra are binned by :func:`_bin_rows` (numpy), fewer by
#: :func:`_bin_core` (numba): the same arithmetic, bit for bit. A batch run bins its whole
#: exposure once or twice (white light, bins), where loading the compiled kernel from
#: numba's cache (~0.3 CPU-s) costs far more than numpy's loop over columns (~10 ms for
#: 1200 x 512); the live writers bin one spectrum at a time (numba's few microseconds).
NUMPY_MIN_ROWS = 64


def _bin_rows(f, e, d, idx, ncols, skip_bits, as_sum):
    """:func:`_bin_core` in numpy, bit for bit: each bin's good columns are added in
    increasing column order (the ``j``-th column of every bin at once), as the kernel's
    sequential loop adds them; a column left out adds ``+0.0``, which changes no sum (a
    sum started at ``+0.0`` is never ``-0.0`` in round-to-nearest)."""
    nint, nx = f.shape
    nbin = ncols.size
    out_f = np.zeros((nint, nbin))
    out_e = np.zeros((nint, nbin))
    out_d = np.zeros((nint, nbin), np.uint32)
    out_n = np.zeros((nint, nbin), np.int64)
    cols = np.flatnonzero(idx >= 0)
    k = idx[cols]
    order = np.argsort(k, kind="stable")  # columns by bin, increasing within each bin
    cols, k = cols[order], k[order]
    first = np.searchsorted(k, k, side="left")
    pos = np.arange(k.size) - first  # rank of the column within its bin
    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(int(pos.max()) + 1 if pos.size else 0):
            sel = pos == j
            xs, ks = cols[sel], k[sel]
            fx, ex, dx = f[:, xs], e[:, xs], d[:, xs]
            out_d[:, ks] |= dx
            good = ((dx & skip_bits) == 0) & np.isfinite(fx) & np.isfinite(ex)
            out_f[:, ks] += np.where(good, fx, 0.0)
            out_e[:, ks] += np.where(good, ex * ex, 0.0)
            out_n[:, ks] += good
        empty = out_n == 0
        out_e = np.sqrt(out_e)
        n = np.where(empty, 1, out_n)
        if as_sum:
            scale = np.where(n != ncols[None, :], ncols[None, :] / n, 1.0)
            rescale = ~empty & (out_n != ncols[None, :])
            out_f = np.where(rescale, out_f * scale, out_f)
            out_e = np.where(rescale, out_e * scale, out_e)
        else:
            out_f = out_f / n
            out_e = out_e / n
    out_f[empty] = np.nan
    out_e[empty] = np.nan
    out_d[empty] |= np.uint32(1)  # DO_NOT_USE
    return out_f, out_e, out_d, out_n


@dataclass(frozen=True, eq=False)
class LightCurves:
    """Binned light curves.

    Attributes
    ----------
    flux : float64, (nint, nbin), DN/s (spectrum units)
    error : float64, (nint, nbin)
    dq : uint32, (nint, nbin)
    npix : int64, (nint, nbin)
        Good columns used.
    centers : float64, (nbin,), µm
        Mid-points of the bin edges.
    edges : float64, (nbin + 1,), µm
    statistic : str
    """

    flux: np.ndarray
    error: np.ndarray
    dq: np.ndarray
    npix: np.ndarray
    centers: np.ndarray
    edges: np.ndarray
    statistic: str = "sum"

    @property
    def nbin(self) -> int:
        """Number of bins."""
        return int(self.centers.size)


def edges_from_resolution(wmin: float, wmax: float, resolution: float) -> np.ndarray:
    """Bin edges of constant resolving power ``R = lambda_center / delta_lambda``.

    Edges are geometric, ``e_{k+1} = e_k * (2R + 1) / (2R - 1)``, starting at ``wmin``;
    only complete bins up to ``wmax`` are kept.

    Returns
    -------
    float64, (nbin + 1,), µm
    """
    if not (resolution > 0.5 and wmax > wmin > 0):
        raise ValueError(
            f"constant-R bins need R > 0.5 and 0 < wmin < wmax, got R={resolution}, "
            f"wmin={wmin}, wmax={wmax}"
        )
    ratio = (2 * resolution + 1) / (2 * resolution - 1)
    n = int(np.floor(np.log(wmax / wmin) / np.log(ratio) + 1e-9))
    if n < 1:
        raise ValueError(f"R={resolution}: no complete bin between {wmin} and {wmax} µm")
    return wmin * ratio ** np.arange(n + 1)


def native_edges(wavelength: np.ndarray) -> np.ndarray:
    """Edges halfway between the finite column wavelengths (one bin per column).

    Parameters
    ----------
    wavelength : float, (nx,), µm, monotonic (NaNs allowed at the ends).

    Returns
    -------
    float64, (n_finite + 1,), increasing
    """
    wl = np.asarray(wavelength, np.float64)
    w = np.sort(wl[np.isfinite(wl)])
    if w.size < 2:
        raise ValueError("native bins need at least 2 finite column wavelengths")
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])


def bin_index(wavelength: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin number of each column (-1 outside all bins or NaN wavelength).

    Returns
    -------
    int64, (nx,)
    """
    wl = np.asarray(wavelength, np.float64)
    e = np.asarray(edges, np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("bin edges must be a strictly increasing 1-D array of >= 2 values")
    k = np.searchsorted(e, wl, side="right") - 1
    k = np.where(np.isfinite(wl) & (k >= 0) & (k < e.size - 1), k, -1)
    return k.astype(np.int64)


def bin_spectra(
    flux: np.ndarray,
    error: np.ndarray,
    dq: np.ndarray | None,
    wavelength: np.ndarray,
    edges: np.ndarray,
    *,
    statistic: str = "sum",
    skip_bits: int = SKIP_BITS,
) -> LightCurves:
    """Bin a stack of spectra into light curves.

    Parameters
    ----------
    flux, error : float, (nint, nx)
    dq : uint32, (nint, nx) or None
    wavelength : float, (nx,), µm
    edges : float, (nbin + 1,), µm
    statistic : {"sum", "mean"}
    skip_bits : int
        Column DQ bits that exclude a column from the statistic.

    Returns
    -------
    LightCurves
    """
    if statistic not in ("sum", "mean"):
        raise ValueError(f"statistic must be 'sum' or 'mean', got {statistic!r}")
    f = np.atleast_2d(np.asarray(flux, np.float64))
    e = np.atleast_2d(np.asarray(error, np.float64))
    nint, nx = f.shape
    d = (
        np.zeros((nint, nx), np.uint32)
        if dq is None
        else np.atleast_2d(np.asarray(dq)).astype(np.uint32)
    )
    if e.shape != f.shape or d.shape != f.shape or np.shape(wavelength) != (nx,):
        raise ValueError(
            f"bin_spectra: flux {f.shape}, error {e.shape}, dq {d.shape} and wavelength "
            f"{np.shape(wavelength)} disagree"
        )
    edges = np.asarray(edges, np.float64)
    idx = bin_index(wavelength, edges)
    nbin = edges.size - 1
    ncols = np.bincount(idx[idx >= 0], minlength=nbin).astype(np.int64)
    core = _bin_rows if nint >= NUMPY_MIN_ROWS else _bin_core
    out_f, out_e, out_d, out_n = core(
        f, e, d, idx, ncols, np.uint32(skip_bits), statistic == "sum"
    )
    return LightCurves(
        flux=out_f,
        error=out_e,
        dq=out_d,
        npix=out_n,
        centers=0.5 * (edges[1:] + edges[:-1]),
        edges=edges,
        statistic=statistic,
    )


def bin_spectrum(
    flux: np.ndarray,
    error: np.ndarray,
    dq: np.ndarray | None,
    wavelength: np.ndarray,
    edges: np.ndarray,
    *,
    statistic: str = "sum",
    skip_bits: int = SKIP_BITS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-integration twin of :func:`bin_spectra` (identical arithmetic).

    Parameters
    ----------
    flux, error : float, (nx,)
    dq : uint32, (nx,) or None

    Returns
    -------
    flux : float64, (nbin,)
    error : float64, (nbin,)
    dq : uint32, (nbin,)
    npix : int64, (nbin,)
    """
    lc = bin_spectra(
        np.asarray(flux)[None],
        np.asarray(error)[None],
        None if dq is None else np.asarray(dq)[None],
        wavelength,
        edges,
        statistic=statistic,
        skip_bits=skip_bits,
    )
    return lc.flux[0], lc.error[0], lc.dq[0], lc.npix[0]


def white_light(
    flux: np.ndarray,
    error: np.ndarray,
    dq: np.ndarray | None,
    wavelength: np.ndarray,
    wmin: float | None = None,
    wmax: float | None = None,
    *,
    statistic: str = "sum",
    skip_bits: int = SKIP_BITS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """White-light curve: the spectrum summed over ``wmin <= wavelength < wmax``.

    Parameters
    ----------
    flux, error : float, (nint, nx)
    dq : uint32, (nint, nx) or None
    wavelength : float, (nx,), µm
    wmin, wmax : float, µm, optional
        Default: all finite wavelengths (``wmax`` then just above the largest).

    Returns
    -------
    flux : float64, (nint,)
    error : float64, (nint,)
    dq : uint32, (nint,)
    """
    wl = np.asarray(wavelength, np.float64)
    lo = np.nanmin(wl) if wmin is None else float(wmin)
    hi = np.nextafter(np.nanmax(wl), np.inf) if wmax is None else float(wmax)
    lc = bin_spectra(
        flux, error, dq, wl, np.array([lo, hi]), statistic=statistic, skip_bits=skip_bits
    )
    return lc.flux[:, 0], lc.error[:, 0], lc.dq[:, 0]


def white_light_point(
    flux: np.ndarray,
    error: np.ndarray,
    dq: np.ndarray | None,
    wavelength: np.ndarray,
    wmin: float | None = None,
    wmax: float | None = None,
    *,
    statistic: str = "sum",
    skip_bits: int = SKIP_BITS,
) -> tuple[float, float, int]:
    """Per-integration twin of :func:`white_light`: (flux, error, dq) scalars."""
    f, e, d = white_light(
        np.asarray(flux)[None],
        np.asarray(error)[None],
        None if dq is None else np.asarray(dq)[None],
        wavelength,
        wmin,
        wmax,
        statistic=statistic,
        skip_bits=skip_bits,
    )
    return float(f[0]), float(e[0]), int(d[0])


def flag_lightcurve_outliers(flux: np.ndarray, good: np.ndarray, window: int = 5,
                             n_sigma: float = 5.0) -> np.ndarray:
    """Points of a light curve more than ``n_sigma`` (robust) from a short running median.

    The reference must follow the signal: a transit is a real change of up to a few
    percent, i.e. tens to hundreds of sigma for a bright white light. A running median
    over a window comparable with the transit (the earlier 25 points) lags at ingress and
    egress and through the whole transit of a short exposure, so in-transit points were
    flagged OUTLIER and left out of the fit, preferentially those whose noise pushed them
    towards the out-of-transit level: fewer points and depths biased shallow (issue 13:
    12-16 of 40 G395H points flagged, depth pulls about -1 sigma). A median of ``window``
    (odd, default 5, exoTEDRF's window) consecutive good points follows a straight line
    exactly, and keeps steps (an ingress sampled by a point or two) where a mean would
    not. The scale is the point-to-point scatter, 1.4826 x MAD(diff(flux)) / sqrt(2),
    which the transit moves only at its few ingress/egress points (the residuals'
    own MAD would not do: a fifth of them are exactly 0, the points that are their own
    median).

    Parameters
    ----------
    flux : float, (n,)
    good : bool, (n,)
        Points that may be judged (finite, not DO_NOT_USE); others are never flagged and
        not in any median.
    window : int
        Points in the running median (made odd; shifted, not truncated, at the ends).
    n_sigma : float
        Threshold in units of the point-to-point scatter (see above).

    Returns
    -------
    bool, (n,)
        True on flagged points.
    """
    flux = np.asarray(flux, np.float64)
    good = np.asarray(good, bool) & np.isfinite(flux)
    out = np.zeros(flux.size, bool)
    idx = np.flatnonzero(good)
    w = int(window) | 1
    if idx.size < max(w, 3):
        return out
    f = flux[idx]
    n = f.size
    half = w // 2
    med = np.empty(n)
    for k in range(n):
        s = min(max(k - half, 0), n - w)
        med[k] = np.median(f[s:s + w])
    r = f - med
    d = np.diff(f)
    sig = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)
    if sig > 0:
        out[idx[np.abs(r) > n_sigma * sig]] = True
    return out
