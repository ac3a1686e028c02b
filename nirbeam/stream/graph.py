"""The Beam graphs of nirbeam, composed in one place from the plan's work items and the
thin steps around the record and block functions.

Batch and streaming run the same record functions (:mod:`nirbeam.stream.rate_steps`:
``read_record``, ``Calibrate``, ``WriteRateints``); they differ in the source and in how
records are grouped, as the plan (:mod:`nirbeam.stream.plan`) says:

- batch stage 1, :class:`RateStage`: ``Create(rate blocks) | Reshuffle |
  CalibrateBlock | WriteDeadLetter`` (the Reshuffle only where there is more than one
  worker to spread the items over: :class:`_Distribute`), a block being up to 32 integrations aligned with the
  rateints chunks (each integration through the same record functions);
- batch stage 2, :class:`SpectraStage`: ``Create(spectra blocks) | Reshuffle |
  ProcessBlock | WriteDeadLetter``;
- the stream, :class:`StreamGraph`: an unbounded folder source, then :class:`RecordChain`
  (``Read -> Detector1 -> WriteRateints``: the record functions one integration at a
  time, each a :class:`~nirbeam.transforms.common.RecordStep`), then the completion check,
  event time, the outlier window, the live extraction and the live sink.

:func:`run_bounded` runs a bounded graph on a runner and returns Beam's counters, for
both batch stages. Nothing here computes anything: every step is a function or DoFn of
another module; this module only wires them.

Stream notes (measured, Beam 2.77): on the in-process FnApiRunner a Flatten below an
unbounded source stops everything after it, so the stream is one chain; dead letters
leave it to the writer, and the steps that must know about them (the outlier window, the
completion check) read them back from ``_deadletters``.
"""

from __future__ import annotations

import logging
import os
import typing
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from nirbeam.core.records import DeadLetter
from nirbeam.stream.live import LiveWriter
from nirbeam.stream.rate_steps import CalibrateBlock, WriteDeadLetter
from nirbeam.stream.spectra_stage import ProcessBlock
from nirbeam.stream.stream_complete import CompletionDoFn, StreamConfig, record_functions
from nirbeam.stream.stream_source import DEAD, PrepareExposureDoFn, Ticks, WatchFolderDoFn, counter
from nirbeam.stream.stream_steps import (
    LiveExtractDoFn,
    LiveSinkDoFn,
    RollingOutlierDoFn,
    WithEventTime,
)
from nirbeam.transforms.common import RecordStep

__all__ = ["RateStage", "SpectraStage", "RecordChain", "StreamGraph", "run_bounded",
           "beam_metrics"]

log = logging.getLogger("nirbeam")


# ---------------------------------------------------------------------------------------
# Batch


