"""Quick-look PNG plots (matplotlib, Agg backend).

Each function takes arrays / dataclasses and an output path, writes one PNG and returns
the path. Figures are closed after saving (safe in long-running workers).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_white_light",
    "plot_spectroscopic_image",
    "plot_rate_image",
    "plot_transmission_spectrum",
    "plot_fit",
    "bin_points",
]


def _save(fig, path) -> Path:
    from nirbeam.sinks import fs  # path or fsspec URL, written atomically

    try:
        with fs.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path if fs.is_url(path) else Path(path)


def bin_points(
    x: np.ndarray, y: np.ndarray, nbin: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average consecutive points in groups of ``nbin``: (x_mean, y_mean, y_sem)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = (x.size // nbin) * nbin
    if n == 0 or nbin <= 1:
        return x, y, np.zeros_like(y)
    xb = x[:n].reshape(-1, nbin).mean(1)
    yr = y[:n].reshape(-1, nbin)
    return xb, yr.mean(1), yr.std(1, ddof=1) / np.sqrt(nbin)


def _robust_limits(a: np.ndarray, lo=1.0, hi=99.0):
    v = np.asarray(a, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a0, a1 = np.percentile(v, [lo, hi])
    if a1 <= a0:
        a1 = a0 + 1.0
    return float(a0), float(a1)


def plot_white_light(
    time: np.ndarray,
    flux: np.ndarray,
    path: str | Path,
    *,
    error: np.ndarray | None = None,
    model: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    nbin: int = 10,
    title: str = "White-light curve",
    time_label: str = "Time [BJD_TDB]",
) -> Path:
    """White-light curve, binned points, optional model and residuals panel.

    Parameters
    ----------
    time, flux : float, (nint,)
        Flux in any unit (normalised by its median for display).
    error : float, (nint,), optional
    model : float, (nint,), optional
        In the same units as ``flux``; adds a residual panel (ppm).
    dq : uint32, (nint,), optional
        Flagged points drawn in red.
    nbin : int
        Points per bin for the binned overlay.
    """
    t = np.asarray(time, np.float64)
    f = np.asarray(flux, np.float64)
    norm = np.nanmedian(f)
    fn = f / norm
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    tt = t - t_off
    nrow = 2 if model is not None else 1
    fig, axes = plt.subplots(
        nrow,
        1,
        figsize=(8, 5.5 if nrow == 2 else 4),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1][:nrow]},
    )
    ax = axes[0, 0]
    bad = np.zeros(t.size, bool) if dq is None else np.asarray(dq) != 0
    ax.plot(tt[~bad], fn[~bad], ".", ms=2, color="0.6", label="integrations")
    if bad.any():
        ax.plot(tt[bad], fn[bad], "x", ms=4, color="tab:red", label="flagged")
    xb, yb, eb = bin_points(tt[~bad], fn[~bad], nbin)
    if nbin > 1 and xb.size:
        ax.errorbar(xb, yb, eb, fmt="o", ms=3, color="k", label=f"binned x{nbin}")
    if model is not None:
        m = np.asarray(model, np.float64) / norm
        o = np.argsort(tt)
        ax.plot(tt[o], m[o], "-", color="tab:orange", lw=1.5, label="model")
        r = (fn - m) * 1e6
        ax2 = axes[1, 0]
        ax2.plot(tt, r, ".", ms=2, color="0.6")
        xr, yr, er = bin_points(tt, r, nbin)
        if nbin > 1 and xr.size:
            ax2.errorbar(xr, yr, er, fmt="o", ms=3, color="k")
        ax2.axhline(0, color="tab:orange", lw=1)
        ax2.set_ylabel("resid. [ppm]")
        ax2.set_xlabel(f"{time_label} - {t_off:.0f}")
    else:
        ax.set_xlabel(f"{time_label} - {t_off:.0f}")
    ax.set_ylabel("relative flux")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_spectroscopic_image(
    time: np.ndarray,
    wavelength: np.ndarray,
    flux: np.ndarray,
    path: str | Path,
    *,
    title: str = "Spectroscopic light curves",
    normalise: bool = True,
) -> Path:
    """Time x wavelength image of spectroscopic light curves.

    Parameters
    ----------
    time : float, (nint,)
    wavelength : float, (nbin,), µm
    flux : float, (nint, nbin)
        Each bin divided by its median when ``normalise``; shown as ppm deviation.
    """
    t = np.asarray(time, np.float64)
    w = np.asarray(wavelength, np.float64)
    f = np.asarray(flux, np.float64)
    if normalise:
        with np.errstate(all="ignore"):
            f = (f / np.nanmedian(f, axis=0, keepdims=True) - 1.0) * 1e6
    vmin, vmax = _robust_limits(f, 2, 98)
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    fig, ax = plt.subplots(figsize=(8, 4.5))
    im = ax.imshow(
        f.T,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="viridis",
        extent=[t[0] - t_off, t[-1] - t_off, w[0], w[-1]] if t.size > 1 and w.size > 1 else None,
        vmin=vmin,
        vmax=vmax,
    )
    ax.set_xlabel(f"Time - {t_off:.0f} [d]")
    ax.set_ylabel("Wavelength [µm]")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="relative flux - 1 [ppm]" if normalise else "flux")
    return _save(fig, path)


def plot_rate_image(
    image: np.ndarray,
    path: str | Path,
    *,
    trace=None,
    half_width: float | None = None,
    background_region: tuple[float, float] | None = None,
    title: str = "Median rate image",
) -> Path:
    """Median 2-D rate image with the trace centre and aperture edges drawn.

    Parameters
    ----------
    image : float, (ny, nx), DN/s
        Shown with an asinh-like stretch (signed log).
    trace : TraceModel, optional
    half_width : float, optional
        Aperture half-width (px) drawn about the trace.
    background_region : (inner, outer), optional
        Background bands drawn dashed.
    """
    im = np.asarray(image, np.float64)
    ny, nx = im.shape
    scale = np.nanpercentile(np.abs(im), 50) or 1.0
    disp = np.arcsinh(im / scale)
    vmin, vmax = _robust_limits(disp, 1, 99.8)
    fig, ax = plt.subplots(figsize=(10, max(2.5, 10 * ny / nx + 1.2)))
    m = ax.imshow(
        disp,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    if trace is not None:
        x = np.arange(nx)
        yc = trace.center(x)
        ax.plot(x, yc, "-", color="cyan", lw=1, label="trace")
        if half_width is not None:
            ax.plot(x, yc - half_width, "--", color="lime", lw=0.8, label="aperture")
            ax.plot(x, yc + half_width, "--", color="lime", lw=0.8)
        if background_region is not None:
            for s in (-1, 1):
                for d in background_region:
                    ax.plot(x, yc + s * d, ":", color="white", lw=0.7)
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xlabel("x (dispersion) [px]")
    ax.set_ylabel("y [px]")
    ax.set_title(title)
    fig.colorbar(m, ax=ax, label=f"asinh(rate / {scale:.3g} DN/s)")
    return _save(fig, path)


def plot_transmission_spectrum(
    wavelength: np.ndarray,
    depth: np.ndarray,
    depth_error: np.ndarray,
    path: str | Path,
    *,
    bin_edges: np.ndarray | None = None,
    white_depth: float | None = None,
    title: str = "Quick-look transmission spectrum",
) -> Path:
    """Depth (ppm) vs wavelength with error bars (and bin widths from ``bin_edges``).

    Parameters
    ----------
    wavelength, depth, depth_error : float, (nbin,)
        Depth as (Rp/R*)^2 (fraction).
    bin_edges : float, (nbin + 1,), optional
    white_depth : float, optional
        Horizontal reference line.
    """
    w = np.asarray(wavelength, np.float64)
    d = np.asarray(depth, np.float64) * 1e6
    e = np.asarray(depth_error, np.float64) * 1e6
    xerr = None
    if bin_edges is not None:
        be = np.asarray(bin_edges, np.float64)
        xerr = np.vstack([w - be[:-1], be[1:] - w])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.errorbar(w, d, yerr=e, xerr=xerr, fmt="o", ms=3, color="k", ecolor="0.4", lw=1)
    if white_depth is not None:
        ax.axhline(white_depth * 1e6, color="tab:orange", lw=1, label="white light")
        ax.legend(fontsize=8)
    ax.set_xlabel("Wavelength [µm]")
    ax.set_ylabel("Transit depth [ppm]")
    ax.set_title(title)
    return _save(fig, path)


def plot_fit(result, path: str | Path, *, nbin: int = 10, title: str | None = None) -> Path:
    """Plot a :class:`nirbeam.transforms.transit.FitResult` (``nirbeam fit``).

    Top: detrended data (flux / baseline) with the transit model and binned points;
    bottom: residuals (ppm). The fitted Rp/R*, chi2/dof and RMS are written in the title.
    """
    t = result.time
    det = result.flux / result.baseline
    tt = t - result.params["t0"]
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(tt * 24, det, ".", ms=2, color="0.6", label="data / baseline")
    xb, yb, eb = bin_points(tt * 24, det, nbin)
    if nbin > 1 and xb.size:
        ax.errorbar(xb, yb, eb, fmt="o", ms=3, color="k", label=f"binned x{nbin}")
    ax.plot(tt * 24, result.transit, "-", color="tab:orange", lw=1.5, label="transit model")
    ax.set_ylabel("relative flux")
    ax.legend(fontsize=8, loc="lower left")
    rp = result.params["rp"]
    erp = result.errors.get("rp", float("nan"))
    ax.set_title(
        title
        or (
            f"Rp/R* = {rp:.5f} ± {erp:.5f}   χ²/dof = {result.reduced_chi2:.2f}"
            f"   RMS = {result.rms_ppm:.0f} ppm"
        )
    )
    r = (result.flux - result.model) / result.model * 1e6
    ax2.plot(tt * 24, r, ".", ms=2, color="0.6")
    xr, yr, er = bin_points(tt * 24, r, nbin)
    if nbin > 1 and xr.size:
        ax2.errorbar(xr, yr, er, fmt="o", ms=3, color="k")
    ax2.axhline(0, color="tab:orange", lw=1)
    ax2.set_ylabel("resid. [ppm]")
    ax2.set_xlabel("Time from mid-transit [h]")
    return _save(fig, path)
