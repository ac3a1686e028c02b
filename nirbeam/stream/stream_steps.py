"""The stateful steps of ``nirbeam stream``'s graph (:mod:`nirbeam.stream.streaming`)
after the batch record steps: event time, the outlier window, live extraction and the
live sink (and its state snapshot, the driver's end-of-run hook).

Why they are built as they are (the watermark of the local runner, data-driven release)
is in :mod:`nirbeam.stream.streaming`'s notes and docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from nirbeam.core.records import DeadLetter, IntegrationKey, IntegrationRecord
from nirbeam.stream.live import (
    LiveModelFromStore,
    LiveState,
    LiveWriter,
    build_live_model,
    live_edges,
    live_point_and_bins,
    save_live_model,
)
from nirbeam.stream.stream_source import DEAD, RATE_STEPS, counter, journal_rows
from nirbeam.transforms.outliers import RollingOutlierFlagger

__all__ = ["beam_timestamp", "WithEventTime", "RollingOutlierDoFn", "LiveExtractDoFn",
           "LiveSinkDoFn", "save_live_state", "load_live_state"]

log = logging.getLogger("nirbeam")

SECONDS_PER_DAY = 86400.0

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
        self.released = counter("outliers.records")

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
# Live path


@dataclass
class _ExtractState:
    model: object = None          # None (not yet), True (built, in the store), str (why not)
    first: list = field(default_factory=list)  # rateints records until the model exists
    held: list = field(default_factory=list)   # cleaned records until the model exists


_EXTRACT = ReadModifyWriteStateSpec("live_model", PickleCoder())
_EXTRACT_P = beam.DoFn.StateParam(_EXTRACT)


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
        self.points = counter("live_extract.records")
        self.failed = counter("live_extract.failures")

    def process(self, element, state=_EXTRACT_P):
        _, rec = element
        st = state.read() or _ExtractState()
        if st.model is None:
            (st.first if rec.stage == "rateints" else st.held).append(rec)
            if len(st.first) >= min(self.n, rec.meta.nints):
                yield from self._build(st)
                recs = sorted(st.first, key=lambda r: r.key.integration) + st.held
                st.first, st.held = [], []
                if st.model is True:  # no model (st.model says why): no points, as later
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
_SINK_P = beam.DoFn.StateParam(_SINK)
_FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
_FLUSH_P = beam.DoFn.TimerParam(_FLUSH)


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
        self.events = counter("live_sink.records")
        self.flush_s = Metrics.distribution("nirbeam", "live_sink.write_ms")
        self.writes = counter("live_sink.writes")

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                state=_SINK_P, flush=_FLUSH_P):
        _, ev = element
        st = state.read() or LiveState()
        if ev[0] == "group":
            st.groups[ev[1]] = ev[2]
        else:
            p = ev[1]
            if (p.group, p.integration) not in st.available:
                for row in journal_rows(self.journal_dir, "accepted.jsonl"):
                    for i in range(row["intstart"], row["intend"] + 1):
                        st.available.setdefault((row["group"], i), row["available"])
            st.add(p, ev[2])
        self.events.inc()
        state.write(st)
        flush.set(timestamp)

    @on_timer(_FLUSH)
    def on_flush(self, state=_SINK_P):
        st = state.read()
        if st is None or not st.dirty:
            return
        t0 = time.perf_counter()
        try:
            self.writer.flush(st)
        except Exception as exc:  # noqa: BLE001 - a live product must not stop the stream
            log.warning("live products not written (retried with the next points): %s: %s",
                        type(exc).__name__, exc)
            counter("live_sink.write_failures").inc()
            return
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


