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
from nirbeam.transforms.spectra import (
    SPECTRUM_ARRAYS,
    ExtractionModel,
    build_extraction_model,
    extract_integration,
    flag_block,
)

__all__ = ["run_spectra_stage", "finalize_products", "fit_command", "plot_command"]

log = logging.getLogger("nirbeam")

RATEINTS = "rateints"
SPECTRA = "spectra"
CLEANED = "cleaned"
EXTRACTION = "extraction"
BLOCK = 32


# ---------------------------------------------------------------------------------------
# Wavelengths


def find_wavelengths(plan, cfg, trace, nx: int):
    """Choose the wavelength solution: config map, config polynomial, simulator truth."""
    from astropy.io import fits

    from nirbeam.transforms.trace import WavelengthSolution

    if cfg.wavelength_map:
        with fits.open(cfg.wavelength_map) as h:
            names = [x.name for x in h]
            if "WAVELENGTH" not in names:
                from nirbeam.stream.uncal import BadInputError

                raise BadInputError(cfg.wavelength_map, "no WAVELENGTH extension", "WAVELENGTH")
            wm = np.asarray(h["WAVELENGTH"].data, np.float64)
        if wm.ndim == 3:
            wm = wm[0]
        return WavelengthSolution.from_map(wm, trace, name=os.path.basename(cfg.wavelength_map))
    if cfg.wavelength_coefficients:
        return WavelengthSolution.from_coefficients(cfg.wavelength_coefficients, nx)
    folder = os.path.dirname(plan.segments[0].path)
    truth = os.path.join(folder, f"{plan.meta.exposure}_{plan.meta.detector.lower()}_truth.fits")
    if os.path.isfile(truth):
        with fits.open(truth) as h:
            if "TRACE" in [x.name for x in h]:
                t = h["TRACE"].data
                cols = {c.lower(): c for c in t.names}
                if "x" in cols and "wavelength_um" in cols:
                    return WavelengthSolution.from_table(
                        np.asarray(t[cols["x"]], float), np.asarray(t[cols["wavelength_um"]], float),
                        nx, name=f"simulator truth {os.path.basename(truth)}",
                    )
    return WavelengthSolution(
        np.arange(nx, dtype=np.float64),
        "none: no wavelength map, polynomial or simulator solution; wavelengths are column indices",
    )


