"""Stage 2's compute on threads (issue 14, session 15): a step's rolling outlier windows
(bands of rows), motion fits and block extraction (runs of integrations) split among the
process's detector1 pool give the same products bit for bit as one thread, whatever the
number of threads or parts; with ``NIRBEAM_D1_THREADS=1`` everything runs on the caller's
thread, as before."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from nirbeam import dqflags
from nirbeam.sim.simulator import simulate
from nirbeam.sinks import zarr_store
from nirbeam.stream import spectra_stage
from nirbeam.stream.cli import main
from nirbeam.stream.plan import BLOCK
from nirbeam.stream.rate_steps import D1_THREADS_ENV
from nirbeam.stream.settings import Settings
from nirbeam.transforms import outliers as O
from nirbeam.transforms import spectra_block
from nirbeam.transforms.spectra import SPECTRUM_ARRAYS
from nirbeam.transforms.spectra_block import extract_block
from tests.test_outlier_rolling_rows import _stack
from tests.test_spectra_block import _block, _fill

NINTS = 100  # four steps of one chunk (STEP patched to BLOCK): 32, 32, 32, 4


class _Counting(ThreadPoolExecutor):
    """A pool that counts what it was given."""

    def __init__(self, n):
        super().__init__(n, thread_name_prefix="test-parts")
        self.submitted = 0

    def submit(self, *a, **k):
        self.submitted += 1
        return super().submit(*a, **k)


@pytest.fixture(scope="module")
def pool():
    with _Counting(3) as p:
        yield p


def _moving(seed, n, ny, nx):
    """A stack whose trace moves and brightens (the motion fit has work), with outliers."""
    cube, err, dq = _stack(seed, n, ny, nx, np.float32)
    y = np.arange(ny)[None, :, None]
    t = np.linspace(0, 1, n)[:, None, None]
    cube = cube + (50.0 * (1 + 0.02 * t) * np.exp(-0.5 * ((y - ny / 2 - 0.3 * t) / 1.5) ** 2)
                   ).astype(np.float32)
    return cube.astype(np.float32), err, dq


@pytest.mark.parametrize("reference", ["motion", "median"])
@pytest.mark.parametrize(("n", "window", "span", "ny"),
                         [(70, 25, (0, 70), 9), (70, 24, (20, 51), 16), (9, 25, (0, 9), 5),
                          (40, 2, (3, 38), 2), (33, 7, (30, 33), 12)])
def test_flag_outliers_in_parts_equals_serial(pool, reference, n, window, span, ny):
    cube, err, dq = _moving(n * 100 + ny, n, ny, 23)
    want = O.flag_outliers(cube, err, dq, window, 3.0, reference=reference, span=span)
    assert (want != dq).any()  # flags were set
    for parts in (2, 3, 5, 64):  # 64: more parts than rows and integrations
        before = pool.submitted
        got = O.flag_outliers(cube, err, dq, window, 3.0, reference=reference, span=span,
                              pool=pool, parts=parts)
        assert got.dtype == want.dtype == np.uint32
        assert got.tobytes() == want.tobytes(), (parts, reference)
        assert pool.submitted > before


@pytest.mark.parametrize("method", ["optimal", "box"])
def test_extract_block_in_parts_equals_serial(pool, method):
    from dataclasses import replace

    rate, err, dq, vp, vr, model = _block(11)
    model = replace(model, method=method)
    n, _, nx = rate.shape
    use = np.ones(n, bool)
    use[4] = False
    want = _fill(n, nx)
    extract_block(rate, err, dq, vp, vr, model, None, use, want)
    for parts in (2, 3, 7, 10):
        got = _fill(n, nx)
        before = pool.submitted
        extract_block(rate, err, dq, vp, vr, model, None, use, got, pool=pool, parts=parts)
        assert pool.submitted - before == min(parts, n)
        for k in SPECTRUM_ARRAYS:
            assert got[k].tobytes() == want[k].tobytes(), (parts, k)  # NaN included


def test_in_parts_waits_for_every_part_then_raises_the_first(pool):
    done = []

    def fn(a, b):
        if a in (0, 6):
            raise ValueError(f"part {a}")
        threading.Event().wait(0.05)
        done.append(a)

    with pytest.raises(ValueError, match="part 0"):
        O.in_parts(fn, 10, pool, 3)  # parts 0..3, 3..6, 6..10
    assert done == [3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("s2par")
    sim = simulate(d / "sim", preset="prism-sub512", nints=NINTS, seed=11, ints_per_segment=40)
    mp = pytest.MonkeyPatch()
    mp.setenv(D1_THREADS_ENV, "1")
    try:
        assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out",
                     str(d / "out"), "--no-progress", "--runner", "direct"]) == 0
    finally:
        mp.undo()
    return sim, d / "out" / "cubes.zarr"


def _stage(run, tmp_path, threads, monkeypatch):
    """The spectra stage redone on a copy of the run's store with ``threads`` threads;
    returns the store and the threads the kernels ran on."""
    sim, src = run
    root = str(tmp_path / f"t{threads}.zarr")
    shutil.copytree(src, root)
    group = f"{sim.exposure}_nrs1"
    for stage in (spectra_stage.SPECTRA, spectra_stage.CLEANED):
        spectra_stage._reset_completed(root, group, stage)
    ran_on = set()

    def spy(name, real):
        def f(*a, **k):
            ran_on.add((name, threading.current_thread().name.split("_")[0]))
            return real(*a, **k)
        return f

    monkeypatch.setenv(D1_THREADS_ENV, str(threads))
    monkeypatch.setattr(spectra_stage, "STEP", BLOCK)
    monkeypatch.setattr(O, "_flag_rolling_rows", spy("rows", O._flag_rolling_rows))
    monkeypatch.setattr(O, "_motion_flags", spy("motion", O._motion_flags))
    monkeypatch.setattr(spectra_block, "_extract_block_kernel",
                        spy("extract", spectra_block._extract_block_kernel))
    block = spectra_stage.SpectraBlock(exposure=sim.exposure, detector="NRS1", nints=NINTS,
                                       start=1, stop=NINTS, model_token=f"threads{threads}")
    try:
        assert spectra_stage.ProcessBlock(root, Settings())(block) == []
    finally:
        monkeypatch.undo()
    return root, group, ran_on


def test_stage_on_threads_equals_one_thread_bit_for_bit(run, tmp_path, monkeypatch):
    one, group, on1 = _stage(run, tmp_path, 1, monkeypatch)
    assert {t for _, t in on1} == {threading.current_thread().name.split("_")[0]}, on1
    for threads in (2, 3):
        many, _, onn = _stage(run, tmp_path, threads, monkeypatch)
        for name in ("rows", "motion", "extract"):  # every kernel on the pool's threads
            assert {t for n, t in onn if n == name} == {"nirbeam-d1"}, (name, onn)
        for stage, names in ((spectra_stage.SPECTRA, SPECTRUM_ARRAYS),
                             (spectra_stage.CLEANED, ("dq",))):
            za = zarr.open_group(one, mode="r")[group][stage]
            zb = zarr.open_group(many, mode="r")[group][stage]
            for name in (*names, "done"):
                a, b = za[name][:], zb[name][:]
                assert a.dtype == b.dtype and a.shape == b.shape and a.shape[0] == NINTS
                assert a.tobytes() == b.tobytes(), (threads, stage, name)
    dq = zarr.open_group(one, mode="r")[group][spectra_stage.CLEANED]["dq"][:]
    assert (dq & dqflags.OUTLIER).any()  # the flags were exercised
    assert zarr_store.completed(one, group, spectra_stage.SPECTRA).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_reads_ahead_and_a_failed_read(run, tmp_path, monkeypatch, threads):
    """With threads, step k + 1 is read on the step writer's thread while step k is
    computed (with one thread: on the caller's); a read failing in the third step raises
    from the work item with the first two steps written and nothing later, as serially."""
    sim, src = run
    root = str(tmp_path / "store.zarr")
    shutil.copytree(src, root)
    group = f"{sim.exposure}_nrs1"
    for stage in (spectra_stage.SPECTRA, spectra_stage.CLEANED):
        spectra_stage._reset_completed(root, group, stage)
    real_read = zarr_store.read_block
    read_on = set()

    def failing(root_, group_, stage, names, sel):
        read_on.add(threading.current_thread().name.split("_")[0])
        if tuple(names) == ("var_poisson", "var_rnoise") and sel.start == 2 * BLOCK:
            raise OSError("injected read failure")
        return real_read(root_, group_, stage, names, sel)

    monkeypatch.setenv(D1_THREADS_ENV, str(threads))
    monkeypatch.setattr(spectra_stage, "STEP", BLOCK)
    monkeypatch.setattr(zarr_store, "read_block", failing)
    block = spectra_stage.SpectraBlock(exposure=sim.exposure, detector="NRS1", nints=NINTS,
                                       start=1, stop=NINTS, model_token="failed-read")
    with pytest.raises(OSError, match="injected read failure"):
        spectra_stage.ProcessBlock(root, Settings())(block)
    monkeypatch.undo()
    want = {threading.current_thread().name} if threads == 1 else {"nirbeam-spectra-write"}
    assert read_on == want
    for stage in (spectra_stage.SPECTRA, spectra_stage.CLEANED):
        assert np.flatnonzero(zarr_store.completed(root, group, stage)).tolist() == list(
            range(2 * BLOCK)), stage
