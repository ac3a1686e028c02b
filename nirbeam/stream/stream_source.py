"""The source and the per-exposure step of ``nirbeam stream``'s graph
(:mod:`nirbeam.stream.streaming`): ticks, the stateful folder watcher, the preparation of
an exposure and its work items, and the read step's file check.

Shared with the other stream modules: the journal under ``OUTDIR/_stream`` (accepted
segments, notes), the dead-letter tag and the steps whose dead letter means "no rateints".
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Timestamp

from nirbeam.core.records import DeadLetter, IntegrationKey, IntegrationRecord
from nirbeam.core.schema import RATEINTS
from nirbeam.sinks import zarr_store
from nirbeam.stream.plan import RECORD_STEPS, PlanError, ReadItem, exposure_work
from nirbeam.stream.rate_steps import read_record
from nirbeam.stream.watch import Arrival, WatchState, file_signature, poll_folder
from nirbeam.transforms.common import StepFailed

__all__ = ["Ticks", "WatchFolderDoFn", "PrepareExposureDoFn", "StreamItem", "StoredItem",
           "LoadStored", "check_signature", "read_checked", "write_times", "journal_rows", "counter", "DEAD",
           "STREAM_DIR", "RATE_STEPS", "REFUSED", "RESUME_REFUSED"]

log = logging.getLogger("nirbeam")

DEAD = "deadletter"
STREAM_DIR = "_stream"  # OUTDIR/_stream: stop marker, journal, live state
REFUSED = "refused.json"  # in STREAM_DIR: every file refused when the stream gave up
RESUME_REFUSED = "resume_refused.jsonl"  # in STREAM_DIR: exposures whose stored rates differ
#: Steps whose dead letter means an integration has no rateints.
RATE_STEPS = RECORD_STEPS


def counter(name: str):
    """A Beam counter in the ``nirbeam`` namespace."""
    return Metrics.counter("nirbeam", name)


def journal_rows(journal: str, name: str) -> list[dict]:
    """The rows of a JSON-lines journal file (none when it does not exist)."""
    try:
        with open(os.path.join(journal, name)) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


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


_TICK_RESTRICTION_P = beam.DoFn.RestrictionParam(_TickRestrictions())
_TICK_WATERMARK_P = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _TickFn(beam.DoFn):
    """Beam's ``PeriodicImpulse`` generator, that also ends once ``stop_path`` exists.

    Element ``(start, interval_s, stop_path)``; emits tick ``i`` at wall time
    ``start + i * interval`` (its event time), sets the watermark to it, defers between
    ticks. The source ends one interval after the stop marker appeared (one more poll, for
    files that arrived with the last one).
    """

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=_TICK_RESTRICTION_P, watermark=_TICK_WATERMARK_P):
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
_WATCH_P = beam.DoFn.StateParam(_WATCH)


class WatchFolderDoFn(beam.DoFn):
    """On each tick, poll the folder (:func:`~nirbeam.stream.watch.poll_folder`); the
    :class:`~nirbeam.stream.watch.WatchState` (names seen, sizes, duplicates) is keyed state.

    Input ``(folder, tick)``; output :class:`~nirbeam.stream.watch.Arrival` items. Each
    accepted segment and each note is journalled in ``journal_dir`` (``accepted.jsonl``,
    ``notes.jsonl``) for the driver's finalisation.
    """

    def __init__(self, journal_dir: str, stop_path: str | None = None,
                 refused_grace_s: float | None = None):
        self.journal_dir = journal_dir
        self.stop_path = stop_path
        self.refused_grace_s = refused_grace_s

    def setup(self):
        self.segments = counter("watch.segments")
        self.polls = counter("watch.polls")

    def _stop_if_all_refused(self, st: WatchState, now: float) -> None:
        """``--until-complete`` with every file in the folder refused (and none ever
        accepted) for ``refused_grace_s``: journal the refusals (``refused.json``) and
        write the stop marker, since no exposure can ever complete."""
        if self.refused_grace_s is None or self.stop_path is None:
            return
        if not st.every_file_refused():
            st.all_refused_since = None
            return
        if st.all_refused_since is None:
            st.all_refused_since = now
        if now - st.all_refused_since < self.refused_grace_s or os.path.exists(self.stop_path):
            return
        rows = [{"path": p, "reason": st.refused.get(p, "refused")} for p in sorted(st.last)]
        path = os.path.join(self.journal_dir, REFUSED)
        with open(path + ".tmp", "w") as fh:
            json.dump(rows, fh, indent=1)
        os.replace(path + ".tmp", path)
        with open(self.stop_path, "w") as fh:
            fh.write("every input refused\n")
        log.error("every input file is refused; stopping (--until-complete): %s",
                  "; ".join(f"{os.path.basename(r['path'])}: {r['reason']}" for r in rows))

    def process(self, element, state=_WATCH_P):
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
        self._stop_if_all_refused(st, time.time())
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


def check_signature(si: StreamItem) -> None:
    """Raise StepFailed when the item's file changed since it was accepted."""
    now = file_signature(si.source)
    if now != tuple(si.signature):
        raise StepFailed(
            f"{si.source} changed after it was found complete (size, mtime_ns "
            f"{tuple(si.signature)} -> {now}): integration refused; rerun on the final file")


def read_checked(si: StreamItem) -> IntegrationRecord:
    """:func:`pipeline.read_record`, refusing a file that changed since it was accepted."""
    check_signature(si)
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
        counter("read.resumed").inc()
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
_PREP_P = beam.DoFn.StateParam(_PREP)


