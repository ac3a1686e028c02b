"""``nirbeam stream``: the batch transforms on a Beam streaming pipeline.

The graph (:class:`StreamGraph`), one box per Beam step::

    Ticks (unbounded, every --poll s) -> WatchFolder (stateful: complete files, dedup)
      -> PrepareExposure (stateful per exposure/detector: references, store template)
      -> Read -> Detector1 -> WriteRateints          (batch's RecordSteps: the same code)
      -> RollingOutliers (stateful per exposure/detector, released by the data)
      -> LiveExtract (stateful: live model from the first integrations; live points)
      -> LiveSink (stateful: OUTDIR/live/ rewritten after each bundle)
    and, beside them, Completion (stateful: every integration processed or dead-lettered
    -> the source stops when --until-complete), WriteDead (batch's dead-letter writer).

``Read``, ``Detector1`` and ``WriteRateints`` are :class:`~nirbeam.transforms.common.RecordStep`
with batch's record functions (:func:`pipeline.read_record` behind a file-signature check,
:class:`pipeline.Calibrate`, :class:`pipeline.WriteRateints`), and the exposure is prepared
by batch's :func:`pipeline.prepare_exposure`; so the ``rateints`` in the store are batch's.
When the source stops (exposure complete with ``--until-complete``, Ctrl-C, or a stop
event), the pipeline drains (every integration already found is processed) and the driver
finalises with batch's stage 2 and product builders (:func:`products.run_spectra_stage`,
:func:`products.finalize_products`) over the same store: the final products equal
``nirbeam run``'s on the same files.

Time and lateness (measured, Beam 2.77, see ../shared/FIELD.md): on the local runner the
watermark of an impulse-driven source follows the wall clock, and event-time timers fire
as soon as they are set, so nothing on the live path waits for a watermark: the outlier
window is released by the data (an integration is released once its whole window has
arrived; an integration that failed upstream enters the window as batch's placeholder; one
still missing ``max_lateness_ints`` integrations after the newest is given up); the live
sink sets a timer at the element's (wall-clock) time only to write once per bundle. Records
carry their INT_TIMES mid-time as event time (:func:`beam_timestamp`). The outlier DoFn's
event-time lateness (``allowed_lateness_s``) is for sources whose watermark follows the data
(TestStream, a source with a data-driven watermark estimator); the service leaves it off.

Runners: ``direct`` (default) runs the unbounded source on the in-process ``FnApiRunner``,
which runs splittable DoFns with deferred remainders in real time and never downloads
anything (``DirectRunner`` would first try to fetch Prism, then fall back to it);
``portable`` submits to a job service (Flink, Dataflow's portable endpoint) with
``--streaming``; runners that cannot stream (``dask``, ``multiprocess``) are refused. The
stop marker, the journal of accepted segments and the live state go through files under
``OUTDIR/_stream/``, so they work wherever the workers share OUTDIR. On Dataflow or Flink
the watched folder is replaced by an object-notification source (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
import typing
import uuid
from dataclasses import dataclass, field, replace

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from nirbeam import __version__
from nirbeam.core.schema import RATEINTS
from nirbeam.sinks import zarr_store
from nirbeam.stream.live import (
    MIN_FIT_POINTS,
    LiveModelFromStore,
    LivePoint,
    LiveState,
    LiveWriter,
    build_live_model,
    latency_stats,
    live_edges,
    live_point,
    live_point_and_bins,
    save_live_model,
)
from nirbeam.stream.pipeline import (
    Calibrate,
    ReadItem,
    RunResult,
    WriteDeadLetter,
    WriteRateints,
    read_record,
)
from nirbeam.core.records import DeadLetter, IntegrationKey, IntegrationRecord
from nirbeam.stream.watch import Arrival, WatchState, file_signature, poll_folder
from nirbeam.transforms.common import RecordStep, StepFailed
from nirbeam.transforms.outliers import RollingOutlierFlagger

__all__ = [
    "DEAD", "RATEINTS", "MIN_FIT_POINTS", "LivePoint", "live_point", "live_point_and_bins",
    "build_live_model", "LiveModelFromStore", "beam_timestamp", "WithEventTime",
    "RollingOutlierDoFn", "Ticks", "WatchFolderDoFn", "PrepareExposureDoFn", "StreamItem",
    "read_checked", "LiveExtractDoFn", "LiveSinkDoFn", "CheckComplete", "StreamConfig",
    "StreamGraph", "make_stream_runner", "run_stream",
]

log = logging.getLogger("nirbeam")

SECONDS_PER_DAY = 86400.0
DEAD = "deadletter"
STREAM_DIR = "_stream"  # OUTDIR/_stream: stop marker, journal, live state
#: Steps whose dead letter means an integration has no rateints.
RATE_STEPS = ("read", "detector1", "write_rateints")


def _counter(name: str):
    return Metrics.counter("nirbeam", name)


# ---------------------------------------------------------------------------------------
# Event time


def beam_timestamp(bjd_tdb: float) -> Timestamp:
    """Event time of an integration: int_mid_BJD_TDB (MJD-like days) as seconds from MJD 0.

    Rounded to the millisecond (watermarks and portable runners work in milliseconds; a
    cadence is >= 0.2 s), so monotone in the mid-time.
    """
    return Timestamp(micros=int(round(float(bjd_tdb) * SECONDS_PER_DAY * 1e3)) * 1000)


class _EventTimeFn(beam.DoFn):
    def process(self, rec):
        yield beam.window.TimestampedValue(rec, beam_timestamp(rec.times.int_mid_bjd_tdb))


class WithEventTime(beam.PTransform):
    """Stamp each record (anything with ``.times.int_mid_bjd_tdb``) with its event time."""

    def expand(self, pcoll):
        return pcoll | "EventTime" >> beam.ParDo(_EventTimeFn())


# ---------------------------------------------------------------------------------------
# Stateful outlier window


def _placeholder(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What batch stage 2 sees for an integration without rateints: 0, 0, DO_NOT_USE."""
    from nirbeam import dqflags

    return (np.zeros(shape, np.float32), np.zeros(shape, np.float32),
            np.full(shape, dqflags.DO_NOT_USE, np.uint32))


