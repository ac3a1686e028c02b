"""Trace finding and wavelength assignment for NIRSpec BOTS subarrays.

Kernels only (numpy): no Beam imports. The detector frame is (y, x) = (spatial, dispersion);
all pixel coordinates are 0-based pixel centres (pixel ``j`` spans ``[j - 0.5, j + 0.5]``).

The trace model is a polynomial ``y_center(x)`` fitted robustly (iterative sigma clipping)
to per-column centroids measured on a median image, together with a polynomial for the
PSF width (Gaussian-equivalent sigma, pixels) per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nirbeam import dqflags

__all__ = [
    "BAD_PIXEL_BITS",
    "TraceModel",
    "TraceMeasurement",
    "measure_trace_columns",
    "find_trace",
    "robust_polyfit",
    "WavelengthSolution",
]

#: DQ bits that make a pixel unusable for trace finding and extraction.
BAD_PIXEL_BITS = (
    dqflags.DO_NOT_USE
    | dqflags.SATURATED
    | dqflags.DEAD
    | dqflags.HOT
    | dqflags.OUTLIER
    | dqflags.NON_SCIENCE
    | dqflags.REFERENCE_PIXEL
)


@dataclass(frozen=True)
class TraceModel:
    """Polynomial trace centre and PSF width as functions of column.

    Polynomials are in the scaled variable ``t = (x - x_ref) / x_scale`` with
    ``x_ref, x_scale`` the centre and half-length of ``x_range`` (numpy.polynomial
    convention: lowest order first), which keeps the fit well conditioned for 2048 columns.

    Attributes
    ----------
    coefficients : tuple of float
        Centre polynomial, ``y_center = sum_k c_k t**k`` (pixels).
    width_coefficients : tuple of float
        PSF sigma polynomial (pixels); ``width(x)`` is clipped to >= 0.3 px.
    x_range : (float, float)
        First and last column (inclusive) the polynomials were fitted on. Evaluation
        outside extrapolates.
    rms : float
        RMS (px) of the accepted centroids about the fit (0 for configured traces).
    source : str
        ``"fit"`` or ``"config"``.
    """

    coefficients: tuple[float, ...]
    width_coefficients: tuple[float, ...] = (1.0,)
    x_range: tuple[float, float] = (0.0, 2047.0)
    rms: float = 0.0
    source: str = "fit"

    @property
    def x_ref(self) -> float:
        """Centre of ``x_range``."""
        return 0.5 * (self.x_range[0] + self.x_range[1])

    @property
    def x_scale(self) -> float:
        """Half-length of ``x_range`` (>= 1)."""
        return max(0.5 * (self.x_range[1] - self.x_range[0]), 1.0)

    def _t(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.x_ref) / self.x_scale

    def center(self, x) -> np.ndarray:
        """Trace centre y (float64 px) at column(s) ``x``."""
        return np.polynomial.polynomial.polyval(self._t(x), np.asarray(self.coefficients))

    def width(self, x) -> np.ndarray:
        """PSF Gaussian sigma (float64 px, >= 0.3) at column(s) ``x``."""
        w = np.polynomial.polynomial.polyval(self._t(x), np.asarray(self.width_coefficients))
        return np.maximum(w, 0.3)

    @classmethod
    def from_config(
        cls,
        center: float | Sequence[float],
        width: float | Sequence[float] = 1.0,
        x_range: tuple[float, float] = (0.0, 2047.0),
        *,
        scaled: bool = True,
    ) -> TraceModel:
        """Trace from configuration values.

        Parameters
        ----------
        center : float or sequence of float
            A constant row, or polynomial coefficients (lowest order first).
        width : float or sequence of float
            Constant PSF sigma (px) or polynomial coefficients.
        x_range : (float, float)
            Columns the polynomials refer to.
        scaled : bool
            True: coefficients are in the scaled variable ``t`` (as stored by
            :func:`find_trace`); False: in plain column ``x`` (converted here).
        """
        c = np.atleast_1d(np.asarray(center, dtype=np.float64))
        w = np.atleast_1d(np.asarray(width, dtype=np.float64))
        if c.ndim != 1 or w.ndim != 1 or c.size == 0 or w.size == 0:
            raise ValueError("trace config: 'center' and 'width' must be numbers or 1-D lists")
        if not scaled:
            ref = 0.5 * (x_range[0] + x_range[1])
            sc = max(0.5 * (x_range[1] - x_range[0]), 1.0)
            # p(x) = p(ref + sc t): compose polynomials
            conv = np.polynomial.Polynomial([ref, sc])
            c = np.polynomial.Polynomial(c)(conv).coef
            w = np.polynomial.Polynomial(w)(conv).coef
        return cls(
            coefficients=tuple(float(v) for v in c),
            width_coefficients=tuple(float(v) for v in w),
            x_range=(float(x_range[0]), float(x_range[1])),
            rms=0.0,
            source="config",
        )

    def to_dict(self) -> dict:
        """JSON-friendly description."""
        return {
            "coefficients": list(self.coefficients),
            "width_coefficients": list(self.width_coefficients),
            "x_range": list(self.x_range),
            "rms": self.rms,
            "source": self.source,
            "variable": "t = (x - x_ref) / x_scale",
        }


@dataclass(frozen=True, eq=False)
class TraceMeasurement:
    """Per-column measurements behind a :class:`TraceModel`.

    Attributes
    ----------
    centroid : float64, (nx,), px
        Flux-weighted centroid per column (NaN where not measured).
    width : float64, (nx,), px
        Gaussian-equivalent sigma from the second moment, pixel-variance (1/12) removed.
    flux : float64, (nx,), image units
        Background-subtracted flux in the centroid window.
    used : bool, (nx,)
        Columns kept by the robust polynomial fit.
    """

    centroid: np.ndarray
    width: np.ndarray
    flux: np.ndarray
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def window_weights(rows: np.ndarray, center: np.ndarray, half_width: float) -> np.ndarray:
    """Fractional overlap of each pixel [y-0.5, y+0.5] with [c-hw, c+hw]; (ny, nx)."""
    lo = np.maximum(rows[:, None] - 0.5, center[None, :] - half_width)
    hi = np.minimum(rows[:, None] + 0.5, center[None, :] + half_width)
    return np.clip(hi - lo, 0.0, 1.0)


def measure_trace_columns(
    image: np.ndarray,
    dq: np.ndarray | None = None,
    *,
    window: float = 4.5,
    n_iter: int = 4,
    bad_bits: int = BAD_PIXEL_BITS,
) -> TraceMeasurement:
    """Per-column centroid and width on a (median) image.

    The background of each column is the median of its good pixels farther than
    ``window + 2`` px from the column peak. The centroid is computed in a window of
    half-width ``window`` px with fractional edge weights, re-centred on the previous
    centroid ``n_iter`` times (removes the bias of a window centred on an integer row).

    Parameters
    ----------
    image : float, (ny, nx)
        Median rate image (DN/s), dispersion along x.
    dq : uint32, (ny, nx), optional
        Pixels with any of ``bad_bits`` are ignored.
    window : float
        Half-width (px) of the centroid window; should be >= 3 PSF sigma.
    n_iter : int
        Re-centring iterations.

    Returns
    -------
    TraceMeasurement
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"find_trace: image must be 2-D (ny, nx), got shape {img.shape}")
    ny, nx = img.shape
    good = np.isfinite(img)
    if dq is not None:
        good &= (np.asarray(dq).astype(np.uint32) & np.uint32(bad_bits)) == 0
    rows = np.arange(ny, dtype=np.float64)
    work = np.where(good, img, np.nan)
    # Peak row per column from a lightly smoothed copy (robust to single hot pixels).
    sm = np.where(good, img, 0.0)
    if nx >= 5:
        from scipy.ndimage import median_filter

        sm = median_filter(sm, size=(1, 5), mode="nearest")
    peak = np.argmax(sm, axis=0).astype(np.float64)
    far = np.abs(rows[:, None] - peak[None, :]) > window + 2.0
    with np.errstate(all="ignore"):
        bkg = np.nanmedian(np.where(far, work, np.nan), axis=0)
    bkg = np.where(np.isfinite(bkg), bkg, 0.0)
    sub = np.where(good, img - bkg[None, :], 0.0)
    gw = good.astype(np.float64)
    c = peak.copy()
    for _ in range(max(n_iter, 1)):
        w = window_weights(rows, c, window) * gw
        s = np.sum(w * sub, axis=0)
        with np.errstate(all="ignore"):
            cn = np.sum(w * sub * rows[:, None], axis=0) / s
        ok = np.isfinite(cn) & (s > 0) & (np.abs(cn - c) < window)
        c = np.where(ok, cn, c)
    w = window_weights(rows, c, window) * gw
    s = np.sum(w * sub, axis=0)
    with np.errstate(all="ignore"):
        m2 = np.sum(w * sub * (rows[:, None] - c[None, :]) ** 2, axis=0) / s
        width = np.sqrt(np.maximum(m2 - 1.0 / 12.0, 0.0))
    ok = np.isfinite(c) & (s > 0)
    c = np.where(ok, c, np.nan)
    width = np.where(ok, width, np.nan)
    return TraceMeasurement(centroid=c, width=width, flux=s, used=np.zeros(nx, bool))