class PrepareExposureDoFn(beam.DoFn):
    """Per (exposure, detector): prepare once (batch's :func:`pipeline.prepare_exposure`:
    references, 1/f scene mask, store template), then one work item per integration.

    Batch prepares from the first segment (its first ramp, a draft scene mask from the
    first three integrations and the light model of its pixels from the first
    :func:`~nirbeam.stream.rate_steps.draft_nints`); so does this, as soon as the
    segments holding those integrations have arrived (arrivals before that are held). A store from an
    earlier run of the same OUTDIR is resumed: its completed integrations are emitted as
    :class:`StoredItem` (read back, not recalibrated). Output (one PCollection):
    :class:`StreamItem`, :class:`StoredItem`, or a :class:`DeadLetter` for every
    integration when the preparation failed (the read step passes it to the dead letters).
    """

    def __init__(self, root: str, refs_dir: str | None, settings, allow_standins: bool = False,
                 prepare=None, stop_path: str | None = None):
        if prepare is None:
            raise TypeError("PrepareExposureDoFn needs prepare= (pipeline.prepare_exposure)")
        self.prepare = prepare  # batch's prepare_exposure, passed in by the stream's driver
        self.root = root
        self.refs_dir = refs_dir
        self.settings = settings
        self.allow_standins = allow_standins
        self.stop_path = stop_path

    def setup(self):
        from nirbeam.stream.refs import index_references

        self.ref_index = index_references(self.refs_dir) if self.refs_dir else None
        self.prepared = counter("prepare.exposures")

    def process(self, element, state=_PREP_P):
        """Exposures the plan refuses (:func:`nirbeam.stream.plan.exposure_work`: no mode
        handles the EXP_TYPE, or not a time series) are refused: each of their
        integrations gets a dead letter saying why."""
        from nirbeam.stream.uncal import plan_exposures

        _, a = element
        st = state.read() or _PrepState()
        meta = a.segment.meta
        group = meta.group_name
        if not st.announced:
            st.announced = True
            done = (zarr_store.completed(self.root, group, RATEINTS)
                    if RATEINTS in zarr_store.open_root(self.root).get(group, {}) else None)
            # an earlier run's rates: resumed unless made from something else; a store
            # without any is prepared again (batch's prepare resets it if its key differs)
            if done is not None and done.any():
                st.failed = self._resume_refused(a)
                st.prepared = st.failed is None
                st.stored = {int(i) + 1 for i in np.flatnonzero(done)} if st.prepared else set()
        st.segments[a.segment.intstart] = a.segment
        if not st.failed and st.mode is None:
            from nirbeam.modes import ModeError

            try:
                st.mode = exposure_work(meta, self.settings).mode
            except (ModeError, PlanError) as exc:
                st.failed = str(exc)
            except Exception as exc:  # noqa: BLE001 - a mode that cannot plan it: refused
                st.failed = f"no plan for this exposure: {type(exc).__name__}: {exc}"
                log.error("%s: %s", group, st.failed)
        if st.failed:
            yield from self._dead(a, st.failed)
        elif st.prepared:
            write_times(self.root, group, a.segment)
            yield from self._items(a, st)
        else:
            st.held.append(a)
            have = {i for h in st.held for i in h.integrations}
            from nirbeam.stream.rate_steps import draft_nints

            # batch's draft reads the first draft_nints integrations (3 for the scene
            # mask, more for the light model of its pixels): wait for the same ones
            first = st.segments.get(1)
            need = draft_nints(meta, self.settings,
                               first_segment_end=None if first is None else first.intend)
            if all(i in have for i in range(1, min(need, meta.nints) + 1)):
                plan = plan_exposures(list(st.segments.values()))[0]
                try:
                    self.prepare(self.root, plan, self.refs_dir, self.ref_index, self.settings,
                                     allow_standins=self.allow_standins)
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

    def _resume_refused(self, a: Arrival) -> str | None:
        """Why an earlier run's rateints in this OUTDIR cannot be resumed (batch's resume
        check, :func:`nirbeam.stream.resume.resume_differences`: other input content,
        references, rate settings or nirbeam version), or None when they can. Resuming
        would mix rates made from something else into this run's products."""
        from nirbeam.stream.pipeline import load_exposure_refs
        from nirbeam.stream.resume import resume_differences, resume_key, stored_resume_key
        from nirbeam.stream.uncal import plan_exposures

        group = a.segment.meta.group_name
        try:
            plan = plan_exposures([a.segment])[0]
            _, prov = load_exposure_refs(plan, self.refs_dir, self.ref_index, self.allow_standins)
            diffs = resume_differences(stored_resume_key(self.root, group),
                                       resume_key(plan, prov, self.settings))
        except Exception as exc:  # noqa: BLE001 - cannot tell: do not mix
            diffs = [f"the resume check failed: {type(exc).__name__}: {exc}"]
        if not diffs:
            return None
        why = (f"this OUTDIR holds rates of {group} made from something else; resuming "
               f"would mix them. Changed: {'; '.join(diffs)}. Stream into a new --out folder "
               "(or remove this one's cubes.zarr)")
        log.error("%s: %s", group, why)
        if self.stop_path is not None:  # as batch refuses the run: the stream stops
            journal = os.path.dirname(self.stop_path)
            with open(os.path.join(journal, RESUME_REFUSED), "a") as fh:
                fh.write(json.dumps({"group": group, "reason": why}) + "\n")
            with open(self.stop_path, "w") as fh:
                fh.write("resume refused\n")
        return why

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


