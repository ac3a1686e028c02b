"""The product builders: pure functions from arrays (read from the store, or held by the
live state) to the tables nirbeam writes. Batch finalisation
(:func:`nirbeam.stream.products.finalize_products`) and the live writers
(:class:`nirbeam.stream.live.LiveWriter`) both call them; the writers only write
(:func:`nirbeam.sinks.tables.write_table`).

- :func:`white_light_series`: a group's spectra -> white-light flux, error, dq (OUTLIER from
  the running median), the spectral range used.
- :func:`lightcurve_edges`: spectroscopic bin edges by the ``[lightcurve]`` rule.
- :func:`whitelight_table`: nirbeam's ``whitelight`` table (one row per integration and
  detector), batch's and live's (live adds ``status``, batch the trace columns).
- :func:`whtlt_tables`: calwebb_tso3's ``<exposure>_whtlt.ecsv`` (per-detector columns).
- :func:`speclc_tables`: ``speclc_<group>`` in long (Parquet) and wide (ECSV) layouts.
- :func:`table_meta`, :func:`spectral_axis_words`: the metadata every table carries.

Nothing here opens a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nirbeam import __version__, dqflags
from nirbeam.stream.wavelengths import axis_units, is_pixel_axis
from nirbeam.transforms.timeseries_flags import rolling_outliers

__all__ = ["TableSpec", "spectral_axis_words", "table_meta", "lightcurve_edges",
           "WhiteLight", "white_light_series", "whitelight_table", "whtlt_tables",
           "speclc_tables", "rolling_outliers"]

TIME_UNITS = {"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d"}


@dataclass(frozen=True)
class TableSpec:
    """A table to write: ``write_table(stem, **spec.kwargs())``."""

    columns: dict
    meta: dict
    units: dict = field(default_factory=dict)
    descriptions: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`nirbeam.sinks.tables.write_table`."""
        return {"columns": self.columns, "meta": self.meta, "units": self.units,
                "descriptions": self.descriptions}


def spectral_axis_words(source: str) -> str:
    """The spectral axis in plain words, for every product's metadata and run.json."""
    if is_pixel_axis(source):
        return ("pixel: NO wavelength solution was given, so the spectral axis is the 0-based "
                "detector column of the subarray; no value in these products is a wavelength. "
                "Give [extract] wavelength_map (jwst calints/x1dints or a wavelength-map FITS "
                "file) or wavelength_coefficients to get wavelengths in um.")
    return f"wavelength in um, from {source}"


def table_meta(meta, wrange, source: str) -> dict:
    """Metadata of a group's tables: the exposure's keywords, the spectral range, the
    wavelength source (``source``: the extraction model's)."""
    range_key = "column_range_pixel" if is_pixel_axis(source) else "wavelength_range_um"
    return {
        "instrument": "NIRSPEC", "exp_type": meta.exp_type, "exposure": meta.exposure,
        "detector": meta.detector, "subarray": meta.subarray, "filter": meta.filter,
        "grating": meta.grating, "target": meta.target, "readpatt": meta.readpatt,
        "number_of_integrations": meta.nints, range_key: list(wrange),
        "wavelength_source": source, "spectral_axis": spectral_axis_words(source),
        "nirbeam_version": __version__, "flux_units": "DN/s",
    }


def lightcurve_edges(cfg, wl: np.ndarray, wl_source: str = "") -> np.ndarray:
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


@dataclass(frozen=True)
class WhiteLight:
    """A group's spectra, masked, and its white light (see :func:`white_light_series`).

    flux, err : float64 (nints, nx), DN/s, NaN where no spectrum
    cdq : uint32 (nints, nx), DO_NOT_USE where no spectrum
    wf, we : float64 (nints,), DN/s
    wdq : uint32 (nints,): 0, DO_NOT_USE, OUTLIER
    good : bool (nints,)
    wrange : (lo, hi) of the spectral axis used (µm or pixels)
    """

    flux: np.ndarray
    err: np.ndarray
    cdq: np.ndarray
    wf: np.ndarray
    we: np.ndarray
    wdq: np.ndarray
    good: np.ndarray
    wrange: tuple[float, float]


