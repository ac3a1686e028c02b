"""Quick-look PNG plots (matplotlib, Agg backend; ``pip install "nirbeam[plots]"``).

Each function takes arrays / dataclasses and an output path, writes one PNG and returns
the path. Figures are closed after saving (safe in long-running workers). matplotlib is
imported on first use, so importing this module costs nothing without it.

Times: the INT_TIMES columns nirbeam keeps (``int_mid_BJD_TDB``) are BJD_TDB - 2400000.5
in days; axes say so (:data:`BJD_LABEL`).

Size note: over 600 lines on purpose: one function per plot, each short, sharing the axis/label helpers at the top.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_white_light",
    "plot_spectroscopic_image",
    "plot_rate_image",
    "plot_transmission_spectrum",
    "plot_fit",
    "plot_bin_lightcurves",
    "plot_allan",
    "plot_residual_waterfall",
    "plot_trace_vs_time",
    "plot_background_vs_time",
    "plot_median_spectrum",
    "plot_flicker_diagnostics",
    "bin_points",
    "allan_rms",
    "edges_from_centers",
    "BJD_LABEL",
]

#: axis label of ``int_mid_BJD_TDB`` values (JWST INT_TIMES: modified BJD, days)
BJD_LABEL = "BJD_TDB - 2400000.5 [d]"

# Spectral-axis label of the plots being drawn: µm with a wavelength solution, pixels
# (detector columns) without one; set per exposure with :func:`spectral_axis`.
_SPECTRAL = {"label": "Wavelength [µm]", "unit": "µm"}


def spectral_unit() -> str:
    """The unit of the spectral axis of the plots being drawn (``µm``, or ``px``)."""
    return _SPECTRAL["unit"]


@contextmanager
def spectral_axis(units: str):
    """Label the spectral axes of the plots drawn inside as ``units`` (``"um"`` or ``"pixel"``).

    Without a wavelength solution the axis is a detector column index and is labelled so:
    never "Wavelength [µm]" on numbers that are not wavelengths.
    """
    old = dict(_SPECTRAL)
    if units == "um":
        _SPECTRAL.update(label="Wavelength [µm]", unit="µm")
    else:
        _SPECTRAL.update(label="Detector column [pixel] (no wavelength solution)", unit="px")
    try:
        yield
    finally:
        _SPECTRAL.update(old)


#: resolution of every PNG (dots per inch)
DPI = 110
#: blank canvas added on every side before the one draw (inches): room for labels that
#: run past the figure's own edges, cropped away after
MARGIN_INCHES = 1.0
#: zlib level of the PNGs (PIL's ``compress_level``; PIL and matplotlib default to 6): 3
#: encodes the products' quick-look PNGs in ~0.4x the CPU time for ~3 % more bytes, the
#: same pixels (PNG is lossless)
PNG_COMPRESS_LEVEL = 3
#: margin kept about the drawn content when a PNG is cropped to it (inches), as
#: ``savefig(bbox_inches="tight")``'s default ``pad_inches``
PAD_INCHES = 0.1


class _Lazy:
    """The few ``pyplot`` names the plots use, without pyplot (imported on first use).

    Figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas of their own:
    no pyplot figure manager, nothing to close, no backend switch, and importing this
    module costs nothing without matplotlib. Any other attribute is pyplot's.
    """

    def _mpl(self):
        from nirbeam._extras import require

        return require("matplotlib")

    def figure(self, figsize=None, **kw) -> Any:
        self._mpl()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=kw.pop("dpi", DPI), **kw)
        FigureCanvasAgg(fig)
        return fig

    def subplots(self, nrows=1, ncols=1, *, figsize=None, sharex=False, sharey=False,
                 squeeze=True, width_ratios=None, height_ratios=None, subplot_kw=None,
                 gridspec_kw=None, **fig_kw):
        fig = self.figure(figsize=figsize, **fig_kw)
        axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze,
                            width_ratios=width_ratios, height_ratios=height_ratios,
                            subplot_kw=subplot_kw, gridspec_kw=gridspec_kw)
        return fig, axes

    def get_cmap(self, name):
        return self._mpl().colormaps[name]

    def close(self, fig) -> None:
        """Nothing to release for a pyplot-less figure (pyplot's own figures: pyplot.close)."""
        if getattr(fig, "canvas", None) is not None and getattr(fig.canvas, "manager", None):
            from nirbeam._extras import require

            require("matplotlib.pyplot").close(fig)

    @property
    def Circle(self):  # noqa: N802 - pyplot's name
        self._mpl()
        from matplotlib.patches import Circle

        return Circle

    def __getattr__(self, name):
        from nirbeam._extras import require

        mpl = require("matplotlib")
        if mpl.get_backend().lower() != "agg":
            mpl.use("Agg")
        pyplot = require("matplotlib.pyplot")
        return getattr(pyplot, name)


plt = _Lazy()


def _content_box(rgba: np.ndarray, pad: int):
    """Rows and columns (slices) of the drawn content plus ``pad`` pixels, or None when
    the content touches the canvas edge (it may run past it: the caller then lets
    ``bbox_inches="tight"`` grow the canvas)."""
    px = np.ascontiguousarray(rgba).view(np.uint32)[..., 0]  # one word per RGBA pixel
    ink = px != px[0, 0]  # (== any channel differs from the corner's; 4x less work)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    ny, nx = ink.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == ny - 1 or cols[-1] == nx - 1:
        return None
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, ny)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, nx)))


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`, cropped to its content plus
    :data:`PAD_INCHES` (the look of ``savefig(bbox_inches="tight")``), with one draw.

    ``bbox_inches="tight"`` draws a figure twice (once to measure it, once to render);
    here the figure is drawn once on its canvas and the image is cropped to the drawn
    pixels. Content reaching the canvas edge (a label that may run past it) is saved
    with ``bbox_inches="tight"`` instead, which enlarges the canvas.
    """
    from nirbeam.sinks import fs  # path or fsspec URL, written atomically

    try:
        with fs.atomic_path(path) as tmp:
            _write_png(fig, tmp)
    finally:
        plt.close(fig)
    return path if fs.is_url(path) else Path(path)


def _outside(fig, renderer) -> bool:
    """Whether a visible text or legend of ``fig`` that an axes does not clip (titles,
    axis labels, offset texts, texts and legends of the axes and the figure) lies partly
    outside its canvas; their extents are cached by the draw. Tick labels are not looked
    at: they sit beside their axes (an undrawn tick's label has a stale position)."""
    w, h = fig.canvas.get_width_height(physical=True)
    arts = list(fig.texts) + list(fig.legends)
    for ax in fig.axes:
        titles = [getattr(ax, n, None) for n in ("title", "_left_title", "_right_title")]
        arts += [t for t in titles if t is not None]
        arts += [ax.xaxis.label, ax.yaxis.label, ax.xaxis.offsetText, ax.yaxis.offsetText,
                 *ax.texts]
        if ax.get_legend() is not None:
            arts.append(ax.get_legend())
    for a in arts:
        if not a.get_visible() or (hasattr(a, "get_text") and not a.get_text()):
            continue
        bb = a.get_window_extent(renderer)
        if bb.x0 < 0 or bb.y0 < 0 or bb.x1 > w or bb.y1 > h:
            return True
    return False


def _widen(fig, m: float) -> None:
    """Add ``m`` inches of canvas on every side of ``fig``, keeping every axes, figure
    text and their sizes where they are in inches (subplot parameters and figure-fraction
    text positions are rescaled; ``wspace``/``hspace`` are relative to the axes: kept)."""
    w, h = fig.get_size_inches()
    sp = fig.subplotpars

    def fx(v):
        return (v * w + m) / (w + 2 * m)

    def fy(v):
        return (v * h + m) / (h + 2 * m)

    left, right, bottom, top = fx(sp.left), fx(sp.right), fy(sp.bottom), fy(sp.top)
    fig.set_size_inches(w + 2 * m, h + 2 * m)
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    for t in fig.texts:  # suptitle, fig.text: positions in figure fractions
        if t.get_transform() in (fig.transFigure, fig.transSubfigure):
            x, y = t.get_position()
            t.set_position((fx(x), fy(y)))


def _write_png(fig, tmp) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    if fig.dpi != DPI:
        fig.set_dpi(DPI)
    _widen(fig, MARGIN_INCHES)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    box = _content_box(rgba, int(round(PAD_INCHES * DPI)))
    if box is None or _outside(fig, canvas.get_renderer()):
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight",
                    pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        return
    from matplotlib import __version__ as mpl_version
    from PIL import Image  # matplotlib's own PNG writer
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", f"Matplotlib version{mpl_version}, https://matplotlib.org/")
    Image.fromarray(np.ascontiguousarray(rgba[box])).save(
        tmp, format="png", pnginfo=info, dpi=(DPI, DPI), compress_level=PNG_COMPRESS_LEVEL)


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
    time_label: str = "BJD_TDB - 2400000.5",
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
        ax2.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    else:
        ax.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    ax.set_ylabel("relative flux")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def edges_from_centers(centers: np.ndarray) -> np.ndarray:
    """Bin edges half-way between centres (geometric mean when all are > 0), (n + 1,)."""
    c = np.asarray(centers, np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    if np.all(c > 0):
        lc = np.log(c)
        mid = 0.5 * (lc[1:] + lc[:-1])
        return np.exp(np.concatenate([[2 * lc[0] - mid[0]], mid, [2 * lc[-1] - mid[-1]]]))
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def plot_spectroscopic_image(
    time: np.ndarray,
    wavelength: np.ndarray,
    flux: np.ndarray,
    path: str | Path,
    *,
    bin_edges: np.ndarray | None = None,
    title: str = "Spectroscopic light curves",
    normalise: bool = True,
    time_label: str = "BJD_TDB - 2400000.5",
) -> Path:
    """Time x wavelength image of spectroscopic light curves (``pcolormesh`` on bin edges).

    Each cell spans its bin's real wavelength limits, so resolution (log-spaced) bins are
    drawn at their true place on the linear wavelength axis, and each integration its
    time.

    Parameters
    ----------
    time : float, (nint,), days
    wavelength : float, (nbin,), µm
        Bin centres; used for the edges when ``bin_edges`` is not given.
    flux : float, (nint, nbin)
        Each bin divided by its median when ``normalise``; shown as ppm deviation.
    bin_edges : float, (nbin + 1,), µm, optional
        The bins' limits (``lightcurves/bin_edges``).
    """
    t = np.asarray(time, np.float64)
    w = np.asarray(wavelength, np.float64)
    f = np.asarray(flux, np.float64)
    if normalise:
        with np.errstate(all="ignore"):
            f = (f / np.nanmedian(f, axis=0, keepdims=True) - 1.0) * 1e6
    vmin, vmax = _robust_limits(f, 2, 98)
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    we = np.asarray(bin_edges, np.float64) if bin_edges is not None else edges_from_centers(w)
    if we.size != f.shape[1] + 1:
        raise ValueError(f"plot_spectroscopic_image: {we.size} bin edges for {f.shape[1]} bins")
    order = np.argsort(t)
    tt = t[order] - t_off
    te = edges_from_centers(tt) if tt.size > 1 else np.array([tt[0] - 0.5, tt[0] + 0.5])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    im = ax.pcolormesh(te, we, f[order].T, cmap="viridis", vmin=vmin, vmax=vmax,
                       shading="flat", rasterized=True)
    ax.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    ax.set_ylabel(_SPECTRAL["label"])
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="relative flux - 1 [ppm]" if normalise else "flux")
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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
    ax.set_xlabel(_SPECTRAL["label"])
    ax.set_ylabel("Transit depth [ppm]")
    ax.set_title(title)
    return save_figure(fig, path)


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
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------
# Diagnostics (Eureka!-style): per-bin light curves, noise, background, trace, 1/f


def pick_bins(nbin: int, max_bins: int) -> np.ndarray:
    if nbin <= max_bins:
        return np.arange(nbin)
    return np.unique(np.linspace(0, nbin - 1, max_bins).round().astype(int))


def plot_bin_lightcurves(
    time: np.ndarray,
    wavelength: np.ndarray,
    flux: np.ndarray,
    path: str | Path,
    *,
    model: np.ndarray | None = None,
    good: np.ndarray | None = None,
    max_bins: int = 12,
    nbin: int = 10,
    offset: float | None = None,
    time_label: str = "BJD_TDB - 2400000.5",
    title: str = "Spectroscopic light curves",
) -> Path:
    """Per-bin light curves, offset, with their models (left) and residuals (right).

    Parameters
    ----------
    time : float, (nint,), days
    wavelength : float, (nbin,), µm
    flux : float, (nint, nbin)
        Any unit; each bin is divided by its median over ``good`` points.
    model : float, (nint, nbin), optional
        Same unit as ``flux``; residuals are (flux - model) / median, ppm.
    good : bool, (nint,) or (nint, nbin), optional
        Points drawn (default: finite).
    max_bins : int
        At most this many bins, evenly spaced in index.
    """
    t = np.asarray(time, np.float64)
    f = np.asarray(flux, np.float64)
    w = np.asarray(wavelength, np.float64)
    ok = np.isfinite(f)
    if good is not None:
        g = np.asarray(good, bool)
        ok &= g[:, None] if g.ndim == 1 else g
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    tt = t - t_off
    ks = pick_bins(w.size, max_bins)
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(f[ok[:, k], k]) if ok[:, k].any() else np.nan
                        for k in range(w.size)])
        fn = f / med
        resid = (f - model) / med * 1e6 if model is not None else None
    if offset is None:
        sc = np.nanmedian([np.nanstd(fn[ok[:, k], k]) for k in ks if ok[:, k].sum() > 2] or [1e-3])
        offset = float(max(6 * sc, 2e-3))
    ncol = 2 if model is not None else 1
    fig, axes = plt.subplots(1, ncol, figsize=(6 * ncol, 1.0 + 0.6 * len(ks)), squeeze=False,
                             sharey=False)
    ax = axes[0, 0]
    cmap = plt.get_cmap("plasma")
    roff = None
    for j, k in enumerate(ks):
        c = cmap(j / max(1, len(ks) - 1) * 0.85)
        o = ok[:, k]
        ax.plot(tt[o], fn[o, k] - j * offset, ".", ms=1.5, color=c, alpha=0.5)
        xb, yb, _ = bin_points(tt[o], fn[o, k] - j * offset, nbin)
        if nbin > 1 and xb.size:
            ax.plot(xb, yb, "o", ms=2.5, color=c)
        if model is not None:
            srt = np.argsort(tt)
            ax.plot(tt[srt], model[srt, k] / med[k] - j * offset, "-", color="k", lw=0.8)
        ax.text(1.01, 1 - j * offset, f"{w[k]:.3f} {_SPECTRAL['unit']}", transform=ax.get_yaxis_transform(),
                fontsize=7, va="center", color=c)
    ax.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    ax.set_ylabel("relative flux + offset")
    ax.set_title(title + (" with model" if model is not None else ""))
    if resid is not None:
        ax2 = axes[0, 1]
        rs = np.nanmedian([np.nanstd(resid[ok[:, k], k]) for k in ks if ok[:, k].sum() > 2] or [1e3])
        roff = float(max(6 * rs, 100.0))
        for j, k in enumerate(ks):
            c = cmap(j / max(1, len(ks) - 1) * 0.85)
            o = ok[:, k]
            ax2.plot(tt[o], resid[o, k] - j * roff, ".", ms=1.5, color=c, alpha=0.5)
            xb, yb, _ = bin_points(tt[o], resid[o, k] - j * roff, nbin)
            if nbin > 1 and xb.size:
                ax2.plot(xb, yb, "o", ms=2.5, color=c)
            ax2.axhline(-j * roff, color="k", lw=0.6)
            r = resid[o, k]
            ax2.text(1.01, -j * roff, f"{np.nanstd(r):.0f} ppm", fontsize=7, va="center",
                     color=c, transform=ax2.get_yaxis_transform())
        ax2.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
        ax2.set_ylabel(f"residual [ppm] + offset ({roff:.0f})")
        ax2.set_title("residuals (RMS per bin)")
    fig.tight_layout()
    return save_figure(fig, path)


def allan_rms(resid: np.ndarray, max_bin: int | None = None, nsizes: int = 30):
    """RMS of residuals averaged in bins of m consecutive points, for m = 1 .. max_bin.

    Returns ``(m, rms, rms_error, expected)``: ``expected`` is the white-noise value
    ``sigma_1 / sqrt(m) * sqrt(M / (M - 1))`` with ``M = n // m`` bins (Pont et al. 2006;
    Cubillos et al. 2017), ``rms_error = rms / sqrt(2 M)``. Non-finite points are dropped
    first.

    Parameters
    ----------
    resid : float, (n,)
    max_bin : int, optional
        Largest bin size (default n // 10, at least 1).
    """
    r = np.asarray(resid, np.float64)
    r = r[np.isfinite(r)]
    n = r.size
    if n < 2:
        return (np.array([1]), np.array([np.nan]), np.array([np.nan]), np.array([np.nan]))
    max_bin = max(1, min(max_bin or n // 10, n // 2))
    sizes = np.unique(np.geomspace(1, max_bin, nsizes).round().astype(int))
    sigma1 = np.std(r, ddof=0)
    rms, err, exp = [], [], []
    for m in sizes:
        nb = n // m
        means = r[: nb * m].reshape(nb, m).mean(1)
        v = float(np.sqrt(np.mean(means**2)))
        rms.append(v)
        err.append(v / np.sqrt(2 * nb))
        exp.append(sigma1 / np.sqrt(m) * np.sqrt(nb / (nb - 1)) if nb > 1 else np.nan)
    return sizes, np.array(rms), np.array(err), np.array(exp)


def plot_allan(
    resid: dict[str, np.ndarray],
    path: str | Path,
    *,
    cadence_s: float | None = None,
    title: str = "RMS vs bin size",
) -> Path:
    """Residual RMS (ppm) against bin size, with the white-noise expectation (log-log).

    Parameters
    ----------
    resid : {label: float (n,)}
        Residuals in relative flux (e.g. data / model - 1), one curve per label.
    cadence_s : float, optional
        Seconds per integration: adds a top axis in minutes.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis")
    items = list(resid.items())
    for j, (label, r) in enumerate(items):
        m, rms, err, exp = allan_rms(r)
        c = cmap(j / max(1, len(items) - 1) * 0.9) if len(items) > 1 else "k"
        ax.errorbar(m, rms * 1e6, err * 1e6, fmt="-", color=c, lw=1, label=label)
        ax.plot(m, exp * 1e6, "--", color=c, lw=0.8, alpha=0.8)
    ax.plot([], [], "--", color="0.4", label="white noise")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bin size [integrations]")
    ax.set_ylabel("RMS [ppm]")
    ax.set_title(title)
    ax.legend(fontsize=7)
    if cadence_s:
        sec = ax.secondary_xaxis("top", functions=(lambda x: x * cadence_s / 60,
                                                   lambda x: x * 60 / cadence_s))
        sec.set_xlabel("bin size [min]")
    return save_figure(fig, path)


def plot_residual_waterfall(
    time: np.ndarray,
    wavelength: np.ndarray,
    resid: np.ndarray,
    path: str | Path,
    *,
    bin_edges: np.ndarray | None = None,
    time_label: str = "BJD_TDB - 2400000.5",
    title: str = "Residuals (time x wavelength)",
) -> Path:
    """Residuals of the per-bin fits as a time x wavelength image (ppm), bins on true edges.

    Parameters
    ----------
    resid : float, (nint, nbin)
        Relative residuals (data / model - 1).
    """
    r = np.asarray(resid, np.float64) * 1e6
    t = np.asarray(time, np.float64)
    w = np.asarray(wavelength, np.float64)
    we = np.asarray(bin_edges, np.float64) if bin_edges is not None else edges_from_centers(w)
    lim = max(abs(x) for x in _robust_limits(r, 2, 98))
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    order = np.argsort(t)
    tt = t[order] - t_off
    te = edges_from_centers(tt) if tt.size > 1 else np.array([tt[0] - 0.5, tt[0] + 0.5])
    fig, (ax, axs) = plt.subplots(1, 2, figsize=(9, 4.5), sharey=True,
                                  gridspec_kw={"width_ratios": [4, 1]})
    im = ax.pcolormesh(te, we, r[order].T, cmap="RdBu_r", vmin=-lim, vmax=lim,
                       shading="flat", rasterized=True)
    ax.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    ax.set_ylabel(_SPECTRAL["label"])
    ax.set_title(title)
    with np.errstate(all="ignore"):
        rms = np.sqrt(np.nanmean(r**2, axis=0))
    axs.step(rms, we[:-1], where="post", color="k", lw=1)
    axs.set_xlabel("RMS [ppm]")
    fig.colorbar(im, ax=axs, label="residual [ppm]")
    return save_figure(fig, path)


def plot_trace_vs_time(
    time: np.ndarray,
    centroid: np.ndarray,
    width: np.ndarray,
    path: str | Path,
    *,
    time_label: str = "BJD_TDB - 2400000.5",
    title: str = "Trace position and width",
) -> Path:
    """Trace centroid offset and width (px) against time.

    Parameters
    ----------
    centroid : float, (n,), px
        Flux-weighted offset of the spectrum from the fitted trace, along y.
    width : float, (n,), px
        Flux-weighted RMS width along y.
    """
    t = np.asarray(time, np.float64)
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 4.8), sharex=True)
    for ax, v, lab in ((a1, centroid, "centroid offset [px]"), (a2, width, "width (RMS) [px]")):
        v = np.asarray(v, np.float64)
        ax.plot(t - t_off, v, ".", ms=2, color="0.4")
        xb, yb, eb = bin_points(t - t_off, v, 10)
        if xb.size:
            ax.plot(xb, yb, "-", color="tab:blue", lw=1)
        ax.set_ylabel(lab)
    a1.set_title(title)
    a2.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    return save_figure(fig, path)


def plot_background_vs_time(
    time: np.ndarray,
    background: np.ndarray,
    path: str | Path,
    *,
    time_label: str = "BJD_TDB - 2400000.5",
    units: str = "DN/s",
    title: str = "Background vs time",
) -> Path:
    """Median background per pixel (over wavelength) against time.

    Parameters
    ----------
    background : float, (nint,) or (nint, nx)
        Background per pixel subtracted in the extraction; 2-D is reduced by the median
        over its second axis.
    """
    b = np.asarray(background, np.float64)
    if b.ndim == 2:
        with np.errstate(all="ignore"):
            b = np.nanmedian(b, axis=1)
    t = np.asarray(time, np.float64)
    t_off = np.floor(np.nanmin(t)) if t.size else 0.0
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t - t_off, b, ".", ms=2, color="0.4")
    xb, yb, _ = bin_points(t - t_off, b, 10)
    if xb.size:
        ax.plot(xb, yb, "-", color="tab:green", lw=1)
    ax.set_xlabel(f"{time_label} - {t_off:.0f} [d]")
    ax.set_ylabel(f"median background [{units} / px]")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_median_spectrum(
    wavelength: np.ndarray,
    flux: np.ndarray,
    flux_error: np.ndarray,
    path: str | Path,
    *,
    units: str = "DN/s",
    title: str = "Median 1-D spectrum",
) -> Path:
    """Median spectrum over integrations (top) and its S/N per integration (bottom).

    S/N is shown twice: expected (median flux / median flux_error) and measured (median
    flux / scatter over time, 1.4826 MAD, which includes any variability or transit).

    Parameters
    ----------
    wavelength : float, (nx,), µm
    flux, flux_error : float, (nint, nx), ``units``
    """
    import warnings

    # np.nanmedian / np.nanpercentile's values by one sort per array (numpy goes slice
    # by slice in Python along > 600 integrations)
    from nirbeam.sinks.diagnostics import nanmedian_along, nanpercentile_along

    w = np.asarray(wavelength, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_error, np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN
        med = nanmedian_along(f, axis=0)
        lo, hi = nanpercentile_along(f, [16, 84], axis=0)
        snr_exp = med / nanmedian_along(e, axis=0)
        mad = 1.4826 * nanmedian_along(np.abs(f - med), axis=0)
        snr_meas = med / mad
    ok = np.isfinite(w)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    a1.fill_between(w[ok], lo[ok], hi[ok], color="0.8", lw=0, label="16-84 % over time")
    a1.plot(w[ok], med[ok], "-", color="k", lw=1, label="median")
    a1.set_ylabel(f"flux [{units}]")
    a1.set_title(title)
    a1.legend(fontsize=7)
    a2.plot(w[ok], snr_exp[ok], "-", color="tab:blue", lw=1, label="expected (flux / error)")
    a2.plot(w[ok], snr_meas[ok], "-", color="tab:orange", lw=1, alpha=0.8,
            label="measured (flux / scatter in time)")
    a2.set_ylabel("S/N per integration")
    a2.set_xlabel(_SPECTRAL["label"])
    a2.legend(fontsize=7)
    return save_figure(fig, path)


def plot_flicker_diagnostics(
    column_offsets: np.ndarray,
    integrations: np.ndarray,
    path: str | Path,
    *,
    title: str = "1/f diagnostics (background pixels of the rateints)",
) -> Path:
    """Column-offset image, its mean power spectrum along x, and its RMS per integration.

    Parameters
    ----------
    column_offsets : float, (n, nx), DN/s
        Per integration, the median of each column's background (scene-masked) pixels
        about its median over time, minus that integration's median over columns
        (:func:`nirbeam.sinks.diagnostics.column_offsets`).
    integrations : int, (n,)
        Their integration numbers.
    """
    c = np.asarray(column_offsets, np.float64)
    n, nx = c.shape
    cz = np.where(np.isfinite(c), c, 0.0)
    ps = np.abs(np.fft.rfft(cz - cz.mean(1, keepdims=True), axis=1)) ** 2 / max(nx, 1)
    freq = np.fft.rfftfreq(nx)
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN integration: NaN
        rms = np.sqrt(np.nanmean(c**2, axis=1))
    fig = plt.figure(figsize=(10, 6))
    gs = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    a0 = fig.add_subplot(gs[0, :])
    lim = max(abs(x) for x in _robust_limits(c, 2, 98))
    im = a0.imshow(c, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest",
                   extent=[-0.5, nx - 0.5, 0, n])
    a0.set_xlabel("x (column) [px]")
    a0.set_ylabel("sampled integration (index)")
    a0.set_title(title)
    fig.colorbar(im, ax=a0, label="column offset [DN/s]")
    a1 = fig.add_subplot(gs[1, 0])
    a1.loglog(freq[1:], ps[:, 1:].mean(0), "-", color="k", lw=1)
    a1.set_xlabel("spatial frequency along x [1/column]")
    a1.set_ylabel("mean power [(DN/s)^2]")
    a2 = fig.add_subplot(gs[1, 1])
    a2.plot(np.asarray(integrations), rms, ".-", ms=3, color="tab:purple", lw=0.8)
    a2.set_xlabel("integration")
    a2.set_ylabel("RMS column offset [DN/s]")
    fig.tight_layout()
    return save_figure(fig, path)