@dataclass
class _FlagState:
    """Keyed state of :class:`RollingOutlierDoFn` for one (exposure, detector)."""

    flagger: RollingOutlierFlagger | None = None
    recs: dict = field(default_factory=dict)      # integration -> record awaiting release
    times: dict = field(default_factory=dict)     # integration -> event time (micros)
    given_up: set = field(default_factory=set)    # integrations replaced by placeholders
    early_dead: list = field(default_factory=list)  # dead letters before the first record
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

    Input ``((exposure, detector), record)`` with rate/err/dq (stage rateints), or
    ``((exposure, detector), DeadLetter)`` for an integration that failed upstream (it
    enters the window as batch's placeholder: rate 0, DQ DO_NOT_USE, never in a median).
    Output: the record with ``dq`` = rateints DQ plus ``DO_NOT_USE | OUTLIER`` on flagged
    pixels (stage ``cleaned``), stamped with its own event time, in integration order, once
    every integration of its window has arrived -- identical to batch's
    :func:`~nirbeam.transforms.outliers.flag_outliers` over the whole exposure.

    Lateness, two policies (either may be off):

    * ``max_lateness_ints`` (data-driven; the service's): a missing integration ``k`` is
      given up once an integration numbered above ``k + max_lateness_ints`` has arrived.
    * ``allowed_lateness_s`` (event time; for sources whose watermark follows the data):
      ``k`` is given up when the watermark passes ``t_j + allowed_lateness`` for the first
      integration ``j > k`` that has arrived, or, for the tail,
      ``t_last + (k - last) * cycle + allowed_lateness`` with the integration cycle from
      the readout pattern. The end of the input fires every pending deadline.

    A given-up integration is replaced by the placeholder and a dead letter (step
    ``outliers``) says so; one arriving after it was given up, after its slot was
    released, or twice, goes to the dead letters too. Records released because the tail
    was given up carry the provenance ``("outliers", "flushed")``.
    """

    def __init__(self, window: int = 25, n_sigma: float = 5.0,
                 allowed_lateness_s: float | None = 60.0, enabled: bool = True,
                 max_lateness_ints: int | None = None, passthrough: bool = False,
                 dead_dir: str | None = None):
        self.window = int(window)
        self.n_sigma = float(n_sigma)
        self.lateness_us = None if allowed_lateness_s is None else int(round(allowed_lateness_s * 1e6))
        self.max_lateness = None if max_lateness_ints is None else int(max_lateness_ints)
        self.enabled = enabled
        self.passthrough = passthrough
        self.dead_dir = dead_dir

    def setup(self):
        self.released = _counter("outliers.records")

    def _init(self, st: _FlagState, rec: IntegrationRecord) -> None:
        m = rec.meta
        st.nints = int(m.nints)
        st.shape = tuple(np.shape(rec.rate))
        st.cycle_us = int(round((m.ngroups * (m.nframes + m.groupgap) - m.groupgap + 1)
                                * m.tframe * 1e6))
        st.key = (rec.key.exposure, rec.key.detector)
        st.flagger = RollingOutlierFlagger(self.window if self.enabled else 1, self.n_sigma,
                                           nints=st.nints)

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                state=_STATE_P, late=_LATE_P):
        _, rec = element
        st = state.read() or _FlagState()
        if isinstance(rec, DeadLetter):
            if st.flagger is None:
                st.early_dead.append(rec)
                state.write(st)
                return
            yield from self._placeholder_for(st, rec.key.integration)
        else:
            if st.flagger is None:
                self._init(st, rec)
            i = rec.key.integration
            if i < st.flagger.next_integration or i in st.given_up or i in st.recs:
                why = ("arrived after it was given up (later than the allowed lateness)"
                       if i in st.given_up else "duplicate or arrived after its slot was released")
                yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(rec.key, "outliers", why, rec.source))
                state.write(st)
                return
            if self.passthrough:
                yield beam.window.TimestampedValue(rec, timestamp)
            st.recs[i] = rec
            st.times[i] = int(timestamp.micros)
            if st.last is None or i > st.last[0]:
                st.last = (i, int(timestamp.micros))
            yield from self._emit(st, st.flagger.push(i, rec.rate, rec.err, rec.dq), False)
        while st.early_dead:
            yield from self._placeholder_for(st, st.early_dead.pop().key.integration)
        yield from self._dead_on_disk(st)
        yield from self._count_lateness(st)
        if self.lateness_us is not None:
            self._arm(st, late)
        state.write(st)

    def _placeholder_for(self, st: _FlagState, k: int):
        if k < st.flagger.next_integration or k in st.given_up or k in st.recs:
            return
        st.given_up.add(k)
        yield from self._emit(st, st.flagger.push(k, *_placeholder(st.shape)), False)

    def _dead_on_disk(self, st: _FlagState):
        """Missing integrations whose dead letter the upstream steps wrote: placeholders."""
        if self.dead_dir is None or st.flagger is None:
            return
        group = f"{st.key[0]}_{st.key[1].lower()}"
        while True:
            k = self._first_missing(st)
            if k is None or not any(
                    os.path.exists(os.path.join(self.dead_dir, f"{group}_{k:05d}.{step}.json"))
                    for step in RATE_STEPS):
                return
            yield from self._placeholder_for(st, k)

    def _count_lateness(self, st: _FlagState):
        if self.max_lateness is None or st.last is None:
            return
        k = self._first_missing(st)
        while k is not None and st.last[0] - k > self.max_lateness:
            st.given_up.add(k)
            yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(
                IntegrationKey(*st.key, k), "outliers",
                f"not arrived {self.max_lateness} integrations after it was due"))
            yield from self._emit(st, st.flagger.push(k, *_placeholder(st.shape)), False)
            k = self._first_missing(st)

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
        if st.flagger is None or st.last is None:
            return
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
            self.released.inc()
            yield beam.window.TimestampedValue(out, Timestamp(micros=t))

    @on_timer(_LATE)
    def on_late(self, fire=beam.DoFn.TimestampParam, state=_STATE_P, late=_LATE_P):
        st = state.read()
        if st is None or st.flagger is None or self.lateness_us is None:
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


# ---------------------------------------------------------------------------------------
# The source: ticks that stop on a marker, and a stateful folder watcher


class _TickRestrictions(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, 2**62)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def truncate(self, element, restriction):
        return None  # drained: stop


def _stop_due(stop_path: str, grace_s: float) -> bool:
    try:
        return time.time() - os.stat(stop_path).st_mtime >= grace_s
    except FileNotFoundError:
        return False


class _TickFn(beam.DoFn):
    """Beam's ``PeriodicImpulse`` generator, that also ends once ``stop_path`` exists.

    Element ``(start, interval_s, stop_path)``; emits tick ``i`` at wall time
    ``start + i * interval`` (its event time), sets the watermark to it, defers between
    ticks. The source ends one interval after the stop marker appeared (one more poll, for
    files that arrived with the last one).
    """

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=beam.DoFn.RestrictionParam(_TickRestrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        start, interval, stop_path = element
        i = tracker.current_restriction().start
        while True:
            if _stop_due(stop_path, interval):
                tracker.try_claim(tracker.current_restriction().stop)  # done
                return
            t = Timestamp(start + interval * i)
            wm = watermark.current_watermark()
            if t.micros / 1e6 > time.time():
                if wm is None or t > wm:
                    watermark.set_watermark(t)
                tracker.defer_remainder(t)
                return
            if not tracker.try_claim(i):
                return
            if wm is None or t > wm:
                watermark.set_watermark(t)
            yield beam.window.TimestampedValue(i, t)
            i += 1


class Ticks(beam.PTransform):
    """An unbounded PCollection of ticks every ``interval`` s until ``stop_path`` exists."""

    def __init__(self, interval: float, stop_path: str, start: float | None = None):
        super().__init__()
        self.interval = float(interval)
        self.stop_path = stop_path
        self.start = start

    def expand(self, pbegin):
        start = time.time() if self.start is None else self.start
        return (pbegin | "Start" >> beam.Create([(start, self.interval, self.stop_path)])
                | "Generate" >> beam.ParDo(_TickFn()))


def _append_jsonl(path: str, rows) -> None:
    with open(path, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r, default=str) + "\n")


_WATCH = ReadModifyWriteStateSpec("watch", PickleCoder())


class WatchFolderDoFn(beam.DoFn):
    """On each tick, poll the folder (:func:`~nirbeam.stream.watch.poll_folder`); the
    :class:`~nirbeam.stream.watch.WatchState` (names seen, sizes, duplicates) is keyed state.

    Input ``(folder, tick)``; output :class:`~nirbeam.stream.watch.Arrival` items. Each
    accepted segment and each note is journalled in ``journal_dir`` (``accepted.jsonl``,
    ``notes.jsonl``) for the driver's finalisation.
    """

    def __init__(self, journal_dir: str):
        self.journal_dir = journal_dir

    def setup(self):
        self.segments = _counter("watch.segments")
        self.polls = _counter("watch.polls")

    def process(self, element, state=beam.DoFn.StateParam(_WATCH)):
        folder, _ = element
        st = state.read() or WatchState()
        n_notes = len(st.notes)
        arrivals = poll_folder(st, folder, time.time())
        self.polls.inc()
        if arrivals:
            _append_jsonl(os.path.join(self.journal_dir, "accepted.jsonl"), [
                {"path": a.segment.path, "signature": list(a.signature), "available": a.available,
                 "group": a.segment.meta.group_name, "nints": a.segment.meta.nints,
                 "intstart": a.segment.intstart,
                 "intend": a.segment.intend} for a in arrivals])
        if len(st.notes) > n_notes:
            _append_jsonl(os.path.join(self.journal_dir, "notes.jsonl"),
                          [{"note": n} for n in st.notes[n_notes:]])
        state.write(st)
        for a in arrivals:
            self.segments.inc()
            yield a


# ---------------------------------------------------------------------------------------
# Per exposure: prepare once, then work items


@dataclass(frozen=True)
class StreamItem:
    """A :class:`pipeline.ReadItem` plus the signature its file was accepted with."""

    item: ReadItem
    signature: tuple[int, int]

    @property
    def key(self) -> IntegrationKey:
        """The integration's key."""
        return self.item.key

    @property
    def source(self) -> str:
        """The segment file."""
        return self.item.segment.path


def read_checked(si: StreamItem) -> IntegrationRecord:
    """:func:`pipeline.read_record`, refusing a file that changed since it was accepted."""
    now = file_signature(si.source)
    if now != tuple(si.signature):
        raise StepFailed(
            f"{si.source} changed after it was found complete (size, mtime_ns "
            f"{tuple(si.signature)} -> {now}): integration refused; rerun on the final file")
    return read_record(si.item)


@dataclass(frozen=True)
class StoredItem:
    """An integration whose rateints an earlier run of this OUTDIR completed."""

    key: IntegrationKey
    meta: object
    times: object
    source: str


@dataclass(frozen=True)
class LoadStored:
    """Read a completed integration's rateints back from the store (a resumed stream)."""

    root: str

    def __call__(self, it: StoredItem) -> IntegrationRecord:
        a = zarr_store.read_integration(self.root, it.key.group, RATEINTS, it.key.integration,
                                        ("sci", "err", "dq", "var_poisson", "var_rnoise"))
        return IntegrationRecord(it.key, it.meta, it.times, "rateints", it.source,
                                 rate=a["sci"], err=a["err"], dq=a["dq"],
                                 var_poisson=a["var_poisson"], var_rnoise=a["var_rnoise"],
                                 provenance=(("resumed", "from store"),))


def write_times(root: str, group: str, seg) -> None:
    """Fill the rateints time coordinates of a segment (known only once it arrived)."""
    import zarr

    lo, hi = seg.intstart, seg.intend
    for name, attr in (("int_mid_BJD_TDB", "int_mid_bjd_tdb"), ("int_mid_MJD_UTC", "int_mid_mjd_utc")):
        a = zarr.open_array(root, path=f"{group}/{RATEINTS}/{name}", mode="r+", zarr_format=3)
        a[lo - 1:hi] = np.array([getattr(seg.times[i], attr) for i in range(lo, hi + 1)])


@dataclass
class _PrepState:
    prepared: bool = False
    failed: str | None = None
    segments: dict = field(default_factory=dict)  # intstart -> SegmentInfo
    held: list = field(default_factory=list)      # arrivals waiting for the preparation
    stored: set = field(default_factory=set)      # integrations complete from an earlier run
    announced: bool = False
    mode: str | None = None                       # the mode plan's name (nirbeam.modes)


_PREP = ReadModifyWriteStateSpec("prepare", PickleCoder())


class PrepareExposureDoFn(beam.DoFn):
    """Per (exposure, detector): prepare once (batch's :func:`pipeline.prepare_exposure`:
    references, 1/f scene mask, store template), then one work item per integration.

    Batch prepares from the first segment (its first ramp, a draft scene mask from the
    first three integrations); so does this, as soon as the segments holding integrations
    ``1..min(3, NINTS)`` have arrived (arrivals before that are held). A store from an
    earlier run of the same OUTDIR is resumed: its completed integrations are emitted as
    :class:`StoredItem` (read back, not recalibrated). Output (one PCollection):
    :class:`StreamItem`, :class:`StoredItem`, or a :class:`DeadLetter` for every
    integration when the preparation failed (the read step passes it to the dead letters).
    """

    def __init__(self, root: str, refs_dir: str | None, settings):
        self.root = root
        self.refs_dir = refs_dir
        self.settings = settings

    def setup(self):
        from nirbeam.stream.refs import index_references

        self.ref_index = index_references(self.refs_dir) if self.refs_dir else None
        self.prepared = _counter("prepare.exposures")

    def process(self, element, state=beam.DoFn.StateParam(_PREP)):
        """Exposures no mode handles (:func:`nirbeam.modes.mode_for`) are refused: each of
        their integrations gets a dead letter naming the EXP_TYPE."""
        from nirbeam.stream.uncal import plan_exposures

        _, a = element
        st = state.read() or _PrepState()
        meta = a.segment.meta
        group = meta.group_name
        if not st.announced:
            st.announced = True
            if RATEINTS in zarr_store.open_root(self.root).get(group, {}):
                st.prepared = True
                done = zarr_store.completed(self.root, group, RATEINTS)
                st.stored = {int(i) + 1 for i in np.flatnonzero(done)}
        st.segments[a.segment.intstart] = a.segment
        if not st.failed and st.mode is None:
            from nirbeam.modes import ModeError, mode_for

            try:
                st.mode = mode_for(meta).name
            except ModeError as exc:
                st.failed = str(exc)
        if st.failed:
            yield from self._dead(a, st.failed)
        elif st.prepared:
            write_times(self.root, group, a.segment)
            yield from self._items(a, st)
        else:
            st.held.append(a)
            have = {i for h in st.held for i in h.integrations}
            if all(i in have for i in range(1, min(3, meta.nints) + 1)):
                plan = plan_exposures(list(st.segments.values()))[0]
                try:
                    from nirbeam.stream.pipeline import prepare_exposure

                    prepare_exposure(self.root, plan, self.refs_dir, self.ref_index, self.settings)
                    st.prepared = True
                    self.prepared.inc()
                except Exception as exc:  # noqa: BLE001 - every integration gets a dead letter
                    st.failed = f"preparing the exposure failed: {type(exc).__name__}: {exc}"
                    log.error("%s: %s", group, st.failed)
                held, st.held = st.held, []
                for h in held:
                    if st.failed:
                        yield from self._dead(h, st.failed)
                    else:
                        yield from self._items(h, st)
        state.write(st)

    def _items(self, a: Arrival, st: _PrepState):
        seg = a.segment
        bare = replace(seg, times={})
        for i in a.integrations:
            key = IntegrationKey(seg.meta.exposure, seg.meta.detector, i)
            if i in st.stored:
                yield StoredItem(key, seg.meta, seg.times[i], seg.path)
            else:
                yield StreamItem(ReadItem(key, bare, seg.times[i]), tuple(a.signature))

    def _dead(self, a: Arrival, reason: str):
        seg = a.segment
        for i in a.integrations:
            yield DeadLetter(IntegrationKey(seg.meta.exposure, seg.meta.detector, i), "read",
                             reason, seg.path)


# ---------------------------------------------------------------------------------------
# Live path


@dataclass
class _ExtractState:
    model: object = None          # None (not yet), True (built, in the store), str (why not)
    first: list = field(default_factory=list)  # rateints records until the model exists
    held: list = field(default_factory=list)   # cleaned records until the model exists


_EXTRACT = ReadModifyWriteStateSpec("live_model", PickleCoder())


class LiveExtractDoFn(beam.DoFn):
    """Live points per (exposure, detector): ``provisional`` from rateints records,
    ``flagged`` from the outlier-flagged (``cleaned``) records.

    The live model is built from the first ``live_model_nints`` rateints records
    (:func:`~nirbeam.stream.live.build_live_model`) and saved in
    ``<group>/live_extraction``; records before it are held in keyed state. Output:
    ``("group", name, info)`` once, then ``("point", LivePoint, bins)`` per record.
    """

    def __init__(self, root: str, settings, live_model_nints: int = 8):
        self.root = root
        self.settings = settings
        self.n = int(live_model_nints)
        self._edges: dict[str, np.ndarray | None] = {}

    def setup(self):
        self.points = _counter("live_extract.records")
        self.failed = _counter("live_extract.failures")

    def process(self, element, state=beam.DoFn.StateParam(_EXTRACT)):
        _, rec = element
        st = state.read() or _ExtractState()
        if st.model is None:
            (st.first if rec.stage == "rateints" else st.held).append(rec)
            if len(st.first) >= min(self.n, rec.meta.nints):
                yield from self._build(st)
                recs = sorted(st.first, key=lambda r: r.key.integration) + st.held
                st.first, st.held = [], []
                for r in recs:
                    yield from self._point(r)
        elif st.model is True:
            yield from self._point(rec)
        state.write(st)

    def _build(self, st: _ExtractState):
        from nirbeam.stream.uncal import plan_exposures, scan_segment

        recs = st.first
        r0 = recs[0]
        group = r0.key.group
        try:
            plan = plan_exposures([scan_segment(r0.source)])[0]
        except Exception:  # noqa: BLE001 - the wavelengths fall back to the config
            plan = None
        m = build_live_model(r0.meta, np.stack([r.rate for r in recs]), np.stack([r.dq for r in recs]),
                             self.settings, plan=plan)
        if isinstance(m, str):
            st.model = m
            log.warning("%s: no live points: %s", group, m)
            return
        save_live_model(self.root, group, m, len(recs))
        st.model = True
        try:
            edges = live_edges(self.settings, m)
        except Exception as exc:  # noqa: BLE001 - no live speclc, the rest goes on
            log.warning("%s: no live spectroscopic light curves: bin edges: %s", group, exc)
            edges = None
        self._edges[group] = edges
        yield ("group", group, {"meta": r0.meta, "edges": edges, "wl": m.wavelength.wavelength,
                                "wl_source": m.wavelength.source})

    def _point(self, rec: IntegrationRecord):
        group = rec.key.group
        status = "provisional" if rec.stage == "rateints" else "flagged"
        try:
            model = LiveModelFromStore(self.root)(group)
            if group not in self._edges:
                try:
                    self._edges[group] = live_edges(self.settings, model)
                except Exception:  # noqa: BLE001
                    self._edges[group] = None
            p, bins = live_point_and_bins(rec, rec.dq, model, self.settings, status,
                                          self._edges[group])
        except Exception as exc:  # noqa: BLE001 - a live point must not stop the stream
            self.failed.inc()
            log.warning("live point of %s failed: %s: %s", rec.key, type(exc).__name__, exc)
            return
        self.points.inc()
        yield ("point", p, bins)


_SINK = ReadModifyWriteStateSpec("live", PickleCoder())
_FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)


class LiveSinkDoFn(beam.DoFn):
    """All live events under one key -> :class:`~nirbeam.stream.live.LiveState`, written
    by :class:`~nirbeam.stream.live.LiveWriter` once per bundle (a timer at the element's
    wall-clock stamp), and snapshotted to ``journal_dir/live_state.pkl`` for the driver.

    Events: ``("group", name, info)``, ``("point", LivePoint, bins)``. A point's arrival
    time (for the latency) is its segment's ``available`` in the journal.
    """

    def __init__(self, writer: LiveWriter, journal_dir: str):
        self.writer = writer
        self.journal_dir = journal_dir

    def setup(self):
        self.events = _counter("live_sink.records")
        self.flush_s = Metrics.distribution("nirbeam", "live_sink.write_ms")
        self.writes = _counter("live_sink.writes")

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                state=beam.DoFn.StateParam(_SINK), flush=beam.DoFn.TimerParam(_FLUSH)):
        _, ev = element
        st = state.read() or LiveState()
        if ev[0] == "group":
            st.groups[ev[1]] = ev[2]
        else:
            p = ev[1]
            if (p.group, p.integration) not in st.available:
                for row in _journal_rows(self.journal_dir, "accepted.jsonl"):
                    for i in range(row["intstart"], row["intend"] + 1):
                        st.available.setdefault((row["group"], i), row["available"])
            st.add(p, ev[2])
        self.events.inc()
        state.write(st)
        flush.set(timestamp)

    @on_timer(_FLUSH)
    def on_flush(self, state=beam.DoFn.StateParam(_SINK)):
        st = state.read()
        if st is None or not st.dirty:
            return
        t0 = time.perf_counter()
        self.writer.flush(st)
        self.writes.inc()
        self.flush_s.update(int((time.perf_counter() - t0) * 1000))
        state.write(st)
        save_live_state(self.journal_dir, st)


