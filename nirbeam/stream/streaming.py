"""``nirbeam stream``: the batch transforms on a Beam streaming pipeline.

The graph (:class:`StreamGraph`), one box per Beam step, one chain (no Flatten: see below)::

    Ticks (unbounded, every --poll s) -> WatchFolder (stateful: complete files, dedup)
      -> PrepareExposure (stateful per exposure/detector: mode, references, store template)
      -> Read -> Detector1 -> WriteRateints          (batch's RecordSteps: the same code;
         Read checks the file, Detector1 reads the integration and owns it, as batch)
      -> Completion (stateful per exposure/detector: every integration has rateints or a
         dead letter -> stop marker when --until-complete) -> EventTime
      -> RollingOutliers (stateful per exposure/detector, released by the data)
      -> LiveExtract (stateful: live model from the first integrations; live points)
      -> LiveSink (stateful: OUTDIR/live/ rewritten after each bundle)
    dead letters of each record step -> batch's WriteDeadLetter

The steps live in :mod:`nirbeam.stream.stream_source` (source, preparation),
:mod:`nirbeam.stream.stream_complete` (configuration, completion check) and
:mod:`nirbeam.stream.stream_steps` (event time, outlier window, live extraction, sink);
:mod:`nirbeam.stream.graph` composes them (:class:`~nirbeam.stream.graph.StreamGraph`,
with batch's record chain :class:`~nirbeam.stream.graph.RecordChain`); this module is the
driver (runner, signals, progress display, finalisation, run.json). On the in-process FnApiRunner a Flatten
below the unbounded source stops everything after it (measured, Beam 2.77), so the graph
is one chain: each step passes on what it does not consume, and the steps that must know
about dead letters (the outlier window, the completion check) read them back from
``_deadletters``.

``Read``, ``Detector1`` and ``WriteRateints`` are :class:`~nirbeam.transforms.common.RecordStep`
with batch's record functions (:func:`stream_complete.record_functions`: a file-signature
check, then :func:`rate_steps.read_record` and :meth:`rate_steps.Calibrate.owned` in one
step so that an IRS2 raw ramp is freed before detector1, :class:`rate_steps.WriteRateints`;
an earlier run's rateints are resumed only when batch's resume key matches), each exposure's
work comes from the plan (:func:`plan.exposure_work`: its mode and regions) and it is
prepared by batch's :func:`pipeline.prepare_exposure`; so the ``rateints`` in the store are batch's.
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
sink's events carry the stream's start time and a timer at it fires after each bundle,
so the live products are written once per bundle. Records
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
import signal
import sys
import threading
import time
import uuid

import apache_beam as beam
import numpy as np

from nirbeam import __version__
from nirbeam.core.schema import RATEINTS
from nirbeam.sinks import zarr_store
from nirbeam.stream.graph import StreamGraph, beam_metrics
from nirbeam.stream.live import (
    MIN_FIT_POINTS,
    LiveModelFromStore,
    LivePoint,
    LiveWriter,
    build_live_model,
    latency_stats,
    live_point,
    live_point_and_bins,
    warm_up_live_products,
)
from nirbeam.stream.pipeline import RunResult, no_refs_error, prepare_exposure
from nirbeam.stream.plan import PlanError, exposure_work
from nirbeam.stream.products import finalize_products, run_spectra_stage
from nirbeam.stream.stream_complete import (
    CheckComplete,
    CompletionDoFn,
    ReadOrLoad,
    StreamConfig,
    StreamCounts,
    WriteDeadAndCheck,
    exposure_complete,
)
from nirbeam.stream.stream_source import (
    DEAD,
    REFUSED,
    RESUME_REFUSED,
    STREAM_DIR,
    PrepareExposureDoFn,
    StreamItem,
    Ticks,
    WatchFolderDoFn,
    journal_rows,
    read_checked,
    write_times,
)
from nirbeam.stream.stream_steps import (
    LiveExtractDoFn,
    LiveSinkDoFn,
    RollingOutlierDoFn,
    WithEventTime,
    beam_timestamp,
    load_live_state,
)
from nirbeam.stream.summary import account, check_outdir, write_json_atomic
from nirbeam.stream.watch import file_signature

__all__ = [
    "DEAD", "RATEINTS", "MIN_FIT_POINTS", "LivePoint", "live_point", "live_point_and_bins",
    "build_live_model", "LiveModelFromStore", "beam_timestamp", "WithEventTime",
    "RollingOutlierDoFn", "Ticks", "WatchFolderDoFn", "PrepareExposureDoFn", "StreamItem",
    "read_checked", "LiveExtractDoFn", "LiveSinkDoFn", "CheckComplete", "StreamConfig",
    "StreamGraph", "make_stream_runner", "run_stream", "refuse_url_outdir", "finalize_stream", "STREAM_DIR",
    "load_live_state", "CompletionDoFn", "ReadOrLoad", "WriteDeadAndCheck",
    "exposure_complete", "eager_fnapi_metrics", "StreamCounts",
]

log = logging.getLogger("nirbeam")

#: ``--until-complete``: seconds every file in the watched folder must stay refused (and
#: unchanged) before the stream gives up on them.
REFUSED_GRACE_S = 10.0
#: Exit code when every input was refused (the CLI's "bad input").
EXIT_REFUSED = 2

# ---------------------------------------------------------------------------------------
# The driver


def _journal_json(journal: str, name: str) -> list:
    try:
        with open(os.path.join(journal, name)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return []


def _dead_reason(dead_dir: str, group: str) -> str | None:
    """The reason of a group's first dead letter (its integrations share it when the
    exposure was refused whole)."""
    names = sorted(n for n in os.listdir(dead_dir) if n.startswith(group + "_")
                   and n.endswith(".json")) if os.path.isdir(dead_dir) else []
    for n in names:
        try:
            with open(os.path.join(dead_dir, n)) as fh:
                return json.load(fh).get("reason")
        except (OSError, ValueError):
            continue
    return None


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

        eager_fnapi_metrics()

        opts = PipelineOptions(list(spec.beam_args))
        opts.view_as(StandardOptions).streaming = True
        return FnApiRunner(), opts, "FnApiRunner (in-process, streaming: unbounded source)"
    runner, opts, _ = make_runner(spec, streaming=True)
    return runner, opts, f"PortableRunner ({spec.job_endpoint}, streaming)"


def eager_fnapi_metrics() -> None:
    """Make the FnApiRunner fold each bundle's metrics at once.

    Beam 2.77's FnApiRunner folds a bundle's metrics into the stage's as a lazy generator
    (``consolidate(chain(new, old))`` in ``fn_runner.py``), one level per bundle; a stream
    makes a bundle per tick, and querying a run of some hundred ticks raised
    ``RecursionError`` (measured: a 30 s stream at 0.2 s polls), which lost every counter.
    Folding eagerly (a list per bundle) gives the same sums.
    """
    from apache_beam.metrics.monitoring_infos import consolidate
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    if getattr(fn_runner, "_nirbeam_eager_metrics", False):
        return

    def eager(metrics, key=None):
        return list(consolidate(metrics) if key is None else consolidate(metrics, key))

    fn_runner.consolidate_monitoring_infos = eager
    fn_runner._nirbeam_eager_metrics = True


def refuse_url_outdir(outdir) -> None:
    """``nirbeam stream --out URL`` is refused by name (exit code 2).

    The live products (:class:`~nirbeam.stream.live.LiveWriter`) and the store go through
    :mod:`nirbeam.sinks.fs` and would take a URL, but the stream's control files do not:
    ``OUTDIR/_stream`` (the append-only journal ``accepted.jsonl``, the stop marker whose
    mtime is its grace period, the live-state pickle replaced with ``os.replace``) and the
    dead-letter folder read back by the outlier window and the completion check are local
    POSIX files, shared by the workers through OUTDIR (docs/ARCHITECTURE.md, Known gaps).
    """
    from nirbeam.sinks import fs
    from nirbeam.stream.config import ConfigError

    if fs.is_url(outdir):
        raise ConfigError(
            f"nirbeam stream --out {fs.normalize(outdir)}: a URL output is not supported by "
            "the stream (its journal, stop marker, live state and dead letters are local "
            "files under OUTDIR); stream into a local or mounted folder, or run the finished "
            "exposure with `nirbeam run ... --out URL`")


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
    allow_standins: bool = False,
    progress=False,
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
    progress : bool or Progress
        Show the stream's counts while it runs (integrations calibrated out of those of
        the exposures seen so far; segments, dead letters, live points), then the
        finalisation: a bar on a terminal, plain lines otherwise
        (:class:`nirbeam.stream.progress.Progress`).

    Returns
    -------
    nirbeam.stream.pipeline.RunResult
    """
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.watch import ReplayDropper

    t_start = time.time()
    if not refs_dir and not allow_standins:
        raise no_refs_error()
    refuse_url_outdir(outdir)
    settings = Settings.from_dict(config or {})
    spec = runner or RunnerSpec()
    beam_runner, options, runner_desc = make_stream_runner(spec)
    check_outdir(outdir)
    journal = os.path.join(outdir, STREAM_DIR)
    os.makedirs(journal, exist_ok=True)
    for n in ("stop", "accepted.jsonl", "notes.jsonl", "live_state.pkl", REFUSED, RESUME_REFUSED):
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
                       time.time(), allow_standins, prepare_exposure,
                       refused_grace_s=(REFUSED_GRACE_S if until_complete and dropper is None
                                        else None))
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
    from nirbeam.stream.progress import Progress

    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    counts = StreamCounts(cfg)
    shown = bar.stage("stream", unit="integrations", poll=counts, detail=counts.detail)
    # the live plot and fit modules load while the stream waits for its first files, not
    # in the first flush after the live model (which held integrations 9-18 back)
    threading.Thread(target=warm_up_live_products, args=(plot_every,), daemon=True,
                     name="nirbeam-warm-up").start()
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        _ = p | "Stream" >> StreamGraph(cfg)
        if dropper is not None:
            dropper.start()
        result = p.run()
        result.wait_until_finish()
        counters = beam_metrics(result)
    finally:
        shown.close()
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if dropper is not None:
            dropper.stop.set()
    mixed = journal_rows(cfg.journal, RESUME_REFUSED)
    if mixed:  # batch's ResumeMismatch: nothing is finalised over rates of something else
        from nirbeam.stream.resume import ResumeMismatch

        raise ResumeMismatch(os.path.join(outdir, "cubes.zarr"),
                             " / ".join(r["reason"] for r in mixed))
    with bar.stage("finalise", unit="steps"):
        summary = finalize_stream(cfg, spec, counters, runner_desc=runner_desc, mode=mode,
                                  stopped=stopped.is_set(), t_start=t_start)
    refused = summary["streaming"]["refused"]
    if refused:
        every = summary["streaming"]["every_input_refused"]
        head = ("every input was refused, nothing to process" if every
                else f"{len(refused)} input file(s) refused")
        print(f"nirbeam stream: {head}:", file=sys.stderr)
        for r in refused:
            print(f"  refused {os.path.basename(r['path'])}: {r['reason']}", file=sys.stderr)
        if every:
            return RunResult(outdir, summary, EXIT_REFUSED)
    return RunResult(outdir, summary, 0)