def white_light_series(done: np.ndarray, spectra: dict, wl: np.ndarray, source: str,
                       cfg) -> WhiteLight:
    """White light of one group from its spectra stage (batch's rule).

    Columns are never dropped for a flagged pixel: the extraction already replaced flagged
    pixels through the profile, and dropping a column in some integrations only would add
    scatter; only non-finite fluxes are skipped. Points more than 5 sigma (robust) from
    the running median of 25 are flagged OUTLIER.

    Parameters
    ----------
    done : bool (nints,), spectra completion markers
    spectra : ``{"flux", "flux_error", "dq"}`` arrays (nints, nx)
    wl : float (nx,), spectral axis
    source : str, wavelength source (a pixel axis ignores ``wmin``/``wmax``)
    cfg : LightCurveConfig
    """
    from nirbeam.transforms.lightcurve import white_light

    pixel = is_pixel_axis(source)
    if done.all():  # the same arrays np.where would copy (no float64 copies of the cube)
        flux, err = spectra["flux"], spectra["flux_error"]
        cdq = np.asarray(spectra["dq"]).astype(np.uint32, copy=False)
    else:
        flux = np.where(done[:, None], spectra["flux"], np.nan)
        err = np.where(done[:, None], spectra["flux_error"], np.nan)
        cdq = np.where(done[:, None], spectra["dq"], dqflags.DO_NOT_USE).astype(np.uint32)
    wmin = None if pixel else cfg.wmin
    wmax = None if pixel else cfg.wmax
    wf, we, _ = white_light(flux, err, cdq, wl, wmin, wmax, skip_bits=0)
    good = done & np.isfinite(wf) & np.isfinite(we)
    wdq = np.where(good, 0, dqflags.DO_NOT_USE).astype(np.uint32)
    wdq[rolling_outliers(wf, good)] |= np.uint32(dqflags.OUTLIER)
    finite = wl[np.isfinite(wl)]
    wrange = (float(wmin if wmin is not None else finite.min()),
              float(wmax if wmax is not None else finite.max()))
    return WhiteLight(flux, err, cdq, wf, we, wdq, good, wrange)


WHITELIGHT_UNITS = {**TIME_UNITS, "flux": "DN/s", "flux_error": "DN/s"}


def whitelight_table(exposure, detector, num, bjd, mjd, flux, err, dq, meta: dict, *,
                     trace: dict | None = None, status=None) -> TableSpec:
    """nirbeam's ``whitelight`` table: one row per integration and detector.

    Arrays of equal length (rows already in order); ``trace``: ``{"centroid_y", "width"}``
    per row (batch); ``status``: ``provisional``/``flagged`` per row (live).
    """
    cols = {"exposure": exposure, "detector": detector, "integration_number": num,
            "int_mid_BJD_TDB": bjd, "int_mid_MJD_UTC": mjd, "flux": flux, "flux_error": err,
            "dq": dq}
    units = dict(WHITELIGHT_UNITS)
    desc = {}
    if trace is not None:
        cols["trace_centroid_y"] = trace["centroid_y"]
        cols["trace_width"] = trace["width"]
        units.update({"trace_centroid_y": "pix", "trace_width": "pix"})
        desc = {"dq": "0 good; 1 DO_NOT_USE (no spectrum); 16 OUTLIER (>5 sigma from running median)",
                "trace_centroid_y": "trace row (0-based, subarray) of this integration",
                "trace_width": "standard deviation of the cross-dispersion profile"}
    if status is not None:
        cols["status"] = status
    return TableSpec(cols, meta, units, desc)


def batch_whitelight_table(rows: dict) -> TableSpec:
    """:func:`whitelight_table` of a batch run: ``rows`` is ``group -> (meta, num, bjd, mjd,
    wf, we, wdq, wrange, diag, source)``, concatenated in group order; the metadata names
    every detector and exposure and each one's spectral axis."""
    cols: dict[str, list] = {k: [] for k in (
        "exposure", "detector", "num", "bjd", "mjd", "wf", "we", "wdq", "cy", "w")}
    metas = []
    for g, (meta, num, bjd, mjd, wf, we, wdq, wrange, diag, source) in sorted(rows.items()):
        for k, v in (("exposure", np.full(num.size, meta.exposure)),
                     ("detector", np.full(num.size, meta.detector)), ("num", num),
                     ("bjd", bjd), ("mjd", mjd), ("wf", wf), ("we", we), ("wdq", wdq),
                     ("cy", diag["centroid_y"]), ("w", diag["width"])):
            cols[k].append(v)
        metas.append((meta, wrange, g, source))
    meta0, wrange0, _g0, source0 = metas[0]
    tmeta = table_meta(meta0, wrange0, source0)
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
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return whitelight_table(c["exposure"], c["detector"], c["num"], c["bjd"], c["mjd"],
                            c["wf"], c["we"], c["wdq"], tmeta,
                            trace={"centroid_y": c["cy"], "width": c["w"]})


