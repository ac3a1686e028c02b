"""The stream's own steps around batch's record functions: its configuration
(:class:`StreamConfig`), the read step that also loads an earlier run's rateints
(:class:`ReadOrLoad`), and the completion check (:class:`CompletionDoFn`,
:class:`CheckComplete`) that ends the source with ``--until-complete``.

Moved from :mod:`nirbeam.stream.streaming` (which re-exports every public name); the graph
that uses them is :class:`nirbeam.stream.graph.StreamGraph`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.coders import PickleCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from nirbeam.core.records import DeadLetter
from nirbeam.core.schema import RATEINTS
from nirbeam.sinks import zarr_store
from nirbeam.stream.rate_steps import Calibrate, WriteDeadLetter, WriteRateints
from nirbeam.stream.stream_source import (
    RATE_STEPS,
    STREAM_DIR,
    LoadStored,
    StoredItem,
    check_signature,
    journal_rows,
    read_checked,
)
from nirbeam.transforms.common import StepFailed

__all__ = ["StreamConfig", "CheckOrLoad", "ReadAndCalibrate", "record_functions", "ReadOrLoad", "unless_rateints", "unless_rateints_write",
           "exposure_complete", "CheckComplete", "CompletionDoFn", "WriteDeadAndCheck",
           "StreamCounts"]

log = logging.getLogger("nirbeam")


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
    allow_standins: bool = False
    prepare: object = None  # pipeline.prepare_exposure (the stream prepares as batch does)
    #: --until-complete: stop once every file in the folder has been refused this long (s);
    #: None: never (watch mode, or a replay, whose inputs are scanned before it starts)
    refused_grace_s: float | None = None

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


def unless_rateints(fn):
    """Apply a record function, passing records already at stage rateints (resumed) on."""
    def apply(rec):
        return rec if getattr(rec, "stage", None) == "rateints" else fn(rec)

    apply.setup = getattr(fn, "setup", None)
    return apply


@dataclass(frozen=True)
class CheckOrLoad:
    """The stream's read step: a :class:`StreamItem` has its file checked (unchanged since
    it was accepted) and passes on -- its ramp is read by the next step,
    :class:`ReadAndCalibrate`, so that detector1 owns the record as batch's
    :class:`~nirbeam.stream.rate_steps.CalibrateBlock` does; a :class:`StoredItem` (an
    earlier run's rateints) is loaded from the store."""

    root: str

    def __call__(self, item):
        if isinstance(item, StoredItem):
            return LoadStored(self.root)(item)
        check_signature(item)
        return item


@dataclass(frozen=True)
class ReadAndCalibrate:
    """The stream's detector1 step: read a :class:`StreamItem`'s integration
    (:func:`read_checked`) and calibrate it with the record handed over
    (:meth:`~nirbeam.stream.rate_steps.Calibrate.owned`), so an IRS2 record's raw ramp is
    freed once its reference step has run, as in batch. A read failure is that
    integration's dead letter of step ``read``; records already at stage rateints (resumed)
    pass on.

    (Reading in the step before would leave the record, raw ramp included, held by the
    runner -- the element being processed -- for the whole of detector1: +262 MB for a
    20-group full-frame IRS2 ramp.)
    """

    calibrate: Calibrate

    def __call__(self, item):
        if getattr(item, "stage", None) == "rateints":
            return item
        try:
            holder = [read_checked(item)]
        except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, StepFailed):
                log.warning("read failed on %s: %s", item.key, reason, exc_info=True)
            return DeadLetter(item.key, "read", reason, item.source)
        return self.calibrate.owned(holder)


def record_functions(cfg: StreamConfig) -> tuple:
    """``(read, calibrate, write, write_dead)`` of the stream's record chain
    (:class:`~nirbeam.stream.graph.RecordChain`): :class:`CheckOrLoad`,
    :class:`ReadAndCalibrate` (batch's :class:`~nirbeam.stream.rate_steps.Calibrate`),
    batch's :class:`~nirbeam.stream.rate_steps.WriteRateints` (except for resumed records)
    and :class:`WriteDeadAndCheck`."""
    return (CheckOrLoad(cfg.root),
            ReadAndCalibrate(Calibrate(cfg.root, cfg.settings, cfg.token)),
            unless_rateints_write(WriteRateints(cfg.root, keep=True)), WriteDeadAndCheck(cfg))


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
    rateints (store) or a dead letter of a rate step (``_deadletters``); an exposure
    without a store (refused before it was prepared) needs a dead letter for each."""
    groups: dict[str, int] = {}
    for row in journal_rows(cfg.journal, "accepted.jsonl"):
        groups[row["group"]] = int(row["nints"])
    if not groups:
        return False
    dead_dir = os.path.join(cfg.outdir, "_deadletters")
    names = set(os.listdir(dead_dir)) if os.path.isdir(dead_dir) else set()
    root_groups = zarr_store.open_root(cfg.root)
    for g, nints in groups.items():
        if g not in root_groups or RATEINTS not in root_groups[g]:
            # never prepared (refused by the plan, or its preparation failed): complete once
            # every integration has its dead letter
            todo = range(1, nints + 1)
        else:
            todo = np.flatnonzero(~zarr_store.completed(cfg.root, g, RATEINTS)) + 1
        for i in todo:
            if not any(f"{g}_{int(i):05d}.{step}.json" in names for step in RATE_STEPS):
                return False
    return True


@dataclass(frozen=True)
class CheckComplete:
    """Once :func:`exposure_complete`, write the stop marker (with ``until_complete``): the
    source ends after one more poll. Called for each dead letter, and by
    :class:`CompletionDoFn` when an exposure's count says it may be complete."""

    cfg: StreamConfig

    def __call__(self, x=None):
        c = self.cfg
        if c.until_complete and not os.path.exists(c.stop_path) and exposure_complete(c):
            with open(c.stop_path, "w") as fh:
                fh.write("complete\n")
        return x


_SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
_SEEN_P = beam.DoFn.StateParam(_SEEN)


class CompletionDoFn(beam.DoFn):
    """Per exposure/detector: pass records on, keep the integrations seen; when they and
    the group's dead letters cover NINTS, run the full check (:class:`CheckComplete`).

    Order does not matter (segments may land out of order); the full check reads the store
    and the dead letters only when the count says the exposure may be complete.
    """

    def __init__(self, cfg: StreamConfig):
        self.cfg = cfg

    def process(self, element, state=_SEEN_P):
        group, rec = element
        seen = state.read() or set()
        seen.add(rec.key.integration)
        state.write(seen)
        if self.cfg.until_complete:
            n = rec.meta.nints
            if len(seen) < n:
                dead_dir = os.path.join(self.cfg.outdir, "_deadletters")
                names = os.listdir(dead_dir) if os.path.isdir(dead_dir) else []
                dead = {int(x[len(group) + 1:len(group) + 6]) for x in names
                        if x.startswith(group + "_") and x.split(".")[-2] in RATE_STEPS}
                if len(seen | dead) < n:
                    yield rec
                    return
            CheckComplete(self.cfg)()
        yield rec


@dataclass(frozen=True)
class WriteDeadAndCheck:
    """Batch's :class:`pipeline.WriteDeadLetter`, then :class:`CheckComplete`."""

    cfg: StreamConfig

    def __call__(self, dl: DeadLetter) -> None:
        WriteDeadLetter(os.path.join(self.cfg.outdir, "_deadletters"))(dl)
        CheckComplete(self.cfg)(dl)


def unless_rateints_write(fn):
    """WriteRateints, except for records read back from the store (already written)."""
    def apply(rec):
        return rec if rec.provenance[-1:] == (("resumed", "from store"),) else fn(rec)

    return apply


class StreamCounts:
    """What a running stream has done, from its files (for the progress display).

    Called (by the display's poll thread, in the driver's process): ``(integrations with
    rateints, NINTS summed over the exposures/detectors accepted so far or None)``;
    :meth:`detail`: segments accepted, dead letters of the rate steps, live points (of
    which flagged), from the last poll. Reads ``_stream/accepted.jsonl``, the store's
    completion markers, ``_deadletters`` and the live-state snapshot (again only when it
    changed).
    """

    def __init__(self, cfg: StreamConfig):
        self.cfg = cfg
        self.segments = 0
        self.dead = 0
        self.live = (0, 0)
        self._live_sig = None

    def __call__(self) -> tuple[int, int | None]:
        """(integrations calibrated and written, total known so far)."""
        c = self.cfg
        rows = journal_rows(c.journal, "accepted.jsonl")
        groups = {r["group"]: int(r["nints"]) for r in rows}
        self.segments = len(rows)
        done = 0
        for g in groups:
            try:
                done += zarr_store.count_completed(c.root, g, RATEINTS)
            except Exception:  # noqa: BLE001 - not created yet
                continue
        dead_dir = os.path.join(c.outdir, "_deadletters")
        names = os.listdir(dead_dir) if os.path.isdir(dead_dir) else []
        self.dead = sum(1 for n in names if n.endswith(".json")
                        and n.split(".")[-2] in RATE_STEPS)
        self._read_live()
        return done, (sum(groups.values()) or None)

    def _read_live(self) -> None:
        from nirbeam.stream.stream_steps import load_live_state

        path = os.path.join(self.cfg.journal, "live_state.pkl")
        try:
            st = os.stat(path)
        except OSError:
            return
        sig = (st.st_size, st.st_mtime_ns)
        if sig == self._live_sig:
            return
        try:
            live = load_live_state(self.cfg.journal)
        except Exception:  # noqa: BLE001 - being replaced: next poll
            return
        self._live_sig = sig
        pts = live.points.values()
        self.live = (len(pts), sum(p.status == "flagged" for p in pts))

    def detail(self) -> str:
        """``N segments, N dead letters, N live points (N flagged)``."""
        return (f"{self.segments} segments, {self.dead} dead letters, {self.live[0]} live "
                f"points ({self.live[1]} flagged)")

