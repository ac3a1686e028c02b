"""Beam runner selection: the same pipeline on the in-process runner, local processes,
Beam on Dask, or a portable job service (Flink, Spark, Dataflow).

No runner here downloads anything: the default is ``FnApiRunner`` (the DirectRunner would
first try to fetch a binary).

Beam on Dask (``apache_beam.runners.dask.dask_runner.DaskRunner``, Beam 2.77) has four
defects that break a real pipeline; :class:`DaskRunner` below is that runner with them
fixed, and nothing else changed:

- a multi-output ``ParDo`` (``with_outputs``) hands *every* output to *every* consumer
  (the tags are dropped), so dead letters and records get mixed;
- only the graph under the last transform visited is computed: a branch that does not
  feed it is silently never run;
- ``Create`` puts up to 128 elements in one Dask partition (one task), so a pipeline of
  a few dozen integrations runs on one worker; here one element per partition is the
  default (``--dask_partition_size`` / ``--dask_npartitions`` override it);
- metrics are not collected (``metrics()`` raises); here counters and distributions of
  each bundle are returned with its outputs and merged on the client, counting each
  bundle once even when Dask recomputes it after a lost worker.

Like upstream, it runs everything in the global window, which is why :func:`make_runner`
refuses a streaming pipeline on it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = [
    "RunnerSpec", "RUNNERS", "make_runner", "STREAMING_CAPABLE", "DaskRunner",
    "local_dask_cluster", "close_local_dask_clusters", "available_cores", "requested_workers",
    "resolve_auto", "AUTO_PIXEL_GROUPS_PER_WORKER", "WORKER_ENV", "cpu_seconds",
    "cpu_summary", "pixel_groups", "worker_command",
]

#: ``auto`` (the CLI's default): ``direct`` for a small exposure, else ``multiprocess`` on
#: the cores this process may use (:func:`resolve_auto`).
RUNNERS = ("auto", "direct", "multiprocess", "dask", "portable")
#: Work (NINTS x NGROUPS x NY x NX summed over the exposures) per extra worker process
#: under ``auto``: below 2x this the run stays in one process. Measured (docs/notes/issue-14.md,
#: session 8: cores; bench/results/end_to_end_cores*_s8.json): 2 workers cost ~4 CPU-s per
#: worker per Beam stage to start (imports, numba cache loads) and were slower than one
#: process at 98 M and 220 M pixel-groups; detector1 + spectra run ~22-25 M pixel-groups
#: per CPU-s, so a second worker pays for itself from ~550 M; at 4.3 G (WASP-39b size) it
#: saved 42 % of the wall time.
AUTO_PIXEL_GROUPS_PER_WORKER = 400_000_000
#: Set in every worker process the runner starts (not in the caller): one numba / BLAS
#: thread per process, the processes being the parallelism.
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}


def available_cores() -> int:
    """CPUs this process may run on: ``os.sched_getaffinity`` where present (a container's
    or ``taskset``'s limit), else ``os.cpu_count()``; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, int(n))


def requested_workers(flag=None) -> int | None:
    """The worker count asked for: ``--workers N`` (``flag``), else ``$NIRBEAM_WORKERS``,
    else None (``auto``). ``"auto"`` in either means None.

    Raises
    ------
    ValueError
        For a value that is neither ``auto`` nor an integer >= 1.
    """
    for where, v in (("--workers", flag), ("NIRBEAM_WORKERS", os.environ.get("NIRBEAM_WORKERS"))):
        if v is None or (isinstance(v, str) and v.strip() in ("", "auto")):
            continue
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where} {v!r}: expected an integer >= 1 or 'auto'") from None
        if n < 1:
            raise ValueError(f"{where} must be >= 1, got {n}")
        return n
    return None