def robust_polyfit(
    x: np.ndarray,
    y: np.ndarray,
    deg: int,
    *,
    weights: np.ndarray | None = None,
    sigma: float = 3.0,
    max_iter: int = 10,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Iterative sigma-clipped weighted polynomial fit.

    Parameters
    ----------
    x, y : float, (n,)
        Abscissa and values (NaNs are ignored).
    deg : int
        Polynomial degree.
    weights : float, (n,), optional
        Weights (1/sigma) for numpy's ``polyfit``.
    sigma : float
        Clip points with ``|resid - median| > sigma * 1.4826 * MAD`` (re-admitting
        points back inside the band), until the set of used points is stable.

    Returns
    -------
    coef : float64, (deg+1,)
        Lowest order first (numpy.polynomial convention).
    used : bool, (n,)
    rms : float
        RMS of the used residuals.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)
    used = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    if used.sum() < deg + 1:
        raise ValueError(f"robust_polyfit: {used.sum()} usable points for degree {deg}")
    coef = np.zeros(deg + 1)
    for _ in range(max_iter):
        coef = np.polynomial.polynomial.polyfit(x[used], y[used], deg, w=w[used])
        res = y - np.polynomial.polynomial.polyval(x, coef)
        r_used = res[used]
        med = np.median(r_used)
        mad = 1.4826 * np.median(np.abs(r_used - med))
        if mad <= 0:
            break
        # points inside the band are (re)admitted: standard iterative clipping
        new = (np.isfinite(res) & np.isfinite(w) & (w > 0)) & (np.abs(res - med) <= sigma * mad)
        if new.sum() < deg + 1 or np.array_equal(new, used):
            break
        used = new
    res = y - np.polynomial.polynomial.polyval(x, coef)
    rms = float(np.sqrt(np.mean(res[used] ** 2))) if used.any() else float("nan")
    return coef, used, rms


