"""Stage 2 of a batch run and the products: rateints -> outlier flags -> 1-D spectra ->
light curves, x1dints, fit, plots.

The driver samples the rateints store for a median image (trace, profile, scene mask,
saved in the store); Beam processes blocks of consecutive integrations (each block reads
its own window of neighbours from the store for the outlier flags, so no 2-D array is
ever shuffled); the driver then reads the small spectra cube back and writes the tables,
the x1dints file, the quick-look fit and the plots.

Where things are: the plan of stage 2 (regions from the mode plan, spectra blocks) in
:mod:`nirbeam.stream.plan`; the extraction model and the block step in
:mod:`nirbeam.stream.spectra_stage`; the Beam graph in :mod:`nirbeam.stream.graph`; the
table builders (shared with the live writers) in :mod:`nirbeam.stream.product_tables`;
the fits and ``nirbeam fit`` in :mod:`nirbeam.stream.fit_products`. This module runs the
stage and writes the products; every public name of those modules is re-exported here.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from nirbeam import dqflags
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.fit_products import fit_and_plot, fit_command, plot_all, quicklook_fit_config
from nirbeam.stream.graph import SpectraStage, run_bounded
from nirbeam.stream.plan import (
    BLOCK,
    MAX_SPAN_BLOCKS,
    SpectraBlock,
    block_span,
    exposure_work,
    spectra_blocks,
)
from nirbeam.stream.plot_process import ahead, plots_in_child
from nirbeam.stream.product_tables import (
    batch_whitelight_table,
    lightcurve_edges,
    rolling_outliers,
    speclc_tables,
    spectral_axis_words,
    table_meta,
    white_light_series,
    whtlt_tables,
)
from nirbeam.stream.rate_steps import WriteDeadLetter
from nirbeam.stream.records import DeadLetter, IntegrationKey
from nirbeam.stream.spectra_stage import (
    CLEANED,
    EXTRACTION,
    RATEINTS,
    SPECTRA,
    ProcessBlock,
    axis_attrs,
    build_model,
    done_digest,
    extraction_model,
    extraction_settings,
    find_wavelengths,
    prepare_spectra,
    region_of,
)
from nirbeam.stream.wavelengths import axis_units, is_pixel_axis

__all__ = [
    "run_spectra_stage", "finalize_products", "fit_command", "wl_source", "trace_diagnostics",
    "x1dints_table",
    # re-exported from where they live now (old imports keep working)
    "BLOCK", "MAX_SPAN_BLOCKS", "SpectraBlock", "block_span", "spectra_blocks",
    "CLEANED", "EXTRACTION", "RATEINTS", "SPECTRA", "ProcessBlock", "axis_attrs",
    "build_model", "done_digest", "extraction_model", "extraction_settings",
    "find_wavelengths", "prepare_spectra", "region_of", "lightcurve_edges",
    "rolling_outliers", "speclc_tables", "spectral_axis_words", "table_meta",
    "white_light_series", "whtlt_tables", "batch_whitelight_table", "quicklook_fit_config",
    "fit_and_plot", "plot_all",
]

log = logging.getLogger("nirbeam")

_lightcurve_edges = lightcurve_edges  # the old private name (tests of other branches)


# ---------------------------------------------------------------------------------------
# Stage 2 (Beam)


def run_spectra_stage(root: str, plans, settings, runner_spec, dead_dir) -> dict:
    """Stage 2 over every exposure: for each, its mode plan's region
    (:func:`nirbeam.stream.plan.exposure_work`), the extraction model (driver), then the
    plan's blocks (:func:`~nirbeam.stream.plan.spectra_blocks`) on the Beam runner
    (:class:`~nirbeam.stream.graph.SpectraStage`)."""
    blocks = []
    for plan in plans:
        work = exposure_work(plan.meta, settings)
        model = prepare_spectra(root, plan, settings, work.region)
        if model is None:
            continue
        g = work.group
        if isinstance(model, str):
            write = WriteDeadLetter(dead_dir)
            for i in np.flatnonzero(zarr_store.completed(root, g, RATEINTS)) + 1:
                write(DeadLetter(IntegrationKey(plan.meta.exposure, plan.meta.detector, int(i)),
                                 "extract", model))
            log.warning("%s: %s", g, model)
            continue
        rate_done = zarr_store.completed(root, g, RATEINTS)
        spec_done = zarr_store.completed(root, g, SPECTRA)
        span = block_span(work.nints, len(plans), runner_spec)
        blocks += spectra_blocks(work, rate_done, spec_done, span, done_digest(rate_done))
    if not blocks:
        return {}
    return run_bounded(
        lambda p: p | "SpectraStage" >> SpectraStage(blocks, root, settings, dead_dir),
        runner_spec)


# ---------------------------------------------------------------------------------------
# Products (driver: small arrays)


def finalize_products(outdir: str, root: str, plans, settings, *, then=None) -> dict:
    """Write white-light and spectroscopic light curves, x1dints, fit and plots.

    ``then``: called (no arguments) once the products are written: after the plots, or,
    with a plot process, while it may still draw (it reads the store and writes only the
    plots, fit and transmission files): e.g. the store's consolidation.

    Per exposure/detector: ``speclc_<group>`` tables, ``<group>_x1dints.fits`` and the
    trace diagnostics (``<group>/trace`` in the store); per exposure, calwebb_tso3's
    ``<exposure>_whtlt.ecsv``; over all, nirbeam's ``whitelight`` table. The tables are
    built by :mod:`nirbeam.stream.product_tables` (shared with the live writers).
    """
    if not (plots_in_child(outdir, settings)
            and (settings.products.fit or settings.products.plots)):
        return _finalize(outdir, root, plans, settings, then=then)
    # The fit and plots in a forked child process, started now: it draws the plots of what
    # the store holds already (EARLY_PLOTS: extraction model, spectra; matplotlib's import)
    # while this process computes the light curves and trace diagnostics, then the rest
    # from what this process sends it (_late_plots), while this process writes the tables
    # and x1dints. The store's consolidated metadata (a resumed run's) is stripped first,
    # so that nothing the child reads is rewritten under it.
    zarr_store.open_root(root)
    box: dict = {}

    def parent(send):
        box["out"] = _finalize(outdir, root, plans, settings, send, then=then)

    fit = ahead(functools.partial(_early_plots, outdir, root, plans, settings),
                functools.partial(_late_plots, outdir, root, settings), parent,
                functools.partial(_late_plots, outdir, root, settings, None))
    out = box["out"]
    if settings.products.fit and "whtlt" in out:
        out["fit"] = fit
    return out


def _finalize(outdir: str, root: str, plans, settings, send=None, *, then=None) -> dict:
    """:func:`finalize_products`' work; ``send``: a plot process's (:func:`_late_plots`
    gets what it sends: the fit's light curves, the wavelength sources and the sampled
    rateints' kernels), else the fit and plots are done here after the writers."""
    from nirbeam.transforms.lightcurve import bin_spectra

    out: dict = {"exposures": {}}
    wl_rows: dict[str, list] = {}
    fits_done = {}
    sources = {}
    samples: dict | None = {} if settings.products.plots else None  # rateints read once
    plotted: dict = {}  # spectra read once (the last group's)
    child = send is not None
    later: list = []  # a group's writers the fit and plots do not read (tables, x1dints)
    for plan in plans:
        _run_all(later)  # the previous group's, before this group's spectra are read
        meta = plan.meta
        g = meta.group_name
        if SPECTRA not in zarr_store.open_root(root).get(g, {}):
            continue
        done = zarr_store.completed(root, g, SPECTRA)
        S = {n: zarr_store.read_stack(root, g, SPECTRA, n) for n in _PRODUCT_SPECTRA}
        wl = zarr_store.read_stack(root, g, SPECTRA, "wavelength")
        bjd = zarr_store.read_stack(root, g, SPECTRA, "int_mid_BJD_TDB")
        mjd = zarr_store.read_stack(root, g, SPECTRA, "int_mid_MJD_UTC")
        num = zarr_store.read_stack(root, g, SPECTRA, "integration_number")
        source = sources[g] = wl_source(root, g)
        pixel = is_pixel_axis(source)
        cfg = settings.lightcurve
        w = white_light_series(done, S, wl, source, cfg)
        diag = trace_diagnostics(root, g, done, samples)
        wl_rows[g] = [meta, num, bjd, mjd, w.wf, w.we, w.wdq, w.wrange, diag, source]
        entry = out["exposures"][g] = {
            "wavelength_source": source,
            "spectral_axis": spectral_axis_words(source),
            "white_light_points": int(w.good.sum()),
            "white_light_flagged_outliers": int(((w.wdq & dqflags.OUTLIER) != 0).sum()),
            "trace_centroid_y_median_px": _nanmedian(diag["centroid_y"]),
            "trace_width_median_px": _nanmedian(diag["width"]),
        }
        try:
            edges = lightcurve_edges(cfg, wl, source)
        except ValueError as exc:
            entry["spectroscopic_light_curves"] = f"not written: {exc}"
            log.warning("%s: %s", g, exc)
            edges = None
        lc = sdq = None
        if edges is not None:
            lc = bin_spectra(w.flux, w.err, w.cdq, wl, edges, skip_bits=0)
            sdq = (np.where(np.isfinite(lc.flux), 0, dqflags.DO_NOT_USE).astype(np.uint32)
                   | w.wdq[:, None])
            args = (outdir, root, g, meta, settings, lc, sdq, num, bjd, mjd, w.wf, w.we,
                    w.wdq, w.wrange, source, diag)
            if child:  # the store's group now (the plots read it), the tables later
                _save_lightcurves(*args)
                later.append(functools.partial(_write_speclc, *args, store=False))
            else:
                _write_speclc(*args)
            entry["nbins"] = int(lc.centers.size)
            entry["binning"] = ("columns" if pixel else "resolution") if cfg.binning == "auto" \
                else cfg.binning
        if settings.products.x1dints_fits:
            later.append(functools.partial(_x1dints_entry, entry, outdir, plan, num, wl, w.flux,
                                           w.err, w.cdq, S, source, settings.extract.photom))
        if not child:
            _run_all(later)
        fits_done[g] = (meta, bjd, w.wf, w.we, w.wdq, lc, sdq)
        if samples is not None and not child:  # the last group's spectra, for its plots
            plotted.clear()
            plotted[g] = {"done": done, "int_mid_BJD_TDB": bjd, "wavelength": wl,
                          **{n: S[n] for n in ("background", "flux", "flux_error")}}
        del S, w  # the group's spectra (NINTS x columns): not held through the next group
    if not wl_rows:
        _run_all(later)
        if child:
            send(None)
        if then is not None:
            then()
        return out

    def writers():  # what the fit and the plots do not read
        _run_all(later)
        _write_whitelight(outdir, wl_rows, settings)
        out["whtlt"] = _write_whtlt(outdir, wl_rows)
        if settings.products.rateints_fits:
            for plan in plans:
                _write_rateints_fits(outdir, root, plan)

    with_lc = {g: v for g, v in fits_done.items() if v[5] is not None}
    if child:
        send((with_lc, sources, samples or {}))
        writers()
        if then is not None:
            then()
        return out
    writers()
    fit = _late_plots(outdir, root, settings, None, (with_lc, sources, samples or {}), plotted)
    if settings.products.fit:
        out["fit"] = fit
    if then is not None:
        then()
    return out


def _early_plots(outdir, root, plans, settings):
    """In the plot process, at once: the plots of what the store holds before the
    products (:data:`nirbeam.sinks.diagnostics.EARLY_PLOTS`), when the products will draw
    plots at all (a group with spectra); their entries, or None (then all are drawn
    later, as serial would)."""
    from nirbeam.sinks.diagnostics import EARLY_PLOTS, plot_products

    if not settings.products.plots:
        return None
    try:
        top = zarr_store.open_root(root, mode="r")
        if not any(SPECTRA in top.get(p.meta.group_name, {}) for p in plans):
            return None
        return plot_products(outdir, root, kinds=EARLY_PLOTS, index=False)
    except Exception:  # noqa: BLE001 - drawn (and said) again with the others
        return None


def _late_plots(outdir, root, settings, drawn, payload, plotted=None):
    """The fit and the plots (those not in ``drawn``, the entries :func:`_early_plots`
    drew) from ``payload``: (group -> the fit's light curves, group -> wavelength source,
    group -> sampled rateints' kernels), or None: nothing to draw."""
    from nirbeam.sinks.diagnostics import shared_samples

    if payload is None:
        return None
    with_lc, sources, samples = payload
    with shared_samples(root, samples, plotted or {}):
        if settings.products.fit:
            return fit_and_plot(outdir, root, with_lc, settings, sources, drawn=drawn)
        if settings.products.plots:
            plot_all(outdir, root, with_lc, {}, settings, drawn=drawn)
    return None


def _run_all(jobs: list) -> None:
    while jobs:
        jobs.pop(0)()


#: The spectra arrays the products read (white light: flux, flux_error, dq; x1dints: the rest).
_PRODUCT_SPECTRA = ("flux", "flux_error", "dq", "flux_var_poisson", "flux_var_rnoise",
                    "background", "npixels")


def _nanmedian(x) -> float | None:
    x = np.asarray(x, float)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


TRACE = "trace"


def trace_diagnostics(root: str, g: str, done: np.ndarray,
                      samples: dict | None = None) -> dict[str, np.ndarray]:
    """Trace centroid and width per integration from the rates; saved in ``<g>/trace``.

    ``samples`` (a dict): ``samples[g]`` is set to the plots' trace and 1/f kernels
    (:class:`nirbeam.sinks.diagnostics.SampledKernels`) fed from this read of the rateints,
    for :func:`nirbeam.sinks.diagnostics.shared_samples`.
    """
    from nirbeam.sinks.diagnostics import SampledKernels
    from nirbeam.transforms.spectra import ExtractionModel
    from nirbeam.transforms.trace_diagnostics import trace_diagnostics_block

    n = done.size
    out = {k: np.full(n, np.nan) for k in ("centroid_offset", "centroid_y", "width")}
    try:
        arrays, attrs = zarr_store.load_arrays(root, f"{g}/{EXTRACTION}")
        model = ExtractionModel.from_arrays(arrays, attrs)
    except Exception:  # noqa: BLE001 - no model: no diagnostics (said by NaN)
        return out
    nx = model.profile.shape[1]
    center = model.trace.center(np.arange(nx))
    half = int(np.ceil(max(model.half_width, 3.0 * float(np.max(model.trace.width(np.arange(nx)))))))
    complete = zarr_store.completed(root, g, RATEINTS)
    rdone = complete & done
    sampled = None
    if samples is not None:
        sampled = SampledKernels.of_model(complete.astype(bool), arrays, attrs)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        sel = slice(start, stop)
        use = rdone[sel].any()
        if not use and not (sampled is not None and sampled.wants(start, stop)):
            continue
        # both arrays in one event-loop call (~20 % less CPU than two read_stack calls)
        sci, dq = zarr_store.read_block(root, g, RATEINTS, ("sci", "dq"), sel).values()
        if sampled is not None:
            sampled.feed(start, sci, dq)
        if use:
            d = trace_diagnostics_block(sci, dq, center, half)
            for k in out:
                out[k][sel] = np.where(rdone[sel], d[k], np.nan)
    if sampled is not None:
        samples[g] = sampled
    coords = {c: zarr_store.read_stack(root, g, SPECTRA, c)
              for c in ("integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC")}
    it = ("integration",)
    zarr_store.save_arrays(
        root, f"{g}/{TRACE}", {**out, **coords},
        {"description": "trace position and width per integration, from the first two "
                        "moments of the cross-dispersion profile summed along the trace "
                        "(nirbeam.transforms.trace_diagnostics)",
         "profile_half_width_px": half},
        dims={k: it for k in (*out, *coords)},
        array_attrs={
            "centroid_offset": {"units": "pixel", "description": "mean offset of the profile "
                                "from the fitted trace (+y up)"},
            "centroid_y": {"units": "pixel", "description": "trace row (0-based, subarray) "
                           "averaged over columns, plus centroid_offset"},
            "width": {"units": "pixel", "description": "standard deviation of the "
                      "cross-dispersion profile"},
            **{c: zarr_store.COORD_ATTRS[c] for c in coords},
        },
        coords=tuple(coords),
    )
    return out


def _write_speclc(outdir, root, g, meta, settings, lc, sdq, num, bjd, mjd, wf, we, wdq,
                  wrange, source, diag, *, store: bool = True) -> None:
    """Spectroscopic light curves: zarr group (``store``: else not), Parquet (long) and
    ECSV (wide)."""
    from nirbeam.sinks.tables import write_table

    if store:
        _save_lightcurves(outdir, root, g, meta, settings, lc, sdq, num, bjd, mjd, wf, we, wdq,
                          wrange, source, diag)
    long, wide = speclc_tables(num, bjd, mjd, lc.edges, lc.flux, lc.error, sdq,
                               table_meta(meta, wrange, source), source, trace=diag)
    stem = fs.join(outdir, f"speclc_{g}")
    if settings.products.parquet:
        write_table(stem, **long.kwargs(), parquet=True, ecsv=False)
    write_table(stem, **wide.kwargs(), parquet=False)


def _save_lightcurves(outdir, root, g, meta, settings, lc, sdq, num, bjd, mjd, wf, we, wdq,
                      wrange, source, diag) -> None:
    """The spectroscopic light curves' zarr group ``<g>/lightcurves`` (the plots read it)."""
    au = axis_units(source)
    zarr_store.save_lightcurves(
        root, f"{g}/lightcurves", flux=lc.flux, flux_error=lc.error, dq=sdq,
        bin_edges=lc.edges, integration_number=num, int_mid_BJD_TDB=bjd, int_mid_MJD_UTC=mjd,
        white_flux=wf, white_flux_error=we, white_dq=wdq,
        attrs={"units": "DN/s", "wavelength_units": au, "wavelength_source": source,
               "spectral_axis": spectral_axis_words(source)},
        wavelength_units=au)


def _x1dints_entry(entry: dict, *args) -> None:
    entry["x1dints"], entry["x1dints_flux_units"] = _write_x1dints(*args)


def _segment_of(plan, num: np.ndarray) -> np.ndarray:
    seg = np.zeros(num.size, np.int32)
    for s in plan.segments:
        seg[(num >= s.intstart) & (num <= s.intend)] = s.segnum
    return seg


#: Rows (integrations) of the x1dints table formed at a time (:func:`_write_x1dints`).
X1D_BLOCK = 64


def _write_x1dints(outdir, plan, num, wl, flux, err, cdq, S, source,
                   photom: str = "") -> tuple[str, str]:
    """``<exposure>_<det>_x1dints.fits`` (TSOMultiSpecModel), one per exposure/detector,
    from :func:`x1dints_table`. Returns (file name, flux unit).

    Written in blocks of :data:`X1D_BLOCK` rows, so that memory does not grow with NINTS
    (the whole table at once held ~265 MiB over its inputs for 465 x 2048 columns): each
    block's HDUs are made by :func:`nirbeam.sinks.fits_products.x1dints_hdulist` and
    written by astropy into memory (the first block; the later ones' rows by
    :func:`nirbeam.sinks.fits_products.x1dints_row_bytes`, numpy alone, used only when it
    gives the first block's rows byte for byte as astropy wrote them: astropy's header
    and table building cost ~0.1 s a block); the file is the first block's primary HDU, its
    EXTRACT1D header with ``NAXIS2`` = all rows, every block's row bytes, the padding, and
    the INT_TIMES HDU (the exposure's, the same in every block). A FITS binary table is
    its rows one after another, so the file is byte for byte the one
    :func:`nirbeam.sinks.fits_products.write_x1dints` writes for the whole table
    (tests/test_products_memory.py).
    """
    from nirbeam.sinks.fits_products import x1dints_hdulist, x1dints_row_bytes
    from nirbeam.sinks.tables import atomic_path

    name = f"{plan.meta.group_name}_x1dints.fits"
    fast = False
    n = len(num)
    unit = "DN/s"
    nbytes = 0
    with atomic_path(fs.join(outdir, name)) as tmp, open(tmp, "wb") as f:
        tail = b""
        for start in range(0, max(n, 1), X1D_BLOCK):
            sl = slice(start, min(n, start + X1D_BLOCK))
            t, unit = x1dints_table(plan, num[sl], wl, flux[sl], err[sl], cdq[sl],
                                    {k: S[k][sl] for k in _X1D_SPECTRA}, source, photom,
                                    quiet=start > 0)
            if start == 0 or not fast:
                head, rows, tail_ = _hdu_parts(x1dints_hdulist(t), n)
                if start == 0:
                    f.write(head)
                    tail = tail_
                    # the later blocks' rows without astropy, when they are the same bytes
                    fast = x1dints_row_bytes(t) == rows
            else:
                rows = x1dints_row_bytes(t)
            f.write(rows)
            nbytes += len(rows)
            del t, rows
        f.write(b"\0" * (-nbytes % 2880))
        f.write(tail)
    return name, unit


_X1D_SPECTRA = ("flux_var_poisson", "flux_var_rnoise", "background", "npixels")


def _hdu_parts(hdul, nrows: int) -> tuple[bytes, bytes, bytes]:
    """An x1dints HDU list as written by astropy, cut into (primary HDU + EXTRACT1D header
    with ``NAXIS2 = nrows``, the EXTRACT1D row bytes without padding, the HDUs after it)."""
    import io

    from astropy.io import fits

    bio = io.BytesIO()
    hdul.writeto(bio)
    raw = bio.getvalue()
    with fits.open(io.BytesIO(raw)) as h:
        info = [h.fileinfo(i) for i in range(len(h))]
        hdr = h[1].header
        old = fits.Card("NAXIS2", hdr["NAXIS2"], hdr.comments["NAXIS2"]).image.encode("ascii")
        new = fits.Card("NAXIS2", nrows, hdr.comments["NAXIS2"]).image.encode("ascii")
        rowbytes = hdr["NAXIS1"] * hdr["NAXIS2"]
    header = raw[info[1]["hdrLoc"]:info[1]["datLoc"]]
    at = header.index(old)
    if at % 80:
        raise RuntimeError("x1dints: NAXIS2 card not on a card boundary")
    header = header[:at] + new + header[at + 80:]
    d0 = info[1]["datLoc"]
    return (raw[:info[1]["hdrLoc"]] + header, raw[d0:d0 + rowbytes],
            raw[info[2]["hdrLoc"]:] if len(info) > 2 else b"")


def x1dints_table(plan, num, wl, flux, err, cdq, S, source, photom: str = "", *,
                  quiet: bool = False):
    """The x1dints table of one exposure/detector (``X1dTable``) and its flux unit.

    FLUX in Jy when a PHOTOM reference is configured and the run has wavelengths, else
    DN/s (the PHOTOM reference is read here; nothing is written). The rows are those of
    ``num`` (any subset of the exposure's integrations; ``quiet``: no warning, for the
    blocks after the first).
    """
    from nirbeam.sinks.fits_products import X1dTable

    meta = plan.meta
    unit = "DN/s"
    calibration = ""
    vp, vr, bkg = S["flux_var_poisson"], S["flux_var_rnoise"], S["background"]
    if photom and not is_pixel_axis(source):
        from nirbeam.stream.photom import conversion_jy_per_dn_s, read_photom

        row = read_photom(photom, meta.filter, meta.grating,
                          str(meta.header_dict().get("FXD_SLIT", "S1600A1")) or "S1600A1")
        c = conversion_jy_per_dn_s(row, wl)[None, :]
        flux, err, bkg = flux * c, err * c, bkg * c
        vp, vr = vp * c**2, vr * c**2
        unit = "Jy"
        calibration = f"PHOTOM {row.source}: FLUX = DN/s x PHOTMJ x RELRESPONSE x 1e6"
    elif photom and not quiet:
        log.warning("%s: [extract] photom given but no wavelength solution: x1dints FLUX "
                    "stays in DN/s", meta.group_name)
    times = plan.int_times()
    inum = np.asarray(times.get("integration_number", np.arange(1, meta.nints + 1)))
    row = {k: np.asarray(v) for k, v in times.items()}
    # the rows are the store's integrations (1..NINTS); times from the exposure's INT_TIMES
    idx = np.searchsorted(inum, num) if inum.size == meta.nints else np.asarray(num) - 1
    rtimes = {k: v[idx] for k, v in row.items() if k != "integration_number"}
    t = X1dTable(
        detector=meta.detector, header=meta.header_dict(), int_num=np.asarray(num, np.int32),
        wavelength=wl, flux=flux, flux_error=err, flux_var_poisson=vp,
        flux_var_rnoise=vr, dq=cdq, background=bkg,
        npixels=S["npixels"], times=rtimes, segment=_segment_of(plan, np.asarray(num)),
        flux_unit=unit, wavelength_source=source, calibration=calibration,
        int_times={"integration_number": inum, **{k: v for k, v in row.items()
                                                  if k != "integration_number"}},
    )
    return t, unit


def _write_whitelight(outdir, wl_rows, settings) -> None:
    """nirbeam's white light: one file, a row per integration and detector (sorted)."""
    from nirbeam.sinks.tables import write_table

    write_table(fs.join(outdir, "whitelight"), **batch_whitelight_table(wl_rows).kwargs(),
                parquet=settings.products.parquet)


def _write_whtlt(outdir, wl_rows) -> list[str]:
    """calwebb_tso3's ``<exposure>_whtlt.ecsv`` (:func:`product_tables.whtlt_tables`)."""
    from nirbeam.sinks.tables import atomic_path

    written = []
    for name, t in whtlt_tables(wl_rows).items():
        with atomic_path(fs.join(outdir, name)) as tmp:
            t.write(tmp, format="ascii.ecsv", overwrite=True)
        written.append(name)
    return written


def _write_rateints_fits(outdir: str, root: str, plan) -> str:
    """``<exposure>_<det>_rateints.fits`` in the JWST layout, one integration at a time."""
    from nirbeam.sinks.fits_products import write_rateints_fits

    meta = plan.meta
    g = meta.group_name
    names = ("sci", "err", "dq", "var_poisson", "var_rnoise")

    def get(i):
        return zarr_store.read_integration(root, g, RATEINTS, i + 1, names)

    path = fs.join(outdir, f"{g}_rateints.fits")
    return write_rateints_fits(path, meta.header_dict(), meta.nints, meta.image_shape, get,
                               plan.int_times())


def wl_source(root, g) -> str:
    """The wavelength source of a group's extraction model ("" when none)."""
    try:
        _, attrs = zarr_store.load_arrays(root, f"{g}/{EXTRACTION}")
        return attrs.get("wavelength_source", "")
    except Exception:  # noqa: BLE001
        return ""
