"""Live products of ``nirbeam stream``: per-integration white-light points and binned
spectra from a provisional extraction model, and the writers of ``OUTDIR/live/``.

No Beam here: :mod:`nirbeam.stream.streaming` calls these from its stateful DoFns.

* :func:`live_point_and_bins`: one integration -> a :class:`LivePoint` (batch's white-light
  rule) and its spectrum binned on the bin edges of batch's rule
  (:func:`product_tables.lightcurve_edges`), the same arithmetic as batch's ``bin_spectra``.
* :func:`build_live_model`: the extraction model from the first integrations (the batch
  builder on another sample; batch samples the whole exposure, which a stream cannot), kept
  in ``<group>/live_extraction`` (:func:`save_live_model`), never in place of batch's.
* :class:`LiveState` + :class:`LiveWriter`: the live tables (``whitelight.ecsv``/``.parquet``
  a row per integration with ``status`` ``provisional`` -- rateints DQ, no time-domain
  outlier flags yet -- then ``flagged``), ``speclc_<group>`` (wide ECSV, long Parquet),
  ``plots/whitelight_<group>.png`` and ``fit_<group>.json`` (quick-look fit, batch's
  configuration rule, once >= :data:`MIN_FIT_POINTS` good points), each rewritten
  atomically. A failing live fit or plot logs a warning and keeps the previous file.
  The tables are built by batch's builders (:mod:`nirbeam.stream.product_tables`:
  :func:`~nirbeam.stream.product_tables.whitelight_table`,
  :func:`~nirbeam.stream.product_tables.speclc_tables`); the writer only writes.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from nirbeam import __version__, dqflags
from nirbeam.core.records import IntegrationRecord
from nirbeam.sinks import fs, zarr_store  # fs: local path or fsspec URL
from nirbeam.stream.fit_products import quicklook_fit_config
from nirbeam.stream.product_tables import (
    lightcurve_edges,
    speclc_tables,
    table_meta,
    whitelight_table,
)
from nirbeam.stream.spectra_stage import extraction_model
from nirbeam.transforms.spectra import ExtractionModel, extract_integration

__all__ = ["LivePoint", "live_point", "live_point_and_bins", "build_live_model",
           "LiveModelFromStore", "save_live_model", "live_edges", "LiveState", "LiveWriter",
           "MIN_FIT_POINTS", "LIVE_EXTRACTION", "latency_stats"]

log = logging.getLogger("nirbeam")

LIVE_EXTRACTION = "live_extraction"
MIN_FIT_POINTS = 20  # good live white-light points before the first quick-look fit


@dataclass(frozen=True)
class LivePoint:
    """One white-light point of one integration (provisional or outlier-flagged)."""

    exposure: str
    detector: str
    integration: int
    int_mid_bjd_tdb: float
    int_mid_mjd_utc: float
    flux: float
    flux_error: float
    dq: int
    status: str  # "provisional" (rateints DQ) or "flagged" (with time-domain outlier flags)

    @property
    def group(self) -> str:
        """Store group name."""
        return f"{self.exposure}_{self.detector.lower()}"


def live_point(rec: IntegrationRecord, dq: np.ndarray, model: ExtractionModel, settings,
               status: str) -> LivePoint:
    """Extract one integration (batch kernel) and sum it to a white-light point.

    The white light uses the same rule as :func:`products.finalize_products` (all columns
    in the configured wavelength range, flagged pixels replaced through the profile,
    ``skip_bits=0``); the point's dq is DO_NOT_USE when it is not finite.
    """
    return live_point_and_bins(rec, dq, model, settings, status)[0]


def live_point_and_bins(rec: IntegrationRecord, dq: np.ndarray, model: ExtractionModel,
                        settings, status: str, edges: np.ndarray | None = None
                        ) -> tuple[LivePoint, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """:func:`live_point` plus the integration's spectrum binned on ``edges``.

    Returns
    -------
    point : LivePoint
    bins : (flux float64 (nbin,) DN/s, flux_error float64 (nbin,) DN/s, dq uint32 (nbin,))
        or None when ``edges`` is None. Bin dq: DO_NOT_USE where the bin flux is not
        finite, OR the point's dq (batch's rule).
    """
    from nirbeam.transforms.lightcurve import bin_spectrum, white_light_point

    out = extract_integration(rec.rate, rec.err, dq, rec.var_poisson, rec.var_rnoise, model,
                              settings.flicker)
    cfg = settings.lightcurve
    wl = model.wavelength.wavelength
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f, e, _ = white_light_point(out["flux"], out["flux_error"], out["dq"],
                                    wl, cfg.wmin, cfg.wmax, skip_bits=0)
        good = math.isfinite(f) and math.isfinite(e)
        pdq = 0 if good else dqflags.DO_NOT_USE
        bins = None
        if edges is not None:
            bf, be, _, _ = bin_spectrum(out["flux"], out["flux_error"], out["dq"], wl, edges,
                                        skip_bits=0)
            bdq = np.where(np.isfinite(bf), 0, dqflags.DO_NOT_USE).astype(np.uint32) | np.uint32(pdq)
            bins = (bf, be, bdq)
    k = rec.key
    return LivePoint(k.exposure, k.detector, k.integration, rec.times.int_mid_bjd_tdb,
                     rec.times.int_mid_mjd_utc, f, e, pdq, status), bins


def build_live_model(meta, rates: np.ndarray, dqs: np.ndarray, settings,
                     plan=None) -> ExtractionModel | str:
    """Extraction model from the first integrations (same builder as batch, other sample).

    Parameters
    ----------
    meta : ExposureMeta (or an ExposurePlan)
    rates : float32 (n, ny, nx), DN/s
    dqs : uint32 (n, ny, nx)
    plan : ExposurePlan, optional
        For the wavelength solution (:func:`products.find_wavelengths`).

    Returns the model, or the reason none could be built (e.g. no trace on NRS2).
    """
    meta = meta.meta if hasattr(meta, "meta") else meta
    return extraction_model(rates, dqs, meta, settings, plan)


_LIVE_MODELS: dict[tuple[str, str], ExtractionModel] = {}


@dataclass(frozen=True)
class LiveModelFromStore:
    """``group -> ExtractionModel`` read (once per process) from ``<group>/live_extraction``."""

    root: str

    def __call__(self, group: str) -> ExtractionModel:
        k = (self.root, group)
        m = _LIVE_MODELS.get(k)
        if m is None:
            arrays, attrs = zarr_store.load_arrays(self.root, f"{group}/{LIVE_EXTRACTION}")
            m = _LIVE_MODELS[k] = ExtractionModel.from_arrays(arrays, attrs)
        return m


def save_live_model(root: str, group: str, model: ExtractionModel, n: int) -> None:
    """Keep the live model next to (never in place of) batch's ``extraction`` group."""
    arrays, attrs = model.to_arrays()
    attrs["built_from"] = f"first {n} integrations (live, provisional)"
    zarr_store.save_arrays(root, f"{group}/{LIVE_EXTRACTION}", arrays, attrs)
    _LIVE_MODELS[(root, group)] = model


