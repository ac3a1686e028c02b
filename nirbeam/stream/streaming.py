"""Streaming: light curves while the exposure is still arriving.

Two forms of the same per-integration chain (read -> detector1 -> write rateints ->
rolling outlier flags -> extraction -> white-light point):

* Beam streaming transforms (:class:`WithEventTime`, :class:`RollingOutlierDoFn`,
  :class:`StreamingLightCurves`, :class:`StreamingChain`): event time = int_mid_BJD_TDB
  (:func:`beam_timestamp`), the outlier buffer in keyed state per (exposure, detector)
  with an event-time timer for bounded lateness and an end-of-window flush. Only records
  keyed by a small (exposure, detector) key reach the stateful step; no 2-D array goes
  through GroupByKey/Reshuffle. Tested with TestStream on ``BundleBasedDirectRunner``.
* :func:`run_stream`, the ``nirbeam stream`` service: a driver loop that pulls arrivals
  from a source (:mod:`nirbeam.stream.watch`) and runs the same functions in-process
  (Beam's local runners cannot run an unbounded custom source offline). It writes
  provisional live products while the run goes on and, when the exposure completes (or
  on a stop signal), finalises through the batch code over the same store.

Identity with batch
-------------------
``rateints`` are written by the batch functions (:class:`pipeline.Calibrate` with the
references and 1/f scene mask that :func:`pipeline.prepare_exposure` derives from the
first segment, exactly as batch does). The *live* extraction model is built from the
first ``live_model_nints`` integrations (batch samples the whole exposure, which a stream
cannot), so live points are provisional. At completion the stream runs the batch stage 2
(:func:`products.run_spectra_stage`, model from a sample over the whole exposure) and
:func:`products.finalize_products` over the same store: the final ``whitelight.ecsv``
equals ``nirbeam run``'s on the same files bit for bit. The live model is kept apart
(``<group>/live_extraction``) so that it never replaces the batch one.

Live products (``OUTDIR/live/``): ``whitelight.ecsv``/``.parquet`` rewritten atomically
as points arrive (a row per integration, ``status`` ``provisional`` -- rateints DQ, no
time-domain outlier flags yet -- then ``flagged`` once the integration's outlier window
has arrived, ~window/2 integrations later); ``speclc_<group>.ecsv`` (wide: one row per
integration, vector columns over the bins, bin centres/edges in the meta) and ``.parquet``
(long), rewritten at the same moments: each integration's live spectrum binned with
:func:`~nirbeam.transforms.lightcurve.bin_spectrum` on the bin edges of batch's rule
(``products._lightcurve_edges``) for the live model's wavelengths -- the same arithmetic
as batch's ``bin_spectra``; ``plots/whitelight_<group>.png`` redrawn and
``fit_<group>.json`` (quick-look white-light transit fit, batch's configuration rule,
once >= :data:`MIN_FIT_POINTS` good points) refreshed every ``plot_every`` seconds and at
the end. A failing live fit logs a warning and keeps the previous file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from nirbeam import __version__, dqflags
from nirbeam.sinks import zarr_store
from nirbeam.stream.products import quicklook_fit_config
from nirbeam.stream.records import DeadLetter, IntegrationKey, IntegrationRecord
from nirbeam.stream.uncal import ExposurePlan, SegmentInfo, plan_exposures
from nirbeam.transforms.outliers import RollingOutlierFlagger
from nirbeam.transforms.spectra import ExtractionModel, extract_integration

__all__ = [
    "LivePoint",
    "beam_timestamp",
    "WithEventTime",
    "RollingOutlierDoFn",
    "StreamingLightCurves",
    "StreamingChain",
    "LiveModelFromStore",
    "build_live_model",
    "live_point",
    "live_point_and_bins",
    "quicklook_fit_config",
    "StreamSession",
    "run_stream",
]

log = logging.getLogger("nirbeam")

RATEINTS = "rateints"
LIVE_EXTRACTION = "live_extraction"
SECONDS_PER_DAY = 86400.0
DEAD = "deadletter"


# ---------------------------------------------------------------------------------------
# Shared per-integration pieces


def beam_timestamp(bjd_tdb: float) -> Timestamp:
    """Event time of an integration: int_mid_BJD_TDB (MJD-like days) as seconds from MJD 0.

    Rounded to the millisecond (watermarks and portable runners work in milliseconds; a
    cadence is >= 0.2 s), so monotone in the mid-time.
    """
    return Timestamp(micros=int(round(float(bjd_tdb) * SECONDS_PER_DAY * 1e3)) * 1000)


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

    The bins are :func:`~nirbeam.transforms.lightcurve.bin_spectrum` of the live spectrum
    (``skip_bits=0``, as batch's ``bin_spectra`` in :func:`products.finalize_products`);
    their dq is batch's rule: DO_NOT_USE where the bin flux is not finite, OR the point's dq.

    Returns
    -------
    point : LivePoint
    bins : (flux float64 (nbin,) DN/s, flux_error float64 (nbin,) DN/s, dq uint32 (nbin,))
        or None when ``edges`` is None.
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


def build_live_model(plan_or_meta, rates: np.ndarray, dqs: np.ndarray, settings,
                     plan: ExposurePlan | None = None) -> ExtractionModel | str:
    """Extraction model from the first integrations (same builder as batch, other sample).

    Returns the model, or the reason none could be built (e.g. no trace on NRS2).
    """
    from nirbeam.stream.products import _build_model, find_wavelengths
    from nirbeam.transforms.trace import TraceModel

    meta = plan_or_meta.meta if hasattr(plan_or_meta, "meta") else plan_or_meta
    cfg = settings.extract
    ny, nx = meta.image_shape
    trace = None
    if cfg.trace_coefficients:
        trace = TraceModel.from_config(cfg.trace_coefficients, 1.0, (0.0, nx - 1.0), scaled=False)
    m = _build_model(rates, dqs, cfg, trace, settings)
    if isinstance(m, str):
        return m
    if plan is not None:
        wl = find_wavelengths(plan, cfg, m.trace, nx)
        m = ExtractionModel(**{**m.__dict__, "wavelength": wl})
    return m


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


_LIVE_MODELS: dict[tuple[str, str], ExtractionModel] = {}


def save_live_model(root: str, group: str, model: ExtractionModel, n: int) -> None:
    """Keep the live model next to (never in place of) batch's ``extraction`` group."""
    arrays, attrs = model.to_arrays()
    attrs["built_from"] = f"first {n} integrations (live, provisional)"
    zarr_store.save_arrays(root, f"{group}/{LIVE_EXTRACTION}", arrays, attrs)
    _LIVE_MODELS[(root, group)] = model


