"""Shared test helpers.

- a minimal uncal writer (real JWST layout) for reader tests;
- shared real data (``<repo>/../shared/data``, or ``$NIRBEAM_SHARED_DATA``):
  :func:`shared_path` resolves a file relative to the repository, :func:`require_shared`
  skips a test when a file is missing locally and FAILS it in CI (``CI=true``), where the
  data must be present;
- Hypothesis profiles: ``ci`` (derandomised: the same examples on every run, so whether a
  bug is caught does not depend on the draw) is loaded when ``CI`` is true, ``dev``
  (random, a fresh draw each run) otherwise; ``HYPOTHESIS_PROFILE`` overrides both;
- whole runs of a small simulated PRISM exposure: the session-scoped :func:`prism_sim`
  factory (one simulation per parameter set), :func:`run_sim` (``nirbeam run`` in this
  process), :func:`read_deadletters` and :func:`assert_same_arrays` (two runs' store
  arrays bit for bit);
- child processes: :func:`child_pids`, :func:`no_children_left` (fails if a block leaves
  a child of this process running: the ``no_leaked_children`` fixture, per test, or a
  module's guard) and :func:`own_resource_tracker` (stops multiprocessing's resource
  tracker where the block started it: a LocalCluster's spawned nannies start it, and it
  stays a child of this process until the process exits).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
#: Real data shared by the project's checkouts (see its README); not in the repository.
SHARED_DATA = Path(os.environ.get("NIRBEAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def in_ci() -> bool:
    """True when running in CI (``CI`` set to true/1/yes, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def shared_path(*parts: str) -> Path:
    """Path of a shared data file, ``SHARED_DATA / parts`` (not checked)."""
    return SHARED_DATA.joinpath(*parts)


def require_shared(*paths) -> None:
    """Skip the calling test if a shared file is missing; in CI, fail it instead."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if not missing:
        return
    msg = (f"shared data file(s) missing: {', '.join(missing)} (expected under "
           f"{SHARED_DATA}; set NIRBEAM_SHARED_DATA to another folder)")
    if in_ci():
        pytest.fail(msg + " -- required in CI", pytrace=False)
    pytest.skip(msg)


settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev"))


def write_uncal(
    path,
    sci: np.ndarray,
    *,
    nints_total: int | None = None,
    intstart: int = 1,
    segnum: int = 1,
    segtot: int = 1,
    detector: str = "NRS1",
    int_times: bool = True,
    header: dict | None = None,
    t0: float = 60000.0,
    tframe: float = 0.22616,
):
    """Write a small uncal file: PRIMARY keywords, SCI uint16 4-D, INT_TIMES for all ints."""
    nints_seg, ngroups, ny, nx = sci.shape
    nints_total = nints_total or nints_seg
    ph = fits.Header()
    cards = {
        "TELESCOP": "JWST", "INSTRUME": "NIRSPEC", "DETECTOR": detector,
        "EXP_TYPE": "NRS_BRIGHTOBJ", "TSOVISIT": True, "READPATT": "NRSRAPID",
        "SUBARRAY": "SUB512", "SUBSTRT1": 1025, "SUBSTRT2": 957, "SUBSIZE1": nx, "SUBSIZE2": ny,
        "NINTS": nints_total, "NGROUPS": ngroups, "NFRAMES": 1, "GROUPGAP": 0,
        "TFRAME": tframe, "TGROUP": tframe, "EFFINTTM": tframe * (ngroups - 1),
        "INTSTART": intstart, "INTEND": intstart + nints_seg - 1,
        "EXSEGNUM": segnum, "EXSEGTOT": segtot, "EXPSTART": t0, "FILTER": "CLEAR",
        "GRATING": "PRISM", "TARGNAME": "TEST",
    }
    cards.update(header or {})
    for k, v in cards.items():
        if v is None:
            continue
        ph[k] = v
    hdus = [fits.PrimaryHDU(header=ph)]
    if sci is not None:
        hdus.append(fits.ImageHDU(sci, name="SCI"))
    if int_times:
        n = np.arange(1, nints_total + 1)
        dt = tframe * (ngroups + 1) / 86400.0
        start = t0 + (n - 1) * dt
        cols = [fits.Column("integration_number", "J", array=n)]
        for scale, off in (("MJD_UTC", 0.0), ("BJD_TDB", 0.0009)):
            cols += [
                fits.Column(f"int_start_{scale}", "D", array=start + off),
                fits.Column(f"int_mid_{scale}", "D", array=start + dt / 2 + off),
                fits.Column(f"int_end_{scale}", "D", array=start + dt + off),
            ]
        hdus.append(fits.BinTableHDU.from_columns(cols, name="INT_TIMES"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return str(path)


@pytest.fixture
def uncal_writer():
    return write_uncal


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def prism_sim(tmp_path_factory):
    """Factory ``prism_sim(nints, seed, ints_per_segment)``: a simulated PRISM SUB512
    exposure (``simulate(..., preset="prism-sub512")``), made once per parameter set for
    the session; read it only (runs write into their own ``--out`` folders)."""
    from nirbeam.sim.simulator import simulate

    made = {}

    def make(nints: int, seed: int, ints_per_segment: int):
        key = (nints, seed, ints_per_segment)
        if key not in made:
            d = tmp_path_factory.mktemp(f"prism{nints}s{seed}i{ints_per_segment}")
            made[key] = simulate(d, preset="prism-sub512", nints=nints, seed=seed,
                                 ints_per_segment=ints_per_segment)
        return made[key]

    return make


def run_sim(sim, out, *args: str, runner: str = "direct") -> int:
    """``nirbeam run`` of a simulation into ``out`` in this process, no progress bar;
    returns the exit code (3: finished with dead letters)."""
    from nirbeam.stream.cli import main

    return main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--no-progress", "--runner", runner, *args])


def read_deadletters(out) -> list[dict]:
    """The dead letters of a run's ``out`` folder, in file order."""
    return [json.loads(x) for x in (Path(out) / "deadletter.jsonl").read_text().splitlines()]


def assert_same_arrays(out_a, out_b, group: str, stage: str, names, nints: int) -> None:
    """The arrays ``names`` of ``group/stage`` in two runs' ``cubes.zarr``: same dtype and
    shape (``nints`` first), bytes equal (NaN fill values included)."""
    import zarr

    za = zarr.open_group(str(Path(out_a) / "cubes.zarr"), mode="r")[group][stage]
    zb = zarr.open_group(str(Path(out_b) / "cubes.zarr"), mode="r")[group][stage]
    for name in names:
        a, b = za[name][:], zb[name][:]
        assert a.dtype == b.dtype and a.shape == b.shape and a.shape[0] == nints, (stage, name)
        assert a.tobytes() == b.tobytes(), (stage, name)


def child_pids() -> set[int]:
    """Live (or zombie) child processes of this process, of any of its threads (Linux)."""
    out: set[int] = set()
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/children") as f:
                out.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid}: {cmd[:200]}"
    except OSError:
        return f"{pid}: (gone)"


@contextlib.contextmanager
def no_children_left(what: str = "the block", grace: float = 5.0):
    """Fail if a child process started inside the block is still there (running or a
    zombie) ``grace`` seconds after it."""
    if not os.path.isdir("/proc/self/task"):
        yield
        return
    before = child_pids()
    yield
    deadline = time.monotonic() + grace
    while (left := child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"{what} left child processes running: " + "; ".join(
        _describe(p) for p in sorted(left))


@pytest.fixture
def no_leaked_children(request):
    """The test fails if it leaves a child process of this process behind."""
    with no_children_left(request.node.nodeid):
        yield


@contextlib.contextmanager
def own_resource_tracker():
    """Stop multiprocessing's resource tracker after the block where the block started
    it (a spawn-context start does: a LocalCluster's nannies): it is a child of this
    process that otherwise lives until the process exits. Started again by the next
    spawn that needs it."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    running = getattr(tracker, "_pid", None) is not None
    try:
        yield
    finally:
        if not running and getattr(tracker, "_pid", None) is not None:
            gc.collect()  # closed queues' and locks' semaphores unregistered first
            tracker._stop()