def whtlt_tables(rows: dict) -> dict:
    """calwebb_tso3's ``<exposure>_whtlt.ecsv``: per-detector columns, one per exposure.

    ``rows`` as :func:`batch_whitelight_table`'s. Columns ``MJD_UTC_<det>``,
    ``BJD_TDB_<det>``, ``whitelight_flux_<det>`` (as jwst's white_light step for
    NRS_BRIGHTOBJ), plus nirbeam's ``whitelight_flux_error_<det>`` and ``dq_<det>``; flux in
    DN/s (jwst's is in the x1dints FLUX unit). Flagged integrations keep their row (``dq``
    says why); never-processed ones are NaN. Returns ``file name -> astropy QTable``.
    """
    from astropy.table import QTable

    by_exp: dict[str, list] = {}
    for g, row in sorted(rows.items()):
        by_exp.setdefault(row[0].exposure, []).append((g, row))
    out = {}
    for exposure, erows in sorted(by_exp.items()):
        meta0 = erows[0][1][0]
        t = QTable(meta={
            "instrument": "NIRSPEC",
            "detector": (erows[0][1][0].detector if len(erows) == 1
                         else [r[0].detector for _, r in erows]),
            "exp_type": meta0.exp_type, "subarray": meta0.subarray, "filter": meta0.filter,
            "grating": meta0.grating, "pupil": None, "target_name": meta0.target,
            "number_of_integrations": int(meta0.nints),
            "flux_units": "DN/s",
            "spectral_axis": {r[0].detector: spectral_axis_words(r[9]) for _, r in erows},
            "origin": f"nirbeam {__version__}",
        })
        n = max(int(r[0].nints) for _, r in erows)
        for _, (meta, num, bjd, mjd, wf, we, wdq, *_rest) in erows:
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
        out[f"{exposure}_whtlt.ecsv"] = t
    return out


def speclc_tables(num, bjd, mjd, edges, flux, err, sdq, smeta: dict, source: str, *,
                  trace: dict | None = None, status=None) -> tuple[TableSpec, TableSpec]:
    """``speclc_<group>``: (long, wide).

    Long (Parquet, for pandas): one row per integration and bin, the bin's centre
    (``wavelength``, or ``column`` on a pixel axis), ``bin_lo``, ``bin_hi``. Wide (ECSV): one
    row per integration, ``flux``/``flux_error``/``dq`` vectors over the bins, centres and
    edges in the metadata. ``trace`` (batch) and ``status`` (live) as
    :func:`whitelight_table`'s.

    Parameters
    ----------
    num, bjd, mjd : (n,)
    edges : float (nbin + 1,), µm or pixels
    flux, err : float64 (n, nbin), DN/s
    sdq : uint32 (n, nbin)
    """
    edges = np.asarray(edges)
    centers = 0.5 * (edges[:-1] + edges[1:])
    pixel = is_pixel_axis(source)
    au = axis_units(source)
    nb, n = centers.size, flux.shape[0]
    axis = "column" if pixel else "wavelength"
    lcols = {"integration_number": np.repeat(num, nb), "int_mid_BJD_TDB": np.repeat(bjd, nb),
             "int_mid_MJD_UTC": np.repeat(mjd, nb), axis: np.tile(centers, n),
             "bin_lo": np.tile(edges[:-1], n), "bin_hi": np.tile(edges[1:], n),
             "flux": flux.ravel(), "flux_error": err.ravel(), "dq": sdq.ravel()}
    lunits = {**TIME_UNITS, axis: au, "bin_lo": au, "bin_hi": au, "flux": "DN/s",
              "flux_error": "DN/s"}
    wcols = {"integration_number": num, "int_mid_BJD_TDB": bjd, "int_mid_MJD_UTC": mjd,
             "flux": flux, "flux_error": err, "dq": sdq}
    wunits = {**TIME_UNITS, "flux": "DN/s", "flux_error": "DN/s"}
    if trace is not None:
        lcols["trace_centroid_y"] = np.repeat(trace["centroid_y"], nb)
        lcols["trace_width"] = np.repeat(trace["width"], nb)
        wcols["trace_centroid_y"] = trace["centroid_y"]
        wcols["trace_width"] = trace["width"]
        for u in (lunits, wunits):
            u.update({"trace_centroid_y": "pix", "trace_width": "pix"})
    if status is not None:
        lcols["status"] = np.repeat(np.asarray(status), nb)
        wcols["status"] = status
    centers_key, edges_key = (("bin_centers_pixel", "bin_edges_pixel") if pixel
                              else ("wavelength_um", "bin_edges_um"))
    wmeta = {**smeta, centers_key: centers.tolist(), edges_key: edges.tolist(),
             "layout": "one row per integration; flux/flux_error/dq are vectors over the "
                       f"bins in meta {centers_key} (edges in {edges_key})"}
    return TableSpec(lcols, smeta, lunits), TableSpec(wcols, wmeta, wunits)