def find_trace(
    median_image: np.ndarray,
    dq: np.ndarray | None = None,
    deg: int = 2,
    *,
    width_deg: int = 2,
    window: float = 4.5,
    sigma_clip: float = 3.0,
    min_flux_fraction: float = 0.05,
    x_range: tuple[int, int] | None = None,
    bad_bits: int = BAD_PIXEL_BITS,
    return_measurement: bool = False,
) -> TraceModel | tuple[TraceModel, TraceMeasurement]:
    """Find the spectral trace on a median rate image.

    Per-column centroids (see :func:`measure_trace_columns`) are fitted with a
    polynomial of degree ``deg`` by iterative sigma clipping, weighting each column by
    its window flux (a proxy for centroid S/N). Columns with window flux below
    ``min_flux_fraction`` x the 90th percentile are not used (faint ends of the
    spectrum). The PSF width per column is fitted the same way with ``width_deg``.

    Parameters
    ----------
    median_image : float, (ny, nx), DN/s
        Median over integrations of the rate images.
    dq : uint32, (ny, nx), optional
        Pixel DQ (bits in ``bad_bits`` masked).
    deg : int
        Degree of ``y_center(x)`` (2 or 3 typical).
    window : float
        Centroid window half-width (px).
    sigma_clip : float
        Clipping threshold in robust sigma.
    x_range : (int, int), optional
        Inclusive columns to fit (default: all).

    Returns
    -------
    TraceModel, or (TraceModel, TraceMeasurement) if ``return_measurement``.
    """
    meas = measure_trace_columns(median_image, dq, window=window, bad_bits=bad_bits)
    nx = meas.centroid.size
    x = np.arange(nx, dtype=np.float64)
    x0, x1 = (0, nx - 1) if x_range is None else (int(x_range[0]), int(x_range[1]))
    sel = (x >= x0) & (x <= x1) & np.isfinite(meas.centroid)
    flux = np.where(sel, meas.flux, 0.0)
    if not sel.any() or np.nanmax(flux) <= 0:
        raise ValueError("find_trace: no column with positive flux in the median image")
    ref = np.percentile(flux[sel], 90)
    sel &= flux >= min_flux_fraction * ref
    tmp = TraceModel(coefficients=(0.0,), x_range=(float(x0), float(x1)))
    t = tmp._t(x)
    wts = np.sqrt(np.clip(flux, 0, None))
    yfit = np.where(sel, meas.centroid, np.nan)
    coef, used, rms = robust_polyfit(t, yfit, deg, weights=wts, sigma=sigma_clip)
    wfit = np.where(used & np.isfinite(meas.width), meas.width, np.nan)
    wcoef, _, _ = robust_polyfit(t, wfit, width_deg, weights=wts, sigma=sigma_clip)
    model = TraceModel(
        coefficients=tuple(float(v) for v in coef),
        width_coefficients=tuple(float(v) for v in wcoef),
        x_range=(float(x0), float(x1)),
        rms=rms,
        source="fit",
    )
    if return_measurement:
        meas = TraceMeasurement(meas.centroid, meas.width, meas.flux, used)
        return model, meas
    return model


