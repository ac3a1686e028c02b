"""The plot process started ahead (``nirbeam.stream.plot_process.ahead``): the child's early
part runs while the parent computes, the parent's payload reaches its late part without
holding the parent up, failures are said and no child is left; the plots drawn in two
passes (``plot_products(kinds=EARLY_PLOTS)`` then the rest with ``drawn=``) are the files of
one pass byte for byte; ``finalize_products`` draws the early plots while it computes the
light curves."""

import filecmp
import glob
import json
import logging
import os
import shutil
import time

import numpy as np
import pytest

from nirbeam.stream import plot_process as PP
from nirbeam.stream import products as P

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _all_children() -> list[int]:
    out = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


@pytest.fixture
def new_children():
    """Child processes started during the test and still there (call at its end)."""
    before = set(_all_children())
    return lambda: [p for p in _all_children() if p not in before]


def _wait_for(path, timeout=30.0) -> bool:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False


def test_early_runs_before_the_payload_and_late_gets_it(tmp_path, caplog, new_children):
    mark = tmp_path / "early"

    def early():
        logging.getLogger("nirbeam").warning("early said this")
        mark.write_text(str(os.getpid()))
        return "e"

    def late(e, payload):
        logging.getLogger("nirbeam").warning("late got %s", payload[:2])
        return (e, os.getpid(), payload.sum())

    def parent(send):
        assert _wait_for(mark)  # the child's early part ran while this one waited
        send(np.arange(10.0))

    with caplog.at_level(logging.WARNING, logger="nirbeam"):
        e, pid, total = PP.ahead(early, late, parent, lambda p: pytest.fail("serial"))
    assert (e, total) == ("e", 45.0)
    assert pid != os.getpid() and int(mark.read_text()) == pid
    said = [r.getMessage() for r in caplog.records]
    assert said == ["early said this", "late got [0. 1.]"]
    assert new_children() == []


def test_a_large_payload_does_not_hold_the_parent(tmp_path, new_children):
    big = np.arange(4_000_000, dtype=np.float64)  # 32 MB: far more than a pipe holds
    times = {}

    def early():
        time.sleep(1.5)  # the child reads the payload only after this

    def parent(send):
        t = time.monotonic()
        send(big)
        times["send"] = time.monotonic() - t

    out = PP.ahead(early, lambda _e, p: float(p[-1]), parent, lambda p: pytest.fail("serial"))
    assert out == float(big[-1])
    assert times["send"] < 1.0
    assert new_children() == []


def test_parent_failing_before_sending_ends_the_child(new_children):
    ran = []

    def parent(send):
        raise ValueError("no light curves")

    with pytest.raises(ValueError, match="no light curves"):
        PP.ahead(lambda: None, lambda e, p: ran.append(p), parent, lambda p: ran.append(p))
    assert ran == [] and new_children() == []


def test_unpicklable_payload_drawn_here(new_children):
    import threading

    lock = threading.Lock()
    got = PP.ahead(lambda: None, lambda e, p: pytest.fail("child"),
                   lambda send: send({"lock": lock}), lambda p: ("here", p["lock"] is lock))
    assert got == ("here", True) and new_children() == []


def test_child_dying_draws_here(caplog, new_children):
    def early():
        os._exit(3)

    with caplog.at_level(logging.WARNING, logger="nirbeam"):
        got = PP.ahead(early, lambda e, p: pytest.fail("child"), lambda send: send(7),
                       lambda p: ("here", p))
    assert got == ("here", 7)
    assert any("ended without a result" in r.getMessage() for r in caplog.records)
    assert new_children() == []


# ---------------------------------------------------------------------------------------
# on one small run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import main

    d = tmp_path_factory.mktemp("plotahead")
    res = simulate(d / "sim", preset="prism-sub512", nints=24, seed=5, ngroups=3)
    out = d / "out"
    assert main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def _png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA"))


def test_two_passes_give_one_pass_files(run, tmp_path):
    from nirbeam.sinks import diagnostics as D

    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        shutil.copytree(run, d)
        shutil.rmtree(d / "plots")
    D.plot_products(str(one))
    early = D.plot_products(str(two), kinds=D.EARLY_PLOTS, index=False)
    assert [e.kind for e in early] == list(D.EARLY_PLOTS)
    assert not (two / "plots" / "index.json").exists()
    D.plot_products(str(two), kinds=[k for k in D.PLOT_KINDS if k not in D.EARLY_PLOTS],
                    drawn=early)
    names = sorted(os.listdir(one / "plots"))
    assert len(names) >= 7 and names == sorted(os.listdir(two / "plots"))
    for n in names:  # PNGs: the same bytes (hence pixels); index.json: the same order
        assert filecmp.cmp(one / "plots" / n, two / "plots" / n, shallow=False), n
    kinds = [e["kind"] for e in json.loads((one / "plots" / "index.json").read_text())]
    assert kinds == [k for k in D.PLOT_KINDS if k in kinds]


