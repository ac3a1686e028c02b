"""The default worker choice (``--runner auto --workers auto``): one process for a small
exposure, the cores available for a big one, ``--workers N`` / ``$NIRBEAM_WORKERS``
winning; the worker processes the runner starts get one numba/BLAS thread each while the
caller's environment stays as it was; run.json's ``cpu`` block."""

from __future__ import annotations

import json
import os
import subprocess
import types

import pytest

from nirbeam.stream import runners
from nirbeam.stream.runners import (
    AUTO_PIXEL_GROUPS_PER_WORKER,
    WORKER_ENV,
    RunnerSpec,
    available_cores,
    cpu_summary,
    make_runner,
    requested_workers,
    resolve_auto,
    worker_command,
)

AUTO = RunnerSpec(name="auto")


def test_available_cores_follows_the_affinity_mask(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert available_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


def test_auto_is_serial_for_a_small_exposure_and_uses_the_cores_for_a_big_one():
    small = 1200 * 5 * 32 * 512  # PRISM SUB512 1200 x 5: 98 M pixel-groups
    wasp = 465 * 70 * 32 * 2048 * 2  # WASP-39b size, NRS1 + NRS2: 4.3 G
    s, why = resolve_auto(AUTO, small, cores=2)
    assert (s.name, s.workers) == ("direct", 1) and why.startswith("auto")
    s, _ = resolve_auto(AUTO, wasp, cores=2)
    assert (s.name, s.workers) == ("multiprocess", 2)
    s, _ = resolve_auto(AUTO, wasp, cores=64)  # one worker per AUTO_PIXEL_GROUPS_PER_WORKER
    assert s.workers == wasp // AUTO_PIXEL_GROUPS_PER_WORKER < 64
    s, _ = resolve_auto(AUTO, 2 * AUTO_PIXEL_GROUPS_PER_WORKER - 1, cores=8)
    assert s.name == "direct"
    s, _ = resolve_auto(AUTO, 2 * AUTO_PIXEL_GROUPS_PER_WORKER, cores=8)
    assert (s.name, s.workers) == ("multiprocess", 2)
    s, _ = resolve_auto(AUTO, wasp, cores=1)
    assert s.name == "direct"
    assert resolve_auto(AUTO, None, cores=8)[0].name == "direct"  # size unknown
    given = RunnerSpec(name="dask", workers=3)
    assert resolve_auto(given, wasp, cores=2) == (given, "given")


def test_the_flag_and_the_environment_win(monkeypatch):
    monkeypatch.delenv("NIRBEAM_WORKERS", raising=False)
    assert requested_workers(None) is None and requested_workers("auto") is None
    monkeypatch.setenv("NIRBEAM_WORKERS", "3")
    assert requested_workers(None) == 3
    assert requested_workers(1) == 1  # --workers wins over the environment
    monkeypatch.setenv("NIRBEAM_WORKERS", "auto")
    assert requested_workers(None) is None
    for bad in ("0", "x"):
        monkeypatch.setenv("NIRBEAM_WORKERS", bad)
        with pytest.raises(ValueError, match="NIRBEAM_WORKERS"):
            requested_workers(None)
    monkeypatch.delenv("NIRBEAM_WORKERS")
    tiny = 24 * 5 * 32 * 512
    s, why = resolve_auto(RunnerSpec(name="auto", workers=1), 10**12, cores=8)
    assert (s.name, s.workers, why) == ("direct", 1, "requested")  # today's serial path
    s, _ = resolve_auto(RunnerSpec(name="auto", workers=2), tiny, cores=8)
    assert (s.name, s.workers) == ("multiprocess", 2)


def test_cli_runner_spec(monkeypatch):
    from nirbeam.stream.cli import build_parser
    from nirbeam.stream.config import ConfigError
    from nirbeam.stream.run_commands import runner_spec

    monkeypatch.delenv("NIRBEAM_WORKERS", raising=False)

    def spec(*extra):
        args = build_parser().parse_args(["run", "in", "--out", "o", *extra])
        return runner_spec(args, [])

    assert (spec().name, spec().workers) == ("auto", None)
    assert spec("--workers", "auto").workers is None
    assert spec("--workers", "1").workers == 1
    assert spec("--runner", "multiprocess").workers == available_cores()
    assert spec("--runner", "direct").name == "direct"
    from nirbeam.stream.run_commands import _sized_elsewhere

    def fs_spec(*extra):  # FS / IFU / MOS: not sized by their drivers, one process unless asked
        args = build_parser().parse_args(["run", "in", "--out", "o", *extra])
        s = _sized_elsewhere(args, [])
        return s.name, s.workers

    assert fs_spec() == ("direct", 1) and fs_spec("--workers", "2") == ("multiprocess", 2)
    monkeypatch.setenv("NIRBEAM_WORKERS", "2")
    assert spec().workers == 2 and spec("--workers", "1").workers == 1
    monkeypatch.setenv("NIRBEAM_WORKERS", "-1")
    with pytest.raises(ConfigError):
        spec()


def test_worker_processes_get_one_thread_and_the_caller_keeps_its_env(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = dict(os.environ)
    runner, opts, _ = make_runner(RunnerSpec(name="multiprocess", workers=2))
    assert dict(os.environ) == before
    env = runner._default_environment  # the SDK workers' command
    assert env.command_string == worker_command()
    assert opts.get_all_options()["direct_num_workers"] == 2
    # run the worker's command prefix: it sees the thread settings, the caller does not
    cmd = worker_command().split(" -m ")[0] + " -c 'import os, json; print(json.dumps(dict(os.environ)))'"
    seen = json.loads(subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                     check=True).stdout)
    for k, v in WORKER_ENV.items():
        assert seen[k] == v
    assert os.environ["NUMBA_NUM_THREADS"] == "2" and os.environ["OMP_NUM_THREADS"] == "7"
    # a user's own --direct_running_mode is kept as given
    r2, o2, _ = make_runner(RunnerSpec(name="multiprocess", workers=2,
                                       beam_args=("--direct_running_mode=multi_threading",)))
    assert o2.get_all_options()["direct_running_mode"] == "multi_threading"
    assert dict(os.environ) == before


def test_local_dask_cluster_workers_get_one_thread(monkeypatch):
    pytest.importorskip("distributed")
    seen = {}

    class FakeCluster:
        def __init__(self, **kw):
            seen.update(kw)
            os.environ["OMP_NUM_THREADS"] = "1"  # what dask's nannies do here
            self.status = types.SimpleNamespace(name="running")

        def close(self):
            pass

    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(runners, "_LOCAL_CLUSTERS", {})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runners.local_dask_cluster(2)
    assert seen["env"] == WORKER_ENV and seen["n_workers"] == 2
    assert "OMP_NUM_THREADS" not in os.environ  # the caller's env put back


def test_cpu_summary():
    c = cpu_summary(10.0, 18.0, RunnerSpec(name="multiprocess", workers=2), 200_000_000)
    assert c["workers"] == 2 and c["cores_busy"] == 1.8
    assert c["mpix_groups_per_s"] == {"whole_machine": 20.0, "per_core": 11.111}
    assert cpu_summary(1.0, 1.0, RunnerSpec(), 0)["workers"] == 1


def _env_to_file(folder):
    keys = (*WORKER_ENV, "NIRBEAM_PROBE")

    def write(x):  # pickled by value (the tests folder is not importable in a worker)
        import json
        import os

        with open(os.path.join(folder, f"{x}-{os.getpid()}.json"), "w") as fh:
            json.dump({k: os.environ.get(k) for k in keys}, fh)
        return x

    return write


def test_beam_sdk_workers_see_one_thread(tmp_path, monkeypatch):
    """A real 2-worker pipeline: each SDK worker process has the thread settings and the
    caller's other variables; the caller's own environment is unchanged."""
    import apache_beam as beam

    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setenv("NIRBEAM_PROBE", "kept")
    before = dict(os.environ)
    runner, opts, _ = make_runner(RunnerSpec(name="multiprocess", workers=2))
    with beam.Pipeline(runner=runner, options=opts) as p:
        _ = p | beam.Create(range(4)) | beam.Map(_env_to_file(str(tmp_path)))
    seen = [json.loads(f.read_text()) for f in tmp_path.glob("*.json")]
    assert len(seen) == 4 and all(int(f.name.split("-")[1][:-5]) != os.getpid()
                                  for f in tmp_path.glob("*.json"))
    assert all(s == {**WORKER_ENV, "NIRBEAM_PROBE": "kept"} for s in seen)
    assert dict(os.environ) == before
