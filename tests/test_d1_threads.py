"""detector1 of a block on a thread pool (issue 14, session 14): :class:`CalibrateBlock`
reads and calibrates a block's integrations on ``NIRBEAM_D1_THREADS`` threads (default:
the cores available) with the same results, markers and dead letters as on one thread."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import assert_same_arrays, read_deadletters, run_sim

from nirbeam.stream import rate_steps
from nirbeam.stream.rate_steps import D1_THREADS_ENV, RATE_ARRAYS, detector1_pool, detector1_threads

NINTS = 20
SIM = dict(nints=NINTS, seed=5, ints_per_segment=7)
READ_FAILS, D1_FAILS = 17, 9  # past the draft's integrations (prepare reads the first few)


def _run(sim, out, threads, monkeypatch):
    """The whole run with ``threads`` detector1 threads, one read and one detector1 failure
    injected; returns the threads detector1 ran on."""
    import nirbeam.transforms.detector1 as d1

    real_cal, real_read = d1.calibrate_record, rate_steps.read_ramp
    ran_on = set()

    def flaky_cal(rec, *a, **k):
        ran_on.add(threading.current_thread().name)
        if rec.key.integration == D1_FAILS:
            raise RuntimeError(f"injected detector1 failure for {rec.key}")
        return real_cal(rec, *a, **k)

    def flaky_read(info, i):
        if i == READ_FAILS:
            raise OSError(f"injected read failure of integration {i}")
        return real_read(info, i)

    monkeypatch.setenv(D1_THREADS_ENV, str(threads))
    monkeypatch.setattr(d1, "calibrate_record", flaky_cal)
    monkeypatch.setattr(rate_steps, "read_ramp", flaky_read)
    try:
        assert run_sim(sim, out) == 3  # two dead letters
    finally:
        monkeypatch.setattr(d1, "calibrate_record", real_cal)
        monkeypatch.setattr(rate_steps, "read_ramp", real_read)
    return ran_on


def test_threaded_block_equals_one_thread_bit_for_bit(prism_sim, tmp_path, monkeypatch):
    from nirbeam.sinks import zarr_store

    sim = prism_sim(**SIM)
    one, three = tmp_path / "one", tmp_path / "three"
    on1 = _run(sim, one, 1, monkeypatch)
    on3 = _run(sim, three, 3, monkeypatch)
    assert not any(n.startswith("nirbeam-d1") for n in on1)
    assert any(n.startswith("nirbeam-d1") for n in on3), on3  # the pool did the work
    group = f"{sim.exposure}_nrs1"
    assert_same_arrays(one, three, group, "rateints", RATE_ARRAYS, NINTS)  # NaN fills too
    done1 = zarr_store.completed(str(one / "cubes.zarr"), group, "rateints")
    done3 = zarr_store.completed(str(three / "cubes.zarr"), group, "rateints")
    assert done1.tolist() == done3.tolist()
    assert np.flatnonzero(~done1).tolist() == [D1_FAILS - 1, READ_FAILS - 1]
    d1, d3 = read_deadletters(one), read_deadletters(three)
    assert d1 == d3
    assert [(x["integration"], x["step"]) for x in d1] == [(D1_FAILS, "detector1"),
                                                           (READ_FAILS, "read")]
    assert "injected detector1 failure" in d1[0]["reason"]
    assert d1[1]["reason"].startswith("OSError: injected read failure")
    m1 = json.loads((one / "run.json").read_text())["metrics"]
    m3 = json.loads((three / "run.json").read_text())["metrics"]
    for k in ("read.records", "read.deadletters", "detector1.records",
              "detector1.deadletters", "write_rateints.records"):
        assert m1.get(k) == m3.get(k), k
    assert m1["detector1.records"] == NINTS - 2


def test_thread_count_setting(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.delenv("NIRBEAM_DETECTOR1_PARALLEL", raising=False)
    monkeypatch.setenv(D1_THREADS_ENV, "3")
    assert detector1_threads() == 3
    monkeypatch.setenv(D1_THREADS_ENV, "0")
    assert detector1_threads() == 1
    monkeypatch.setenv(D1_THREADS_ENV, "two")
    with pytest.raises(ValueError, match="NIRBEAM_D1_THREADS"):
        detector1_threads()
    monkeypatch.setenv(D1_THREADS_ENV, "auto")
    from nirbeam.stream.runners import WORKER_ENV, available_cores

    assert detector1_threads() == min(available_cores(), rate_steps.D1_MAX_THREADS)
    monkeypatch.setenv("NUMBA_NUM_THREADS", WORKER_ENV["NUMBA_NUM_THREADS"])  # a worker process
    assert detector1_threads() == 1
    monkeypatch.delenv("NUMBA_NUM_THREADS")
    monkeypatch.setenv("NIRBEAM_DETECTOR1_PARALLEL", "1")  # numba-parallel kernel: no threads
    monkeypatch.setattr("numba.get_num_threads", lambda: 2)
    assert detector1_threads() == 1
    monkeypatch.delenv("NIRBEAM_DETECTOR1_PARALLEL")
    # the pool: not for one item or full frames
    monkeypatch.setenv(D1_THREADS_ENV, "2")

    def items(shape, n=2):
        return [SimpleNamespace(segment=SimpleNamespace(meta=SimpleNamespace(image_shape=shape)))
                ] * n

    assert detector1_pool(items((32, 512)))[0] == 2
    assert detector1_pool(items((32, 512), 1)) == (1, None)
    assert detector1_pool(items((2048, 2048))) == (1, None)
    monkeypatch.setenv(D1_THREADS_ENV, "1")
    assert detector1_pool(items((32, 512))) == (1, None)


D1_KERNEL_MODULES = ("detector1", "ramp_fit", "jump", "refpix", "saturation", "sat_tail",
                     "linearity", "dark", "superbias", "flicker_hook", "flicker_kernels",
                     "flicker_sort")


def test_detector1_kernels_release_the_gil():
    """Every numba kernel of detector1's path (its fused kernel, prepasses and the 1/f
    hook) has ``nogil=True``: a kernel without it serialises the threads of
    :func:`detector1_pool` (results stay the same: only the time shows it). The
    numba-parallel kernel is the exception (one call at a time, see
    :func:`detector1_threads`)."""
    import ast
    from pathlib import Path

    root = Path(rate_steps.__file__).resolve().parents[1] / "transforms"
    found, bad = 0, []
    for mod in D1_KERNEL_MODULES:
        tree = ast.parse((root / f"{mod}.py").read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                f = dec.func if isinstance(dec, ast.Call) else dec
                if getattr(f, "id", getattr(f, "attr", None)) not in ("njit", "jit"):
                    continue
                found += 1
                kw = {k.arg: getattr(k.value, "value", None)
                      for k in getattr(dec, "keywords", [])}
                if kw.get("parallel") is not True and kw.get("nogil") is not True:
                    bad.append(f"{mod}.{node.name}")
    assert found > 80
    assert not bad, bad