def _placeholder(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What batch stage 2 sees for an integration without rateints: 0, 0, DO_NOT_USE."""
    return (np.zeros(shape, np.float32), np.zeros(shape, np.float32),
            np.full(shape, dqflags.DO_NOT_USE, np.uint32))


# ---------------------------------------------------------------------------------------
# Beam streaming transforms


class _EventTimeFn(beam.DoFn):
    def process(self, rec):
        yield beam.window.TimestampedValue(rec, beam_timestamp(rec.times.int_mid_bjd_tdb))


class WithEventTime(beam.PTransform):
    """Stamp each record (anything with ``.times.int_mid_bjd_tdb``) with its event time."""

    def expand(self, pcoll):
        return pcoll | "EventTime" >> beam.ParDo(_EventTimeFn())


@dataclass
class _FlagState:
    """Keyed state of :class:`RollingOutlierDoFn` for one (exposure, detector)."""

    flagger: RollingOutlierFlagger | None = None
    recs: dict = field(default_factory=dict)      # integration -> record awaiting release
    times: dict = field(default_factory=dict)     # integration -> event time (micros)
    given_up: set = field(default_factory=set)    # integrations replaced by placeholders
    shape: tuple | None = None
    nints: int | None = None
    cycle_us: int = 0
    key: tuple = ()
    last: tuple | None = None                      # (highest integration seen, its time)


_STATE = ReadModifyWriteStateSpec("flags", PickleCoder())
_LATE = TimerSpec("late", TimeDomain.WATERMARK)
_STATE_P = beam.DoFn.StateParam(_STATE)
_LATE_P = beam.DoFn.TimerParam(_LATE)


class RollingOutlierDoFn(beam.DoFn):
    """Stateful outlier flags along time, per (exposure, detector) key.

    Input ``((exposure, detector), record)`` with rate/err/dq (stage rateints); output the
    record with ``dq`` = rateints DQ plus ``DO_NOT_USE | OUTLIER`` on flagged pixels (stage
    ``cleaned``), stamped with its own event time, in integration order, once every
    integration of its window has arrived -- identical to batch's
    :func:`~nirbeam.transforms.outliers.flag_outliers` over the whole exposure.

    Lateness: integrations may arrive in any order. A missing integration ``k`` is given
    up when the watermark passes its deadline, ``t_j + allowed_lateness`` for the first
    integration ``j > k`` that has arrived (``k`` should have come before ``j``), or, for
    the tail (no later integration yet), ``t_last + (k - last) * cycle + allowed_lateness``
    with the integration cycle from the readout pattern (NGROUPS, NFRAMES, GROUPGAP,
    TFRAME; one reset frame). A given-up integration is replaced by the batch placeholder
    (rate 0, DQ DO_NOT_USE: never in a median) and a dead letter (step ``outliers``) says
    so. An integration arriving after it was given up, after its slot was released, or
    twice, goes to the dead letters too (its rateints are in the store regardless, so the
    finalised products include it). The end of the input (watermark to +inf) fires every
    pending deadline, so the exposure's tail is always released; records released because
    the tail was given up carry the provenance ``("outliers", "flushed")``.
    """

    def __init__(self, window: int = 25, n_sigma: float = 5.0, allowed_lateness_s: float = 60.0,
                 enabled: bool = True):
        self.window = int(window)
        self.n_sigma = float(n_sigma)
        self.lateness_us = int(round(allowed_lateness_s * 1e6))
        self.enabled = enabled

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                state=_STATE_P, late=_LATE_P):
        _, rec = element
        if not self.enabled:
            yield beam.window.TimestampedValue(rec.replace(stage="cleaned"), timestamp)
            return
        st = state.read() or _FlagState()
        i = rec.key.integration
        if st.flagger is None:
            m = rec.meta
            st.nints = int(m.nints)
            st.shape = tuple(np.shape(rec.rate))
            st.cycle_us = int(round((m.ngroups * (m.nframes + m.groupgap) - m.groupgap + 1)
                                    * m.tframe * 1e6))
            st.key = (rec.key.exposure, rec.key.detector)
            st.flagger = RollingOutlierFlagger(self.window, self.n_sigma, nints=st.nints)
        if i < st.flagger.next_integration or i in st.given_up or i in st.recs:
            why = ("arrived after it was given up (later than the allowed lateness)"
                   if i in st.given_up else "duplicate or arrived after its slot was released")
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(rec.key, "outliers", why, rec.source))
            return
        st.recs[i] = rec
        st.times[i] = int(timestamp.micros)
        if st.last is None or i > st.last[0]:
            st.last = (i, int(timestamp.micros))
        yield from self._emit(st, st.flagger.push(i, rec.rate, rec.err, rec.dq), False)
        self._arm(st, late)
        state.write(st)

    def _first_missing(self, st) -> int | None:
        k = st.flagger.next_integration
        while k in st.recs or k in st.given_up:
            k += 1
        return k if k <= st.nints else None

    def _deadline(self, st, k: int) -> int:
        later = [t for j, t in st.times.items() if j > k]
        if later:
            return min(later) + self.lateness_us
        j, t = st.last
        return t + (k - j) * st.cycle_us + self.lateness_us

    def _arm(self, st, late) -> None:
        k = self._first_missing(st)
        if k is not None:
            late.set(Timestamp(micros=self._deadline(st, k)))

    def _emit(self, st: _FlagState, released, flushed: bool):
        for j, new_dq in released:
            if j in st.given_up:
                continue
            rec = st.recs.pop(j)
            t = st.times.pop(j)
            out = rec.replace(dq=new_dq, stage="cleaned")
            if flushed:
                out = out.with_step("outliers", "flushed")
            yield beam.window.TimestampedValue(out, Timestamp(micros=t))

    @on_timer(_LATE)
    def on_late(self, fire=beam.DoFn.TimestampParam, state=_STATE_P, late=_LATE_P):
        st = state.read()
        if st is None or st.flagger is None:
            return
        now = int(fire.micros)
        while True:
            k = self._first_missing(st)
            if k is None or self._deadline(st, k) > now:
                break
            tail = k > st.last[0]
            st.given_up.add(k)
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(
                IntegrationKey(*st.key, k), "outliers", "did not arrive within the allowed lateness"))
            yield from self._emit(st, st.flagger.push(k, *_placeholder(st.shape)), tail)
        if st.flagger.next_integration > st.nints:
            state.clear()
            return
        self._arm(st, late)
        state.write(st)


class _PointFn(beam.DoFn):
    def __init__(self, model_for, settings, status):
        self.model_for = model_for
        self.settings = settings
        self.status = status

    def process(self, rec, timestamp=beam.DoFn.TimestampParam):
        try:
            p = live_point(rec, rec.dq, self.model_for(rec.key.group), self.settings, self.status)
        except Exception as exc:  # noqa: BLE001 - becomes a dead letter
            yield beam.pvalue.TaggedOutput(
                DEAD, DeadLetter(rec.key, "extract", f"{type(exc).__name__}: {exc}", rec.source))
            return
        yield beam.window.TimestampedValue(p, timestamp)


class StreamingLightCurves(beam.PTransform):
    """rateints records -> outlier-flagged white-light points (event-time stamped).

    Parameters
    ----------
    model_for : callable ``group -> ExtractionModel`` (e.g. :class:`LiveModelFromStore`)
    settings : Settings
    allowed_lateness_s : float
        See :class:`RollingOutlierDoFn`.

    Output: a dict of PCollections: ``"points"`` (:class:`LivePoint`, status ``flagged``)
    and ``"deadletter"``.
    """

    def __init__(self, model_for, settings, allowed_lateness_s: float = 60.0):
        super().__init__()
        self.model_for = model_for
        self.settings = settings
        self.lateness = allowed_lateness_s

    def expand(self, recs):
        o = self.settings.outliers
        flagged = (
            recs
            | "KeyByExposure" >> beam.Map(lambda r: (r.key.stream, r))
            | "RollingOutliers" >> beam.ParDo(RollingOutlierDoFn(
                o.window, o.n_sigma, self.lateness, o.enabled)).with_outputs(DEAD, main="records")
        )
        pts = flagged.records | "WhiteLight" >> beam.ParDo(
            _PointFn(self.model_for, self.settings, "flagged")).with_outputs(DEAD, main="points")
        dead = (flagged.deadletter, pts.deadletter) | "LCDead" >> beam.Flatten()
        return {"points": pts.points, "deadletter": dead}


class StreamingChain(beam.PTransform):
    """The whole streaming chain on Beam: ReadItem -> event time -> read -> detector1 ->
    rateints in the store -> :class:`StreamingLightCurves`.

    The store must be prepared (:func:`pipeline.prepare_exposure`) and a live extraction
    model saved (:func:`save_live_model`) before the first element, as the service does.
    Output: a dict ``{"points": ..., "deadletter": ...}``.
    """

    def __init__(self, root: str, settings, allowed_lateness_s: float = 60.0):
        super().__init__()
        self.root = root
        self.settings = settings
        self.lateness = allowed_lateness_s

    def expand(self, items):
        from nirbeam.stream.pipeline import Calibrate, WriteRateints, read_record
        from nirbeam.transforms.common import RecordStep

        stamped = items | "ItemTime" >> WithEventTime()
        read = stamped | "Read" >> RecordStep(read_record, "read")
        cal = read.records | "Detector1" >> RecordStep(Calibrate(self.root, self.settings), "detector1")
        wr = cal.records | "WriteRateints" >> RecordStep(WriteRateints(self.root, keep=True), "write_rateints")
        lc = wr.records | "LightCurves" >> StreamingLightCurves(
            LiveModelFromStore(self.root), self.settings, self.lateness)
        dead = (read.deadletter, cal.deadletter, wr.deadletter, lc["deadletter"]) | "AllDead" >> beam.Flatten()
        return {"points": lc["points"], "deadletter": dead}


# ---------------------------------------------------------------------------------------
# The service: an in-process driver loop over a source


@dataclass
class _Group:
    """Streaming state of one exposure/detector."""

    meta: Any
    segments: dict = field(default_factory=dict)   # intstart -> SegmentInfo
    pending: dict = field(default_factory=dict)    # integration -> available wall time
    prepared: bool = False
    processed: set = field(default_factory=set)
    dead: set = field(default_factory=set)
    model: ExtractionModel | str | None = None
    first: list = field(default_factory=list)      # (rec) until the live model exists
    flagger: RollingOutlierFlagger | None = None
    unreleased: dict = field(default_factory=dict)  # integration -> rec awaiting flags
    given_up: set = field(default_factory=set)
    stored: set = field(default_factory=set)       # rateints complete from an earlier run
    edges: np.ndarray | None = None                # live spectroscopic bin edges, um

    @property
    def nints(self) -> int:
        return self.meta.nints

    def seg_of(self, i: int) -> SegmentInfo:
        for s in self.segments.values():
            if s.intstart <= i <= s.intend:
                return s
        raise KeyError(i)

    def plan(self) -> ExposurePlan:
        return plan_exposures(list(self.segments.values()))[0]

    def complete(self) -> bool:
        return len(self.processed) + len(self.dead) >= self.nints


class StreamSession:
    """State and per-integration work of one ``nirbeam stream`` run (single thread).

    Parameters
    ----------
    outdir : str
    refs_dir : str, optional
    settings : Settings
    live_model_nints : int
        Integrations the live extraction model is built from.
    max_lateness_ints : int
        A missing integration is given up for the live flagged points once an integration
        this many numbers later was processed (it is still processed if it comes).
    plot_every : float
        Seconds between live plot and quick-look fit refreshes (0: never).
    live_write_every : float
        Longest time live points wait to be written while integrations keep coming (the
        table is written whenever the input queue is empty, and at least this often).
    """

    def __init__(self, outdir: str, refs_dir: str | None, settings, *, live_model_nints: int = 8,
                 max_lateness_ints: int = 200, plot_every: float = 30.0,
                 live_write_every: float = 1.0, allow_standins: bool = False):
        from nirbeam.stream.pipeline import Calibrate, _check_outdir, _no_refs_error
        from nirbeam.stream.refs import index_references

        if not refs_dir and not allow_standins:
            raise _no_refs_error()
        self.allow_standins = allow_standins
        _check_outdir(outdir)
        self.outdir = outdir
        self.root = os.path.join(outdir, "cubes.zarr")
        zarr_store.open_root(self.root)
        self.refs_dir = refs_dir
        self.ref_index = index_references(refs_dir) if refs_dir else None
        self.settings = settings
        self.calibrate = Calibrate(self.root, settings)
        self.dead_dir = os.path.join(outdir, "_deadletters")
        self.live_dir = os.path.join(outdir, "live")
        os.makedirs(self.live_dir, exist_ok=True)
        self.live_model_nints = int(live_model_nints)
        self.max_lateness = int(max_lateness_ints)
        self.plot_every = float(plot_every)
        self.live_write_every = float(live_write_every)
        self.groups: dict[tuple[str, str], _Group] = {}
        self.points: dict[tuple[str, int], LivePoint] = {}
        # (group, integration) -> binned live spectrum (flux, flux_error, dq), (nbin,) each
        self.bins: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._last_fit = 0.0
        self._fit_sig: dict[str, tuple[int, int]] = {}  # group -> (points, flagged) last fitted
        self._dirty: list[tuple[tuple[str, int], str]] = []
        self._last_write = 0.0
        self._last_plot = time.time()
        self.available: dict[tuple[str, int], float] = {}
        self.latency: dict[str, list[float]] = {"provisional": [], "flagged": []}
        self.latency_steady: dict[str, list[float]] = {"provisional": [], "flagged": []}
        self.notes: list[str] = []
        self.counts = {"integrations": 0, "live_points": 0, "table_writes": 0, "plots": 0,
                       "fits": 0, "fit_failures": 0}
        self.t_start = time.time()

    # -- input ------------------------------------------------------------
    def add(self, arrival) -> None:
        """Register integrations that became available."""
        seg = arrival.segment
        k = (seg.meta.exposure, seg.meta.detector)
        g = self.groups.get(k)
        if g is None:
            g = self.groups[k] = _Group(seg.meta)
            self._resume(g)
        known = g.segments.get(seg.intstart)
        if known is None:
            if any(s.intstart <= seg.intend and seg.intstart <= s.intend for s in g.segments.values()):
                self.notes.append(f"{os.path.basename(seg.path)} overlaps a known segment: ignored")
                return
            g.segments[seg.intstart] = seg
            if g.prepared:
                self._write_times(g, seg)
        for i in arrival.integrations:
            if i in g.processed or i in g.pending:
                continue
            g.pending[i] = arrival.available
            self.available[(seg.meta.group_name, i)] = arrival.available

    def _resume(self, g: _Group) -> None:
        """An OUTDIR from an earlier run of the same exposure: reuse its references and
        the integrations it calibrated (read once here, not per integration)."""
        if RATEINTS in zarr_store.open_root(self.root).get(g.meta.group_name, {}):
            g.prepared = True
            done = zarr_store.completed(self.root, g.meta.group_name, RATEINTS)
            g.stored = {int(i) + 1 for i in np.flatnonzero(done)}

    def _write_times(self, g: _Group, seg: SegmentInfo) -> None:
        """Fill the rateints time coordinates of a segment (known only once it arrived)."""
        import zarr

        lo, hi = seg.intstart, seg.intend
        for name, attr in (("int_mid_BJD_TDB", "int_mid_bjd_tdb"), ("int_mid_MJD_UTC", "int_mid_mjd_utc")):
            a = zarr.open_array(self.root, path=f"{g.meta.group_name}/{RATEINTS}/{name}", mode="r+",
                                zarr_format=3)
            a[lo - 1:hi] = np.array([getattr(seg.times[i], attr) for i in range(lo, hi + 1)])

    # -- work -------------------------------------------------------------
    def _ready_to_prepare(self, g: _Group, final: bool) -> bool:
        need = range(1, min(3, g.nints) + 1)  # batch: first segment's ramp, draft mask of 3
        return all(i in g.pending for i in need) or (final and bool(g.pending))

    def _prepare(self, g: _Group) -> None:
        from nirbeam.stream.pipeline import prepare_exposure

        prepare_exposure(self.root, g.plan(), self.refs_dir, self.ref_index, self.settings,
                         allow_standins=self.allow_standins)
        g.prepared = True
        for seg in g.segments.values():
            self._write_times(g, seg)

    def next_work(self, final: bool = False):
        """The next (group, integration) to process, lowest integration first; or None."""
        for g in self.groups.values():
            if not g.pending:
                continue
            if not g.prepared:
                if not self._ready_to_prepare(g, final):
                    continue
                self._prepare(g)
            return g, min(g.pending)
        return None

    def process(self, g: _Group, i: int) -> None:
        """detector1 (or the stored result of an earlier run), rateints, live points."""
        from nirbeam.stream.pipeline import ReadItem, WriteDeadLetter, WriteRateints, read_record

        g.pending.pop(i)
        seg = g.seg_of(i)
        key = IntegrationKey(g.meta.exposure, g.meta.detector, i)
        item = ReadItem(key, replace(seg, times={}), seg.times[i])
        step = "read"
        try:
            if i in g.stored:  # an earlier run of this OUTDIR calibrated it
                a = zarr_store.read_integration(self.root, g.meta.group_name, RATEINTS, i,
                                                ("sci", "err", "dq", "var_poisson", "var_rnoise"))
                rec = IntegrationRecord(key, g.meta, seg.times[i], "rateints", seg.path,
                                        rate=a["sci"], err=a["err"], dq=a["dq"],
                                        var_poisson=a["var_poisson"], var_rnoise=a["var_rnoise"])
            else:
                rec = read_record(item)
                step = "detector1"
                rec = self.calibrate(rec)
                step = "write_rateints"
                WriteRateints(self.root, keep=True)(rec)
        except Exception as exc:  # noqa: BLE001 - becomes a dead letter, as in batch
            WriteDeadLetter(self.dead_dir)(DeadLetter(key, step, f"{type(exc).__name__}: {exc}",
                                                      seg.path))
            g.dead.add(i)
            self._flag(g, i, None)
            return
        g.processed.add(i)
        self.counts["integrations"] += 1
        self._live(g, rec)

    def _live(self, g: _Group, rec: IntegrationRecord) -> None:
        if g.model is None:
            g.first.append(rec)
            if len(g.first) >= min(self.live_model_nints, g.nints):
                self._build_model(g)
            return
        self._point_and_flag(g, rec)

    def _build_model(self, g: _Group) -> None:
        """Live model from the integrations held so far; then their points and flags."""
        recs, g.first = g.first, []
        m = build_live_model(g.meta, np.stack([r.rate for r in recs]), np.stack([r.dq for r in recs]),
                             self.settings, plan=g.plan())
        g.model = m
        if isinstance(m, str):
            self.notes.append(f"{g.meta.group_name}: no live points: {m}")
        else:
            save_live_model(self.root, g.meta.group_name, m, len(recs))
            g.edges = self._live_edges(g, m)
        for r in sorted(recs, key=lambda r: r.key.integration):
            self._point_and_flag(g, r)

    def _live_edges(self, g: _Group, m: ExtractionModel) -> np.ndarray | None:
        """Spectroscopic bin edges of the live model: batch's rule (``_lightcurve_edges``)."""
        from nirbeam.stream.products import _lightcurve_edges

        try:
            e = np.asarray(_lightcurve_edges(self.settings.lightcurve, m.wavelength.wavelength,
                                             m.wavelength.source), float)
            if e.ndim != 1 or e.size < 2:
                raise ValueError(f"{e.size} bin edges")
            return e
        except Exception as exc:  # noqa: BLE001 - no live speclc, the rest goes on
            self.notes.append(f"{g.meta.group_name}: no live spectroscopic light curves: "
                              f"bin edges: {type(exc).__name__}: {exc}")
            return None

    def _point_and_flag(self, g: _Group, rec: IntegrationRecord) -> None:
        if isinstance(g.model, ExtractionModel):
            self._add_point(*live_point_and_bins(rec, rec.dq, g.model, self.settings,
                                                 "provisional", g.edges))
        self._flag(g, rec.key.integration, rec)

    def _flag(self, g: _Group, i: int, rec: IntegrationRecord | None) -> None:
        """Push into the rolling outlier buffer (placeholder for a dead integration)."""
        o = self.settings.outliers
        if g.flagger is None:
            g.flagger = RollingOutlierFlagger(o.window if o.enabled else 1,
                                              o.n_sigma, nints=g.nints)
        if i < g.flagger.next_integration or i in g.given_up:
            self.notes.append(f"{g.meta.group_name} integration {i}: later than the allowed "
                              f"lateness for live flagged points (final products include it)")
            return
        if rec is None:
            released = g.flagger.push(i, *_placeholder(g.meta.image_shape))
        else:
            g.unreleased[i] = rec
            released = g.flagger.push(i, rec.rate, rec.err, rec.dq)
        self._released(g, released)
        # bounded lateness: give up integrations far behind the newest one
        top = max(g.unreleased, default=0)
        k = g.flagger.next_integration
        while k <= g.nints and top - k > self.max_lateness:
            if k not in g.unreleased:
                self._give_up(g, k)
            k += 1

    def _give_up(self, g: _Group, k: int) -> None:
        g.given_up.add(k)
        self._released(g, g.flagger.push(k, *_placeholder(g.meta.image_shape)))

    def _released(self, g: _Group, released) -> None:
        for j, new_dq in released:
            rec = g.unreleased.pop(j, None)
            if rec is None or not isinstance(g.model, ExtractionModel):
                continue
            self._add_point(*live_point_and_bins(rec, new_dq, g.model, self.settings,
                                                 "flagged", g.edges))

    def _add_point(self, p: LivePoint, bins=None) -> None:
        k = (p.group, p.integration)
        self.points[k] = p
        if bins is not None:
            self.bins[k] = bins
        self._dirty.append((k, p.status))
        self.counts["live_points"] += 1

    def end_groups(self) -> None:
        """End of exposure / stop: give up missing integrations and flush the flaggers."""
        for g in self.groups.values():
            if g.model is None and g.first:  # fewer integrations than asked: use them
                self._build_model(g)
            if g.flagger is None:
                continue
            # what never came is, for the flags, what batch sees for it: a placeholder
            for k in range(g.flagger.next_integration, g.nints + 1):
                if k not in g.unreleased and k not in g.given_up:
                    self._give_up(g, k)

    def complete(self) -> bool:
        """Every exposure/detector seen has all NINTS processed or dead-lettered."""
        return bool(self.groups) and all(g.complete() for g in self.groups.values())

    # -- live products ----------------------------------------------------
    def maybe_write_live(self, idle: bool, force: bool = False) -> None:
        """Write the live tables if points are waiting and the queue is empty (or it is
        time); redraw the plot and refit at the plot cadence."""
        now = time.time()
        if self._dirty and (idle or force or now - self._last_write >= self.live_write_every):
            self.write_live_table()
        if self.plot_every > 0 and self.points and (force or now - self._last_plot >= self.plot_every):
            self.write_live_plot()
            self.write_live_fits()

    def write_live_table(self) -> None:
        """Rewrite ``live/whitelight`` and the changed groups' ``live/speclc_<group>``."""
        from nirbeam.sinks.tables import write_table

        pts = sorted(self.points.values(), key=lambda p: (p.exposure, p.detector, p.integration))
        cols = {
            "exposure": [p.exposure for p in pts], "detector": [p.detector for p in pts],
            "integration_number": np.array([p.integration for p in pts], np.int64),
            "int_mid_BJD_TDB": np.array([p.int_mid_bjd_tdb for p in pts]),
            "int_mid_MJD_UTC": np.array([p.int_mid_mjd_utc for p in pts]),
            "flux": np.array([p.flux for p in pts]),
            "flux_error": np.array([p.flux_error for p in pts]),
            "dq": np.array([p.dq for p in pts], np.uint32),
            "status": [p.status for p in pts],
        }
        meta = {"provisional": True, "nirbeam_version": __version__, "flux_units": "DN/s",
                "note": "live light curve: extraction model from the first integrations; "
                        "status 'provisional' has no time-domain outlier flags yet. The "
                        "final products are OUTDIR/whitelight.ecsv once the exposure completes.",
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_table(os.path.join(self.live_dir, "whitelight"), cols, meta,
                    units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s",
                           "flux_error": "DN/s"},
                    parquet=self.settings.products.parquet)
        for gname in sorted({k[0] for k, _ in self._dirty}):
            try:
                self.write_live_speclc(gname)
            except Exception as exc:  # noqa: BLE001 - a live product must not stop the stream
                log.warning("live spectroscopic light curves of %s failed: %s", gname, exc)
        now = time.time()
        for k, status in self._dirty:
            a = self.available.get(k)
            if a is not None:
                self.latency[status].append(now - a)
                if k[1] > self.live_model_nints:  # steady state: the live model exists
                    self.latency_steady[status].append(now - a)
        self._dirty = []
        self._last_write = now
        self.counts["table_writes"] += 1

    def _group_named(self, gname: str) -> _Group | None:
        return next((g for g in self.groups.values() if g.meta.group_name == gname), None)

    def write_live_speclc(self, gname: str) -> list[str]:
        """Rewrite ``live/speclc_<group>.ecsv`` (wide) and ``.parquet`` (long) atomically.

        Same layout as batch's ``speclc_<group>`` (:func:`products.finalize_products`):
        ECSV one row per integration with vector columns over the bins (centres and edges
        in the meta), Parquet one row per integration and bin. Rows: the integrations with
        a live point, latest status (``provisional`` or ``flagged``).
        """
        from nirbeam.sinks.tables import write_table
        from nirbeam.stream.products import _table_meta

        g = self._group_named(gname)
        if g is None or g.edges is None or not isinstance(g.model, ExtractionModel):
            return []
        keys = sorted((k for k in self.bins if k[0] == gname), key=lambda k: k[1])
        if not keys:
            return []
        pts = [self.points[k] for k in keys]
        flux = np.stack([self.bins[k][0] for k in keys])
        err = np.stack([self.bins[k][1] for k in keys])
        sdq = np.stack([self.bins[k][2] for k in keys]).astype(np.uint32)
        num = np.array([k[1] for k in keys], np.int64)
        bjd = np.array([p.int_mid_bjd_tdb for p in pts])
        mjd = np.array([p.int_mid_mjd_utc for p in pts])
        status = [p.status for p in pts]
        edges = g.edges
        centers = 0.5 * (edges[:-1] + edges[1:])
        cfg = self.settings.lightcurve
        wl = g.model.wavelength.wavelength
        finite = wl[np.isfinite(wl)]
        wrange = (float(cfg.wmin if cfg.wmin is not None else finite.min()),
                  float(cfg.wmax if cfg.wmax is not None else finite.max()))
        smeta = {**_table_meta(g.meta, wrange, self.root, gname),
                 "wavelength_source": g.model.wavelength.source,
                 "provisional": True,
                 "note": "live spectroscopic light curves: extraction model from the first "
                         "integrations; status 'provisional' has no time-domain outlier "
                         "flags yet. Final products: OUTDIR/speclc_<group> once the "
                         "exposure completes.",
                 "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        stem = os.path.join(self.live_dir, f"speclc_{gname}")
        from nirbeam.stream.wavelengths import axis_units  # "um", or "pixel" without a solution

        au = axis_units(g.model.wavelength.source)
        ck, ek = ("wavelength_um", "bin_edges_um") if au == "um" else ("bin_centers_pixel",
                                                                      "bin_edges_pixel")
        written = []
        nb, n = centers.size, num.size
        if self.settings.products.parquet:
            written += write_table(
                stem,
                {"integration_number": np.repeat(num, nb),
                 "int_mid_BJD_TDB": np.repeat(bjd, nb), "int_mid_MJD_UTC": np.repeat(mjd, nb),
                 "wavelength": np.tile(centers, n), "bin_lo": np.tile(edges[:-1], n),
                 "bin_hi": np.tile(edges[1:], n), "flux": flux.ravel(),
                 "flux_error": err.ravel(), "dq": sdq.ravel(),
                 "status": np.repeat(np.array(status), nb)},
                smeta, units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "wavelength": au,
                              "bin_lo": au, "bin_hi": au, "flux": "DN/s", "flux_error": "DN/s"},
                parquet=True, ecsv=False)
        written += write_table(
            stem,
            {"integration_number": num, "int_mid_BJD_TDB": bjd, "int_mid_MJD_UTC": mjd,
             "flux": flux, "flux_error": err, "dq": sdq, "status": status},
            {**smeta, ck: centers.tolist(), ek: edges.tolist(),
             "layout": "one row per integration; flux/flux_error/dq are vectors over the "
                       "wavelength bins in meta wavelength_um (edges in bin_edges_um)"},
            units={"int_mid_BJD_TDB": "d", "int_mid_MJD_UTC": "d", "flux": "DN/s",
                   "flux_error": "DN/s"},
            parquet=False)
        return written

    def write_live_fits(self) -> dict[str, str]:
        """Quick-look white-light transit fit per group -> ``live/fit_<group>.json``.

        Refit only when the group's live points changed since the last fit and at least
        :data:`MIN_FIT_POINTS` of them are good (dq 0, finite, error > 0). Configuration as
        batch's ``products._fit_and_plot`` (:func:`products.quicklook_fit_config`). A failing fit
        logs a warning and keeps the previous file. Returns ``group -> outcome``.
        """
        from nirbeam.sinks import fs
        from nirbeam.transforms.transit import fit_transit, write_fit_json

        self._last_fit = time.time()
        out = {}
        for gname in sorted({k[0] for k in self.points}):
            pts = sorted((p for p in self.points.values() if p.group == gname),
                         key=lambda p: p.integration)
            sig = (len(pts), sum(p.status == "flagged" for p in pts))
            if self._fit_sig.get(gname) == sig:
                continue
            t = np.array([p.int_mid_bjd_tdb for p in pts])
            f = np.array([p.flux for p in pts])
            e = np.array([p.flux_error for p in pts])
            dq = np.array([p.dq for p in pts], np.uint32)
            use = (dq == 0) & np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(t)
            if use.sum() < MIN_FIT_POINTS:
                out[gname] = f"{int(use.sum())} good points: no fit yet"
                continue
            self._fit_sig[gname] = sig
            try:
                cfg = quicklook_fit_config(self.settings.fit, t[use], f[use])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = fit_transit(t[use], f[use], e[use], cfg)
                with fs.atomic_path(os.path.join(self.live_dir, f"fit_{gname}.json")) as tmp:
                    write_fit_json(res, tmp)
            except Exception as exc:  # noqa: BLE001 - a quick look must not stop the stream
                log.warning("live fit of %s failed (previous fit file kept): %s: %s",
                            gname, type(exc).__name__, exc)
                self.counts["fit_failures"] += 1
                out[gname] = f"failed: {type(exc).__name__}: {exc}"
                continue
            self.counts["fits"] += 1
            out[gname] = "written"
        return out

    def write_live_plot(self) -> None:
        from nirbeam.sinks import plots

        self._last_plot = time.time()
        if self.plot_every <= 0:
            return
        for g in self.groups.values():
            pts = sorted((p for p in self.points.values() if p.group == g.meta.group_name),
                         key=lambda p: p.integration)
            if len(pts) < 2:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plots.plot_white_light(
                        np.array([p.int_mid_bjd_tdb for p in pts]), np.array([p.flux for p in pts]),
                        os.path.join(self.live_dir, "plots", f"whitelight_{g.meta.group_name}.png"),
                        error=np.array([p.flux_error for p in pts]),
                        dq=np.array([p.dq for p in pts], np.uint32),
                        title=f"Live white light (provisional) {g.meta.group_name}")
                self.counts["plots"] += 1
            except Exception as exc:  # noqa: BLE001 - a plot must not stop the stream
                log.warning("live plot failed: %s", exc)

    # -- the end ----------------------------------------------------------
    def finalize(self, *, stopped: bool, source_notes=(), mode: str = "watch",
                 runner=None, extra: dict | None = None) -> dict:
        """Close the exposures: batch stage 2 and products over the store; run.json."""
        from nirbeam.stream.pipeline import _account, _write_json_atomic
        from nirbeam.stream.products import finalize_products, run_spectra_stage
        from nirbeam.stream.runners import RunnerSpec

        self.end_groups()
        if self._dirty:
            self.write_live_table()
        self.write_live_plot()
        if self.plot_every > 0:
            self.write_live_fits()
        groups = [g for g in self.groups.values() if g.prepared]
        plans = plan_exposures([s for g in groups for s in g.segments.values()]) if groups else []
        t0 = time.time()
        metrics = run_spectra_stage(self.root, plans, self.settings, runner or RunnerSpec(),
                                    self.dead_dir) if plans else {}
        products = finalize_products(self.outdir, self.root, plans, self.settings) if plans else {}
        zarr_store.consolidate(self.root, {"nirbeam_version": __version__})  # as batch does
        t_final = time.time() - t0
        per_group = {}
        for plan in plans:
            g = self.groups[(plan.meta.exposure, plan.meta.detector)]
            unprocessed = sorted(g.pending)
            per_group[plan.meta.group_name] = {
                "exposure": plan.meta.exposure, "detector": plan.meta.detector,
                "nints": plan.meta.nints, "present": len(plan.present), "missing": list(plan.missing),
                "skipped_complete": 0,
                "segments": [os.path.basename(s.path) for s in plan.segments],
                "references": zarr_store.open_root(self.root)[plan.meta.group_name].attrs.get("references", {}),
                "notes": list(plan.notes),
                "unprocessed_when_stopped": unprocessed,
            }
        summary = _account(self.outdir, self.root, plans, per_group, self.dead_dir) if plans else {"exposures": []}
        summary.update({
            "nirbeam_version": __version__,
            "command": "stream",
            "inputs": [s.path for p in plans for s in p.segments],
            "outdir": os.path.abspath(self.outdir),
            "refs_dir": os.path.abspath(self.refs_dir) if self.refs_dir else None,
            "runner": {"name": (runner or RunnerSpec()).name,
                       "streaming_execution": "in-process driver loop (nirbeam.stream.streaming."
                                              "run_stream); final stage 2 on the Beam runner"},
            "config": self.settings.as_json(),
            "products": products,
            "metrics": metrics,
            "streaming": {
                "mode": mode, "stopped_by_signal": stopped, "complete": self.complete(),
                "live_model_nints": self.live_model_nints,
                "integrations_processed": self.counts["integrations"],
                "live_points": self.counts["live_points"],
                "live_table_writes": self.counts["table_writes"],
                "live_plots": self.counts["plots"],
                "live_fits": self.counts["fits"],
                "live_fit_failures": self.counts["fit_failures"],
                "latency_s": {k: _stats(v) for k, v in self.latency.items()},
                "latency_s_after_live_model": {k: _stats(v) for k, v in self.latency_steady.items()},
                "finalize_s": round(t_final, 3),
                "notes": list(source_notes) + self.notes,
            },
            "wall_s": round(time.time() - self.t_start, 3),
        })
        if extra:
            summary["streaming"].update(extra)
        _write_json_atomic(os.path.join(self.outdir, "run.json"), summary)
        return summary


MIN_FIT_POINTS = 20  # good live white-light points before the first quick-look fit


def _stats(v: list[float]) -> dict:
    if not v:
        return {"n": 0}
    a = np.asarray(v)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 4),
            "p95": round(float(np.percentile(a, 95)), 4), "max": round(float(a.max()), 4)}