@dataclass(frozen=True, eq=False)
class WavelengthSolution:
    """Wavelength (µm) of each column along the trace.

    Attributes
    ----------
    wavelength : float64, (nx,), µm
        NaN where unknown.
    source : str
        How it was obtained: ``"table:<name>"``, ``"map:<name>"`` or ``"polynomial"``.
    """

    wavelength: np.ndarray
    source: str

    @property
    def nx(self) -> int:
        """Number of columns."""
        return int(self.wavelength.size)

    @classmethod
    def from_table(
        cls, x: np.ndarray, wavelength_um: np.ndarray, nx: int, *, name: str = "truth"
    ) -> WavelengthSolution:
        """Interpolate a (column -> wavelength) table, e.g. a simulator truth table.

        Parameters
        ----------
        x : float, (n,)
            Columns (0-based), any order.
        wavelength_um : float, (n,), µm
        nx : int
            Number of detector columns; columns outside the table get NaN.
        """
        x = np.asarray(x, np.float64)
        wl = np.asarray(wavelength_um, np.float64)
        if x.shape != wl.shape or x.ndim != 1 or x.size < 2:
            raise ValueError(
                f"wavelength table {name!r}: x and wavelength_um must be 1-D of equal "
                f"length >= 2, got {x.shape} and {wl.shape}"
            )
        o = np.argsort(x)
        cols = np.arange(nx, dtype=np.float64)
        out = np.interp(cols, x[o], wl[o], left=np.nan, right=np.nan)
        return cls(out, f"table:{name}")

    @classmethod
    def from_map(
        cls, wavelength_map: np.ndarray, trace: TraceModel, *, name: str = "WAVELENGTH"
    ) -> WavelengthSolution:
        """Take a 2-D wavelength map's value along the trace (linear in y).

        Parameters
        ----------
        wavelength_map : float, (ny, nx), µm
            E.g. the WAVELENGTH array of a jwst ``calints`` product; NaN outside the slit.
        trace : TraceModel
        """
        wm = np.asarray(wavelength_map, np.float64)
        if wm.ndim != 2:
            raise ValueError(f"wavelength map {name!r}: expected 2-D (ny, nx), got {wm.shape}")
        ny, nx = wm.shape
        cols = np.arange(nx)
        yc = np.clip(trace.center(cols), 0, ny - 1)
        y0 = np.clip(np.floor(yc).astype(int), 0, ny - 2 if ny > 1 else 0)
        f = yc - y0
        y1 = np.minimum(y0 + 1, ny - 1)
        a = wm[y0, cols]
        b = wm[y1, cols]
        out = np.where(np.isfinite(a) & np.isfinite(b), (1 - f) * a + f * b, np.nan)
        # fall back to the nearest finite value in the column
        near = np.where(f < 0.5, a, b)
        out = np.where(np.isfinite(out), out, near)
        return cls(out, f"map:{name}")

    @classmethod
    def from_coefficients(
        cls, coefficients: Sequence[float], nx: int, *, x_ref: float = 0.0, x_scale: float = 1.0
    ) -> WavelengthSolution:
        """Polynomial ``lambda = sum_k c_k ((x - x_ref)/x_scale)**k`` (µm, lowest order first)."""
        c = np.asarray(coefficients, np.float64)
        if c.ndim != 1 or c.size == 0:
            raise ValueError("wavelength config: 'coefficients' must be a non-empty list")
        t = (np.arange(nx, dtype=np.float64) - x_ref) / x_scale
        return cls(np.polynomial.polynomial.polyval(t, c), "polynomial")
