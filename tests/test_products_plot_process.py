"""The products' fit and plots in a forked child process beside the writers
(``nirbeam.stream.plot_process.beside``, ``NIRBEAM_PLOTS_PROCESS``): the same files as the
serial path, the child's log records, warnings and exceptions reaching the parent as the
serial path gives them, no child left behind."""

import filecmp
import glob
import json
import logging
import os
import shutil
import threading
import warnings

import numpy as np
import pytest
from conftest import child_pids

from nirbeam.stream import plot_process as PP
from nirbeam.stream import products as P

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


_EARLIER: set[int] = set()


@pytest.fixture(autouse=True)
def _earlier_children():
    """Children an earlier test of the session left running (a local cluster, a server):
    not this test's to reap."""
    _EARLIER.clear()
    _EARLIER.update(child_pids())
    yield


def _children() -> list[int]:
    """Child processes of this process started during this test and still there."""
    return [p for p in child_pids() if p not in _EARLIER]


class Unpicklable(Exception):
    """Pickles by no reducer: it holds a lock (plain pickle copies ``__dict__``, and so does
    tblib's reducer, which ``tblib.pickling_support.install()`` registers for every
    exception class defined before it (dask.multiprocessing calls it). A class
    that only failed to *unpickle* became picklable in the full suite, after a Dask test)."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")
        self.lock = threading.Lock()


def test_value_logs_and_warnings_reach_the_parent(caplog):
    parent = os.getpid()
    order = []

    def fn():
        assert os.getpid() != parent
        logging.getLogger("nirbeam").warning("plot %s failed: %s", "x", "boom")
        warnings.warn("a plot warning", UserWarning, stacklevel=1)
        return {"pid": os.getpid(), "a": np.arange(3)}

    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="a plot warning"):
        res = PP.beside(fn, lambda: order.append("other"))
    assert order == ["other"]
    assert res["pid"] != parent and res["a"].tolist() == [0, 1, 2]
    rec = [r for r in caplog.records if "failed" in r.getMessage()]
    assert [(r.name, r.levelname, r.getMessage()) for r in rec] == \
        [("nirbeam", "WARNING", "plot x failed: boom")]
    assert _children() == []


def test_exception_in_the_child_raised_in_the_parent():
    def fn():
        raise ValueError("no fit")

    with pytest.raises(ValueError, match="no fit") as ei:
        PP.beside(fn, lambda: None)
    assert "in the plot process" in str(ei.value.__cause__)
    assert "raise ValueError" in str(ei.value.__cause__)
    assert _children() == []


def test_unpicklable_exception_named():
    def fn():
        raise Unpicklable(1, 2)

    with pytest.raises(RuntimeError, match="Unpicklable: 1-2"):
        PP.beside(fn, lambda: None)


def test_child_ending_without_a_result_runs_fn_here(caplog):
    parent = os.getpid()

    def fn():
        if os.getpid() != parent:
            os._exit(3)
        return "here"

    with caplog.at_level(logging.WARNING):
        assert PP.beside(fn, lambda: None) == "here"
    assert any("plot process ended without a result" in r.getMessage() for r in caplog.records)
    assert _children() == []


def test_writer_failure_raised_child_reaped(caplog):
    def fn():
        logging.getLogger("nirbeam").warning("child said this")
        return 1

    def other():
        raise OSError("disk full")

    with caplog.at_level(logging.WARNING), pytest.raises(OSError, match="disk full"):
        PP.beside(fn, other)
    assert any("child said this" in r.getMessage() for r in caplog.records)
    assert _children() == []


def test_interrupt_kills_and_reaps_the_child():
    import time

    def fn():
        time.sleep(60)

    def other():
        raise KeyboardInterrupt

    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        PP.beside(fn, other)
    assert time.perf_counter() - t < 30 and _children() == []


def test_switch(monkeypatch, tmp_path):
    monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, "0")
    assert not PP.plots_in_child(str(tmp_path))
    monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, "1")
    assert PP.plots_in_child(str(tmp_path))
    assert not PP.plots_in_child("s3://bucket/out")
    monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, "auto")
    import nirbeam.stream.runners as R

    monkeypatch.setattr(R, "available_cores", lambda: 1)
    assert not PP.plots_in_child(str(tmp_path))
    monkeypatch.setattr(R, "available_cores", lambda: 2)
    assert PP.plots_in_child(str(tmp_path))


# ---------------------------------------------------------------------------------------
# finalize_products, serial and with the plot process, on one small run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import main

    d = tmp_path_factory.mktemp("plotproc")
    res = simulate(d / "sim", preset="prism-sub512", nints=24, seed=3, ngroups=3)
    out = d / "out"
    assert main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def _finalize(src, dst, mode, monkeypatch):
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    shutil.copytree(src, dst)
    for f in glob.glob(str(dst / "*.ecsv")) + glob.glob(str(dst / "*.parquet")) \
            + glob.glob(str(dst / "*.fits")) + glob.glob(str(dst / "plots" / "*")):
        os.remove(f)
    # what finalize writes in the store goes too (the plots must see this call's own)
    from nirbeam.sinks import zarr_store

    for d in glob.glob(str(dst / "cubes.zarr" / "*" / "lightcurves")) \
            + glob.glob(str(dst / "cubes.zarr" / "*" / "trace")):
        shutil.rmtree(d)
    zarr_store.consolidate(str(dst / "cubes.zarr"), {})
    summary = json.loads((dst / "run.json").read_text())
    settings = Settings.from_dict(summary["config_input"])
    plans = plan_exposures([scan_segment(p) for p in summary["inputs"]])
    monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, mode)
    forks = []
    real = os.fork

    def fork():
        forks.append(1)
        return real()

    monkeypatch.setattr(os, "fork", fork)
    out = P.finalize_products(str(dst), str(dst / "cubes.zarr"), plans, settings)
    monkeypatch.setattr(os, "fork", real)
    assert len(forks) == (mode == "1")
    assert _children() == []
    return out


def _png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA"))


def _same_products(a, b):
    names = sorted(os.path.basename(f) for f in glob.glob(str(a / "*"))
                   if f.endswith((".fits", ".ecsv", ".parquet")))
    assert names and names == sorted(os.path.basename(f) for f in glob.glob(str(b / "*"))
                                     if f.endswith((".fits", ".ecsv", ".parquet")))
    for n in names:
        assert filecmp.cmp(a / n, b / n, shallow=False), n
    pngs = sorted(os.path.basename(f) for f in glob.glob(str(a / "plots" / "*.png")))
    assert len(pngs) >= 6
    assert pngs == sorted(os.path.basename(f) for f in glob.glob(str(b / "plots" / "*.png")))
    for n in pngs:
        assert np.array_equal(_png(a / "plots" / n), _png(b / "plots" / n)), n
    assert filecmp.cmp(a / "plots" / "index.json", b / "plots" / "index.json", shallow=False)
    for g in ("lightcurves", "trace"):
        import zarr

        za, zb = zarr.open_group(str(a / "cubes.zarr"), mode="r"), \
            zarr.open_group(str(b / "cubes.zarr"), mode="r")
        for name in za:
            if g in za[name]:
                for k in za[name][g]:
                    np.testing.assert_array_equal(za[name][g][k][...], zb[name][g][k][...])


def test_plot_process_gives_the_serial_products(run, tmp_path, monkeypatch):
    a = _finalize(run, tmp_path / "serial", "0", monkeypatch)
    b = _finalize(run, tmp_path / "child", "1", monkeypatch)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)  # keys in the same order
    _same_products(tmp_path / "serial", tmp_path / "child")


def test_a_plot_failing_in_the_child_is_said_as_in_serial(run, tmp_path, monkeypatch, caplog):
    from nirbeam.sinks import plots

    def broken(*a, **k):
        raise RuntimeError("no white light today")

    monkeypatch.setattr(plots, "plot_white_light", broken)
    said = {}
    for mode in ("0", "1"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nirbeam"):
            _finalize(run, tmp_path / mode, mode, monkeypatch)
        said[mode] = [(r.name, r.levelno, r.getMessage()) for r in caplog.records
                      if "failed" in r.getMessage()]
    assert said["0"] and said["0"] == said["1"]
    assert any("no white light today" in m for _, _, m in said["1"])
    _same_products(tmp_path / "0", tmp_path / "1")


def test_plots_failing_entirely_said_as_in_serial(run, tmp_path, monkeypatch, caplog):
    import nirbeam.sinks.diagnostics as D

    def broken(*a, **k):
        raise OSError("plots folder gone")

    monkeypatch.setattr(D, "plot_products", broken)
    said = {}
    for mode in ("0", "1"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nirbeam"):
            _finalize(run, tmp_path / mode, mode, monkeypatch)
        said[mode] = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("nirbeam", logging.WARNING, "plots failed: plots folder gone") in said["1"]
    assert said["0"] == said["1"]