def live_edges(settings, model: ExtractionModel) -> np.ndarray:
    """Spectroscopic bin edges of the live model: batch's rule (``lightcurve_edges``).

    Raises ValueError when the rule gives fewer than two edges.
    """
    e = np.asarray(lightcurve_edges(settings.lightcurve, model.wavelength.wavelength,
                                     model.wavelength.source), float)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"{e.size} bin edges")
    return e


def latency_stats(v: list[float]) -> dict:
    """n, p50, p95, max of a list of latencies (s)."""
    if not v:
        return {"n": 0}
    a = np.asarray(v)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 4),
            "p95": round(float(np.percentile(a, 95)), 4), "max": round(float(a.max()), 4)}


@dataclass
class LiveState:
    """Everything the live products are written from (picklable: Beam keyed state)."""

    points: dict = field(default_factory=dict)     # (group, integration) -> LivePoint
    bins: dict = field(default_factory=dict)       # (group, integration) -> (flux, err, dq)
    groups: dict = field(default_factory=dict)     # group -> {"meta", "edges", "wl_source", "wl"}
    available: dict = field(default_factory=dict)  # (group, integration) -> arrival wall time
    dirty: list = field(default_factory=list)      # ((group, integration), status) not written
    latency: dict = field(default_factory=lambda: {"provisional": [], "flagged": []})
    latency_steady: dict = field(default_factory=lambda: {"provisional": [], "flagged": []})
    written: dict = field(default_factory=dict)    # (group, integration, status) -> first write
    fit_sig: dict = field(default_factory=dict)    # group -> (points, flagged) last fitted
    counts: dict = field(default_factory=lambda: {"live_points": 0, "table_writes": 0,
                                                   "plots": 0, "fits": 0, "fit_failures": 0})
    last_plot: float = 0.0

    def add(self, p: LivePoint, bins=None) -> None:
        """A new (or newer-status) point of an integration."""
        k = (p.group, p.integration)
        self.points[k] = p
        if bins is not None:
            self.bins[k] = bins
        self.dirty.append((k, p.status))
        self.counts["live_points"] += 1