def run_stream(
    watch_dir: str,
    outdir: str,
    *,
    refs_dir: str | None = None,
    config: dict | None = None,
    until_complete: bool = False,
    poll: float = 1.0,
    replay_speed: float | None = None,
    stop: threading.Event | None = None,
    runner=None,
    live_model_nints: int = 8,
    plot_every: float = 30.0,
    replay_limit: int | None = None,
    on_progress=None,
    handle_sigint: bool = True,
    allow_standins: bool = False,
):
    """Run the streaming service until stopped, or until the exposure completes.

    Parameters
    ----------
    watch_dir : str
        Folder watched for ``*_uncal.fits`` segments; with ``replay_speed`` the folder
        (or file) holding an existing exposure to replay.
    outdir : str
    until_complete : bool
        Stop once every exposure/detector seen has all NINTS integrations (replay: always).
    poll : float
        Seconds between folder polls.
    replay_speed : float, optional
        Replay an existing exposure at this many times real time (``inf``: at once).
    stop : threading.Event, optional
        Set it to stop (Ctrl-C sets it when ``handle_sigint`` and in the main thread):
        the integration in flight is finished, the live products written, the exposure
        finalised over what arrived.

    Returns
    -------
    nirbeam.stream.pipeline.RunResult
    """
    from nirbeam.stream.pipeline import RunResult
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.watch import FolderWatcher, ReplaySource

    settings = Settings.from_dict(config or {})
    stop = stop or threading.Event()
    if replay_speed is not None:
        source = ReplaySource([watch_dir], replay_speed, limit=replay_limit)
        mode = f"replay x{replay_speed:g}"
        until_complete = True
    else:
        source = FolderWatcher(watch_dir, poll)
        mode = "watch"
    session = StreamSession(outdir, refs_dir, settings, live_model_nints=live_model_nints,
                            plot_every=plot_every, allow_standins=allow_standins)
    old = None
    if handle_sigint and threading.current_thread() is threading.main_thread():
        def _on_sigint(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            print("nirbeam stream: stopping (finishing the integration in flight; Ctrl-C again "
                  "to abort)", file=sys.stderr, flush=True)
            stop.set()

        old = signal.signal(signal.SIGINT, _on_sigint)
    try:
        complete_since = None
        while not stop.is_set():
            for a in source.poll(0.05 if session.next_work() else 0.5):
                session.add(a)
            n = 0
            while not stop.is_set():
                w = session.next_work()
                if w is None:
                    break
                session.process(*w)
                n += 1
                session.maybe_write_live(idle=False)
                if on_progress is not None:
                    on_progress(session)
                if n % 8 == 0:  # keep picking up arrivals while working through a backlog
                    for a in source.poll(0):
                        session.add(a)
            session.maybe_write_live(idle=True)
            if on_progress is not None:
                on_progress(session)
            if session.complete() and (until_complete or source.exhausted):
                # one more poll for late files of another detector, then close
                if complete_since is None:
                    complete_since = time.time()
                elif time.time() - complete_since >= (0 if source.exhausted else poll):
                    break
            else:
                complete_since = None
            if source.exhausted and session.next_work(final=True) is None and not any(
                    g.pending for g in session.groups.values()):
                break
        # stopped: arrivals still queued are not processed; run.json lists them
        stopped = stop.is_set()
        summary = session.finalize(stopped=stopped, source_notes=getattr(source, "notes", []),
                                   mode=mode, runner=runner)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return RunResult(outdir, summary, 0)


def write_json(path: str, obj) -> None:
    """Write JSON atomically (helper for the benchmark)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)
    os.replace(tmp, path)