def save_live_state(journal_dir: str, st: LiveState) -> None:
    """Snapshot the live state atomically (the driver's end-of-run hook reads it)."""
    path = os.path.join(journal_dir, "live_state.pkl")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(st, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_live_state(journal_dir: str) -> LiveState:
    """The last snapshot of the live state (empty when none was written)."""
    try:
        with open(os.path.join(journal_dir, "live_state.pkl"), "rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError:
        return LiveState()


# ---------------------------------------------------------------------------------------
# The graph


@dataclass(frozen=True)
class StreamConfig:
    """What :class:`StreamGraph` needs (all picklable)."""

    watch_dir: str
    outdir: str
    settings: object
    refs_dir: str | None = None
    poll: float = 1.0
    until_complete: bool = False
    live_model_nints: int = 8
    plot_every: float = 30.0
    max_lateness_ints: int = 200
    token: str = ""
    start: float = 0.0  # wall time of the first tick

    @property
    def root(self) -> str:
        """The zarr store."""
        return os.path.join(self.outdir, "cubes.zarr")

    @property
    def journal(self) -> str:
        """``OUTDIR/_stream``."""
        return os.path.join(self.outdir, STREAM_DIR)

    @property
    def stop_path(self) -> str:
        """The marker that ends the source."""
        return os.path.join(self.journal, "stop")


@dataclass(frozen=True)
class _SinkStamp:
    """Stamp live events with the stream's start time: at or behind every watermark of
    the source, so the sink's flush timer fires after the bundle (measured: a stamp of
    "now" waited for the next tick to pass it, i.e. up to the end of a backlog)."""

    start: float

    def __call__(self, ev):
        return beam.window.TimestampedValue(("live", ev), Timestamp(self.start))


def _unless_rateints(fn):
    """Apply a record function, passing records already at stage rateints (resumed) on."""
    def apply(rec):
        return rec if getattr(rec, "stage", None) == "rateints" else fn(rec)

    apply.setup = getattr(fn, "setup", None)
    return apply


@dataclass(frozen=True)
class ReadOrLoad:
    """The read step of the stream: :func:`read_checked` for a :class:`StreamItem`,
    :class:`LoadStored` for a :class:`StoredItem` (an earlier run's rateints)."""

    root: str

    def __call__(self, item):
        if isinstance(item, StoredItem):
            return LoadStored(self.root)(item)
        return read_checked(item)


def exposure_complete(cfg: StreamConfig) -> bool:
    """Every exposure/detector the watcher accepted has all NINTS integrations with
    rateints (store) or a dead letter of a rate step (``_deadletters``)."""
    groups: dict[str, int] = {}
    for row in _journal_rows(cfg.journal, "accepted.jsonl"):
        groups[row["group"]] = int(row["nints"])
    if not groups:
        return False
    dead_dir = os.path.join(cfg.outdir, "_deadletters")
    names = set(os.listdir(dead_dir)) if os.path.isdir(dead_dir) else set()
    root_groups = zarr_store.open_root(cfg.root)
    for g, n in groups.items():
        if g not in root_groups or RATEINTS not in root_groups[g]:
            return False
        done = zarr_store.completed(cfg.root, g, RATEINTS)
        for i in np.flatnonzero(~done) + 1:
            if not any(f"{g}_{int(i):05d}.{step}.json" in names for step in RATE_STEPS):
                return False
    return True


@dataclass(frozen=True)
class CheckComplete:
    """Pass elements on; once :func:`exposure_complete`, write the stop marker (with
    ``until_complete``): the source ends after one more poll."""

    cfg: StreamConfig

    def __call__(self, x):
        c = self.cfg
        if c.until_complete and not os.path.exists(c.stop_path):
            n = getattr(getattr(x, "meta", None), "nints", None)
            i = getattr(getattr(x, "key", None), "integration", None)
            # cheap test first: only near an exposure's end, or for a dead letter
            if (n is None or i is None or i >= n or isinstance(x, DeadLetter)) and exposure_complete(c):
                with open(c.stop_path, "w") as fh:
                    fh.write("complete\n")
        return x


@dataclass(frozen=True)
class WriteDeadAndCheck:
    """Batch's :class:`pipeline.WriteDeadLetter`, then :class:`CheckComplete`."""

    cfg: StreamConfig

    def __call__(self, dl: DeadLetter) -> None:
        WriteDeadLetter(os.path.join(self.cfg.outdir, "_deadletters"))(dl)
        CheckComplete(self.cfg)(dl)


def _keyed(label: str, fn):
    return label >> beam.Map(fn).with_output_types(typing.Tuple[str, typing.Any])


class StreamGraph(beam.PTransform):
    """The whole ``nirbeam stream`` graph, from the pipeline root (see the module notes).

    One chain, no Flatten (on the in-process FnApiRunner a Flatten below an unbounded
    source stops everything after it: measured with Beam 2.77): dead letters leave the
    chain to batch's writer, and the steps that must know about them (the outlier window,
    the completion check) read them back from ``_deadletters``. Returns the live events
    (``("point", LivePoint, bins)`` and ``("group", name, info)``).
    """

    def __init__(self, cfg: StreamConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, pbegin):
        c = self.cfg
        s = c.settings
        dead_dir = os.path.join(c.outdir, "_deadletters")
        items = (pbegin
                 | "Ticks" >> Ticks(c.poll, c.stop_path, start=c.start)
                 | _keyed("KeyFolder", lambda t, d=c.watch_dir: (d, t))
                 | "WatchFolder" >> beam.ParDo(WatchFolderDoFn(c.journal))
                 | _keyed("KeyExposure", lambda a: (a.segment.meta.group_name, a))
                 | "PrepareExposure" >> beam.ParDo(PrepareExposureDoFn(c.root, c.refs_dir, s)))
        # batch's record steps and functions (resumed integrations pass through)
        read = items | "Read" >> RecordStep(ReadOrLoad(c.root), "read")
        cal = read.records | "Detector1" >> RecordStep(
            _unless_rateints(Calibrate(c.root, s, c.token)), "detector1")
        wr = cal.records | "WriteRateints" >> RecordStep(
            _unless_rateints_write(WriteRateints(c.root, keep=True)), "write_rateints")
        for name, out in (("Read", read), ("Detector1", cal), ("WriteRateints", wr)):
            _ = out.deadletter | f"WriteDead{name}" >> beam.Map(WriteDeadAndCheck(c))
        o = s.outliers
        flagged = (
            wr.records
            | "Completion" >> beam.Map(CheckComplete(c))
            | "EventTime" >> WithEventTime()
            | _keyed("KeyWindow", lambda r: (r.key.group, r))
            | "RollingOutliers" >> beam.ParDo(RollingOutlierDoFn(
                o.window, o.n_sigma, None, o.enabled, c.max_lateness_ints, passthrough=True,
                dead_dir=dead_dir)).with_outputs(DEAD, main="records"))
        _ = flagged[DEAD] | "LateNotes" >> beam.Map(_log_late)
        live = (flagged.records
                | _keyed("KeyLive", lambda r: (r.key.group, r))
                | "LiveExtract" >> beam.ParDo(LiveExtractDoFn(c.root, s, c.live_model_nints)))
        writer = LiveWriter(c.outdir, s, c.plot_every, c.live_model_nints)
        _ = (live
             | "SinkTime" >> beam.Map(_SinkStamp(c.start)).with_output_types(typing.Tuple[str, typing.Any])
             | "LiveSink" >> beam.ParDo(LiveSinkDoFn(writer, c.journal)))
        return live


def _unless_rateints_write(fn):
    """WriteRateints, except for records read back from the store (already written)."""
    def apply(rec):
        return rec if rec.provenance[-1:] == (("resumed", "from store"),) else fn(rec)

    return apply


def _log_late(d: DeadLetter) -> None:
    _counter("outliers.late").inc()
    log.info("live outlier window: %s %s", d.key, d.reason)


# ---------------------------------------------------------------------------------------
# The driver


def make_stream_runner(spec):
    """``(runner, PipelineOptions, description)`` for a streaming run of ``spec``.

    Raises ValueError for a runner that cannot run an unbounded source with event time.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from nirbeam.stream.runners import STREAMING_CAPABLE, make_runner

    spec.validate()
    if spec.name not in STREAMING_CAPABLE:
        raise ValueError(
            f"--runner {spec.name!r} cannot run a streaming pipeline with event-time windows "
            f"(Beam on Dask silently puts everything in the global window; nirbeam's "
            f"multi-process mode is batch only); use one of {list(STREAMING_CAPABLE)}")
    if spec.name == "direct":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        opts = PipelineOptions(list(spec.beam_args))
        opts.view_as(StandardOptions).streaming = True
        return FnApiRunner(), opts, "FnApiRunner (in-process, streaming: unbounded source)"
    runner, opts, _ = make_runner(spec, streaming=True)
    return runner, opts, f"PortableRunner ({spec.job_endpoint}, streaming)"


def _metrics(result) -> dict:
    from nirbeam.stream.pipeline import _metrics as batch_metrics

    return batch_metrics(result)


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
    max_lateness_ints: int = 200,
    handle_sigint: bool = True,
):
    """Run ``nirbeam stream`` until stopped, or until the exposure completes.

    Parameters
    ----------
    watch_dir : str
        Folder watched for ``*_uncal.fits`` segments; with ``replay_speed`` the folder (or
        file) holding an existing exposure, whose segments are dropped into
        ``OUTDIR/_stream/replay`` as they would complete at that speed.
    until_complete : bool
        Stop once every exposure/detector seen has all NINTS integrations processed or
        dead-lettered (replay: always).
    poll : float
        Seconds between folder polls.
    stop : threading.Event, optional
        Set it to stop (Ctrl-C does the same when ``handle_sigint`` in the main thread):
        the source ends, everything already found is processed, the exposure finalised.
    runner : RunnerSpec, optional
        ``direct`` (default) or ``portable``.

    Returns
    -------
    nirbeam.stream.pipeline.RunResult
    """
    from nirbeam.stream.pipeline import _check_outdir
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.watch import ReplayDropper

    t_start = time.time()
    settings = Settings.from_dict(config or {})
    spec = runner or RunnerSpec()
    beam_runner, options, runner_desc = make_stream_runner(spec)
    _check_outdir(outdir)
    journal = os.path.join(outdir, STREAM_DIR)
    os.makedirs(journal, exist_ok=True)
    for n in ("stop", "accepted.jsonl", "notes.jsonl", "live_state.pkl"):
        try:
            os.remove(os.path.join(journal, n))
        except FileNotFoundError:
            pass
    zarr_store.open_root(os.path.join(outdir, "cubes.zarr"))
    dropper = None
    if replay_speed is not None:
        folder = os.path.join(journal, "replay")
        dropper = ReplayDropper([watch_dir], folder, replay_speed)
        mode = f"replay x{replay_speed:g}"
        until_complete = True
    else:
        folder = str(watch_dir)
        os.makedirs(folder, exist_ok=True)
        mode = "watch"
    cfg = StreamConfig(folder, outdir, settings, refs_dir, poll, until_complete,
                       live_model_nints, plot_every, max_lateness_ints, uuid.uuid4().hex,
                       time.time())
    stopped = threading.Event()

    def request_stop(reason: str) -> None:
        stopped.set()
        with open(cfg.stop_path, "w") as fh:
            fh.write(reason + "\n")

    old = None
    if handle_sigint and threading.current_thread() is threading.main_thread():
        def _on_sigint(signum, frame):
            if stopped.is_set():
                raise KeyboardInterrupt
            print("nirbeam stream: stopping (the integrations already found are finished; "
                  "Ctrl-C again to abort)", file=sys.stderr, flush=True)
            request_stop("interrupted")

        old = signal.signal(signal.SIGINT, _on_sigint)
    watcher = None
    if stop is not None:
        def _watch_event():
            while not stop.wait(0.1):
                if os.path.exists(cfg.stop_path):
                    return
            request_stop("stop event")

        watcher = threading.Thread(target=_watch_event, daemon=True)
        watcher.start()
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        _ = p | "Stream" >> StreamGraph(cfg)
        if dropper is not None:
            dropper.start()
        result = p.run()
        result.wait_until_finish()
        counters = _metrics(result)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if dropper is not None:
            dropper.stop.set()
    summary = finalize_stream(cfg, spec, counters, runner_desc=runner_desc, mode=mode,
                              stopped=stopped.is_set(), t_start=t_start)
    return RunResult(outdir, summary, 0)


def _journal_rows(journal: str, name: str) -> list[dict]:
    try:
        with open(os.path.join(journal, name)) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def finalize_stream(cfg: StreamConfig, spec, counters: dict, *, runner_desc: str, mode: str,
                    stopped: bool, t_start: float) -> dict:
    """After the source ended: final live products, then batch's stage 2 and products over
    the store, and ``run.json`` (with ``beam.runner``, ``beam.streaming`` and counters)."""
    from nirbeam.stream.pipeline import _account, _write_json_atomic
    from nirbeam.stream.products import finalize_products, run_spectra_stage
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.uncal import BadInputError, plan_exposures, scan_segment

    settings = cfg.settings
    root = cfg.root
    dead_dir = os.path.join(cfg.outdir, "_deadletters")
    notes = [r["note"] for r in _journal_rows(cfg.journal, "notes.jsonl")]
    live = load_live_state(cfg.journal)
    writer = LiveWriter(cfg.outdir, settings, cfg.plot_every, cfg.live_model_nints)
    if live.points:
        writer.flush(live, force=True)
    # the accepted files, scanned again: INT_TIMES added after arrival replace the ones read
    accepted = _journal_rows(cfg.journal, "accepted.jsonl")
    infos = []
    for row in accepted:
        try:
            info = scan_segment(row["path"])
        except BadInputError as exc:
            notes.append(f"{os.path.basename(row['path'])}: cannot be scanned again at the end "
                         f"({exc}); left out of the final products")
            continue
        if file_signature(row["path"]) != tuple(row["signature"]):
            notes.append(f"{os.path.basename(row['path'])} changed after it was read: its "
                         "INT_TIMES were read again for the final products; integrations read "
                         "after the change were refused (dead letters, step read)")
        infos.append(info)
    plans = plan_exposures(infos) if infos else []
    for plan in plans:
        g = plan.meta.group_name
        if RATEINTS in zarr_store.open_root(root).get(g, {}):
            for seg in plan.segments:
                write_times(root, g, seg)
    t0 = time.time()
    stage2 = spec if spec.name != "direct" else RunnerSpec()
    metrics = run_spectra_stage(root, plans, settings, stage2, dead_dir) if plans else {}
    products = finalize_products(cfg.outdir, root, plans, settings) if plans else {}
    zarr_store.consolidate(root, {"nirbeam_version": __version__})  # as batch does
    t_final = time.time() - t0
    dead_ints: dict[str, set] = {}
    for n in os.listdir(dead_dir) if os.path.isdir(dead_dir) else []:
        if n.endswith(".json") and not n.startswith("."):
            with open(os.path.join(dead_dir, n)) as fh:
                d = json.load(fh)
            if d.get("integration"):
                dead_ints.setdefault(f"{d['exposure']}_{d['detector'].lower()}", set()).add(
                    d["integration"])
    from nirbeam.modes import ModeError, mode_for

    per_group = {}
    for plan in plans:
        g = plan.meta.group_name
        try:
            mode = mode_for(plan.meta)
            regions = [{"name": r.name, "bbox": [r.bbox.y0, r.bbox.y1, r.bbox.x0, r.bbox.x1],
                        "trace": r.trace.kind, "wavelength": r.wavelength.kind,
                        "background": r.background.kind, "store_group": mode.store_group(plan.meta, r)}
                       for r in mode.regions(plan.meta, settings)]
            mode_info = {"mode": mode.name, "regions": regions}
        except ModeError as exc:
            mode_info = {"mode": None, "regions": [], "mode_error": str(exc)}
        done = (zarr_store.completed(root, g, RATEINTS)
                if RATEINTS in zarr_store.open_root(root).get(g, {}) else np.zeros(plan.meta.nints, bool))
        unprocessed = [i for i in plan.present if not done[i - 1] and i not in dead_ints.get(g, ())]
        per_group[g] = {
            "exposure": plan.meta.exposure, "detector": plan.meta.detector,
            "nints": plan.meta.nints, "present": len(plan.present), "missing": list(plan.missing),
            "skipped_complete": 0,
            "segments": [os.path.basename(s.path) for s in plan.segments],
            "references": (zarr_store.open_root(root)[g].attrs.get("references", {})
                           if g in zarr_store.open_root(root) else {}),
            "notes": list(plan.notes),
            "unprocessed_when_stopped": unprocessed,
            **mode_info,
        }
    summary = _account(cfg.outdir, root, plans, per_group, dead_dir) if plans else {"exposures": []}
    complete = bool(plans) and all(not v["unprocessed_when_stopped"] and not v["missing"]
                                   for v in per_group.values())
    summary.update({
        "nirbeam_version": __version__,
        "command": "stream",
        "inputs": [s.path for p in plans for s in p.segments],
        "outdir": os.path.abspath(cfg.outdir),
        "refs_dir": os.path.abspath(cfg.refs_dir) if cfg.refs_dir else None,
        "runner": {"name": spec.name, "job_endpoint": spec.job_endpoint},
        "beam": {"runner": runner_desc, "streaming": True, "counters": counters,
                 "stage2_runner": stage2.name},
        "config": settings.as_json(),
        "products": products,
        "metrics": metrics,
        "streaming": {
            "mode": mode, "stopped_by_signal": stopped, "complete": complete,
            "live_model_nints": cfg.live_model_nints,
            "integrations_processed": int(counters.get("write_rateints.records", 0)),
            "segments_accepted": len(accepted),
            "live_points": live.counts["live_points"],
            "live_table_writes": live.counts["table_writes"],
            "live_plots": live.counts["plots"],
            "live_fits": live.counts["fits"],
            "live_fit_failures": live.counts["fit_failures"],
            "latency_s": {k: latency_stats(v) for k, v in live.latency.items()},
            "latency_s_after_live_model": {k: latency_stats(v)
                                           for k, v in live.latency_steady.items()},
            "finalize_s": round(t_final, 3),
            "notes": notes,
        },
        "wall_s": round(time.time() - t_start, 3),
    })
    _write_json_atomic(os.path.join(cfg.outdir, "run.json"), summary)
    return summary
