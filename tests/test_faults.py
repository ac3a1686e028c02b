"""Faults and bad input end to end: dead letters, accounting, kills and resumes, odd exposures."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import Table

from nirbeam.sim.simulator import simulate
from nirbeam.stream.cli import EXIT_BAD_INPUT, main

NINTS = 16


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("fsim")
    return simulate(d, preset="prism-sub512", nints=NINTS, seed=11, ints_per_segment=6)


@pytest.fixture(scope="module")
def reference_run(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("fref") / "out"
    assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def _run(sim, out, *extra):
    return main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--no-progress", *extra])


def _same_products(a, b, group):
    za = zarr.open_group(str(a / "cubes.zarr"), mode="r")[group]
    zb = zarr.open_group(str(b / "cubes.zarr"), mode="r")[group]
    for stage, name in (("rateints", "sci"), ("rateints", "err"), ("rateints", "dq"),
                        ("spectra", "flux"), ("cleaned", "dq")):
        np.testing.assert_array_equal(za[stage][name][:], zb[stage][name][:], err_msg=f"{stage}/{name}")
    ta, tb = Table.read(a / "whitelight.ecsv"), Table.read(b / "whitelight.ecsv")
    for c in ("flux", "flux_error", "dq", "int_mid_BJD_TDB"):
        np.testing.assert_array_equal(ta[c], tb[c])


def test_injected_failures_are_dead_lettered_and_accounted(sim, reference_run, tmp_path, monkeypatch):
    import nirbeam.transforms.detector1 as d1

    real = d1.calibrate_record

    def flaky(rec, *a, **k):
        if rec.key.integration in (3, 11):
            raise RuntimeError(f"injected failure for {rec.key}")
        return real(rec, *a, **k)

    monkeypatch.setattr(d1, "calibrate_record", flaky)
    out = tmp_path / "out"
    assert _run(sim, out) == 3  # products incomplete: two dead letters
    rj = json.loads((out / "run.json").read_text())
    (e,) = rj["exposures"]
    assert (e["processed"], e["deadlettered"], e["nints"]) == (NINTS - 2, 2, NINTS)
    assert e["processed"] + e["deadlettered"] == e["nints"] and e["complete"]
    lines = [json.loads(x) for x in (out / "deadletter.jsonl").read_text().splitlines()]
    assert [(x["integration"], x["step"]) for x in lines] == [(3, "detector1"), (11, "detector1")]
    assert all("injected failure" in x["reason"] and x["source"].endswith("_uncal.fits") for x in lines)
    t = Table.read(out / "whitelight.ecsv")
    assert len(t) == NINTS and t["dq"][2] & 1 and t["dq"][10] & 1  # flagged, not dropped
    # the fault is gone: a rerun completes the two and matches an uninterrupted run
    monkeypatch.setattr(d1, "calibrate_record", real)
    assert _run(sim, out) == 0
    rj = json.loads((out / "run.json").read_text())
    assert rj["exposures"][0]["deadlettered"] == 0 and rj["metrics"]["detector1.records"] == 2
    assert (out / "deadletter.jsonl").read_text() == ""
    _same_products(reference_run, out, f"{sim.exposure}_nrs1")


def _progress(out, group):
    try:
        return int(zarr.open_group(str(out / "cubes.zarr"), mode="r")[group]["rateints"]["done"][:].sum())
    except Exception:  # noqa: BLE001 - store not there yet
        return 0


@pytest.mark.parametrize("sig, seed", [(signal.SIGINT, 1), (signal.SIGTERM, 2), (signal.SIGKILL, 3)])
def test_killed_run_resumes_identical(sim, reference_run, tmp_path, sig, seed):
    """Interrupt a real `nirbeam run` process mid-way; a reader meanwhile always sees a valid
    store; the rerun completes it with products identical to an uninterrupted run."""
    out = tmp_path / "out"
    group = f"{sim.exposure}_nrs1"
    cmd = [sys.executable, "-m", "nirbeam.stream.cli", "run", str(sim.outdir), "--refs",
           str(sim.refs_dir), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = int(np.random.default_rng(seed).integers(2, NINTS - 2))
    t0 = time.time()
    reads = 0
    while time.time() - t0 < 120 and proc.poll() is None:
        n = _progress(out, group)
        if n:
            # a reader during the write: every completed region decodes
            g = zarr.open_group(str(out / "cubes.zarr"), mode="r")[group]["rateints"]
            done = g["done"][:] == 1
            sci = g["sci"][:]
            assert np.isfinite(sci[done]).mean() > 0.99
            reads += 1
        if n >= target:
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    if rc != 0 and sig != signal.SIGKILL:
        assert rc == 128 + sig and "rerun the same command to resume" in err, (rc, err)
    assert reads > 0
    assert _run(sim, out) == 0
    rj = json.loads((out / "run.json").read_text())
    assert rj["exposures"][0]["processed"] == NINTS and rj["exposures"][0]["complete"]
    _same_products(reference_run, out, group)


def test_fully_saturated_integration(sim, tmp_path):
    d = tmp_path / "sat"
    shutil.copytree(sim.outdir, d)
    seg = sorted(d.glob("*seg001*_uncal.fits"))[0]
    with fits.open(seg, mode="update") as h:
        h["SCI"].data[1] = 65535  # integration 2: every pixel saturated in every group
    out = tmp_path / "out"
    assert main(["run", str(d), "--refs", str(d / "refs"), "--out", str(out), "--no-progress"]) == 0
    g = zarr.open_group(str(out / "cubes.zarr"), mode="r")[f"{sim.exposure}_nrs1"]["rateints"]
    dq = g["dq"][1]
    assert np.all(dq & 2) and np.all(dq & 1)  # SATURATED | DO_NOT_USE everywhere
    sci = g["sci"][1]
    assert not np.any(np.isfinite(sci) & (sci != 0))  # no rate invented
    others = g["dq"][0]
    assert (others & 1).mean() < 0.01
    rj = json.loads((out / "run.json").read_text())
    assert rj["exposures"][0]["processed"] == NINTS and rj["exposures"][0]["complete"]
    t = Table.read(out / "whitelight.ecsv")
    assert t["dq"][1] != 0 and np.all(t["dq"][[0, 2, 3]] == 0)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_one_or_two_groups(tmp_path, ngroups):
    res = simulate(tmp_path / "s", preset="prism-sub512", nints=6, seed=2, ngroups=2)
    if ngroups == 1:  # the simulator makes >= 2 groups: keep the first group only
        for p in res.uncal:
            with fits.open(p) as h:
                h["SCI"].data = np.ascontiguousarray(h["SCI"].data[:, :1])
                h[0].header["NGROUPS"] = 1
                h[0].header["EFFINTTM"] = h[0].header["TGROUP"]
                del h["INT_TIMES"]  # its cadence is that of 2 groups: derive 1-group times
                h.writeto(p, overwrite=True)
    out = tmp_path / "out"
    assert main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    rj = json.loads((out / "run.json").read_text())
    e = rj["exposures"][0]
    assert e["processed"] == 6 and e["complete"]
    assert any("jump detection needs at least 3 groups" in n for n in e["notes"])
    g = zarr.open_group(str(out / "cubes.zarr"), mode="r")[f"{res.exposure}_nrs1"]["rateints"]
    sci, dq = g["sci"][:], g["dq"][:]
    assert np.all(np.isfinite(sci) | ((dq & 1) != 0))  # no NaN on a usable pixel
    truth = fits.getdata(res.truth_file, "TRUE_RATE")
    bright = (truth > 1000) & ((dq & 1) == 0)
    assert bright.sum() > 1000
    # one group: a rate from a single read relative to the superbias (bias noise ~ read noise)
    tol = 0.02 if ngroups == 2 else 0.05
    assert np.median(sci[bright] / truth[bright]) == pytest.approx(1.0, abs=tol)


def test_two_exposures_in_one_run_kept_apart(sim, tmp_path):
    other = simulate(tmp_path / "o", preset="prism-sub512", nints=5, seed=4,
                     exposure_number="00002", ints_per_segment=5)
    both = tmp_path / "both"
    both.mkdir()
    for p in [*sim.uncal, *other.uncal]:
        shutil.copy(p, both)
    out = tmp_path / "out"
    assert main(["run", str(both), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    rj = json.loads((out / "run.json").read_text())
    assert sorted((e["exposure"], e["processed"]) for e in rj["exposures"]) == [
        (sim.exposure, NINTS), (other.exposure, 5)]
    t = Table.read(out / "whitelight.ecsv")
    assert list(t["exposure"]) == sorted(t["exposure"])


def test_non_tso_file_refused_with_exit_code(sim, tmp_path, capsys):
    d = tmp_path / "nontso"
    d.mkdir()
    src = sim.uncal[0]
    dst = d / os.path.basename(src)
    shutil.copy(src, dst)
    with fits.open(dst, mode="update") as h:
        h[0].header["EXP_TYPE"] = "NRS_AUTOWAVE"  # no mode (NRS_IFU is one now)
        h[0].header["TSOVISIT"] = False
    assert main(["run", str(d), "--out", str(tmp_path / "o"), "--no-progress",
                 "--allow-standins"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(dst) in err and "EXP_TYPE" in err and "not a time-series" in err


def test_full_output_folder_dead_letters_with_reason(sim, tmp_path, monkeypatch):
    """A disk that fills up mid-run: the integrations that could not be written are
    dead-lettered with the OS's reason; the run says so and a rerun completes it."""
    import errno

    import nirbeam.sinks.zarr_store as zs

    real = zs._write_concurrently

    def full(writes, i):  # rateints regions reaching integration 10 or later fail
        last = i if isinstance(i, int) else i.stop - 1  # one integration or a block
        if last >= 9 and "/rateints/" in writes[0][0].path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(writes, i)

    monkeypatch.setattr(zs, "_write_concurrently", full)
    out = tmp_path / "out"
    assert _run(sim, out) == 3  # products incomplete
    rj = json.loads((out / "run.json").read_text())
    e = rj["exposures"][0]
    assert (e["processed"], e["deadlettered"]) == (9, NINTS - 9)
    lines = [json.loads(x) for x in (out / "deadletter.jsonl").read_text().splitlines()]
    assert {x["step"] for x in lines} == {"write_rateints"}
    assert all("No space left on device" in x["reason"] for x in lines)
    monkeypatch.setattr(zs, "_write_concurrently", real)
    assert _run(sim, out) == 0
    assert json.loads((out / "run.json").read_text())["exposures"][0]["processed"] == NINTS
