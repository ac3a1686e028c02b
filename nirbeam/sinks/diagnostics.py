"""Every plot of a run, drawn from its products alone (``nirbeam plot OUTDIR``).

Reads ``OUTDIR/cubes.zarr`` (``lightcurves``, ``spectra``, ``extraction``, ``rateints``),
``fit_<group>.json`` and ``transmission_<group>.json``; needs no uncal file and rewrites no
product (only ``OUTDIR/plots/`` and ``plots/index.json``).

Per exposure/detector group (files ``plots/<kind>_<group>.png``):

=============  ==========================================================================
whitelight     white-light curve, with the quick-look model and residuals when fitted
speclc         time x wavelength image of the spectroscopic light curves (true bin edges)
rate           median rate image with the trace, aperture and background bands
transmission   per-bin depths
bins           per-bin light curves with models (left) and residuals (right)
allan          RMS of the residuals vs bin size (white light and a few bins)
waterfall      per-bin residuals as a time x wavelength image
trace          trace centroid offset and width vs time, measured on the rateints
background     median background per pixel vs time (``spectra/background``)
spectrum       median 1-D spectrum and its S/N
flicker        1/f diagnostics: column offsets of the background pixels of the rateints
=============  ==========================================================================

Models of the per-bin light curves are re-evaluated from the stored fit: the white-light
geometry (``fit_<group>.json``), the bin's Rp/R* (``transmission_<group>.json``) and a
polynomial baseline of the fit's order refitted linearly (weighted by the errors) with the
transit fixed, which is the baseline the joint fit converged to for that Rp/R*. A plot
whose inputs are not in the products is skipped with a note saying what is missing.

The kernels (:func:`measure_trace`, :func:`column_offsets`, :func:`baseline_model`) are
plain numpy functions.

Size note: over 650 lines on purpose: the plots of a group, their numpy kernels and the
hand-over of what the products step already read (:class:`SampledKernels`,
:func:`shared_samples`) stay together, as the kernels must run on the same blocks.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from nirbeam.sinks import fs, zarr_store

__all__ = ["PlotEntry", "plot_products", "measure_trace", "column_offsets", "baseline_model",
           "MAX_SAMPLED", "nanmedian_along", "nanpercentile_along", "sampled_indices", "SampledKernels",
           "shared_samples", "SPECTRA_PLOTTED"]

log = logging.getLogger(__name__)

#: rateints integrations read (evenly sampled) for the trace and 1/f plots
MAX_SAMPLED = 256
#: Integrations per block in the per-integration kernels (bounds their memory).
_BLOCK = 32

CAPTIONS = {
    "whitelight": "White-light curve (integrations grey, binned black), with the quick-look "
                  "transit model and residuals when fitted.",
    "speclc": "Spectroscopic light curves, each bin divided by its median; every cell spans "
              "its bin's wavelength limits and its integration's time.",
    "rate": "Median rate image with the fitted trace (cyan), the extraction aperture "
            "(green) and the background bands (white).",
    "transmission": "Quick-look transmission spectrum: (Rp/R*)^2 per bin with 1-sigma errors; "
                    "horizontal bars are the bin widths.",
    "bins": "Per-bin light curves (offset) with their models, and residuals (ppm, RMS at "
            "the right).",
    "allan": "RMS of the residuals averaged over bins of N integrations (solid) against the "
             "white-noise expectation (dashed): red noise shows as a solid curve above the "
             "dashed one.",
    "waterfall": "Residuals (data / model - 1) of the per-bin fits, time x wavelength, with "
                 "their RMS per bin.",
    "trace": "Flux-weighted offset of the spectrum from the fitted trace and its RMS "
             "width along y, measured on sampled rateints.",
    "background": "Median background per pixel subtracted by the extraction, against time.",
    "spectrum": "Median 1-D spectrum over integrations (band: 16-84 %), and the S/N per "
                "integration expected from the errors and measured from the scatter in time.",
    "flicker": "1/f diagnostics on background (scene-masked) pixels of sampled rateints: "
               "per-column offsets about each column's median over time, their mean power "
               "spectrum along x and their RMS per integration.",
}


#: every plot of a group, in the order :func:`plot_products` draws and lists them
PLOT_KINDS = ("whitelight", "speclc", "transmission", "bins", "allan", "waterfall", "rate",
              "background", "spectrum", "trace", "flicker")
#: the plots drawn from what a run's store holds before its products step (the extraction
#: model and the spectra): a plot process draws them while the products write the light
#: curves and trace diagnostics (:func:`plot_products`'s ``drawn``)
EARLY_PLOTS = ("rate", "background", "spectrum")
_LC_PLOTS = PLOT_KINDS[:6]


@dataclass
class PlotEntry:
    """One plot of a group: its file (relative to OUTDIR) or why it is absent."""

    group: str
    kind: str
    file: str | None = None
    caption: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Kernels


def measure_trace(
    sci: np.ndarray,
    dq: np.ndarray,
    trace_center: np.ndarray,
    half_width: float,
    background_region: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flux-weighted centroid offset and RMS width of the spectrum, per integration.

    For each integration, columns are background-subtracted (median of the pixels in
    ``background_region`` about the trace, or none), pixels within ``half_width + 2`` of
    the trace centre are kept (DO_NOT_USE excluded), and all columns are pooled:
    ``centroid = sum(f dy) / sum(f)``, ``width = sqrt(sum(f dy^2) / sum(f) - centroid^2)``,
    with ``dy = y - trace_center(x)`` and negative fluxes set to 0.

    Parameters
    ----------
    sci : float, (n, ny, nx), DN/s
    dq : uint32, (n, ny, nx)
    trace_center : float, (nx,), px
    half_width : float, px
    background_region : (inner, outer), px, optional

    Returns
    -------
    centroid, width : float64, (n,), px
    """
    n = len(sci)
    if n > _BLOCK:  # per integration: blocks bound the float64 copies (flat in NINTS)
        parts = [measure_trace(sci[i:i + _BLOCK], dq[i:i + _BLOCK], trace_center, half_width,
                               background_region) for i in range(0, n, _BLOCK)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    sci = np.asarray(sci, np.float64)
    n, ny, nx = sci.shape
    dy = np.arange(ny, dtype=np.float64)[:, None] - np.asarray(trace_center, np.float64)[None, :]
    ad = np.abs(dy)
    good = (np.asarray(dq) & 1) == 0
    f = np.where(good & np.isfinite(sci), sci, np.nan)
    if background_region:
        inner, outer = background_region
        bmask = (ad >= inner) & (ad <= outer)
        import warnings

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no background
            bkg = nanmedian_along(np.where(bmask[None], f, np.nan), axis=1, keepdims=True)
        f = f - np.where(np.isfinite(bkg), bkg, 0.0)
    ap = ad <= half_width + 2.0
    w = np.where(ap[None] & np.isfinite(f), np.clip(f, 0.0, None), 0.0)
    s = w.sum(axis=(1, 2))
    with np.errstate(all="ignore"):
        c = (w * dy[None]).sum(axis=(1, 2)) / s
        m2 = (w * dy[None] ** 2).sum(axis=(1, 2)) / s
        width = np.sqrt(np.clip(m2 - c**2, 0.0, None))
    bad = ~(s > 0)
    c[bad] = np.nan
    width[bad] = np.nan
    return c, width


def nanmedian_along(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """``np.nanmedian(a, axis=axis, keepdims=keepdims)`` of a float array of finite values
    and NaN, by one sort along ``axis``: the same values bit for bit (a median is an order
    statistic; for an even count numpy's masked median halves the sum of the two middle
    values, as here), NaN where a slice has no value. numpy's own path along a short axis
    (< 600) goes through masked arrays, ~4x slower on the plots' blocks. Arrays holding
    an infinity go to numpy itself.
    """
    a = np.asarray(a)
    if a.dtype != np.float64 or np.isinf(a).any():
        return np.nanmedian(a, axis=axis, keepdims=keepdims)
    s = _sorted_along(a, axis)  # NaN last
    n = np.count_nonzero(~np.isnan(a), axis=axis, keepdims=True)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis)
    hi = np.take_along_axis(s, np.maximum(n // 2, 0), axis)
    m = (lo + hi) / 2.0
    return m if keepdims else np.squeeze(m, axis)


def _sorted_along(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.sort(a, axis=axis)``, sorting a contiguous copy along its last axis (~3x less
    CPU than numpy's strided sort along another axis). numpy sorts every 1-D slice with
    the same kernel either way (a strided slice is copied to a buffer first), so each
    slice is sorted from the same sequence: the same result, the order of equal values
    (+0.0 and -0.0) included."""
    axis = axis % a.ndim
    if axis == a.ndim - 1:
        return np.sort(a, axis=axis)
    t = np.ascontiguousarray(np.moveaxis(a, axis, -1))
    t.sort(axis=-1)
    return np.moveaxis(t, -1, axis)


def nanpercentile_along(a: np.ndarray, q, axis: int = 0) -> np.ndarray:
    """``np.nanpercentile(a, q, axis=axis)`` (method "linear") of a float64 array of
    finite values and NaN, by one sort along ``axis``: the same values bit for bit.

    numpy applies its 1-D quantile to every slice in Python (``apply_along_axis``); here
    the order statistics are taken from one sort (NaN last) and interpolated with
    numpy's own arithmetic: virtual index ``(n - 1) * q / 100``, both neighbours the last
    value (and the weight counted from index -1) at or past it, ``a + (b - a) * g``,
    or ``b - (b - a) * (1 - g)`` for a weight ``g >= 0.5``; NaN where a slice has no
    value. Other arrays (another dtype, an infinity) go to numpy itself. The result has
    ``q``'s shape prepended, as numpy's.
    """
    a = np.asarray(a)
    if a.dtype != np.float64 or a.ndim == 0 or a.size == 0 or np.isinf(a).any():
        return np.nanpercentile(a, q, axis=axis)
    qs = np.true_divide(np.asanyarray(q), 100)
    if qs.dtype != np.float64 or ((qs < 0) | (qs > 1)).any() or np.isnan(qs).any():
        return np.nanpercentile(a, q, axis=axis)
    x = np.moveaxis(a, axis, 0)
    s = _sorted_along(x, 0)  # NaN last
    n = np.count_nonzero(~np.isnan(x), axis=0)  # values per slice, (rest,)
    qb = qs.reshape(qs.shape + (1,) * n.ndim)
    v = (n - 1) * qb  # numpy's virtual index: (count - 1) * quantile
    prev = np.floor(v)
    nxt = prev + 1
    above = v >= n - 1
    prev[above] = -1
    nxt[above] = -1
    g = v - prev  # numpy's gamma, from the index it kept (-1 at the top)
    last = np.broadcast_to(np.maximum(n - 1, 0), v.shape)
    pi = np.where(above, last, prev).astype(np.intp)
    ni = np.where(above, last, nxt).astype(np.intp)
    flat = s.reshape(s.shape[0], -1)
    lo = np.take_along_axis(flat, pi.reshape(-1, flat.shape[1]) if pi.ndim > 1 else pi[None], 0)
    hi = np.take_along_axis(flat, ni.reshape(-1, flat.shape[1]) if ni.ndim > 1 else ni[None], 0)
    lo, hi = lo.reshape(v.shape), hi.reshape(v.shape)
    d = hi - lo
    r = lo + d * g
    np.subtract(hi, d * (1 - g), out=r, where=g >= 0.5)
    r[np.broadcast_to(n == 0, r.shape)] = np.nan
    return r


def column_offsets(sci: np.ndarray, dq: np.ndarray, scene_mask: np.ndarray) -> np.ndarray:
    """Time-variable column offsets of the background pixels: what 1/f noise left behind.

    Per integration and column, the median of the usable background pixels (not in
    ``scene_mask``, not DO_NOT_USE); then the median over integrations of each column is
    subtracted (static structure: background, PSF wings, bias residuals), and then each
    integration's median over columns (a uniform level change is not 1/f).

    Parameters
    ----------
    sci : float, (n, ny, nx), DN/s
    dq : uint32, (n, ny, nx)
    scene_mask : bool, (ny, nx)
        True on source pixels (excluded).

    Returns
    -------
    float64, (n, nx), DN/s; NaN for columns without background pixels.
    """
    nx = np.shape(sci)[-1]
    return _column_offsets_of((_column_medians(sci[i:i + _BLOCK], dq[i:i + _BLOCK], scene_mask)
                               for i in range(0, len(sci), _BLOCK)), nx)


def _column_medians(sci, dq, scene_mask) -> np.ndarray:
    """Per integration and column, the median of the usable background pixels (one block:
    its float64 copies are the block's)."""
    import warnings

    smask = ~np.asarray(scene_mask, bool)[None]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = np.asarray(sci, np.float64)
        use = ((np.asarray(dq) & 1) == 0) & smask & np.isfinite(s)
        return nanmedian_along(np.where(use, s, np.nan), axis=1)


def _column_offsets_of(blocks, nx: int | None = None) -> np.ndarray:
    """:func:`column_offsets` from its blocks of :func:`_column_medians`."""
    import warnings

    cols = list(blocks)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        col = np.concatenate(cols) if cols else np.empty((0, nx or 0), np.float64)
        col = col - np.nanmedian(col, axis=0, keepdims=True)
        return col - np.nanmedian(col, axis=1, keepdims=True)


def baseline_model(time, flux, error, transit, t_ref: float, order: int, use=None):
    """``transit * polyval(time - t_ref, c)`` with ``c`` from weighted linear least squares.

    Parameters
    ----------
    time, flux, error, transit : float, (n,)
    order : int
        Polynomial order of the baseline.
    use : bool, (n,), optional
        Points fitted (default: finite, error > 0).

    Returns
    -------
    model : float64, (n,) (NaN where ``transit`` is not finite), and ``c`` (order + 1,).
    """
    t = np.asarray(time, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(error, np.float64)
    tr = np.asarray(transit, np.float64)
    ok = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(tr)
    if use is not None:
        ok &= np.asarray(use, bool)
    dt = t - t_ref
    A = np.stack([tr * dt**j for j in range(order + 1)], axis=1)
    if ok.sum() <= order + 1:
        return np.full(t.size, np.nan), np.full(order + 1, np.nan)
    c, *_ = np.linalg.lstsq(A[ok] / e[ok, None], f[ok] / e[ok], rcond=None)
    return A @ c, c


# ---------------------------------------------------------------------------------------
# Reading the products


def _read_json(path):
    try:
        return json.loads(fs.read_text(path)) if fs.isfile(path) else None
    except Exception:  # noqa: BLE001
        return None


def _groups(root: str) -> list[str]:
    g = zarr_store.open_root(root, mode="r")
    return sorted(k for k, _ in g.groups())


def _transit(time, fit: dict, rp: float | None = None) -> np.ndarray:
    from nirbeam.transforms.transit import transit_model

    p = dict(fit["params"])
    if rp is not None:
        p["rp"] = float(rp)
    cfg = fit.get("config", {})
    kw = {}
    if int(cfg.get("supersample_factor", 1)) > 1 and float(cfg.get("exp_time", 0)) > 0:
        kw = {"supersample_factor": int(cfg["supersample_factor"]), "exp_time": float(cfg["exp_time"])}
    return transit_model(np.asarray(time, np.float64), p, cfg.get("limb_dark", "quadratic"), **kw)


def _order(fit: dict) -> int:
    return sum(1 for k in fit["params"] if k.startswith("c") and k[1:].isdigit()) - 1


# ---------------------------------------------------------------------------------------
# The plots


def plot_products(outdir: str, root: str | None = None, kinds=None, *, drawn=None,
                  index: bool = True) -> list[PlotEntry]:
    """Draw every plot of a run from its products into ``OUTDIR/plots``.

    Parameters
    ----------
    outdir : str
        A run's output folder (path or fsspec URL).
    root : str, optional
        The zarr store (default ``OUTDIR/cubes.zarr``).
    kinds : iterable of str, optional
        Only these plots (default all, see the module docstring).
    drawn : list of PlotEntry, optional
        Entries an earlier call drew on the same run (e.g. :data:`EARLY_PLOTS`, drawn before
        the products wrote the light curves): kept and listed with this call's in the order
        of one call drawing them all (:data:`PLOT_KINDS`, groups sorted).
    index : bool
        Write ``plots/index.json`` (an earlier call's of ``drawn`` writes none).

    Returns
    -------
    list of PlotEntry, also written to ``plots/index.json``.
    """
    from nirbeam.sinks import plots

    root = root or fs.join(outdir, "cubes.zarr")
    pdir = fs.join(outdir, "plots")
    fs.makedirs(pdir)
    entries: list[PlotEntry] = []
    groups = _groups(root)
    for g in groups:
        with plots.spectral_axis(_spectral_units(root, g)):
            entries.extend(_plot_group(outdir, root, pdir, g, plots,
                                       set(kinds) if kinds else None))
    if drawn:
        order = {g: i for i, g in enumerate(groups)}
        entries = sorted([*drawn, *entries], key=lambda e: (
            order.get(e.group, len(order)), e.group, PLOT_KINDS.index(e.kind)))
    if index:
        index_ = [e.__dict__ for e in entries]
        fs.write_text(fs.join(pdir, "index.json"), json.dumps(index_, indent=1, default=str))
    return entries


def _spectral_units(root: str, g: str) -> str:
    """``"um"`` when the group's spectra carry wavelengths, else ``"pixel"``."""
    try:
        return str(zarr_store.open_root(root, mode="r")[g]["spectra"]["wavelength"].attrs
                   .get("units", "pixel"))
    except KeyError:
        return "pixel"


def _plot_group(outdir, root, pdir, g, plots, kinds) -> list[PlotEntry]:
    out: list[PlotEntry] = []
    stages = _Stages(root, g)

    def want(kind):
        return kinds is None or kind in kinds

    def run(kind, fn, *, missing: str | None = None):
        if not want(kind):
            return
        e = PlotEntry(g, kind, caption=CAPTIONS.get(kind, ""))
        if missing:
            e.note = missing
        else:
            rel = f"plots/{kind}_{g}.png"
            try:
                extra = fn(fs.join(outdir, rel))
                e.file = rel
                if isinstance(extra, dict):
                    e.extra = extra
            except Exception as exc:  # noqa: BLE001 - one plot must not stop the others
                log.warning("plot %s for %s failed: %s", kind, g, exc)
                e.note = f"failed: {type(exc).__name__}: {exc}"
        out.append(e)

    if any(want(k) for k in _LC_PLOTS):
        _plot_lightcurves(outdir, root, g, plots, stages, run)
    _plot_rates(root, g, plots, stages, run, want)
    return out


class _Stages:
    """Which stages (sub-groups) a group of the store has, each looked up by its own path
    when first asked: no listing of the group, so a plot process may read it while the
    products step writes new sub-groups (``lightcurves``, ``trace``) into it."""

    def __init__(self, root: str, g: str):
        self.root, self.g, self._known = root, g, {}

    def __contains__(self, name: str) -> bool:
        if name not in self._known:
            self._known[name] = _has_group(self.root, f"{self.g}/{name}")
        return self._known[name]


def _has_group(root: str, path: str) -> bool:
    """Whether the store has a group at ``path`` (reads that group's metadata alone)."""
    import zarr

    missing = (FileNotFoundError, KeyError) + tuple(
        getattr(zarr.errors, n) for n in ("NodeNotFoundError", "GroupNotFoundError",
                                          "ContainsArrayError") if hasattr(zarr.errors, n))
    try:
        zarr.open_group(root, path=path, mode="r", zarr_format=3)
    except missing:
        return False
    return True


def _plot_lightcurves(outdir, root, g, plots, stages, run) -> None:
    """The light-curve plots of a group (:data:`_LC_PLOTS`)."""
    fit = _read_json(fs.join(outdir, f"fit_{g}.json"))
    ts = _read_json(fs.join(outdir, f"transmission_{g}.json"))
    if fit is not None and "params" not in fit:
        fit = None
    lc = None
    if "lightcurves" in stages:
        lc, _ = zarr_store.load_arrays(root, f"{g}/lightcurves")
    have_fit = fit is not None
    try:
        from nirbeam.transforms.transit_model import batman_module

        batman_module()  # (without batman's distutils compiler probe: see there)
    except ImportError as exc:
        have_fit, fit_note = False, str(exc)
    else:
        fit_note = "no quick-look fit in the products (fit_<group>.json)"

    if lc is None:
        for kind in ("whitelight", "speclc", "transmission", "bins", "allan", "waterfall"):
            run(kind, None, missing="no lightcurves group in the store")
    else:
        t = lc["int_mid_BJD_TDB"]
        wf, we, wdq = lc["white_flux"], lc["white_flux_error"], lc["white_dq"]
        good = (wdq == 0) & np.isfinite(wf)
        wmodel = None
        if have_fit:
            tr = _transit(t, fit)
            wmodel, _ = baseline_model(t, wf, we, tr, fit["t_ref"], _order(fit), good)
        run("whitelight", lambda p: plots.plot_white_light(
            t, wf, p, error=we, model=wmodel, dq=wdq,
            title=f"White-light curve {g}" + ("" if wmodel is not None else " (no fit)")))
        run("speclc", lambda p: plots.plot_spectroscopic_image(
            t, lc["wavelength"], lc["flux"], p, bin_edges=lc["bin_edges"], title=f"Spectroscopic light curves {g}"))
        bmodel = None
        bgood = good[:, None] & (lc["dq"] == 0) & np.isfinite(lc["flux"])
        if have_fit and ts is not None and len(ts.get("rp", [])) == lc["flux"].shape[1]:
            bmodel = np.full(lc["flux"].shape, np.nan)
            for k, rp in enumerate(ts["rp"]):
                if rp is None or not np.isfinite(rp):
                    continue
                tr = _transit(t, fit, rp)
                bmodel[:, k], _ = baseline_model(t, lc["flux"][:, k], lc["flux_error"][:, k], tr,
                                                 fit["t_ref"], _order(fit), bgood[:, k])
        if ts is not None:
            run("transmission", lambda p: plots.plot_transmission_spectrum(
                ts["wavelength_um"], ts["depth"], ts["depth_error"], p, bin_edges=lc["bin_edges"],
                white_depth=fit["params"]["rp"] ** 2 if fit else None,
                title=f"Quick-look transmission spectrum {g}"))
        else:
            run("transmission", None, missing="no transmission_<group>.json in the products")
        run("bins", lambda p: plots.plot_bin_lightcurves(
            t, lc["wavelength"], lc["flux"], p, model=bmodel, good=bgood,
            title=f"Spectroscopic light curves {g}"))
        if wmodel is not None:
            def allan(p):
                with np.errstate(all="ignore"):
                    res = {"white light": np.where(good, wf / wmodel - 1, np.nan)}
                    if bmodel is not None:
                        for k in plots.pick_bins(bmodel.shape[1], 4):
                            res[f"{lc['wavelength'][k]:.2f} {plots.spectral_unit()}"] = np.where(
                                bgood[:, k], lc["flux"][:, k] / bmodel[:, k] - 1, np.nan)
                cad = float(np.nanmedian(np.diff(np.sort(t)))) * 86400 if t.size > 1 else None
                plots.plot_allan(res, p, cadence_s=cad, title=f"RMS vs bin size {g}")
                m, rms, _, exp = plots.allan_rms(res["white light"])
                return {"white_rms_ppm": float(rms[0] * 1e6),
                        "white_rms_over_white_noise_at_largest_bin": float(rms[-1] / exp[-1])
                        if np.isfinite(exp[-1]) else None, "largest_bin": int(m[-1])}
            run("allan", allan)
        else:
            run("allan", None, missing=fit_note)
        if bmodel is not None:
            with np.errstate(all="ignore"):
                resid = np.where(bgood, lc["flux"] / bmodel - 1, np.nan)
            run("waterfall", lambda p: plots.plot_residual_waterfall(
                t, lc["wavelength"], resid, p, bin_edges=lc["bin_edges"],
                title=f"Residuals {g}"))
        else:
            run("waterfall", None, missing=fit_note if not have_fit
                else "no per-bin depths (transmission_<group>.json) to model the bins")


def _plot_rates(root, g, plots, stages, run, want) -> None:
    """The plots of a group from its extraction model, spectra and rateints (each read
    only when one of its plots is wanted)."""
    ext = None
    if any(want(k) for k in ("rate", "trace", "flicker")) and "extraction" in stages:
        ext = zarr_store.load_arrays(root, f"{g}/extraction")
    if ext is not None and "median_image" in ext[0]:
        from nirbeam.transforms.spectra import ExtractionModel

        arrays, attrs = ext
        model = ExtractionModel.from_arrays(arrays, attrs)
        run("rate", lambda p: plots.plot_rate_image(
            arrays["median_image"], p, trace=model.trace, half_width=model.half_width,
            background_region=model.background_region, title=f"Median rate image {g}"))
    else:
        run("rate", None, missing="no extraction model (median image) in the store")

    if not (want("background") or want("spectrum")):
        pass
    elif "spectra" in stages:
        sp = _spectra_arrays(root, g)
        done = sp["done"]
        ts_ = sp["int_mid_BJD_TDB"][done]
        bkg = sp["background"][done]
        run("background", lambda p: plots.plot_background_vs_time(
            ts_, bkg, p, title=f"Background vs time {g}") if bkg.size else _raise("no spectra"))
        wl = sp["wavelength"]
        fx = sp["flux"][done]
        fe = sp["flux_error"][done]
        del sp
        run("spectrum", lambda p: plots.plot_median_spectrum(
            wl, fx, fe, p, title=f"Median 1-D spectrum {g}") if fx.size else _raise("no spectra"))
    else:
        for kind in ("background", "spectrum"):
            run(kind, None, missing="no spectra stage in the store")

    if not (want("trace") or want("flicker")):
        pass
    elif "rateints" in stages and ext is not None:
        arrays, attrs = ext
        done = zarr_store.completed(root, g, "rateints").astype(bool)
        idx = sampled_indices(done)
        if idx.size:
            tr_t = zarr_store.read_stack(root, g, "rateints", "int_mid_BJD_TDB")[idx]
            nums = zarr_store.read_stack(root, g, "rateints", "integration_number")[idx]
            bg = attrs.get("background_region")
            sampled = _SampledRates(root, g, idx)

            def trace_plot(p):
                c, w = sampled.both(arrays["trace_center"], float(attrs["half_width"]),
                                    tuple(bg) if bg else None,
                                    arrays.get("scene_mask") if want("flicker") else None)
                plots.plot_trace_vs_time(tr_t, c, w, p, title=f"Trace position and width {g}"
                                         + (f" ({idx.size} sampled integrations)"
                                            if idx.size < done.sum() else ""))
                return {"centroid_std_px": float(np.nanstd(c)), "width_median_px": float(np.nanmedian(w)),
                        "integrations_sampled": int(idx.size)}
            run("trace", trace_plot)
            run("flicker", lambda p: plots.plot_flicker_diagnostics(
                sampled.column_offsets(arrays["scene_mask"]), nums, p,
                title=f"1/f diagnostics {g} (background pixels of {idx.size} rateints)"))
        else:
            for kind in ("trace", "flicker"):
                run(kind, None, missing="no complete rateints integration in the store")
    else:
        for kind in ("trace", "flicker"):
            run(kind, None, missing="per-integration trace data need the rateints and the "
                                    "extraction model in the store; not there")


def sampled_indices(done: np.ndarray) -> np.ndarray:
    """The rateints integrations (0-based) the trace and 1/f plots read: every complete one,
    or :data:`MAX_SAMPLED` of them evenly spaced."""
    idx = np.flatnonzero(np.asarray(done, bool))
    if idx.size > MAX_SAMPLED:
        idx = idx[np.linspace(0, idx.size - 1, MAX_SAMPLED).round().astype(int)]
    return idx


class SampledKernels:
    """The trace and 1/f plots' kernels on their sampled rateints, fed by a reader of the
    rateints in consecutive blocks (the products' trace diagnostics read all of them), so
    that the plots do not read the sampled integrations a second time.

    :meth:`feed` takes each block read (any size, in increasing order); the sampled
    integrations it holds are gathered into blocks of ``_BLOCK`` sampled integrations,
    exactly the blocks :class:`_SampledRates` reads (``idx[i:i + _BLOCK]``), on which
    :func:`measure_trace` and :func:`_column_medians` run as there: the same inputs, the
    same values. :meth:`result` is None unless every sampled integration was fed in order.
    The plots take it only for the same group, samples and extraction model
    (:meth:`matches`); else they read the rateints themselves.
    """

    def __init__(self, idx, trace_center, half_width, background_region, scene_mask):
        self.idx = np.asarray(idx)
        self.params = (np.asarray(trace_center), float(half_width),
                       tuple(background_region) if background_region else None)
        self.scene_mask = None if scene_mask is None else np.asarray(scene_mask)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._npending = 0
        self._fed = 0  # sampled integrations fed so far (idx[:_fed])
        self._broken = False
        self._trace: list = []
        self._medians: list = []

    @classmethod
    def of_model(cls, done, arrays: dict, attrs: dict) -> SampledKernels | None:
        """For a group's complete rateints ``done`` and its extraction model's arrays and
        attributes (as the plots read them); None without a trace centre or samples."""
        idx = sampled_indices(done)
        if not idx.size or "trace_center" not in arrays or "half_width" not in attrs:
            return None
        return cls(idx, arrays["trace_center"], attrs["half_width"],
                   attrs.get("background_region"), arrays.get("scene_mask"))

    def wants(self, start: int, stop: int) -> bool:
        """Whether integrations ``start:stop`` (0-based) hold a sampled one."""
        i = np.searchsorted(self.idx, start)
        return bool(i < self.idx.size and self.idx[i] < stop)

    def feed(self, start: int, sci: np.ndarray, dq: np.ndarray) -> None:
        """Integrations ``start:start + len(sci)`` (their ``sci`` and ``dq``)."""
        lo, hi = np.searchsorted(self.idx, [start, start + len(sci)])
        if lo == hi or self._broken:
            return
        if lo != self._fed:  # a sampled integration skipped, or fed twice
            self._broken = True
            return
        rows = self.idx[lo:hi] - start
        self._pending.append((sci[rows], dq[rows]))
        self._npending += rows.size
        self._fed = int(hi)
        while self._npending >= _BLOCK:
            self._run(_BLOCK)

    def _run(self, n: int) -> None:
        sci = np.concatenate([p[0] for p in self._pending])
        dq = np.concatenate([p[1] for p in self._pending])
        rest = (sci[n:], dq[n:])
        sci, dq = sci[:n], dq[:n]
        self._pending = [rest] if len(rest[0]) else []
        self._npending = len(rest[0])
        self._trace.append(measure_trace(sci, dq, *self.params))
        if self.scene_mask is not None:
            self._medians.append(_column_medians(sci, dq, self.scene_mask))

    def result(self):
        """(centroid, width, column offsets or None), or None when incomplete."""
        if self._broken or self._fed != self.idx.size:
            return None
        if self._npending:
            self._run(self._npending)
        return (np.concatenate([p[0] for p in self._trace]),
                np.concatenate([p[1] for p in self._trace]),
                _column_offsets_of(self._medians) if self.scene_mask is not None else None)

    def matches(self, idx, trace_center, half_width, background_region, scene_mask) -> bool:
        """Whether these are the kernels of samples ``idx`` with this model."""
        tc, hw, bg = self.params
        return (np.array_equal(self.idx, idx)
                and np.array_equal(tc, np.asarray(trace_center), equal_nan=True)
                and hw == float(half_width)
                and bg == (tuple(background_region) if background_region else None)
                and (scene_mask is None or (self.scene_mask is not None and np.array_equal(
                    self.scene_mask, np.asarray(scene_mask)))))


#: (store, group) -> SampledKernels handed to the plots (:func:`shared_samples`)
_SHARED: dict[tuple[str, str], SampledKernels] = {}
#: (store, group) -> spectra arrays handed to the plots (:func:`shared_samples`)
_SHARED_SPECTRA: dict[tuple[str, str], dict] = {}
#: the ``spectra`` arrays the background and spectrum plots read
SPECTRA_PLOTTED = ("done", "int_mid_BJD_TDB", "background", "wavelength", "flux",
                   "flux_error")


@contextmanager
def shared_samples(root: str, kernels: dict[str, SampledKernels],
                   spectra: dict[str, dict] | None = None):
    """Inside, :func:`plot_products` on ``root`` takes the trace and 1/f plots' kernels
    from ``kernels`` (group -> :class:`SampledKernels`, fed by the products' read of the
    rateints) where they match, instead of reading the sampled rateints again; and the
    background and spectrum plots' arrays from ``spectra`` (group -> the
    :data:`SPECTRA_PLOTTED` arrays as read from the store's ``spectra``, ``done`` the
    completion markers) where the store's markers are the same."""
    keys = [(root, g) for g in kernels]
    skeys = [(root, g) for g in spectra or {}]
    _SHARED.update({(root, g): k for g, k in kernels.items()})
    _SHARED_SPECTRA.update({(root, g): v for g, v in (spectra or {}).items()})
    try:
        yield
    finally:
        for k in keys:
            _SHARED.pop(k, None)
        for k in skeys:
            _SHARED_SPECTRA.pop(k, None)


def _spectra_arrays(root: str, g: str) -> dict:
    """The background and spectrum plots' ``spectra`` arrays (:data:`SPECTRA_PLOTTED`):
    handed over by :func:`shared_samples` when its markers are the store's, else read."""
    done = zarr_store.completed(root, g, "spectra").astype(bool)
    shared = _SHARED_SPECTRA.get((root, g))
    if shared is not None and set(shared) >= set(SPECTRA_PLOTTED) \
            and np.array_equal(np.asarray(shared["done"], bool), done):
        return {**{n: shared[n] for n in SPECTRA_PLOTTED}, "done": done}
    return {"done": done, **{n: zarr_store.read_stack(root, g, "spectra", n)
                             for n in SPECTRA_PLOTTED[1:]}}


class _SampledRates:
    """The sampled rateints of a group, read ``_BLOCK`` integrations at a time.

    :func:`measure_trace` and :func:`column_offsets` work per integration in blocks of
    ``_BLOCK``; reading ``sci``/``dq`` block by block as well (the same blocks) keeps the
    trace and 1/f plots to one block of rates in memory instead of ``MAX_SAMPLED``
    integrations (2 x 64 MiB for SUB2048), with the same results bit for bit.
    """

    def __init__(self, root: str, g: str, idx: np.ndarray):
        self.root, self.g, self.idx = root, g, np.asarray(idx)

    def blocks(self):
        for i in range(0, self.idx.size, _BLOCK):
            sel = self.idx[i:i + _BLOCK]
            yield (zarr_store.read_stack(self.root, self.g, "rateints", "sci", sel),
                   zarr_store.read_stack(self.root, self.g, "rateints", "dq", sel))

    def both(self, trace_center, half_width, background_region, scene_mask):
        """:meth:`trace` and :meth:`column_offsets` from one read of the blocks (the same
        kernels on the same blocks: the same values); kept for the second plot. Taken
        from :func:`shared_samples` when they are there for these samples and model."""
        shared = _SHARED.get((self.root, self.g))
        if shared is not None and shared.matches(self.idx, trace_center, half_width,
                                                 background_region, scene_mask):
            r = shared.result()
            if r is not None and (scene_mask is None or r[2] is not None):
                self._offsets = r[2] if scene_mask is not None else None
                return r[0], r[1]
        tr, cm = [], []
        for sci, dq in self.blocks():
            tr.append(measure_trace(sci, dq, trace_center, half_width, background_region))
            if scene_mask is not None:
                cm.append(_column_medians(sci, dq, scene_mask))
        self._offsets = _column_offsets_of(cm) if scene_mask is not None else None
        return (np.concatenate([p[0] for p in tr]), np.concatenate([p[1] for p in tr]))

    def trace(self, trace_center, half_width, background_region):
        parts = [measure_trace(sci, dq, trace_center, half_width, background_region)
                 for sci, dq in self.blocks()]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def column_offsets(self, scene_mask):
        if getattr(self, "_offsets", None) is not None:  # read with the trace (:meth:`both`)
            return self._offsets
        return _column_offsets_of(_column_medians(sci, dq, scene_mask)
                                  for sci, dq in self.blocks())


def _raise(msg):
    raise ValueError(msg)