# ---------------------------------------------------------------------------------------
# Preparing the stage (driver)


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
    from nirbeam.transforms.trace import TraceModel

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
    ny, nx = meta.image_shape
    trace = None
    if cfg.trace_coefficients:
        trace = TraceModel.from_config(cfg.trace_coefficients, 1.0, (0.0, nx - 1.0), scaled=False)
    model_or_reason = _build_model(sci, dq, cfg, trace, settings)
    if isinstance(model_or_reason, str):
        return model_or_reason
    model = model_or_reason
    wl = find_wavelengths(plan, cfg, model.trace, nx)
    model = ExtractionModel(**{**model.__dict__, "wavelength": wl})
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
        attrs={"wavelength_source": wl.source, "method": cfg.method},
    )
    if "wavelength" not in g:
        g.create_array("wavelength", data=wl.wavelength, dimension_names=("wavelength",),
                       attributes=zarr_store.cf_attrs("wavelength", {
                           "units": "um", "description": "wavelength", "source": wl.source}))
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
        read = {n: zarr_store.read_stack(self.root, g, RATEINTS, n, sel)
                for n in ("sci", "err", "dq", "var_poisson", "var_rnoise")}
        dq = read["dq"].copy()
        dq[~done[sel]] |= np.uint32(dqflags.DO_NOT_USE)  # not processed: never in a median
        if s.outliers.enabled:
            new_dq = flag_block(read["sci"], read["err"], dq, s.outliers.window, s.outliers.n_sigma)
        else:
            new_dq = dq
        dead = []
        n = block.stop - block.start + 1
        nx = model.profile.shape[1]
        spec = {k: np.zeros((n, nx), dt) for k, dt in SPECTRUM_ARRAYS.items()}
        ok = np.zeros(n, bool)
        for i in range(block.start, block.stop + 1):
            j = i - lo
            if not done[i - 1]:
                continue  # dead in detector1: already a dead letter
            try:
                out = extract_integration(
                    read["sci"][j], read["err"][j], new_dq[j], read["var_poisson"][j],
                    read["var_rnoise"][j], model, s.flicker,
                )
            except Exception as exc:  # noqa: BLE001 - becomes a dead letter
                dead.append(DeadLetter(IntegrationKey(block.exposure, block.detector, i),
                                       "extract", f"{type(exc).__name__}: {exc}"))
                continue
            for k, v in out.items():
                spec[k][i - block.start] = v
            ok[i - block.start] = True
        # one writer owns the block's chunks: write them whole, then the markers
        a, b = block.start - lo, block.stop - lo + 1
        zarr_store.write_block(self.root, g, CLEANED, block.start, {"dq": new_dq[a:b]}, ok)
        zarr_store.write_block(self.root, g, SPECTRA, block.start, spec, ok)
        return dead


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
        for start in range(1, n + 1, BLOCK):
            stop = min(n, start + BLOCK - 1)
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
    from nirbeam.transforms.lightcurve import edges_from_resolution, native_edges

    finite = wl[np.isfinite(wl)]
    if wl_source.startswith("none") and cfg.binning == "resolution":
        # no wavelength solution: "wavelengths" are column indices; bins of 16 columns
        return np.arange(finite.min() - 0.5, finite.max() + 16.5, 16.0)
    lo = cfg.wmin if cfg.wmin is not None else float(finite.min())
    hi = cfg.wmax if cfg.wmax is not None else float(np.nextafter(finite.max(), np.inf))
    if cfg.binning == "edges":
        return np.asarray(cfg.edges, float)
    if cfg.binning == "native":
        e = native_edges(wl)
        return e
    return edges_from_resolution(lo, hi, cfg.resolution)