def one_worker(pipeline) -> bool:
    """Whether ``pipeline`` runs on Beam's portable FnApiRunner with one worker (nirbeam's
    ``direct`` runner, or ``multiprocess`` with ``--workers 1``)."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return (isinstance(pipeline.runner, FnApiRunner)
            and pipeline.options.view_as(DirectOptions).direct_num_workers == 1)


class _Distribute(beam.PTransform):
    """A Reshuffle: the work items spread over the workers. With one worker
    (:func:`one_worker`) it distributes nothing and only costs (a group-by-key stage and
    a second fused stage: measured ~0.08 CPU-s and ~0.4 s wall per graph, load 10), so
    there the items go on in the same fused stage; on every other runner it is Beam's
    ``Reshuffle``."""

    def expand(self, pcoll):
        if one_worker(pcoll.pipeline):
            return pcoll
        return pcoll | "Reshuffle" >> beam.Reshuffle()


class RateStage(beam.PTransform):
    """Batch stage 1 from the pipeline root: the plan's rate blocks, read, calibrated and
    written by :class:`~nirbeam.stream.rate_steps.CalibrateBlock`; dead letters written."""

    def __init__(self, blocks: list, root: str, settings, token: str, dead_dir: str):
        super().__init__()
        self.blocks, self.root, self.settings = blocks, root, settings
        self.token, self.dead_dir = token, dead_dir

    def expand(self, pbegin):
        dead = (pbegin
                | "PlanBlocks" >> beam.Create(self.blocks, reshuffle=False)
                | "Distribute" >> _Distribute()
                | "ReadCalibrateWrite" >> beam.ParDo(
                    CalibrateBlock(self.root, self.settings, self.token)))
        return dead | "WriteDead" >> beam.Map(WriteDeadLetter(self.dead_dir))


class SpectraStage(beam.PTransform):
    """Batch stage 2 from the pipeline root: the plan's spectra blocks, flagged and
    extracted by :class:`~nirbeam.stream.spectra_stage.ProcessBlock`; dead letters written."""

    def __init__(self, blocks: list, root: str, settings, dead_dir: str):
        super().__init__()
        self.blocks, self.root, self.settings, self.dead_dir = blocks, root, settings, dead_dir

    def expand(self, pbegin):
        dead = (pbegin
                | "PlanBlocks" >> beam.Create(self.blocks, reshuffle=False)
                | "DistributeBlocks" >> _Distribute()
                | "FlagAndExtract" >> beam.FlatMap(ProcessBlock(self.root, self.settings)))
        return dead | "WriteDeadExtract" >> beam.Map(WriteDeadLetter(self.dead_dir))


def run_bounded(build: typing.Callable[[beam.Pipeline], object], runner_spec) -> dict:
    """Build a bounded graph with ``build(pipeline)``, run it on ``runner_spec`` (a
    :class:`~nirbeam.stream.runners.RunnerSpec`) and return :func:`beam_metrics`."""
    from nirbeam.stream.runners import make_runner

    beam_runner, options, cleanup = make_runner(runner_spec)
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        build(p)
        result = p.run()
        result.wait_until_finish()
        return beam_metrics(result)
    finally:
        if cleanup:
            cleanup()


def beam_metrics(result) -> dict:
    """Beam's counters and distributions of a run, by name (``<step>.records``...);
    ``{"error": ...}`` when the runner's metrics cannot be read."""
    out: dict = {}
    try:
        m = result.metrics().query()
    except Exception as exc:  # noqa: BLE001 - say so in run.json rather than drop silently
        log.warning("Beam metrics could not be read: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    for c in m.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or 0)
    for d in m.get("distributions", []):
        v = d.committed
        if v is not None and v.count:
            out[d.key.metric.name] = {"count": v.count, "mean": round(v.sum / v.count, 3),
                                      "max": v.max}
    return out


# ---------------------------------------------------------------------------------------
# The record chain (one integration at a time) and the stream


class RecordChain(beam.PTransform):
    """``Read -> Detector1 -> WriteRateints``: three :class:`RecordStep`\\ s of record
    functions (batch's); each step's dead letters go to ``write_dead``. Returns the
    written records."""

    def __init__(self, read, calibrate, write, write_dead):
        super().__init__()
        self.read, self.calibrate, self.write, self.write_dead = read, calibrate, write, write_dead

    def expand(self, items):
        read = items | "Read" >> RecordStep(self.read, "read")
        cal = read.records | "Detector1" >> RecordStep(self.calibrate, "detector1")
        wr = cal.records | "WriteRateints" >> RecordStep(self.write, "write_rateints")
        for name, out in (("Read", read), ("Detector1", cal), ("WriteRateints", wr)):
            _ = out.deadletter | f"WriteDead{name}" >> beam.Map(self.write_dead)
        return wr.records


@dataclass(frozen=True)
class _SinkStamp:
    """Stamp live events with the stream's start time: at or behind every watermark of
    the source, so the sink's flush timer fires after the bundle (measured: a stamp of
    "now" waited for the next tick to pass it, i.e. up to the end of a backlog)."""

    start: float

    def __call__(self, ev):
        return beam.window.TimestampedValue(("live", ev), Timestamp(self.start))


def _keyed(label: str, fn):
    return label >> beam.Map(fn).with_output_types(tuple[str, typing.Any])


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
                 | "WatchFolder" >> beam.ParDo(WatchFolderDoFn(c.journal, c.stop_path,
                                                                 c.refused_grace_s))
                 | _keyed("KeyExposure", lambda a: (a.segment.meta.group_name, a))
                 | "PrepareExposure" >> beam.ParDo(PrepareExposureDoFn(c.root, c.refs_dir, s,
                                                                c.allow_standins, c.prepare,
                                                                c.stop_path)))
        # batch's record steps and functions (resumed integrations pass through)
        records = items | "Records" >> RecordChain(*record_functions(c))  # read in detector1
        o = s.outliers
        flagged = (
            records
            | _keyed("KeyCompletion", lambda r: (r.key.group, r))
            | "Completion" >> beam.ParDo(CompletionDoFn(c))
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
             | "SinkTime" >> beam.Map(_SinkStamp(c.start)).with_output_types(tuple[str, typing.Any])
             | "LiveSink" >> beam.ParDo(LiveSinkDoFn(writer, c.journal)))
        return live


def _log_late(d: DeadLetter) -> None:
    counter("outliers.late").inc()
    log.info("live outlier window: %s %s", d.key, d.reason)


