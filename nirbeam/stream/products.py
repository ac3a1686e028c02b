"""Stage 2 of a batch run: rateints -> outlier flags -> 1-D spectra -> light curves, fit, plots.

The driver samples the rateints store for a median image (trace, profile, scene mask,
saved in the store); Beam processes blocks of consecutive integrations (each block reads
its own window of neighbours from the store for the outlier flags, so no 2-D array is
ever shuffled); the driver then reads the small spectra cube back and writes the tables,
the x1dints file, the quick-look fit and the plots.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from nirbeam import __version__, dqflags
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.records import DeadLetter, IntegrationKey
from nirbeam.stream.wavelengths import axis_units, is_pixel_axis
from nirbeam.transforms.spectra import (
    SPECTRUM_ARRAYS,
    ExtractionModel,
    build_extraction_model,
    extract_integration,
    flag_block,
)

__all__ = ["run_spectra_stage", "finalize_products", "fit_command"]

log = logging.getLogger("nirbeam")

RATEINTS = "rateints"
SPECTRA = "spectra"
CLEANED = "cleaned"
EXTRACTION = "extraction"
BLOCK = 32


# ---------------------------------------------------------------------------------------
# Wavelengths


def find_wavelengths(plan, cfg, trace, nx: int):
    """The exposure's wavelengths from the user's sources, or the pixel axis.

    See :mod:`nirbeam.stream.wavelengths`: a jwst product or wavelength map, a polynomial,
    optionally jwst's assign_wcs; never a simulator's truth file.
    """
    from nirbeam.stream.wavelengths import find_wavelengths as _find

    return _find(plan, cfg, trace, nx)


# ---------------------------------------------------------------------------------------
# Preparing the stage (driver)


def _axis_attrs(source: str) -> dict:
    """Attributes of the spectral-axis coordinate: µm, or pixels said in plain words."""
    if is_pixel_axis(source):
        return {"units": "pixel", "source": source,
                "description": "NO WAVELENGTH SOLUTION: 0-based detector column index "
                               "(pixels), not a wavelength"}
    return {"units": "um", "source": source, "description": "wavelength along the trace"}


def _sample_indices(done: np.ndarray, n: int) -> np.ndarray:
    idx = np.flatnonzero(done)
    if idx.size <= n:
        return idx
    return idx[np.linspace(0, idx.size - 1, n).round().astype(int)]


def prepare_spectra(root: str, plan, settings) -> ExtractionModel | str | None:
    """Build and save the extraction model; create the spectra and cleaned stages.

    Returns the model, None when no integration has rates, or a string saying why no
    model could be built.
    """

    meta = plan.meta
    group = meta.group_name
    done = zarr_store.completed(root, group, RATEINTS)
    if not done.any():
        return None
    cfg = settings.extract
    # The model (and every spectrum and outlier flag made with it) depends on the set of
    # integrations with rates: when that set changed since (a resumed run that completed
    # integrations an earlier run lost), rebuild and redo the stage, so products equal
    # those of an uninterrupted run.
    digest = _done_digest(done)
    try:
        arrays, attrs = zarr_store.load_arrays(root, f"{group}/{EXTRACTION}")
        model = ExtractionModel.from_arrays(arrays, attrs)
        if (attrs.get("settings") == _extraction_settings(settings)
                and attrs.get("rateints_digest") == digest):
            return model
    except Exception:  # noqa: BLE001 - absent or stale: rebuild
        pass
    for stage in (SPECTRA, CLEANED):
        _reset_completed(root, group, stage)
    sel = _sample_indices(done, cfg.profile_nints)
    sci = zarr_store.read_stack(root, group, RATEINTS, "sci", sel)
    dq = zarr_store.read_stack(root, group, RATEINTS, "dq", sel)
    model = extraction_model(sci, dq, meta, settings, plan)
    if isinstance(model, str):
        return model
    ny, nx = meta.image_shape
    wl = model.wavelength
    arrays, attrs = model.to_arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        arrays["median_image"] = np.nanmedian(np.where((dq & 1) != 0, np.nan, sci), axis=0)
    attrs["settings"] = _extraction_settings(settings)
    attrs["rateints_digest"] = digest
    zarr_store.save_arrays(root, f"{group}/{EXTRACTION}", arrays, attrs)
    coords = {
        n: zarr_store.read_stack(root, group, RATEINTS, n)
        for n in ("integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC")
    }
    spec_attrs = {
        "flux": {"units": "DN/s", "description": "extracted flux per column (configured method)"},
        "flux_error": {"units": "DN/s", "description": "1-sigma error of flux"},
        "box_flux": {"units": "DN/s", "description": "curved-box flux per column"},
        "box_flux_error": {"units": "DN/s", "description": "1-sigma error of box_flux"},
        "flux_var_poisson": {"units": "(DN/s)^2", "description": "Poisson variance of flux"},
        "flux_var_rnoise": {"units": "(DN/s)^2", "description": "read-noise variance of flux"},
        "dq": {"units": "", "description": "OR of DQ of pixels masked in the aperture"},
        "npixels": {"units": "", "description": "pixels used"},
        "background": {"units": "DN/s", "description": "background per pixel subtracted"},
    }
    g = zarr_store.prepare_stage(
        root, group, SPECTRA, meta.nints, (nx,), SPECTRUM_ARRAYS, frame_dims=("wavelength",),
        coords=coords, array_attrs=spec_attrs, time_chunk=BLOCK,
        attrs={"wavelength_source": wl.source, "method": cfg.method,
               "spectral_axis_units": axis_units(wl.source)},
    )
    if "wavelength" not in g:
        g.create_array("wavelength", data=wl.wavelength, dimension_names=("wavelength",),
                       attributes=zarr_store.cf_attrs("wavelength", _axis_attrs(wl.source)))
    zarr_store.prepare_stage(
        root, group, CLEANED, meta.nints, (ny, nx), {"dq": np.uint32}, coords=coords,
        time_chunk=BLOCK,
        array_attrs={"dq": {"units": "", "description": "rateints DQ plus OUTLIER flags along time"}},
    )
    return model


def _done_digest(done: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(done).tobytes()).hexdigest()


def _reset_completed(root: str, group: str, stage: str) -> None:
    """Mark every integration of a stage as not done (the stage will be redone)."""
    import zarr

    try:
        done = zarr.open_array(root, path=f"{group}/{stage}/done", mode="r+", zarr_format=3)
    except Exception:  # noqa: BLE001 - stage not created yet: nothing to reset
        return
    if done[:].any():
        done[:] = 0


def extraction_model(sci, dq, meta, settings, plan=None) -> ExtractionModel | str:
    """The extraction model of a sample of rates (batch: spread over the exposure; live:
    its first integrations): the config's trace or one fitted, the profile, and the
    wavelengths of ``plan`` (none without a plan). Returns the reason when none can be built.
    """
    from nirbeam.transforms.trace import TraceModel

    cfg = settings.extract
    nx = meta.image_shape[1]
    trace = None
    if cfg.trace_coefficients:
        trace = TraceModel.from_config(cfg.trace_coefficients, 1.0, (0.0, nx - 1.0), scaled=False)
    model = _build_model(sci, dq, cfg, trace, settings)
    if isinstance(model, str) or plan is None:
        return model
    wl = find_wavelengths(plan, cfg, model.trace, nx)
    return ExtractionModel(**{**model.__dict__, "wavelength": wl})


def _build_model(sci, dq, cfg, trace, settings) -> ExtractionModel | str:
    """The extraction model, or the reason it cannot be built (e.g. no trace on NRS2)."""
    try:
        return build_extraction_model(
            sci, dq, half_width=cfg.half_width,
            background_region=tuple(cfg.background_region) if cfg.background_region else None,
            trace_deg=cfg.trace_deg, trace=trace, method=cfg.method, sigma_clip=cfg.sigma_clip,
            flicker=settings.flicker,
        )
    except ValueError as exc:
        return f"no spectral trace could be measured on the median rate image ({exc})"


def _extraction_settings(settings) -> dict:
    from nirbeam.stream.config import to_jsonable

    return to_jsonable({"extract": settings.extract, "outliers": settings.outliers,
                        "flicker": settings.flicker})


# ---------------------------------------------------------------------------------------
# Per-block work (Beam workers)


@dataclass(frozen=True)
class SpectraBlock:
    """Integrations ``start..stop`` (1-based, inclusive) of one exposure/detector."""

    exposure: str
    detector: str
    nints: int
    start: int
    stop: int
    model_token: str = ""  # digest of the extraction model's inputs: worker caches key on it
    rate_done_bits: bytes = b""  # np.packbits of the rateints completion markers (driver)

    def rate_done(self) -> np.ndarray | None:
        """The rateints markers the driver read (None: read them from the store)."""
        if not self.rate_done_bits:
            return None
        return np.unpackbits(np.frombuffer(self.rate_done_bits, np.uint8))[: self.nints].astype(bool)

    @property
    def group(self) -> str:
        """Store group name."""
        return f"{self.exposure}_{self.detector.lower()}"


_MODELS: dict[tuple[str, str, str], ExtractionModel] = {}


@dataclass(frozen=True)
class ProcessBlock:
    """Flag outliers (window read from the store), extract, write; return dead letters."""

    root: str
    settings: object

    def __call__(self, block: SpectraBlock) -> list[DeadLetter]:
        s = self.settings
        g = block.group
        k = (self.root, g, block.model_token)
        if k not in _MODELS:
            arrays, attrs = zarr_store.load_arrays(self.root, f"{g}/{EXTRACTION}")
            _MODELS[k] = ExtractionModel.from_arrays(arrays, attrs)
        model = _MODELS[k]
        w = s.outliers.window if s.outliers.enabled else 0
        lo = max(1, block.start - w)
        hi = min(block.nints, block.stop + w)
        sel = slice(lo - 1, hi)
        done = block.rate_done()
        if done is None:
            done = zarr_store.completed(self.root, g, RATEINTS)
        # one read per array: the window (the block and its neighbours) of what the outlier
        # flags need, the block alone of the variances, which only the extraction needs
        read = zarr_store.read_block(self.root, g, RATEINTS, ("sci", "err", "dq"), sel)
        a, b = block.start - lo, block.stop - lo + 1
        var = zarr_store.read_block(self.root, g, RATEINTS, ("var_poisson", "var_rnoise"),
                                    slice(block.start - 1, block.stop))
        dq = read["dq"].copy()
        dq[~done[sel]] |= np.uint32(dqflags.DO_NOT_USE)  # not processed: never in a median
        if s.outliers.enabled:
            new_dq = flag_block(read["sci"], read["err"], dq, s.outliers.window, s.outliers.n_sigma,
                                span=(a, b))  # the block alone, windows of the stack
        else:
            new_dq = dq
        dead = []
        n = block.stop - block.start + 1
        nx = model.profile.shape[1]
        # integrations not extracted keep the store's fill (NaN, DQ DO_NOT_USE): missing
        spec = {k: np.full((n, nx), zarr_store.fill_value_for(k, dt), dt)
                for k, dt in SPECTRUM_ARRAYS.items()}
        ok = np.zeros(n, bool)
        for i in range(block.start, block.stop + 1):
            j = i - lo
            if not done[i - 1]:
                continue  # dead in detector1: already a dead letter
            try:
                out = extract_integration(
                    read["sci"][j], read["err"][j], new_dq[j], var["var_poisson"][j - a],
                    var["var_rnoise"][j - a], model, s.flicker,
                )
            except Exception as exc:  # noqa: BLE001 - becomes a dead letter
                dead.append(DeadLetter(IntegrationKey(block.exposure, block.detector, i),
                                       "extract", f"{type(exc).__name__}: {exc}"))
                continue
            for k, v in out.items():
                spec[k][i - block.start] = v
            ok[i - block.start] = True
        # one writer owns the block's chunks: write them whole, then the markers
        zarr_store.write_block(self.root, g, CLEANED, block.start, {"dq": new_dq[a:b]}, ok)
        zarr_store.write_block(self.root, g, SPECTRA, block.start, spec, ok)
        return dead


MAX_SPAN_BLOCKS = 4
"""Stage-2 work items span up to this many BLOCKs: each reads its window (the span and
``outliers.window`` integrations either side) once, so a longer span reads and flags
fewer neighbours twice ((span + 2 window) / span: 2.6x for one block, 1.4x for four)."""


def block_span(nints: int, ngroups: int, runner_spec) -> int:
    """Integrations per stage-2 work item: a multiple of BLOCK (aligned with the chunks of
    the spectra and cleaned stages), up to MAX_SPAN_BLOCKS blocks, fewer where that would
    leave the runner's workers fewer than two items each."""
    workers = 1 if runner_spec is None or runner_spec.name == "direct" else (runner_spec.workers or 2)
    nblocks = max(1, -(-nints // BLOCK)) * max(1, ngroups)
    k = max(1, min(MAX_SPAN_BLOCKS, nblocks // (2 * workers)))
    return BLOCK * k


def run_spectra_stage(root: str, plans, settings, runner_spec, dead_dir) -> dict:
    """Stage 2 over every exposure: prepare (driver), then blocks on the Beam runner."""
    from nirbeam.stream.pipeline import WriteDeadLetter, _metrics
    from nirbeam.stream.runners import make_runner

    blocks = []
    for plan in plans:
        model = prepare_spectra(root, plan, settings)
        if model is None:
            continue
        g = plan.meta.group_name
        if isinstance(model, str):
            write = WriteDeadLetter(dead_dir)
            for i in np.flatnonzero(zarr_store.completed(root, g, RATEINTS)) + 1:
                write(DeadLetter(IntegrationKey(plan.meta.exposure, plan.meta.detector, int(i)),
                                 "extract", model))
            log.warning("%s: %s", g, model)
            continue
        rate_done = zarr_store.completed(root, g, RATEINTS)
        spec_done = zarr_store.completed(root, g, SPECTRA)
        todo = np.flatnonzero(rate_done & ~spec_done) + 1
        if todo.size == 0:
            continue
        n = plan.meta.nints
        digest = _done_digest(rate_done)
        bits = np.packbits(rate_done).tobytes()
        span = block_span(n, len(plans), runner_spec)
        for start in range(1, n + 1, span):
            stop = min(n, start + span - 1)
            if np.any((todo >= start) & (todo <= stop)):
                blocks.append(SpectraBlock(plan.meta.exposure, plan.meta.detector, n, start, stop,
                                           digest, bits))
    if not blocks:
        return {}
    beam_runner, options, cleanup = make_runner(runner_spec)
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        dead = (
            p
            | "PlanBlocks" >> beam.Create(blocks, reshuffle=False)
            | "DistributeBlocks" >> beam.Reshuffle()
            | "FlagAndExtract" >> beam.FlatMap(ProcessBlock(root, settings))
        )
        _ = dead | "WriteDeadExtract" >> beam.Map(WriteDeadLetter(dead_dir))
        result = p.run()
        result.wait_until_finish()
        return _metrics(result)
    finally:
        if cleanup:
            cleanup()


# ---------------------------------------------------------------------------------------
# Light curves, tables, x1dints, fit and plots (driver: small arrays)


def _rolling_outliers(flux: np.ndarray, good: np.ndarray, window=25, n_sigma=5.0) -> np.ndarray:
    """White-light points more than n_sigma (robust) from the running median."""
    out = np.zeros(flux.size, bool)
    idx = np.flatnonzero(good)
    if idx.size < 5:
        return out
    f = flux[idx]
    half = window // 2
    med = np.array([np.median(f[max(0, k - half): k + half + 1]) for k in range(f.size)])
    r = f - med
    sig = 1.4826 * np.median(np.abs(r - np.median(r)))
    if sig > 0:
        out[idx[np.abs(r) > n_sigma * sig]] = True
    return out


def _lightcurve_edges(cfg, wl: np.ndarray, wl_source: str = "") -> np.ndarray:
    """Spectroscopic bin edges on the spectral axis (µm, or pixels without wavelengths).

    ``auto`` is ``resolution`` with wavelengths and ``columns`` without; ``resolution`` and
    ``edges`` (and ``wmin``/``wmax``) are refused on a pixel axis.
    """
    from nirbeam.transforms.lightcurve import edges_from_resolution, native_edges

    pixel = is_pixel_axis(wl_source)
    binning = cfg.binning
    if binning == "auto":
        binning = "columns" if pixel else "resolution"
    if pixel and (binning in ("resolution", "edges") or cfg.wmin is not None
                  or cfg.wmax is not None):
        raise ValueError(
            f"[lightcurve] binning = {cfg.binning!r} (or wmin/wmax) needs wavelengths, and "
            "this exposure has no wavelength source; give [extract] wavelength_map or "
            "wavelength_coefficients, or use binning = 'native' or 'columns'")
    finite = wl[np.isfinite(wl)]
    if binning == "edges":
        return np.asarray(cfg.edges, float)
    if binning == "native":
        return native_edges(wl)
    if binning == "columns":
        e = native_edges(wl)
        k = int(cfg.column_width)
        out = e[::k]
        if out[-1] != e[-1]:
            out = np.append(out, e[-1])
        return out
    lo = cfg.wmin if cfg.wmin is not None else float(finite.min())
    hi = cfg.wmax if cfg.wmax is not None else float(np.nextafter(finite.max(), np.inf))
    return edges_from_resolution(lo, hi, cfg.resolution)


def finalize_products(outdir: str, root: str, plans, settings) -> dict:
    """Write white-light and spectroscopic light curves, x1dints, fit and plots.

    Per exposure/detector: ``speclc_<group>`` tables, ``<group>_x1dints.fits`` and the
    trace diagnostics (``<group>/trace`` in the store); per exposure, calwebb_tso3's
    ``<exposure>_whtlt.ecsv``; over all, nirbeam's ``whitelight`` table.
    """
    from nirbeam.transforms.lightcurve import bin_spectra, white_light

    out: dict = {"exposures": {}}
    wl_rows: dict[str, list] = {}
    fits_done = {}
    for plan in plans:
        meta = plan.meta
        g = meta.group_name
        if SPECTRA not in zarr_store.open_root(root).get(g, {}):
            continue
        done = zarr_store.completed(root, g, SPECTRA)
        S = {n: zarr_store.read_stack(root, g, SPECTRA, n) for n in SPECTRUM_ARRAYS}
        wl = zarr_store.read_stack(root, g, SPECTRA, "wavelength")
        bjd = zarr_store.read_stack(root, g, SPECTRA, "int_mid_BJD_TDB")
        mjd = zarr_store.read_stack(root, g, SPECTRA, "int_mid_MJD_UTC")
        num = zarr_store.read_stack(root, g, SPECTRA, "integration_number")
        source = _wl_source(root, g)
        pixel = is_pixel_axis(source)
        flux = np.where(done[:, None], S["flux"], np.nan)
        err = np.where(done[:, None], S["flux_error"], np.nan)
        cdq = np.where(done[:, None], S["dq"], dqflags.DO_NOT_USE).astype(np.uint32)
        cfg = settings.lightcurve
        # Columns are never dropped for a flagged pixel: the extraction already replaced
        # flagged pixels through the profile, and dropping a column in some integrations
        # only would add scatter. Only non-finite fluxes are skipped.
        wmin = None if pixel else cfg.wmin
        wmax = None if pixel else cfg.wmax
        wf, we, _ = white_light(flux, err, cdq, wl, wmin, wmax, skip_bits=0)
        good = done & np.isfinite(wf) & np.isfinite(we)
        wdq = np.where(good, 0, dqflags.DO_NOT_USE).astype(np.uint32)
        wdq[_rolling_outliers(wf, good)] |= np.uint32(dqflags.OUTLIER)
        finite = wl[np.isfinite(wl)]
        wrange = (float(wmin if wmin is not None else finite.min()),
                  float(wmax if wmax is not None else finite.max()))
        diag = _trace_diagnostics(root, g, done)
        wl_rows[g] = [meta, num, bjd, mjd, wf, we, wdq, wrange, diag, source]
        entry = out["exposures"][g] = {
            "wavelength_source": source,
            "spectral_axis": spectral_axis_words(source),
            "white_light_points": int(good.sum()),
            "white_light_flagged_outliers": int(((wdq & dqflags.OUTLIER) != 0).sum()),
            "trace_centroid_y_median_px": _nanmedian(diag["centroid_y"]),
            "trace_width_median_px": _nanmedian(diag["width"]),
        }
        try:
            edges = _lightcurve_edges(cfg, wl, source)
        except ValueError as exc:
            entry["spectroscopic_light_curves"] = f"not written: {exc}"
            log.warning("%s: %s", g, exc)
            edges = None
        lc = sdq = None
        if edges is not None:
            lc = bin_spectra(flux, err, cdq, wl, edges, skip_bits=0)
            sdq = (np.where(np.isfinite(lc.flux), 0, dqflags.DO_NOT_USE).astype(np.uint32)
                   | wdq[:, None])
            _write_speclc(outdir, root, g, meta, settings, lc, sdq, num, bjd, mjd, wf, we, wdq,
                          wrange, source, diag)
            entry["nbins"] = int(lc.centers.size)
            entry["binning"] = ("columns" if pixel else "resolution") if cfg.binning == "auto" \
                else cfg.binning
        if settings.products.x1dints_fits:
            entry["x1dints"], entry["x1dints_flux_units"] = _write_x1dints(
                outdir, plan, num, wl, flux, err, cdq, S, source, settings.extract.photom)
        fits_done[g] = (meta, bjd, wf, we, wdq, lc, sdq)
    if not wl_rows:
        return out
    _write_whitelight(outdir, root, wl_rows, settings)
    out["whtlt"] = _write_whtlt(outdir, wl_rows)
    if settings.products.rateints_fits:
        for plan in plans:
            _write_rateints_fits(outdir, root, plan)
    if settings.products.fit:
        out["fit"] = _fit_and_plot(outdir, root, {g: v for g, v in fits_done.items()
                                                 if v[5] is not None}, settings)
    elif settings.products.plots:
        _plots(outdir, root, {g: v for g, v in fits_done.items() if v[5] is not None}, {},
               settings)
    return out


def spectral_axis_words(source: str) -> str:
    """The spectral axis in plain words, for every product's metadata and run.json."""
    if is_pixel_axis(source):
        return ("pixel: NO wavelength solution was given, so the spectral axis is the 0-based "
                "detector column of the subarray; no value in these products is a wavelength. "
                "Give [extract] wavelength_map (jwst calints/x1dints or a wavelength-map FITS "
                "file) or wavelength_coefficients to get wavelengths in um.")
    return f"wavelength in um, from {source}"


def _nanmedian(x) -> float | None:
    x = np.asarray(x, float)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


TRACE = "trace"


def _trace_diagnostics(root: str, g: str, done: np.ndarray) -> dict[str, np.ndarray]:
    """Trace centroid and width per integration from the rates; saved in ``<g>/trace``."""
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
    rdone = zarr_store.completed(root, g, RATEINTS) & done
    for start in range(0, n, BLOCK):
        sel = slice(start, min(n, start + BLOCK))
        if not rdone[sel].any():
            continue
        sci = zarr_store.read_stack(root, g, RATEINTS, "sci", sel)
        dq = zarr_store.read_stack(root, g, RATEINTS, "dq", sel)
        d = trace_diagnostics_block(sci, dq, center, half)
        for k in out:
            out[k][sel] = np.where(rdone[sel], d[k], np.nan)
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
                  wrange, source, diag) -> None:
    """Spectroscopic light curves: zarr group, Parquet (long) and ECSV (wide)."""
    from nirbeam.sinks.tables import write_table

    pixel = is_pixel_axis(source)
    au = axis_units(source)
    zarr_store.save_lightcurves(
        root, f"{g}/lightcurves", flux=lc.flux, flux_error=lc.error, dq=sdq,
        bin_edges=lc.edges, integration_number=num, int_mid_BJD_TDB=bjd, int_mid_MJD_UTC=mjd,
        white_flux=wf, white_flux_error=we, white_dq=wdq,
        attrs={"units": "DN/s", "wavelength_units": au, "wavelength_source": source,
               "spectral_axis": spectral_axis_words(source)},
        wavelength_units=au)
    # Parquet in long format (one row per integration and bin, for pandas), ECSV in wide
    # format (one row per integration, a vector of bins; bin centres and edges in the meta)
    nb = lc.centers.size
    n = lc.flux.shape[0]
    smeta = _table_meta(meta, wrange, root, g)
    axis = "column" if pixel else "wavelength"
    lunits = {"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", axis: au,
              "bin_lo": au, "bin_hi": au, "flux": "DN/s", "flux_error": "DN/s"}
    stem = fs.join(outdir, f"speclc_{g}")
    if settings.products.parquet:
        write_table(
            stem,
            {"integration_number": np.repeat(num, nb), "int_mid_BJD_TDB": np.repeat(bjd, nb),
             "int_mid_MJD_UTC": np.repeat(mjd, nb), axis: np.tile(lc.centers, n),
             "bin_lo": np.tile(lc.edges[:-1], n), "bin_hi": np.tile(lc.edges[1:], n),
             "flux": lc.flux.ravel(), "flux_error": lc.error.ravel(), "dq": sdq.ravel(),
             "trace_centroid_y": np.repeat(diag["centroid_y"], nb),
             "trace_width": np.repeat(diag["width"], nb)},
            smeta, units={**lunits, "trace_centroid_y": "pix", "trace_width": "pix"},
            parquet=True, ecsv=False,
        )
    centers_key, edges_key = (("bin_centers_pixel", "bin_edges_pixel") if pixel
                              else ("wavelength_um", "bin_edges_um"))
    write_table(
        stem,
        {"integration_number": num, "int_mid_BJD_TDB": bjd, "int_mid_MJD_UTC": mjd,
         "flux": lc.flux, "flux_error": lc.error, "dq": sdq,
         "trace_centroid_y": diag["centroid_y"], "trace_width": diag["width"]},
        {**smeta, centers_key: lc.centers.tolist(), edges_key: lc.edges.tolist(),
         "layout": "one row per integration; flux/flux_error/dq are vectors over the "
                   f"bins in meta {centers_key} (edges in {edges_key})"},
        units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s",
               "flux_error": "DN/s", "trace_centroid_y": "pix", "trace_width": "pix"},
        parquet=False,
    )


def _segment_of(plan, num: np.ndarray) -> np.ndarray:
    seg = np.zeros(num.size, np.int32)
    for s in plan.segments:
        seg[(num >= s.intstart) & (num <= s.intend)] = s.segnum
    return seg


def _write_x1dints(outdir, plan, num, wl, flux, err, cdq, S, source,
                   photom: str = "") -> tuple[str, str]:
    """``<exposure>_<det>_x1dints.fits`` (TSOMultiSpecModel), one per exposure/detector.

    FLUX in Jy when a PHOTOM reference is configured and the run has wavelengths, else
    DN/s. Returns (file name, flux unit).
    """
    from nirbeam.sinks.fits_products import X1dTable, write_x1dints

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
    elif photom:
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
    name = f"{meta.group_name}_x1dints.fits"
    write_x1dints(fs.join(outdir, name), t)
    return name, unit


def _write_whitelight(outdir, root, wl_rows, settings) -> None:
    """nirbeam's white light: one file, a row per integration and detector (sorted)."""
    from nirbeam.sinks.tables import write_table

    cols: dict[str, list] = {k: [] for k in (
        "exposure", "detector", "integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC",
        "flux", "flux_error", "dq", "trace_centroid_y", "trace_width")}
    metas = []
    for g, (meta, num, bjd, mjd, wf, we, wdq, wrange, diag, source) in sorted(wl_rows.items()):
        cols["exposure"].append(np.full(num.size, meta.exposure))
        cols["detector"].append(np.full(num.size, meta.detector))
        cols["integration_number"].append(num)
        cols["int_mid_BJD_TDB"].append(bjd)
        cols["int_mid_MJD_UTC"].append(mjd)
        cols["flux"].append(wf)
        cols["flux_error"].append(we)
        cols["dq"].append(wdq)
        cols["trace_centroid_y"].append(diag["centroid_y"])
        cols["trace_width"].append(diag["width"])
        metas.append((meta, wrange, g, source))
    meta0, wrange0, g0, _ = metas[0]
    tmeta = _table_meta(meta0, wrange0, root, g0)
    tmeta["detectors"] = [m.detector for m, _, _, _ in metas]
    tmeta["exposures"] = sorted({m.exposure for m, _, _, _ in metas})
    if len(tmeta["exposures"]) > 1:  # the rows say which; no single exposure's keywords
        for k in ("exposure", "number_of_integrations"):
            tmeta.pop(k, None)
    if len(metas) > 1:
        tmeta.pop("detector", None)  # "detectors" lists them; rows say which
    tmeta["wavelength_source"] = {m.detector: s for m, _, _, s in metas}
    tmeta["spectral_axis"] = {m.detector: spectral_axis_words(s) for m, _, _, s in metas}
    tmeta.pop("wavelength_range_um", None)
    tmeta.pop("spectral_range_pixel", None)
    ranges = {m.detector: list(w) for m, w, _, s in metas if not is_pixel_axis(s)}
    if ranges:
        tmeta["wavelength_range_um"] = ranges
    pranges = {m.detector: list(w) for m, w, _, s in metas if is_pixel_axis(s)}
    if pranges:
        tmeta["column_range_pixel"] = pranges
    write_table(
        fs.join(outdir, "whitelight"),
        {k: np.concatenate(v) for k, v in cols.items()},
        tmeta,
        units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s",
               "flux_error": "DN/s", "trace_centroid_y": "pix", "trace_width": "pix"},
        descriptions={
            "dq": "0 good; 1 DO_NOT_USE (no spectrum); 16 OUTLIER (>5 sigma from running median)",
            "trace_centroid_y": "trace row (0-based, subarray) of this integration",
            "trace_width": "standard deviation of the cross-dispersion profile"},
        parquet=settings.products.parquet,
    )


def _write_whtlt(outdir, wl_rows) -> list[str]:
    """calwebb_tso3's ``<exposure>_whtlt.ecsv``: per-detector columns, one per exposure.

    Columns ``MJD_UTC_<det>``, ``BJD_TDB_<det>``, ``whitelight_flux_<det>`` (as jwst's
    white_light step for NRS_BRIGHTOBJ), plus nirbeam's ``whitelight_flux_error_<det>`` and
    ``dq_<det>``; flux in DN/s (jwst's is in the x1dints FLUX unit). Flagged integrations
    keep their row (``dq`` says why); never-processed ones are NaN.
    """
    from astropy.table import QTable

    from nirbeam.sinks.tables import atomic_path

    by_exp: dict[str, list] = {}
    for g, row in sorted(wl_rows.items()):
        by_exp.setdefault(row[0].exposure, []).append((g, row))
    written = []
    for exposure, rows in sorted(by_exp.items()):
        meta0 = rows[0][1][0]
        t = QTable(meta={
            "instrument": "NIRSPEC",
            "detector": (rows[0][1][0].detector if len(rows) == 1
                         else [r[0].detector for _, r in rows]),
            "exp_type": meta0.exp_type, "subarray": meta0.subarray, "filter": meta0.filter,
            "grating": meta0.grating, "pupil": None, "target_name": meta0.target,
            "number_of_integrations": int(meta0.nints),
            "flux_units": "DN/s",
            "spectral_axis": {r[0].detector: spectral_axis_words(r[9]) for _, r in rows},
            "origin": f"nirbeam {__version__}",
        })
        n = max(int(r[0].nints) for _, r in rows)
        for _, (meta, num, bjd, mjd, wf, we, wdq, *_rest) in rows:
            d = meta.detector
            idx = np.asarray(num, int) - 1

            def place(v, fill=np.nan, dtype=np.float64, idx=idx, n=n):
                a = np.full(n, fill, dtype)
                a[idx] = v
                return a

            t[f"MJD_UTC_{d}"] = place(mjd)
            t[f"BJD_TDB_{d}"] = place(bjd)
            t[f"whitelight_flux_{d}"] = place(wf)
            t[f"whitelight_flux_error_{d}"] = place(we)
            t[f"dq_{d}"] = place(wdq, dqflags.DO_NOT_USE, np.uint32)
            for c, u in ((f"MJD_UTC_{d}", "d"), (f"BJD_TDB_{d}", "d"),
                         (f"whitelight_flux_{d}", "DN/s"), (f"whitelight_flux_error_{d}", "DN/s")):
                t[c].unit = u
        name = f"{exposure}_whtlt.ecsv"
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


def _wl_source(root, g) -> str:
    try:
        _, attrs = zarr_store.load_arrays(root, f"{g}/{EXTRACTION}")
        return attrs.get("wavelength_source", "")
    except Exception:  # noqa: BLE001
        return ""


def _table_meta(meta, wrange, root, g) -> dict:
    source = _wl_source(root, g)
    range_key = "column_range_pixel" if is_pixel_axis(source) else "wavelength_range_um"
    return {
        "instrument": "NIRSPEC", "exp_type": meta.exp_type, "exposure": meta.exposure,
        "detector": meta.detector, "subarray": meta.subarray, "filter": meta.filter,
        "grating": meta.grating, "target": meta.target, "readpatt": meta.readpatt,
        "number_of_integrations": meta.nints, range_key: list(wrange),
        "wavelength_source": source, "spectral_axis": spectral_axis_words(source),
        "nirbeam_version": __version__, "flux_units": "DN/s",
    }


def quicklook_fit_config(cfg, time_d: np.ndarray, flux: np.ndarray):
    """The quick-look fit configuration for good white-light points (batch and live).

    ``cfg.t0`` when configured; otherwise the time of the deepest point of the flux
    (normalised by its median) smoothed over ``max(3, n // 50)`` points, or the median time
    when there are too few points to smooth.

    Parameters
    ----------
    cfg : FitConfig
    time_d : float, (n,), days (BJD_TDB - 2400000.5)
    flux : float, (n,), good points only
    """
    from dataclasses import replace

    if cfg.t0 is not None:
        return cfg
    n = flux.size
    f = flux / np.nanmedian(flux)
    k = max(3, n // 50)
    sm = np.convolve(f, np.ones(k) / k, mode="same")
    t0 = float(time_d[np.argmin(sm[k:-k]) + k]) if n > 2 * k else float(np.median(time_d))
    return replace(cfg, t0=t0)


def _fit_and_plot(outdir, root, fits_done, settings) -> dict:
    from nirbeam.sinks.tables import write_json
    from nirbeam.transforms.transit import fit_spectroscopic, fit_transit, write_fit_json

    results = {}
    fitted = {}
    for g, (_meta, bjd, wf, we, wdq, lc, _sdq) in sorted(fits_done.items()):
        use = (wdq == 0) & np.isfinite(wf) & np.isfinite(we) & (we > 0)
        if use.sum() < 10:
            results[g] = {"error": "fewer than 10 good white-light points: no fit"}
            continue
        if settings.fit.per is None:
            results[g] = {"error": "no fit: no orbital period given; set [fit] per (days) "
                                   "from the planet's ephemeris (nirbeam has no default planet)"}
            continue
        cfg = quicklook_fit_config(settings.fit, bjd[use], wf[use])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fit_transit(bjd[use], wf[use], we[use], cfg)
        except Exception as exc:  # noqa: BLE001 - a quick look must not kill the run
            results[g] = {"error": f"white-light fit failed: {type(exc).__name__}: {exc}"}
            continue
        with fs.atomic_path(fs.join(outdir, f"fit_{g}.json")) as tmp:
            write_fit_json(res, tmp)
        entry = {"rp": res.params.get("rp"), "rp_error": res.errors.get("rp"),
                 "rms_ppm": res.rms_ppm, "reduced_chi2": res.reduced_chi2, "beta": res.beta,
                 "success": res.success, "assumptions": res.assumptions}
        try:
            okb = use & np.all(np.isfinite(lc.flux), axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = fit_spectroscopic(bjd[okb], lc.flux[okb], lc.error[okb], lc.centers, res)
            u_bin, u_err = ts.limb_darkening()
            source = _wl_source(root, g)
            write_json(fs.join(outdir, f"transmission_{g}.json"), {
                ("column_pixel" if is_pixel_axis(source) else "wavelength_um"):
                    ts.wavelength.tolist(),
                "spectral_axis": spectral_axis_words(source),
                "rp": ts.rp.tolist(),
                "rp_error": ts.rp_error.tolist(), "depth": ts.depth.tolist(),
                "depth_error": ts.depth_error.tolist(), "reduced_chi2": ts.reduced_chi2.tolist(),
                "limb_darkening": u_bin.tolist(), "limb_darkening_error": u_err.tolist(),
                "limb_darkening_law": res.config.limb_dark,
                "beta": [r.beta if r is not None else None for r in ts.results],
                "assumptions": (ts.results[0].assumptions if ts.results and ts.results[0]
                                else []),
            })
            entry["nbins_fitted"] = int(np.isfinite(ts.depth).sum())
        except Exception as exc:  # noqa: BLE001
            ts = None
            entry["spectroscopic_error"] = f"{type(exc).__name__}: {exc}"
        results[g] = entry
        fitted[g] = (res, ts, use)
    if settings.products.plots:
        _plots(outdir, root, fits_done, fitted, settings)
    return results


def _plots(outdir, root, fits_done, fitted, settings) -> None:
    """Every plot, from the products just written (:mod:`nirbeam.sinks.diagnostics`)."""
    from nirbeam.sinks.diagnostics import plot_products

    try:
        plot_products(outdir, root)
    except Exception as exc:  # noqa: BLE001 - plots must not kill a run
        log.warning("plots failed: %s", exc)


# ---------------------------------------------------------------------------------------
# CLI commands


def fit_command(table: str, config_path: str | None, out: str | None,
                joint: bool = False) -> int:
    """``nirbeam fit TABLE``: fit each detector's light curve on its own.

    TABLE: nirbeam's ``whitelight``/``speclc`` tables, jwst's ``*_whtlt.ecsv`` or Eureka's
    ``LCData.h5``/Stage 5 tables (see :func:`transit.read_lightcurve_tables`). Writes
    ``fit_<label>.json`` and ``fit_<label>.png`` per curve (``fit.json``/``fit.png`` for a
    table holding one unlabelled curve). NRS1 and NRS2 are never mixed.
    """
    from nirbeam.sinks import plots
    from nirbeam.stream.config import ConfigError, build_dataclass, load_config_file
    from nirbeam.stream.uncal import BadInputError
    from nirbeam.transforms.transit import (
        FitConfig,
        fit_transit,
        read_lightcurve_tables,
        write_fit_json,
    )

    if not os.path.isfile(table):
        raise BadInputError(table, "no such light-curve table")
    cfg = load_config_file(config_path)
    columns = cfg.pop("columns", None) if isinstance(cfg.get("columns"), dict) else None
    fit_cfg = build_dataclass(FitConfig, cfg.get("fit", {}), "config.fit")
    if fit_cfg.per is None:
        raise ConfigError("nirbeam fit: no orbital period: set [fit] per (days) in --config "
                          "(nirbeam has no default planet)")
    out = out or os.path.dirname(os.path.abspath(table))
    os.makedirs(out, exist_ok=True)
    try:
        curves = read_lightcurve_tables(table, columns)
    except (KeyError, ValueError) as exc:
        raise BadInputError(table, str(exc).strip("'\"")) from None
    if joint:
        from nirbeam.sinks.tables import write_json
        from nirbeam.transforms.transit import fit_joint

        if len(curves) < 2:
            raise ConfigError(f"nirbeam fit --joint: {table} holds {len(curves)} light curve(s); "
                              "a joint fit needs two or more (e.g. NRS1 and NRS2)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit_joint({k: (c["time"], c["flux"], c["error"], c["use"])
                             for k, c in curves.items()}, fit_cfg)
        write_json(os.path.join(out, "fit_joint.json"), res)
        rp, drp = res["params"]["rp"], res["errors"].get("rp", float("nan"))
        print(f"joint {res['curves']}: Rp/R* = {rp:.5f} +/- {drp:.5f}; chi2/dof "
              f"{res['reduced_chi2']:.3f}")
        print(f"wrote {os.path.join(out, 'fit_joint.json')}")
        return 0
    for label, c in curves.items():
        stem = f"fit_{label}" if label else "fit"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit_transit(c["time"], c["flux"], c["error"], fit_cfg, mask=c["use"])
        if c["notes"]:
            res.assumptions.extend(f"input: {n}" for n in c["notes"])
        write_fit_json(res, os.path.join(out, f"{stem}.json"))
        plots.plot_fit(res, os.path.join(out, f"{stem}.png"))
        rp, drp = res.params.get("rp"), res.errors.get("rp")
        print(f"{label or 'light curve'}: Rp/R* = {rp:.5f} +/- {drp:.5f}; residual RMS "
              f"{res.rms_ppm:.0f} ppm; chi2/dof {res.reduced_chi2:.3f}; beta {res.beta:.2f}")
        print(f"wrote {os.path.join(out, stem + '.json')} and {stem}.png")
    return 0