def finalize_products(outdir: str, root: str, plans, settings) -> dict:
    """Write white-light and spectroscopic light curves, x1dints, fit and plots."""
    from nirbeam.sinks.fits_products import X1dTable, write_x1dints
    from nirbeam.sinks.tables import write_table
    from nirbeam.transforms.lightcurve import bin_spectra, white_light

    out: dict = {"exposures": {}}
    wl_rows: dict[str, list] = {}
    x1d_tables = []
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
        flux = np.where(done[:, None], S["flux"], np.nan)
        err = np.where(done[:, None], S["flux_error"], np.nan)
        cdq = np.where(done[:, None], S["dq"], dqflags.DO_NOT_USE).astype(np.uint32)
        cfg = settings.lightcurve
        # Columns are never dropped for a flagged pixel: the extraction already replaced
        # flagged pixels through the profile, and dropping a column in some integrations
        # only would add scatter. Only non-finite fluxes are skipped.
        wf, we, _ = white_light(flux, err, cdq, wl, cfg.wmin, cfg.wmax, skip_bits=0)
        good = done & np.isfinite(wf) & np.isfinite(we)
        wdq = np.where(good, 0, dqflags.DO_NOT_USE).astype(np.uint32)
        wdq[_rolling_outliers(wf, good)] |= np.uint32(dqflags.OUTLIER)
        finite = wl[np.isfinite(wl)]
        wrange = (float(cfg.wmin if cfg.wmin is not None else finite.min()),
                  float(cfg.wmax if cfg.wmax is not None else finite.max()))
        wl_rows[g] = [meta, num, bjd, mjd, wf, we, wdq, wrange]
        edges = _lightcurve_edges(cfg, wl, _wl_source(root, g))
        lc = bin_spectra(flux, err, cdq, wl, edges, skip_bits=0)
        sdq = np.where(np.isfinite(lc.flux), 0, dqflags.DO_NOT_USE).astype(np.uint32) | wdq[:, None]
        # zarr: time x wavelength light curves
        zarr_store.save_lightcurves(
            root, f"{g}/lightcurves", flux=lc.flux, flux_error=lc.error, dq=sdq,
            bin_edges=lc.edges, integration_number=num, int_mid_BJD_TDB=bjd, int_mid_MJD_UTC=mjd,
            white_flux=wf, white_flux_error=we, white_dq=wdq,
            attrs={"units": "DN/s", "wavelength_units": "um",
                   "wavelength_source": _wl_source(root, g)})
        # spectroscopic light curves: Parquet in long format (one row per integration and
        # bin, for pandas), ECSV in wide format (one row per integration, a vector of bins;
        # bin centres and edges in the meta): the same numbers, and the ECSV stays small
        # and quick to write for thousands of integrations.
        nb = lc.centers.size
        n = flux.shape[0]
        smeta = _table_meta(meta, wrange, root, g)
        lunits = {"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "wavelength": "um",
                  "bin_lo": "um", "bin_hi": "um", "flux": "DN/s", "flux_error": "DN/s"}
        if settings.products.parquet:
            write_table(
                fs.join(outdir, f"speclc_{g}"),
                {
                    "integration_number": np.repeat(num, nb),
                    "int_mid_BJD_TDB": np.repeat(bjd, nb),
                    "int_mid_MJD_UTC": np.repeat(mjd, nb),
                    "wavelength": np.tile(lc.centers, n),
                    "bin_lo": np.tile(lc.edges[:-1], n),
                    "bin_hi": np.tile(lc.edges[1:], n),
                    "flux": lc.flux.ravel(),
                    "flux_error": lc.error.ravel(),
                    "dq": sdq.ravel(),
                },
                smeta, units=lunits, parquet=True, ecsv=False,
            )
        write_table(
            fs.join(outdir, f"speclc_{g}"),
            {"integration_number": num, "int_mid_BJD_TDB": bjd, "int_mid_MJD_UTC": mjd,
             "flux": lc.flux, "flux_error": lc.error, "dq": sdq},
            {**smeta, "wavelength_um": lc.centers.tolist(), "bin_edges_um": lc.edges.tolist(),
             "layout": "one row per integration; flux/flux_error/dq are vectors over the "
                       "wavelength bins in meta wavelength_um (edges in bin_edges_um)"},
            units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s",
                   "flux_error": "DN/s"},
            parquet=False,
        )
        times = plan.int_times()
        x1d_tables.append(X1dTable(
            detector=meta.detector, header=meta.header_dict(), int_num=num,
            wavelength=wl, flux=flux, flux_error=err,
            flux_var_poisson=S["flux_var_poisson"], flux_var_rnoise=S["flux_var_rnoise"],
            dq=cdq, background=S["background"], npixels=S["npixels"], times=times,
        ))
        fits_done[g] = (meta, bjd, wf, we, wdq, lc, sdq)
        out["exposures"][g] = {
            "wavelength_source": _wl_source(root, g),
            "white_light_points": int(good.sum()),
            "white_light_flagged_outliers": int(((wdq & dqflags.OUTLIER) != 0).sum()),
            "nbins": int(nb),
        }
    if not wl_rows:
        return out
    # white light: one file, rows per integration, detectors kept apart (sorted)
    cols: dict[str, list] = {k: [] for k in (
        "exposure", "detector", "integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC",
        "flux", "flux_error", "dq")}
    metas = []
    for _g, (meta, num, bjd, mjd, wf, we, wdq, wrange) in sorted(wl_rows.items()):
        cols["exposure"].append(np.full(num.size, meta.exposure))
        cols["detector"].append(np.full(num.size, meta.detector))
        cols["integration_number"].append(num)
        cols["int_mid_BJD_TDB"].append(bjd)
        cols["int_mid_MJD_UTC"].append(mjd)
        cols["flux"].append(wf)
        cols["flux_error"].append(we)
        cols["dq"].append(wdq)
        metas.append((meta, wrange, _g))
    meta0, wrange0, g0 = metas[0]
    tmeta = _table_meta(meta0, wrange0, root, g0)
    tmeta["detectors"] = [m.detector for m, _, _ in metas]
    tmeta["wavelength_range_um"] = {m.detector: list(w) for m, w, _ in metas}
    write_table(
        fs.join(outdir, "whitelight"),
        {k: np.concatenate(v) for k, v in cols.items()},
        tmeta,
        units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s", "flux_error": "DN/s"},
        descriptions={"dq": "0 good; 1 DO_NOT_USE (no spectrum); 16 OUTLIER (>5 sigma from running median)"},
        parquet=settings.products.parquet,
    )
    if settings.products.rateints_fits:
        for plan in plans:
            _write_rateints_fits(outdir, root, plan)
    if settings.products.x1dints_fits and x1d_tables:
        write_x1dints(fs.join(outdir, "x1dints.fits"), x1d_tables)
    if settings.products.fit:
        out["fit"] = _fit_and_plot(outdir, root, fits_done, settings)
    elif settings.products.plots:
        _plots(outdir, root, fits_done, {}, settings)
    return out


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
    return {
        "instrument": "NIRSPEC", "exp_type": meta.exp_type, "exposure": meta.exposure,
        "detector": meta.detector, "subarray": meta.subarray, "filter": meta.filter,
        "grating": meta.grating, "target": meta.target, "readpatt": meta.readpatt,
        "number_of_integrations": meta.nints, "wavelength_range_um": list(wrange),
        "wavelength_source": _wl_source(root, g), "nirbeam_version": __version__,
        "flux_units": "DN/s",
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
                 "rms_ppm": res.rms_ppm, "reduced_chi2": res.reduced_chi2, "success": res.success}
        try:
            okb = use & np.all(np.isfinite(lc.flux), axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = fit_spectroscopic(bjd[okb], lc.flux[okb], lc.error[okb], lc.centers, res)
            write_json(fs.join(outdir, f"transmission_{g}.json"), {
                "wavelength_um": ts.wavelength.tolist(), "rp": ts.rp.tolist(),
                "rp_error": ts.rp_error.tolist(), "depth": ts.depth.tolist(),
                "depth_error": ts.depth_error.tolist(), "reduced_chi2": ts.reduced_chi2.tolist(),
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


def fit_command(table: str, config_path: str | None, out: str | None) -> int:
    """``nirbeam fit TABLE``: fit a light-curve table, write fit.json and a plot."""
    from nirbeam.sinks import plots
    from nirbeam.stream.config import build_dataclass, load_config_file
    from nirbeam.stream.uncal import BadInputError
    from nirbeam.transforms.transit import FitConfig, fit_table, write_fit_json

    if not os.path.isfile(table):
        raise BadInputError(table, "no such light-curve table")
    cfg = load_config_file(config_path)
    columns = cfg.pop("columns", None) if isinstance(cfg.get("columns"), dict) else None
    fit_cfg = build_dataclass(FitConfig, cfg.get("fit", {}), "config.fit")
    out = out or os.path.dirname(os.path.abspath(table))
    os.makedirs(out, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_table(table, fit_cfg, columns=columns)
    write_fit_json(res, os.path.join(out, "fit.json"))
    plots.plot_fit(res, os.path.join(out, "fit.png"))
    rp, drp = res.params.get("rp"), res.errors.get("rp")
    print(f"Rp/R* = {rp:.5f} +/- {drp:.5f}; residual RMS {res.rms_ppm:.0f} ppm; "
          f"chi2/dof {res.reduced_chi2:.3f}")
    print(f"wrote {os.path.join(out, 'fit.json')} and fit.png")
    return 0


def plot_command(outdir: str) -> int:
    """``nirbeam plot OUTDIR``: re-draw the plots from a finished run's products."""
    import json

    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import BadInputError, plan_exposures, scan_segment

    rj = fs.join(outdir, "run.json")
    if not fs.isfile(rj):
        raise BadInputError(outdir, "no run.json: not a nirbeam output folder")
    summary = json.loads(fs.read_text(rj))
    settings = Settings.from_dict(summary.get("config_input", {}))
    plans = plan_exposures([scan_segment(p) for p in summary["inputs"]])
    root = fs.join(outdir, "cubes.zarr")
    finalize_products(outdir, root, plans, settings)
    zarr_store.consolidate(root, {"nirbeam_version": __version__})
    print(f"plots in {fs.join(outdir, 'plots')}")
    return 0