def finalize_stream(cfg: StreamConfig, spec, counters: dict, *, runner_desc: str, mode: str,
                    stopped: bool, t_start: float) -> dict:
    """After the source ended: final live products, then batch's stage 2 and products over
    the store, and ``run.json`` (with ``beam.runner``, ``beam.streaming`` and counters)."""
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.uncal import BadInputError, plan_exposures, scan_segment

    settings = cfg.settings
    root = cfg.root
    dead_dir = os.path.join(cfg.outdir, "_deadletters")
    notes = [r["note"] for r in journal_rows(cfg.journal, "notes.jsonl")]
    live = load_live_state(cfg.journal)
    writer = LiveWriter(cfg.outdir, settings, cfg.plot_every, cfg.live_model_nints)
    if live.points:
        writer.flush(live, force=True)
    # the accepted files, scanned again: INT_TIMES added after arrival replace the ones read
    accepted = journal_rows(cfg.journal, "accepted.jsonl")
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
    refused = list(_journal_json(cfg.journal, REFUSED))
    for plan in plans:
        g = plan.meta.group_name
        if RATEINTS in zarr_store.open_root(root).get(g, {}):
            for seg in plan.segments:
                write_times(root, g, seg)
    # exposures refused before they had a store (no plan for them, or their preparation
    # failed): every integration has a dead letter; no stage 2, named in run.json
    kept = [p for p in plans if RATEINTS in zarr_store.open_root(root).get(p.meta.group_name, {})]
    for plan in plans:
        if plan not in kept:
            why = _dead_reason(dead_dir, plan.meta.group_name) or "not prepared"
            refused += [{"path": s.path, "reason": why} for s in plan.segments]
    plans = kept
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
    from nirbeam.modes import ModeError

    per_group = {}
    for plan in plans:
        g = plan.meta.group_name
        try:
            mode_info = exposure_work(plan.meta, settings).describe()
        except (ModeError, PlanError) as exc:
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
    summary = account(cfg.outdir, root, plans, per_group, dead_dir) if plans else {"exposures": []}
    complete = bool(plans) and not refused and all(
        not v["unprocessed_when_stopped"] and not v["missing"] for v in per_group.values())
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
            # calibrated in this run (resumed ones pass through the steps, counted apart)
            "integrations_processed": int(counters.get("write_rateints.records", 0))
            - int(counters.get("read.resumed", 0)),
            "integrations_resumed": int(counters.get("read.resumed", 0)),
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
            "refused": refused,
            "every_input_refused": bool(refused) and not plans,
        },
        "wall_s": round(time.time() - t_start, 3),
    })
    write_json_atomic(os.path.join(cfg.outdir, "run.json"), summary)
    return summary
