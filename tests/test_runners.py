"""The same batch pipeline on other runners: a real dask.distributed cluster (2 worker
processes), Beam's portable job service with an external worker pool, and local
multi-processing; all must give the default runner's products bit for bit. A Dask worker
killed mid-run loses and duplicates nothing. Streaming is refused where windows are not
honoured.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import apache_beam as beam
import numpy as np
import pytest
import zarr
from conftest import no_children_left, own_resource_tracker

from nirbeam.sim.simulator import simulate
from nirbeam.stream.pipeline import run
from nirbeam.stream.runners import RunnerSpec, make_runner

NINTS = 16
#: plots and the transit fit are driver-side and runner-independent: skipped for speed
CONFIG = {"products": {"plots": False, "fit": False}}
PRODUCT_ARRAYS = [
    ("rateints", n) for n in ("sci", "err", "dq", "var_poisson", "var_rnoise", "done")
] + [("spectra", n) for n in ("flux", "flux_error", "dq", "done")] + [("cleaned", "dq")]


@pytest.fixture(scope="module", autouse=True)
def _no_child_left_by_the_module():
    """After the module (its cluster closed) no child process of this one is left: no
    worker, job service or worker pool, nor the resource tracker their spawns started."""
    with no_children_left(__name__):
        yield


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    return simulate(d, preset="prism-sub512", nints=NINTS, seed=21, ints_per_segment=8)


def _run(sim, out, spec):
    return run([str(sim.outdir)], str(out), refs_dir=str(sim.refs_dir), config=CONFIG,
               runner=spec, progress=False)


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "direct"
    _run(sim, out, RunnerSpec())
    return out


@pytest.fixture(scope="module")
def cluster():
    import logging

    pytest.importorskip("distributed", reason="Beam on Dask needs apache-beam[dask]")
    import os

    from distributed import LocalCluster

    kept = dict(os.environ)
    with own_resource_tracker():  # the tracker the nannies' spawns start: stopped after
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=None, silence_logs=logging.WARNING)
        # the nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 here: later processes must not see it
        os.environ.clear()
        os.environ.update(kept)
        try:
            yield c
        finally:
            c.close()


def test_local_dask_cluster_leaves_the_blas_thread_settings_alone(monkeypatch,
                                                                  no_leaked_children):
    """``--runner dask:N`` starts a LocalCluster whose nannies set the BLAS thread counts
    to 1 in this process's environment; processes started afterwards (Beam workers,
    ``nirbeam stream``) would then run a one-thread BLAS. The runner puts them back."""
    import os

    pytest.importorskip("distributed", reason="Beam on Dask needs apache-beam[dask]")
    from nirbeam.stream import runners

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    runners.close_local_dask_clusters()
    with own_resource_tracker():  # no child left: the cluster's tracker stopped after it
        try:
            runners.local_dask_cluster(1)
            assert os.environ.get("OMP_NUM_THREADS") == "2"
            assert "OPENBLAS_NUM_THREADS" not in os.environ
            assert "MKL_NUM_THREADS" not in os.environ
        finally:
            runners.close_local_dask_clusters()


def assert_same_products(ref, out, group):
    """Bit-identical arrays and white-light table; every integration accounted once."""
    a = zarr.open_group(str(ref / "cubes.zarr"), mode="r")[group]
    b = zarr.open_group(str(out / "cubes.zarr"), mode="r")[group]
    for stage, name in PRODUCT_ARRAYS:
        x, y = a[stage][name][:], b[stage][name][:]
        assert x.dtype == y.dtype and x.shape == y.shape, (stage, name)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (stage, name)
    assert (ref / "whitelight.ecsv").read_bytes() == (out / "whitelight.ecsv").read_bytes()
    rj = json.loads((out / "run.json").read_text())
    (e,) = rj["exposures"]
    assert e["processed"] + e["deadlettered"] == NINTS
    assert e["processed"] == NINTS and e["deadlettered"] == 0 and e["complete"]
    assert (out / "deadletter.jsonl").read_text() == ""
    return rj


def _group(sim):
    return f"{sim.exposure}_nrs1"


# ---------------------------------------------------------------------------------------
# Runner selection


def test_streaming_refused_where_windows_are_not_honoured():
    for name in ("dask", "multiprocess"):
        with pytest.raises(ValueError, match="cannot run a streaming pipeline with event-time"):
            make_runner(RunnerSpec(name=name), streaming=True)
    runner, opts, cleanup = make_runner(RunnerSpec(), streaming=True)
    assert opts.view_as(beam.options.pipeline_options.StandardOptions).streaming
    assert cleanup is None


def test_stream_command_refuses_runners_without_windows(tmp_path, capsys):
    from nirbeam.stream.cli import EXIT_BAD_INPUT, main

    for name in ("dask", "multiprocess"):
        rc = main(["stream", str(tmp_path), "--out", str(tmp_path / "o"), "--runner", name])
        assert rc == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert f"--runner '{name}' cannot honour event-time windows" in err
        assert "'direct', 'portable'" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_bad_runner_specs_refused():
    with pytest.raises(ValueError, match="expected one of"):
        RunnerSpec(name="spark").validate()
    with pytest.raises(ValueError, match="--job-endpoint"):
        RunnerSpec(name="portable").validate()
    with pytest.raises(ValueError, match="not both"):
        RunnerSpec(name="dask", dask_address="tcp://h:1", dask_scheduler_file="f").validate()
    with pytest.raises(ValueError, match="need --runner dask"):
        RunnerSpec(name="direct", dask_address="tcp://h:1").validate()
    pytest.importorskip("distributed", reason="Beam on Dask needs apache-beam[dask]")
    _, opts, _ = make_runner(RunnerSpec(name="dask", dask_address="tcp://h:1",
                                        beam_args=("--dask_npartitions=3",)))
    d = opts.get_all_options()
    assert d["npartitions"] == 3 and d["partition_size"] is None  # user's choice kept


class _Split(beam.DoFn):
    def __init__(self):
        self.n = beam.metrics.Metrics.counter("test", "split")

    def process(self, x):
        self.n.inc()
        if x % 2:
            yield beam.pvalue.TaggedOutput("odd", x)
        else:
            yield x


class _Append:
    def __init__(self, path):
        self.path = path

    def __call__(self, x):
        with open(f"{self.path}/{x}", "w") as fh:
            fh.write("x")
        return x


def test_dask_runner_routes_tagged_outputs_and_runs_every_branch(cluster, tmp_path):
    """Upstream DaskRunner gives every tag every element and runs only the last branch."""
    spec = RunnerSpec(name="dask", dask_address=cluster.scheduler_address)
    runner, opts, _ = make_runner(spec)
    (tmp_path / "even").mkdir()
    (tmp_path / "odd").mkdir()
    p = beam.Pipeline(runner=runner, options=opts)
    out = p | beam.Create(list(range(10))) | beam.ParDo(_Split()).with_outputs("odd", main="even")
    _ = out.even | "WriteEven" >> beam.Map(_Append(str(tmp_path / "even")))
    _ = out.odd | "WriteOdd" >> beam.Map(_Append(str(tmp_path / "odd")))
    res = p.run()
    res.wait_until_finish()
    assert sorted(int(x) for x in os.listdir(tmp_path / "even")) == [0, 2, 4, 6, 8]
    assert sorted(int(x) for x in os.listdir(tmp_path / "odd")) == [1, 3, 5, 7, 9]
    counters = {c.key.metric.name: c.committed for c in res.metrics().query()["counters"]}
    assert counters == {"split": 10}  # counted on the workers, merged once per bundle


# ---------------------------------------------------------------------------------------
# The batch pipeline on each runner


def test_dask_cluster_gives_identical_products(sim, reference, cluster, tmp_path):
    from distributed import Client, get_task_stream

    sched = tmp_path / "scheduler.json"
    with Client(cluster.scheduler_address) as client:
        client.write_scheduler_file(str(sched))
        with get_task_stream(client) as ts:
            res = _run(sim, tmp_path / "dask", RunnerSpec(name="dask",
                                                          dask_scheduler_file=str(sched)))
    rj = assert_same_products(reference, tmp_path / "dask", _group(sim))
    assert res.summary["runner"]["name"] == "dask"
    assert rj["metrics"]["detector1.records"] == NINTS
    workers = {t["worker"] for t in ts.data if "run_bundle" in str(t["key"])}
    assert len(workers) == 2, workers  # both worker processes did integrations


def _kill_when_started(pid, root, group, after=2):
    """SIGKILL ``pid`` once ``after`` integrations of the run have their markers."""
    killed = {}
    stop = threading.Event()

    def killer():
        from nirbeam.sinks import zarr_store

        while not stop.wait(0.02):
            try:
                n = int(zarr_store.completed(root, group, "rateints").sum())
            except Exception:  # noqa: BLE001 - store not created yet
                continue
            if n >= after:
                os.kill(pid, signal.SIGKILL)
                killed["at"] = n
                return

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    return killed, stop, th


def test_dask_worker_killed_mid_run_loses_and_duplicates_nothing(sim, reference, cluster,
                                                                 tmp_path):
    """Default retries: the run completes through Dask; products as if nothing happened."""
    from distributed import Client

    out = tmp_path / "killed"
    root = str(out / "cubes.zarr")
    g = _group(sim)
    with Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed, stop, th = _kill_when_started(victim, root, g)
    spec = RunnerSpec(name="dask", dask_address=cluster.scheduler_address)
    try:
        res = _run(sim, out, spec)  # Dask recomputes the lost tasks on the other worker
    finally:
        stop.set()
        th.join(5)
    assert killed and killed["at"] < NINTS, killed  # the worker died mid-stage
    rj = assert_same_products(reference, out, g)
    assert rj["metrics"]["detector1.records"] == NINTS  # each bundle counted once
    assert res.summary["exposures"][0]["processed"] == NINTS
    # the nanny restarted the dead worker
    with Client(cluster.scheduler_address) as client:
        client.wait_for_workers(2, timeout=60)
        assert victim not in client.run(os.getpid).values()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc, timeout=60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"service on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("localhost", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_portable_job_service_with_external_worker_pool(sim, reference, tmp_path):
    job_port, pool_port = _free_port(), _free_port()
    env = dict(os.environ)
    # the pool starts SDK workers as plain "python": it must be this environment's
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    procs = []
    try:
        for args in (
            ["apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
            ["apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        ):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", *args], env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{args[0]}.log", "w"),
            ))
        _wait_port(job_port, procs[0])
        _wait_port(pool_port, procs[1])
        spec = RunnerSpec(
            name="portable", job_endpoint=f"localhost:{job_port}",
            beam_args=("--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"),
        )
        out = tmp_path / "portable"
        done = {}
        th = threading.Thread(target=lambda: done.setdefault("res", _run(sim, out, spec)),
                              daemon=True)
        th.start()
        th.join(180)  # bounded: a worker that cannot start makes the job hang
        assert "res" in done, "portable run did not finish in 180 s"
    finally:
        for p in procs:
            _stop(p)
    rj = assert_same_products(reference, out, _group(sim))
    assert rj["metrics"]["detector1.records"] == NINTS


def test_multiprocess_two_workers(sim, reference, tmp_path):
    out = tmp_path / "mp"
    _run(sim, out, RunnerSpec(name="multiprocess", workers=2))
    rj = assert_same_products(reference, out, _group(sim))
    assert {k: rj["runner"][k] for k in ("name", "workers", "beam_args", "chosen")} == {
        "name": "multiprocess", "workers": 2, "beam_args": [], "chosen": "given"}
    c = rj["cpu"]  # every process's CPU (the two SDK workers' too), whole machine / per core
    assert c["workers"] == 2 and c["cpu_s"] > 0 and c["pixel_groups"] == NINTS * 5 * 32 * 512
    assert set(c["mpix_groups_per_s"]) == {"whole_machine", "per_core"}


def test_auto_on_a_small_exposure_is_the_serial_run(sim, reference, tmp_path):
    out = tmp_path / "auto"
    _run(sim, out, RunnerSpec(name="auto"))
    rj = assert_same_products(reference, out, _group(sim))
    assert (rj["runner"]["name"], rj["runner"]["workers"]) == ("direct", 1)
    assert rj["runner"]["chosen"].startswith("auto") and rj["cpu"]["workers"] == 1


def test_dask_run_failed_by_a_killed_worker_is_completed_by_a_rerun(sim, reference, cluster,
                                                                     tmp_path):
    """No retries allowed: the kill fails the run; a rerun into OUTDIR completes it."""
    from distributed import Client

    from nirbeam.sinks import zarr_store

    out = tmp_path / "failed"
    root = str(out / "cubes.zarr")
    g = _group(sim)
    with Client(cluster.scheduler_address) as client:
        client.wait_for_workers(2, timeout=60)
        victim = sorted(client.run(os.getpid).values())[0]
    spec = RunnerSpec(name="dask", dask_address=cluster.scheduler_address)
    allowed = cluster.scheduler.allowed_failures
    cluster.scheduler.allowed_failures = 0  # a task on a dead worker fails the job
    killed, stop, th = _kill_when_started(victim, root, g)
    try:
        with pytest.raises(Exception, match="KilledWorker|died"):
            _run(sim, out, spec)
    finally:
        stop.set()
        th.join(5)
        cluster.scheduler.allowed_failures = allowed
    assert killed and not (out / "run.json").exists()
    with Client(cluster.scheduler_address) as client:
        client.wait_for_workers(2, timeout=60)
    partial = int(zarr_store.completed(root, g, "rateints").sum())
    assert killed["at"] <= partial < NINTS
    res = _run(sim, out, spec)
    rj = assert_same_products(reference, out, g)
    assert rj["exposures"][0]["skipped_complete"] == partial
    assert rj["metrics"]["detector1.records"] == NINTS - partial  # only the rest redone
    assert res.summary["exposures"][0]["processed"] == NINTS


def test_two_workers_on_two_detectors_equal_serial(tmp_path, monkeypatch):
    """The 2-core setting of the WASP-size run (``--runner multiprocess --workers 2``, one
    numba thread each, set by the runner in its workers; docs/notes/issue-14.md session 7) on a G395H NRS1 + NRS2 exposure:
    every array of every stage of both detectors, and the x1dints, whitelight, whtlt and
    speclc files, byte for byte the serial run's."""
    sim2 = simulate(tmp_path / "sim", preset="g395h-sub2048", nints=12, seed=8, ngroups=3,
                    detectors=("NRS1", "NRS2"), ints_per_segment=6)
    cfg = {"products": {"plots": False, "fit": False}}
    serial, mp = tmp_path / "serial", tmp_path / "mp"
    run([str(sim2.outdir)], str(serial), refs_dir=str(sim2.refs_dir), config=cfg,
        progress=False)
    run([str(sim2.outdir)], str(mp), refs_dir=str(sim2.refs_dir), config=cfg,
        runner=RunnerSpec(name="multiprocess", workers=2), progress=False)
    a = zarr.open_group(str(serial / "cubes.zarr"), mode="r")
    b = zarr.open_group(str(mp / "cubes.zarr"), mode="r")
    groups = sorted(a.group_keys())
    assert groups == sorted(b.group_keys()) and len(groups) == 2
    n = 0
    for g in groups:
        for stage in ("rateints", "cleaned", "spectra", "lightcurves", "trace"):
            for name in a[g][stage].array_keys():
                x, y = a[g][stage][name][:], b[g][stage][name][:]
                assert x.dtype == y.dtype and x.shape == y.shape, (g, stage, name)
                assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (g, stage, name)
                n += 1
    assert n > 40
    files = sorted(p.name for p in serial.iterdir()
                   if p.suffix in (".fits", ".ecsv", ".parquet"))
    assert sum(f.endswith("_x1dints.fits") for f in files) == 2
    for f in files:
        assert (serial / f).read_bytes() == (mp / f).read_bytes(), f
    rj = json.loads((mp / "run.json").read_text())
    assert rj["runner"]["name"] == "multiprocess"
    assert all(e["processed"] == 12 and e["complete"] for e in rj["exposures"])