def test_early_plots_read_no_group_listing(run, tmp_path, monkeypatch):
    """The early pass looks each stage up by its path: a listing of a group's stages (which
    could meet a stage the products are writing) is never made."""
    import zarr

    from nirbeam.sinks import diagnostics as D

    d = tmp_path / "o"
    shutil.copytree(run, d)
    real = zarr.Group.groups

    def groups(self):
        if self.path:  # the root's groups (the exposures) may be listed
            raise AssertionError(f"listed {self.path}")
        return real(self)

    monkeypatch.setattr(zarr.Group, "groups", groups)
    early = D.plot_products(str(d), kinds=D.EARLY_PLOTS, index=False)
    assert all(e.file for e in early)
    assert all(not e.note for e in D.plot_products(str(d), kinds=["trace", "rate"]))


def test_finalize_draws_the_early_plots_while_it_computes(run, tmp_path, monkeypatch):
    """The child draws the rate image (an early plot) while the parent is still in its
    white-light step (which here waits for it); the products are the serial path's."""
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    def finalize(dst, mode):
        shutil.copytree(run, dst)
        shutil.rmtree(dst / "plots")
        for f in glob.glob(str(dst / "*.ecsv")) + glob.glob(str(dst / "*.parquet")) \
                + glob.glob(str(dst / "*.fits")):
            os.remove(f)
        summary = json.loads((dst / "run.json").read_text())
        monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, mode)
        return P.finalize_products(str(dst), str(dst / "cubes.zarr"),
                                   plan_exposures([scan_segment(p) for p in summary["inputs"]]),
                                   Settings.from_dict(summary["config_input"]))

    real = P.white_light_series
    seen = []

    def waiting(*a, **k):
        if os.environ.get(PP.PLOTS_PROCESS_ENV) == "1":
            seen.append(_poll_rate(tmp_path / "child" / "plots"))
        return real(*a, **k)

    monkeypatch.setattr(P, "white_light_series", waiting)
    a = finalize(tmp_path / "serial", "0")
    b = finalize(tmp_path / "child", "1")
    assert seen == [True]
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
    for n in sorted(os.listdir(tmp_path / "serial" / "plots")):
        pa, pb = tmp_path / "serial" / "plots" / n, tmp_path / "child" / "plots" / n
        if n.endswith(".png"):
            assert np.array_equal(_png(pa), _png(pb)), n
        else:
            assert filecmp.cmp(pa, pb, shallow=False), n
    for n in os.listdir(tmp_path / "serial"):
        if n.endswith((".fits", ".ecsv", ".parquet")):
            assert filecmp.cmp(tmp_path / "serial" / n, tmp_path / "child" / n,
                               shallow=False), n


def _poll_rate(pdir, timeout=60.0) -> bool:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if glob.glob(str(pdir / "rate_*.png")):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("mode", ["0", "1"])
def test_then_runs_once_the_products_are_written(run, tmp_path, monkeypatch, mode):
    """``finalize_products(then=...)``: called once, in this process, after the tables and
    x1dints (serial: after the plots too); the run's consolidation goes there."""
    from nirbeam.sinks import zarr_store
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    dst = tmp_path / "o"
    shutil.copytree(run, dst)
    shutil.rmtree(dst / "plots")
    for f in glob.glob(str(dst / "*.fits")) + glob.glob(str(dst / "*.ecsv")):
        os.remove(f)
    summary = json.loads((dst / "run.json").read_text())
    monkeypatch.setenv(PP.PLOTS_PROCESS_ENV, mode)
    seen = []
    root = str(dst / "cubes.zarr")

    def then():
        seen.append((os.getpid(), sorted(n for n in os.listdir(dst)
                                         if n.endswith((".fits", ".ecsv"))),
                     (dst / "plots" / "index.json").exists()))
        zarr_store.consolidate(root, {"nirbeam_version": "test"})

    P.finalize_products(str(dst), root,
                        plan_exposures([scan_segment(p) for p in summary["inputs"]]),
                        Settings.from_dict(summary["config_input"]), then=then)
    assert len(seen) == 1 and seen[0][0] == os.getpid()
    assert any(n.endswith("_x1dints.fits") for n in seen[0][1])
    assert any(n.startswith("speclc_") for n in seen[0][1])
    if mode == "0":
        assert seen[0][2]
    assert (dst / "plots" / "index.json").exists()
    assert zarr_store.is_consolidated(root)


def test_no_fork_runs_the_parent_then_serial_here(monkeypatch, new_children):
    def refuse():
        raise OSError("no processes left")

    monkeypatch.setattr(os, "fork", refuse)
    order = []
    got = PP.ahead(lambda: order.append("early"), lambda e, p: pytest.fail("child"),
                   lambda send: (order.append("parent"), send(5)),
                   lambda p: order.append(("serial", p)) or p * 2)
    assert got == 10 and order == ["parent", ("serial", 5)] and new_children() == []