def resolve_auto(spec: RunnerSpec, pixel_groups: int | None, cores: int | None = None):
    """``(spec, reason)``: an ``auto`` spec made concrete for ``pixel_groups`` of work.

    ``--workers 1`` -> ``direct`` (one process, today's serial path); ``--workers N`` ->
    ``multiprocess`` with N; no count: ``min(cores, pixel_groups //``
    :data:`AUTO_PIXEL_GROUPS_PER_WORKER` ``)`` workers, ``direct`` when that is 1 or the
    size is unknown (None). Other runners come back unchanged.
    """
    import dataclasses

    if spec.name != "auto":
        return spec, "given"
    cores = available_cores() if cores is None else int(cores)
    if spec.workers is not None:
        n, why = int(spec.workers), "requested"
    elif pixel_groups is None:
        n, why = 1, "size unknown"
    else:
        n = max(1, min(cores, int(pixel_groups) // AUTO_PIXEL_GROUPS_PER_WORKER))
        why = (f"auto: {int(pixel_groups) / 1e6:.0f} M pixel-groups, {cores} cores, one worker "
               f"per {AUTO_PIXEL_GROUPS_PER_WORKER / 1e6:.0f} M")
    name = "direct" if n == 1 else "multiprocess"
    return dataclasses.replace(spec, name=name, workers=n), why


def pixel_groups(metas) -> int:
    """NINTS x NGROUPS x SUBSIZE2 x SUBSIZE1 summed over exposure metadata: the run's work."""
    return int(sum(int(m.nints) * int(m.ngroups) * int(m.subsize1) * int(m.subsize2)
                   for m in metas))


def cpu_summary(wall_s: float, cpu_s: float, spec: RunnerSpec, work: int) -> dict:
    """run.json's ``cpu``: workers, wall and CPU seconds (every process of the run), and the
    throughput for the whole machine (per wall second) beside the one per core (per CPU
    second: what one core does, comparable with a single-threaded tool)."""
    wall_s, cpu_s = float(wall_s), float(cpu_s)
    return {
        "workers": int(spec.workers or (1 if spec.name == "direct" else 2)),
        "cores_available": available_cores(),
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "cores_busy": round(cpu_s / wall_s, 3) if wall_s > 0 else None,
        "pixel_groups": int(work),
        "mpix_groups_per_s": {
            "whole_machine": round(work / wall_s / 1e6, 3) if wall_s > 0 else None,
            "per_core": round(work / cpu_s / 1e6, 3) if cpu_s > 0 else None,
        },
    }


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its child processes: those that
    ended (``RUSAGE_CHILDREN``: Beam's SDK workers, waited for) and, where psutil is
    installed, those still running (a local Dask cluster kept for the next stage)."""
    import resource

    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        t += r.ru_utime + r.ru_stime
    try:
        import psutil
    except ImportError:
        return t
    try:
        for c in psutil.Process().children(recursive=True):
            try:
                ct = c.cpu_times()
                t += ct.user + ct.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return t
#: Runners that honour event-time windows and triggers in streaming mode.
STREAMING_CAPABLE = ("direct", "portable")


@dataclass(frozen=True)
class RunnerSpec:
    """Which runner, with its deploy-only settings (from the CLI or deploy/ configs)."""

    name: str = "direct"
    workers: int | None = None
    dask_address: str | None = None
    dask_scheduler_file: str | None = None
    job_endpoint: str | None = None
    beam_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self):
        """Refuse unknown runners and missing settings."""
        if self.name not in RUNNERS:
            raise ValueError(f"--runner {self.name!r}: expected one of {list(RUNNERS)}")
        if self.name == "portable" and not self.job_endpoint:
            raise ValueError("--runner portable needs --job-endpoint HOST:PORT")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.dask_address and self.dask_scheduler_file:
            raise ValueError("give --dask-address or --dask-scheduler-file, not both")
        if self.name != "dask" and (self.dask_address or self.dask_scheduler_file):
            raise ValueError(
                f"--dask-address/--dask-scheduler-file need --runner dask (got {self.name!r})"
            )


def make_runner(spec: RunnerSpec, streaming: bool = False):
    """Return ``(runner, PipelineOptions, cleanup)`` for a spec.

    ``cleanup`` is None or a callable to run after the pipeline finished. A local Dask
    cluster (``--runner dask`` with neither address nor scheduler file) is kept for the
    next stage of the run and closed at exit (:func:`close_local_dask_clusters`).

    Raises
    ------
    ValueError
        For a streaming pipeline on a runner that cannot honour event-time windows, or an
        invalid spec.
    """
    spec.validate()
    if spec.name == "auto":  # no size known here (the batch driver resolves it first)
        spec, _ = resolve_auto(spec, None)
    if streaming and spec.name not in STREAMING_CAPABLE:
        raise ValueError(
            f"runner {spec.name!r} cannot run a streaming pipeline with event-time windows "
            f"(Beam on Dask silently puts everything in the global window; nirbeam's "
            f"multi-process mode is batch only); use one of {list(STREAMING_CAPABLE)}"
        )
    args = list(spec.beam_args)
    cleanup = None
    if spec.name == "direct":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
        args += ["--direct_num_workers=1"]
    elif spec.name == "multiprocess":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        n = spec.workers or 2
        args += [f"--direct_num_workers={n}"]
        if any(a.startswith("--direct_running_mode") for a in args):
            runner = FnApiRunner()  # the user's own mode, as given
        else:
            runner = FnApiRunner(default_environment=_worker_environment())
            _quiet_in_memory_warning()
    elif spec.name == "dask":
        runner = DaskRunner()
        if not any(a.startswith(("--dask_partition_size", "--dask_npartitions")) for a in args):
            args += ["--dask_partition_size=1"]
        if spec.dask_address:
            args += [f"--dask_client_address={spec.dask_address}"]
        elif spec.dask_scheduler_file:
            args += [f"--dask_scheduler_file={spec.dask_scheduler_file}"]
        else:
            cluster = local_dask_cluster(spec.workers or 2)
            args += [f"--dask_client_address={cluster.scheduler_address}"]
    else:  # portable
        from apache_beam.runners.portability.portable_runner import PortableRunner

        runner = PortableRunner()
        args += [f"--job_endpoint={spec.job_endpoint}"]
        if not any(a.startswith("--environment_type") for a in args):
            args += ["--environment_type=LOOPBACK"]
    if streaming:
        args += ["--streaming"]
    return runner, PipelineOptions(args), cleanup


def worker_command() -> str:
    """The shell command of a Beam SDK worker process: Beam's own multi-processing command
    (``python -m apache_beam.runners.worker.sdk_worker_main``, this interpreter) with
    :data:`WORKER_ENV` set for it alone (Beam starts it with ``shell=True`` and a copy of
    this process's environment, which is left as it is)."""
    import shlex
    import sys

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in WORKER_ENV.items())
    return f"env {env} {shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"


def _worker_environment():
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    return SubprocessSDKEnvironment.from_command_string(worker_command())


class _DropInMemoryWarning(logging.Filter):
    """FnApiRunner warns that ``in_memory`` mode runs one worker whenever
    ``direct_num_workers`` > 1, also when a subprocess environment is given (as here,
    which runs that many processes)."""

    def filter(self, record):
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


def _quiet_in_memory_warning():
    lg = logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner")
    if not any(isinstance(f, _DropInMemoryWarning) for f in lg.filters):
        lg.addFilter(_DropInMemoryWarning())


_LOCAL_CLUSTERS: dict = {}
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def local_dask_cluster(workers: int):
    """A local dask.distributed cluster of ``workers`` processes (1 thread each).

    Started once per process and reused by every stage of a run (both Beam stages of
    ``nirbeam run``), closed at exit or by :func:`close_local_dask_clusters`.
    """
    c = _LOCAL_CLUSTERS.get(workers)
    if c is not None and c.status.name == "running":
        return c
    import atexit

    from nirbeam._extras import require

    LocalCluster = require("distributed").LocalCluster

    # dask's nannies run in this process and set OMP/MKL/OPENBLAS_NUM_THREADS=1 in its
    # os.environ before spawning workers; left there, every process started later (Beam
    # workers, `nirbeam stream`) would get a one-thread BLAS. Put the caller's back.
    kept = {k: os.environ.get(k) for k in _THREAD_ENV}
    try:
        c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         dashboard_address=None, silence_logs=logging.WARNING,
                         env=dict(WORKER_ENV))
    finally:
        for k, v in kept.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not _LOCAL_CLUSTERS:
        atexit.register(close_local_dask_clusters)
    _LOCAL_CLUSTERS[workers] = c
    return c


def close_local_dask_clusters() -> None:
    """Close the local Dask clusters :func:`make_runner` started."""
    while _LOCAL_CLUSTERS:
        _, c = _LOCAL_CLUSTERS.popitem()
        try:
            c.close()
        except Exception:  # noqa: BLE001 - closing at exit is best effort
            pass


# ---------------------------------------------------------------------------------------
# Beam on Dask, with tagged outputs, every branch and metrics

_METRICS_TAG = "__nirbeam_metrics__"


def _run_bundle(items, fn, window_fn, label, side_inputs, args, kwargs, tagged):
    """Run a DoFn over one Dask partition (one bundle).

    Returns ``(tag, value)`` pairs when ``tagged`` (tag None: main output) or the bare
    main-output values, and in both cases, last, ``(_METRICS_TAG, MetricUpdates)``.
    """
    from apache_beam import DoFn
    from apache_beam.metrics.execution import MetricsContainer
    from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
    from apache_beam.runners.dask.transform_evaluator import OneReceiver, get_windowed_value
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils import counters

    receivers = OneReceiver()  # fresh per bundle: nothing leaks between partitions
    handler = _OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=args, input_kwargs=kwargs,
        user_state_context=None, bundle_finalizer_param=DoFn.BundleFinalizerParam(),
    )
    container = MetricsContainer(label)
    previous = statesampler.get_current_tracker()
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(label, "process", metrics_container=container):
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for it in items:
                invoker.invoke_process(get_windowed_value(it, window_fn))
            invoker.invoke_finish_bundle()
            invoker.invoke_teardown()
    finally:
        statesampler.set_current_tracker(previous)
    out = []
    for v in receivers.values:
        if hasattr(v, "tag"):  # TaggedOutput(tag, WindowedValue)
            pair = (v.tag, v.value.value)
        else:  # WindowedValue of the main output
            pair = (None, v.value)
        out.append(pair if tagged else pair[1])
    out.append((_METRICS_TAG, container.get_cumulative()))
    return out


def _select(part, tag):
    return [v for t, v in part if t == tag]


def _strip_metrics(part):
    return part[:-1]  # _run_bundle always appends its metric updates last


def _metrics_only(part):
    return [part[-1][1]]


def _drop(part):
    return []


def _make_dask_runner_class():
    from nirbeam._extras import require

    require("distributed")
    from apache_beam.runners.dask import dask_runner as dr

    class _DaskRunner(dr.DaskRunner):
        """``apache_beam.runners.dask.dask_runner.DaskRunner`` with tags, branches, metrics."""

        @staticmethod
        def to_dask_bag_visitor(bag_kwargs=None):
            import collections
            import dataclasses

            import apache_beam
            from apache_beam import pvalue
            from apache_beam.pipeline import PipelineVisitor
            from apache_beam.runners.dask.transform_evaluator import (
                TRANSLATIONS,
                DaskBagWindowedIterator,
                Flatten,
                NoOp,
            )
            from apache_beam.transforms.sideinputs import SideInputMap

            bag_kwargs = bag_kwargs or {}

            @dataclasses.dataclass
            class Visitor(PipelineVisitor):
                bags: dict = dataclasses.field(default_factory=collections.OrderedDict)
                raw: dict = dataclasses.field(default_factory=collections.OrderedDict)
                consumed: set = dataclasses.field(default_factory=set)

                def _bag_of(self, pv):
                    node = pv.producer
                    self.consumed.add(node)
                    b = self.bags.get(node)
                    if b is None:
                        return None
                    if isinstance(b, dict):  # multi-output ParDo: pick the tag
                        return b[pv.tag]
                    return b

                def visit_transform(self, node) -> None:
                    tr = node.transform
                    inputs = [self._bag_of(i) for i in node.inputs
                              if not isinstance(i, pvalue.PBegin)]
                    inputs = [b for b in inputs if b is not None]
                    side = None
                    if node.side_inputs:
                        side = [
                            SideInputMap(type(si), si._view_options(),
                                         DaskBagWindowedIterator(self._bag_of(si.pvalue),
                                                                 si._window_mapping_fn))
                            for si in node.side_inputs
                        ]
                    if isinstance(tr, apache_beam.ParDo):
                        (inp,) = inputs
                        main_pc = next(iter(node.main_inputs.values()))
                        window_fn = main_pc.windowing.windowfn if hasattr(main_pc, "windowing") else None
                        a, kw = tr.raw_side_inputs
                        tags = list(node.outputs)
                        tagged = len(tags) > 1
                        raw = inp.map_partitions(
                            _run_bundle, tr.fn, window_fn, tr.label, side, list(a), kw, tagged,
                        )
                        self.raw[node] = raw
                        if tagged:
                            self.bags[node] = {
                                t: raw.map_partitions(_select, t) for t in tags
                            }
                        else:
                            self.bags[node] = raw.map_partitions(_strip_metrics)
                        return
                    op = TRANSLATIONS.get(tr.__class__, NoOp)(node, bag_kwargs=bag_kwargs)
                    if not inputs:
                        inp = None
                    elif len(inputs) == 1 and not isinstance(op, Flatten):
                        inp = inputs[0]
                    else:
                        inp = inputs
                    self.bags[node] = op.apply(input_bag=inp, side_inputs=side)

                def leaves(self):
                    out = []
                    for node, b in self.bags.items():
                        if node in self.consumed:
                            continue
                        out.extend(b.values() if isinstance(b, dict) else [b])
                    return out

            return Visitor()

        def run_pipeline(self, pipeline, options):
            import dask
            import dask.bag as db
            import dask.distributed as ddist
            from apache_beam.runners.dask.overrides import dask_overrides

            dask_options = options.view_as(dr.DaskOptions).get_all_options(
                drop_default=True, current_only=True)
            bag_kwargs = dr.DaskOptions._extract_bag_kwargs(dask_options)
            client = ddist.Client(**dask_options)
            pipeline.replace_all(dask_overrides())
            visitor = self.to_dask_bag_visitor(bag_kwargs)
            pipeline.visit(visitor)
            # every branch runs: the leaves, reduced to nothing (no data to the client);
            # the metrics of every ParDo bundle come back (small)
            targets = [b.map_partitions(_drop) for b in visitor.leaves()]
            raws = list(visitor.raw.values())
            if raws:
                targets.append(db.concat([r.map_partitions(_metrics_only) for r in raws]))
            (graph,) = dask.optimize(db.concat(targets)) if targets else (None,)
            futures = [client.compute(graph)] if graph is not None else []
            return _DaskResult(client, futures)

    class _DaskResult(dr.DaskRunnerResult):
        """Dask result whose ``metrics()`` merges the bundles' metric updates."""

        def wait_until_finish(self, duration=None):
            from apache_beam.runners.direct.direct_metrics import DirectMetrics
            from apache_beam.runners.runner import PipelineState

            self._metrics = DirectMetrics()
            try:
                if duration is not None:
                    duration /= 1000
                import dask.distributed as ddist

                for _, result in ddist.as_completed(self.futures, timeout=duration,
                                                    with_results=True):
                    for updates in result:
                        self._metrics.commit_logical(None, updates)
                        self._metrics.commit_physical(None, updates)
                self._state = PipelineState.DONE
            except BaseException:
                self._state = PipelineState.FAILED
                raise
            finally:
                self.client.close()
            return self._state

        def metrics(self):
            from apache_beam.runners.direct.direct_metrics import DirectMetrics

            return getattr(self, "_metrics", None) or DirectMetrics()

    return _DaskRunner


def DaskRunner():  # noqa: N802 - a runner class, built on first use (dask is optional)
    """A Beam-on-Dask runner instance (see the module docstring for what it fixes)."""
    global _DASK_RUNNER_CLASS
    if _DASK_RUNNER_CLASS is None:
        _DASK_RUNNER_CLASS = _make_dask_runner_class()
    return _DASK_RUNNER_CLASS()


_DASK_RUNNER_CLASS = None
