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
  outlier flags yet -- then ``flagged``), ``speclc_<group>`` (wide ECSV; long Parquet as a
  folder of blocks of :data:`PARQUET_BLOCK` integrations, read by ``pandas.read_parquet``),
  ``plots/whitelight_<group>.png`` and ``fit_<group>.json`` (quick-look fit, batch's
  configuration rule, once >= :data:`MIN_FIT_POINTS` good points), each rewritten
  atomically; an update formats only the rows it changed (its cost does not grow with the
  exposure). A failing live fit or plot logs a warning and keeps the previous file.
  The tables are built by batch's builders (:mod:`nirbeam.stream.product_tables`:
  :func:`~nirbeam.stream.product_tables.whitelight_table`,
  :func:`~nirbeam.stream.product_tables.speclc_tables`); the writer only writes.
"""

from __future__ import annotations

import io
import logging
import math
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace

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
           "MIN_FIT_POINTS", "LIVE_EXTRACTION", "PARQUET_BLOCK", "latency_stats",
           "WARM_UP_MODULES", "warm_up_live_products"]

log = logging.getLogger("nirbeam")

LIVE_EXTRACTION = "live_extraction"
MIN_FIT_POINTS = 20  # good live white-light points before the first quick-look fit
PARQUET_BLOCK = 64  # integrations per file of a live speclc Parquet folder


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


def ecsv_rows(spec) -> tuple[str, list[str]]:
    """``(header, rows)`` of the ECSV astropy writes for ``spec`` (a TableSpec): the header
    (comment lines and the column-name line) and one text line per row, newline included.

    Each ECSV row is formatted from its own values only (no column widths), so a table's
    file is any header of the same columns and meta followed by its rows' lines.
    """
    from nirbeam.sinks.tables import astropy_table

    buf = io.StringIO()
    astropy_table(**spec.kwargs()).write(buf, format="ascii.ecsv")
    text = buf.getvalue()
    lines = [ln + "\n" for ln in text.split("\n")[:-1]]
    h = next(i for i, ln in enumerate(lines) if not ln.startswith("#")) + 1
    rows = lines[h:]
    n = len(next(iter(spec.columns.values())))
    if len(rows) != n or "".join(lines) != text:
        raise ValueError(f"ECSV of {n} rows came out as {len(rows)} lines")
    return "".join(lines[:h]), rows


_WRITTEN = "1970-01-01T00:00:00Z"  # stands for the "written" time in a cached ECSV header


class _EcsvRows:
    """One live ECSV table kept as formatted rows: each update formats (with astropy) only
    the rows that are new or changed, and writes the file (atomically) as the header
    followed by every row's line.

    The rows are formatted without the table's meta (a row's line does not depend on it);
    the header (its YAML, with the bin centres and edges, costs more than the rows) is
    formatted once per column layout and meta, with :data:`_WRITTEN` standing for the
    meta's ``written`` time, which is put in its place on each write.
    """

    def __init__(self):
        self.lines: dict = {}  # key -> the row's ECSV line
        self.header: tuple = (None, "")  # ((column layout, meta without "written"), header)

    def write(self, path: str, keys: list, dirty: set, spec_of) -> None:
        """``keys``: every row, in file order; ``spec_of(keys)``: the TableSpec of rows."""
        todo = [k for k in keys if k in dirty or k not in self.lines]
        if not todo:  # the layout comes from formatted rows; any row has the same
            todo = keys[:1]
        spec = spec_of(todo)
        layout, rows = ecsv_rows(replace(spec, meta={}))
        self.lines.update(zip(todo, rows, strict=True))
        meta = dict(spec.meta)
        written = meta.pop("written", None)
        sig = (layout, repr(sorted(meta.items())))
        if self.header[0] != sig:
            if written is not None:
                meta["written"] = _WRITTEN
            self.header = (sig, ecsv_rows(replace(spec, meta=meta))[0])
        header = self.header[1]
        if written is not None:
            header = header.replace(_WRITTEN, str(written))
        fs.write_text(path, header + "".join(self.lines[k] for k in keys))


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
    parquet_blocks: dict = field(default_factory=dict)  # group -> live Parquet blocks written
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # the writer's row cache key

    def __getstate__(self) -> dict:
        """Pickled with each group's bins as three stacked arrays: Beam encodes this state
        on every write, and pickling one small array per integration and column grew with
        the exposure (measured: 11 ms at 465 integrations, ~0.6 ms packed)."""
        d = dict(self.__dict__)
        packed, loose = {}, {}
        by_group: dict = {}
        for k in self.bins:
            by_group.setdefault(k[0], []).append(k)
        for gname, keys in by_group.items():
            try:
                packed[gname] = (keys, *(np.stack([self.bins[k][j] for k in keys])
                                         for j in range(3)))
            except ValueError:  # rows of unequal shapes: kept as they are
                loose.update((k, self.bins[k]) for k in keys)
        d["bins"] = {"packed": packed, "loose": loose}
        return d

    def __setstate__(self, d: dict) -> None:
        b = d.get("bins", {})
        if isinstance(b, dict) and set(b) == {"packed", "loose"}:
            bins = dict(b["loose"])
            for keys, f, e, q in b["packed"].values():
                bins.update((k, (f[i], e[i], q[i])) for i, k in enumerate(keys))
            d = {**d, "bins": bins}
        self.__dict__.update(d)

    def add(self, p: LivePoint, bins=None) -> None:
        """A new (or newer-status) point of an integration."""
        k = (p.group, p.integration)
        self.points[k] = p
        if bins is not None:
            self.bins[k] = bins
        self.dirty.append((k, p.status))
        self.counts["live_points"] += 1


#: What the first live plot and fit import (matplotlib's figure and Agg canvas, scipy's
#: least squares, batman): ~1.2 CPU-s, 3.6 s wall at load 13 measured (session 7), paid by
#: the first flush after the live model, so the integrations arriving meanwhile (9-18 of
#: the 1x PRISM stream) waited for it and set the p95 latency.
WARM_UP_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "scipy.optimize",
                   "batman")


def warm_up_live_products(plot_every: float) -> list[str]:
    """Import :data:`WARM_UP_MODULES` now (the stream calls it on a thread as it starts,
    before any integration has arrived) when live plots and fits are on (``plot_every >
    0``). Returns the modules imported; one that is not installed is skipped (the plot or
    fit reports it, as before)."""
    import importlib

    done = []
    if plot_every <= 0:
        return done
    for m in WARM_UP_MODULES:
        try:
            importlib.import_module(m)
        except ImportError:
            continue
        done.append(m)
    return done


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
        self._rows: dict = {}

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
        """Rewrite ``live/whitelight`` and the changed groups' ``live/speclc_<group>``.

        The cost of an update does not grow with the table: the ECSV rows are formatted
        by astropy only when new or changed (:class:`_EcsvRows`; the file is the cached
        rows behind a fresh header, byte for byte what astropy writes for the whole
        table), the speclc Parquet is a folder of blocks of :data:`PARQUET_BLOCK`
        integrations of which only the changed ones are rewritten. ``whitelight.parquet``
        (one row per integration) is rewritten whole.
        """
        from nirbeam.sinks.tables import write_table

        if st.counts["table_writes"] == 0:
            # this state's first write: another run's live products (other inputs, other
            # groups, other settings) must not stay next to this run's
            fs.rmtree(self.live_dir)
        fs.makedirs(self.live_dir)
        cache = self._cache(st)
        dirty = {k for k, _ in st.dirty}
        keys = sorted(st.points, key=lambda k: (st.points[k].exposure, st.points[k].detector,
                                                k[1]))
        meta = {"provisional": True, "nirbeam_version": __version__, "flux_units": "DN/s",
                "note": "live light curve: extraction model from the first integrations; "
                        "status 'provisional' has no time-domain outlier flags yet. The "
                        "final products are OUTDIR/whitelight.ecsv once the exposure completes.",
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        def spec_of(ks):
            pts = [st.points[k] for k in ks]
            return whitelight_table(
                [p.exposure for p in pts], [p.detector for p in pts],
                np.array([p.integration for p in pts], np.int64),
                np.array([p.int_mid_bjd_tdb for p in pts]),
                np.array([p.int_mid_mjd_utc for p in pts]),
                np.array([p.flux for p in pts]), np.array([p.flux_error for p in pts]),
                np.array([p.dq for p in pts], np.uint32), meta, status=[p.status for p in pts])

        stem = fs.join(self.live_dir, "whitelight")
        cache.setdefault("whitelight", _EcsvRows()).write(stem + ".ecsv", keys, dirty, spec_of)
        if self.settings.products.parquet:
            write_table(stem, **spec_of(keys).kwargs(), parquet=True, ecsv=False)
        for gname in sorted({k[0] for k in dirty}):
            try:
                self.write_speclc(st, gname, dirty)
            except Exception as exc:  # noqa: BLE001 - a live product must not stop the stream
                log.warning("live spectroscopic light curves of %s failed: %s", gname, exc)
                cache.pop(f"speclc_{gname}", None)  # every row formatted again next time
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

    def _cache(self, st: LiveState) -> dict:
        """This writer's formatted rows of ``st`` (dropped when it is another state)."""
        uid = getattr(st, "uid", None)
        if uid is None or self._rows.get("uid") != uid:
            self._rows = {"uid": uid}
        return self._rows

    def write_speclc(self, st: LiveState, gname: str, dirty=None) -> list[str]:
        """Rewrite ``live/speclc_<group>.ecsv`` (wide) and the changed blocks of
        ``live/speclc_<group>.parquet/`` (long) atomically.

        Same layout as batch's ``speclc_<group>``: ECSV one row per integration with vector
        columns over the bins (centres and edges in the meta), Parquet one row per
        integration and bin; the integrations with a live point, latest status. The live
        Parquet is a folder (a Parquet dataset: ``pandas.read_parquet(folder)`` reads the
        rows in integration order) of ``ints-<first>-<last>.parquet`` files, integrations
        ``b*PARQUET_BLOCK + 1 .. (b+1)*PARQUET_BLOCK``; ``dirty``: the keys changed since
        the last write (None: all).
        """
        from nirbeam.sinks.tables import write_table

        g = st.groups.get(gname)
        if g is None or g.get("edges") is None:
            return []
        keys = sorted((k for k in st.bins if k[0] == gname), key=lambda k: k[1])
        if not keys:
            return []
        dirty = set(keys) if dirty is None else dirty
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

        def specs(ks):
            pts = [st.points[k] for k in ks]
            return speclc_tables(
                np.array([k[1] for k in ks], np.int64),
                np.array([p.int_mid_bjd_tdb for p in pts]),
                np.array([p.int_mid_mjd_utc for p in pts]), g["edges"],
                np.stack([st.bins[k][0] for k in ks]), np.stack([st.bins[k][1] for k in ks]),
                np.stack([st.bins[k][2] for k in ks]).astype(np.uint32), smeta,
                g["wl_source"], status=[p.status for p in pts])

        stem = fs.join(self.live_dir, f"speclc_{gname}")
        cache = self._cache(st)
        rows = cache.setdefault(f"speclc_{gname}", _EcsvRows())
        fresh = not rows.lines
        rows.write(stem + ".ecsv", keys, dirty, lambda ks: specs(ks)[1])
        written = [stem + ".ecsv"]
        if self.settings.products.parquet:
            folder = stem + ".parquet"
            blocks = st.parquet_blocks.setdefault(gname, set())
            todo = {(k[1] - 1) // PARQUET_BLOCK for k in keys
                    if fresh or k in dirty or (k[1] - 1) // PARQUET_BLOCK not in blocks}
            for b in sorted(todo):
                lo, hi = b * PARQUET_BLOCK + 1, (b + 1) * PARQUET_BLOCK
                bkeys = [k for k in keys if lo <= k[1] <= hi]
                fs.makedirs(folder)
                written += write_table(fs.join(folder, f"ints-{lo:05d}-{hi:05d}"),
                                       **specs(bkeys)[0].kwargs(), parquet=True, ecsv=False)
                blocks.add(b)
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