class LiveWriter:
    """Writes ``OUTDIR/live/`` from a :class:`LiveState` (see the module notes).

    Parameters
    ----------
    outdir : str
    settings : Settings
    plot_every : float
        Seconds between live plot and quick-look fit refreshes (0: never).
    live_model_nints : int
        Integrations the live model is built from (latency after it is kept apart).
    """

    def __init__(self, outdir: str, settings, plot_every: float = 30.0, live_model_nints: int = 8):
        self.outdir = outdir
        self.root = fs.join(outdir, "cubes.zarr")
        self.live_dir = fs.join(outdir, "live")
        self.settings = settings
        self.plot_every = float(plot_every)
        self.live_model_nints = int(live_model_nints)

    def flush(self, st: LiveState, force: bool = False) -> None:
        """Write the tables if points are waiting; plot and fit at the plot cadence."""
        if st.dirty:
            self.write_tables(st)
        now = time.time()
        if self.plot_every > 0 and st.points and (force or now - st.last_plot >= self.plot_every):
            st.last_plot = now
            self.write_plots(st)
            self.write_fits(st)

    def write_tables(self, st: LiveState) -> None:
        """Rewrite ``live/whitelight`` and the changed groups' ``live/speclc_<group>``."""
        from nirbeam.sinks.tables import write_table

        fs.makedirs(self.live_dir)
        pts = sorted(st.points.values(), key=lambda p: (p.exposure, p.detector, p.integration))
        meta = {"provisional": True, "nirbeam_version": __version__, "flux_units": "DN/s",
                "note": "live light curve: extraction model from the first integrations; "
                        "status 'provisional' has no time-domain outlier flags yet. The "
                        "final products are OUTDIR/whitelight.ecsv once the exposure completes.",
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        spec = whitelight_table(
            [p.exposure for p in pts], [p.detector for p in pts],
            np.array([p.integration for p in pts], np.int64),
            np.array([p.int_mid_bjd_tdb for p in pts]), np.array([p.int_mid_mjd_utc for p in pts]),
            np.array([p.flux for p in pts]), np.array([p.flux_error for p in pts]),
            np.array([p.dq for p in pts], np.uint32), meta, status=[p.status for p in pts])
        write_table(fs.join(self.live_dir, "whitelight"), **spec.kwargs(),
                    parquet=self.settings.products.parquet)
        for gname in sorted({k[0] for k, _ in st.dirty}):
            try:
                self.write_speclc(st, gname)
            except Exception as exc:  # noqa: BLE001 - a live product must not stop the stream
                log.warning("live spectroscopic light curves of %s failed: %s", gname, exc)
        now = time.time()
        for k, status in st.dirty:
            st.written.setdefault((*k, status), now)
            a = st.available.get(k)
            if a is not None:
                st.latency[status].append(now - a)
                if k[1] > self.live_model_nints:  # steady state: the live model exists
                    st.latency_steady[status].append(now - a)
        st.dirty = []
        st.counts["table_writes"] += 1

    def write_speclc(self, st: LiveState, gname: str) -> list[str]:
        """Rewrite ``live/speclc_<group>.ecsv`` (wide) and ``.parquet`` (long) atomically.

        Same layout as batch's ``speclc_<group>``: ECSV one row per integration with vector
        columns over the bins (centres and edges in the meta), Parquet one row per
        integration and bin; the integrations with a live point, latest status.
        """
        from nirbeam.sinks.tables import write_table

        g = st.groups.get(gname)
        if g is None or g.get("edges") is None:
            return []
        keys = sorted((k for k in st.bins if k[0] == gname), key=lambda k: k[1])
        if not keys:
            return []
        pts = [st.points[k] for k in keys]
        flux = np.stack([st.bins[k][0] for k in keys])
        err = np.stack([st.bins[k][1] for k in keys])
        sdq = np.stack([st.bins[k][2] for k in keys]).astype(np.uint32)
        num = np.array([k[1] for k in keys], np.int64)
        bjd = np.array([p.int_mid_bjd_tdb for p in pts])
        mjd = np.array([p.int_mid_mjd_utc for p in pts])
        cfg = self.settings.lightcurve
        wl = g["wl"]
        finite = wl[np.isfinite(wl)]
        wrange = (float(cfg.wmin if cfg.wmin is not None else finite.min()),
                  float(cfg.wmax if cfg.wmax is not None else finite.max()))
        smeta = {**table_meta(g["meta"], wrange, g["wl_source"]),
                 "provisional": True,
                 "note": "live spectroscopic light curves: extraction model from the first "
                         "integrations; status 'provisional' has no time-domain outlier "
                         "flags yet. Final products: OUTDIR/speclc_<group> once the "
                         "exposure completes.",
                 "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        long, wide = speclc_tables(num, bjd, mjd, g["edges"], flux, err, sdq, smeta,
                                   g["wl_source"], status=[p.status for p in pts])
        stem = fs.join(self.live_dir, f"speclc_{gname}")
        written = []
        if self.settings.products.parquet:
            written += write_table(stem, **long.kwargs(), parquet=True, ecsv=False)
        written += write_table(stem, **wide.kwargs(), parquet=False)
        return written

    def write_fits(self, st: LiveState) -> dict[str, str]:
        """Quick-look white-light transit fit per group -> ``live/fit_<group>.json``.

        Refit only when the group's live points changed since the last fit and at least
        :data:`MIN_FIT_POINTS` of them are good (dq 0, finite, error > 0). Configuration as
        batch's (:func:`fit_products.quicklook_fit_config`). A failing fit logs a warning and
        keeps the previous file. Returns ``group -> outcome``.
        """
        from nirbeam.sinks.fit_json import write_fit_json
        from nirbeam.transforms.transit import fit_transit

        out = {}
        for gname in sorted({k[0] for k in st.points}):
            pts = sorted((p for p in st.points.values() if p.group == gname),
                         key=lambda p: p.integration)
            sig = (len(pts), sum(p.status == "flagged" for p in pts))
            if st.fit_sig.get(gname) == sig:
                continue
            t = np.array([p.int_mid_bjd_tdb for p in pts])
            f = np.array([p.flux for p in pts])
            e = np.array([p.flux_error for p in pts])
            dq = np.array([p.dq for p in pts], np.uint32)
            use = (dq == 0) & np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(t)
            if use.sum() < MIN_FIT_POINTS:
                out[gname] = f"{int(use.sum())} good points: no fit yet"
                continue
            st.fit_sig[gname] = sig
            try:
                cfg = quicklook_fit_config(self.settings.fit, t[use], f[use])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = fit_transit(t[use], f[use], e[use], cfg)
                with fs.atomic_path(fs.join(self.live_dir, f"fit_{gname}.json")) as tmp:
                    write_fit_json(res, tmp)
            except Exception as exc:  # noqa: BLE001 - a quick look must not stop the stream
                log.warning("live fit of %s failed (previous fit file kept): %s: %s",
                            gname, type(exc).__name__, exc)
                st.counts["fit_failures"] += 1
                out[gname] = f"failed: {type(exc).__name__}: {exc}"
                continue
            st.counts["fits"] += 1
            out[gname] = "written"
        return out

    def write_plots(self, st: LiveState) -> None:
        """Redraw ``live/plots/whitelight_<group>.png``."""
        from nirbeam.sinks import plots

        for gname in sorted({k[0] for k in st.points}):
            pts = sorted((p for p in st.points.values() if p.group == gname),
                         key=lambda p: p.integration)
            if len(pts) < 2:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plots.plot_white_light(
                        np.array([p.int_mid_bjd_tdb for p in pts]), np.array([p.flux for p in pts]),
                        fs.join(self.live_dir, "plots", f"whitelight_{gname}.png"),
                        error=np.array([p.flux_error for p in pts]),
                        dq=np.array([p.dq for p in pts], np.uint32),
                        title=f"Live white light (provisional) {gname}")
                st.counts["plots"] += 1
            except Exception as exc:  # noqa: BLE001 - a plot must not stop the stream
                log.warning("live plot failed: %s", exc)
