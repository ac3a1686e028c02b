"""MOS end to end on the simulator (cut-down frame): ``nirbeam simulate --preset mos-test``
then ``nirbeam run`` on the three uncal nods; every source's integrated flux against the
truth, the bar-shadow profile against the truth and the reference, the failed-open and
stuck-closed shutters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nirbeam.sources.msa import read_msa
from nirbeam.stream.cli import main


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("mos_sim")
    assert main(["simulate", str(base / "sim"), "--preset", "mos-test", "--seed", "3"]) == 0
    assert main(["run", str(base / "sim"), "--refs", str(base / "sim" / "refs"), "--out", str(base / "out")]) == 0
    truth = json.loads((base / "sim" / "truth.json").read_text())
    run = json.loads((base / "out" / "run.json").read_text())
    return base, truth, run


def _integral(out, sid, t):
    tab = Table.read(out / f"spec1d_{sid}.ecsv")
    w, f = np.asarray(tab["wavelength"], float), np.asarray(tab["flux"], float)
    ok = np.isfinite(w) & np.isfinite(f)
    dw = np.gradient(w)
    span = (w >= w[ok].min()) & (w <= w[ok].max())
    got = np.sum((np.interp(w, w[ok], f[ok]) * dw)[span])
    lo, hi = w[ok].min() - dw[ok][0] / 2, w[ok].max() + dw[ok][-1] / 2
    tw, tf = np.asarray(t["wavelength_um"]), np.asarray(t["flux_ujy"])
    m = (tw >= lo) & (tw <= hi)
    return got / np.sum(tf[m] * np.gradient(tw)[m])


def test_layout_of_the_simulated_files(sim_run):
    base, truth, _ = sim_run
    sim = base / "sim"
    uncal = sorted(sim.glob("*_uncal.fits"))
    assert len(uncal) == 3
    h = [fits.getheader(p) for p in uncal]
    assert [x["PATT_NUM"] for x in h] == [1, 2, 3] and all(x["EXP_TYPE"] == "NRS_MSASPEC" for x in h)
    assert all(x["NOD_TYPE"] == "3-SHUTTER-SLITLET" and x["MSAMETID"] == 1 for x in h)
    assert fits.getheader(uncal[0], "SCI")["BZERO"] == 32768
    with fits.open(uncal[0]) as f:
        assert [x.name for x in f] == ["PRIMARY", "SCI", "GROUP", "INT_TIMES"]
    slits = {k: read_msa(str(sim / h[0]["MSAMETFL"]), 1, k) for k in (1, 2, 3)}
    states = {k: {s.name: s.shutter_state for s in v} for k, v in slits.items()}
    src = next(s.name for s in slits[1] if not s.background)
    assert (states[1][src], states[2][src], states[3][src]) == ("1x1", "x11", "11x")
    n_bkg = sum(s.background for s in slits[1])
    assert n_bkg == truth["config"]["n_sky"]
    for t in truth["sources"].values():
        assert set(t) >= {"wavelength_um", "flux_ujy"} and len(t["wavelength_um"]) == len(t["flux_ujy"])


def test_every_source_within_1_percent(sim_run):
    base, truth, run = sim_run
    assert {str(s["source_id"]) for s in run["slitlets"]} == set(truth["sources"])
    ratios = {sid: _integral(base / "out", sid, t) for sid, t in truth["sources"].items()}
    assert all(abs(r - 1) < 0.01 for r in ratios.values()), ratios
    assert {t["kind"] for t in truth["sources"].values()} <= {"point", "extended"}


def test_bar_shadow_measured_better_than_reference(sim_run):
    _, truth, run = sim_run
    tt = np.asarray(truth["bar_shadow"]["truth"])
    rows = tt > 0.2
    meas = np.asarray(run["bar_shadow"]["measured"], float)
    ref = np.asarray(run["bar_shadow"]["reference_profile"], float)
    rms_m = np.sqrt(np.mean((meas - tt)[rows] ** 2))
    rms_r = np.sqrt(np.mean((ref - tt)[rows] ** 2))
    assert rms_m < 0.5 * rms_r, (rms_m, rms_r)
    # and consistent with its own error bars
    err = np.asarray(run["bar_shadow"]["measured_error"], float)
    assert np.mean(((meas - tt) / err)[rows] ** 2) < 4


def test_failed_open_and_stuck_closed_found(sim_run):
    _, truth, run = sim_run
    fo = truth["failed_open"]
    (u,) = run["unplanned_light"]
    assert u["flagged"] and u["rows"][0] < fo["detector_rows"][1] and u["rows"][1] > fo["detector_rows"][0]
    assert abs(u["shutter_column_estimate"] - fo["column"]) < 0.5
    (st,) = run["stuck_closed_shutters"]
    assert st["shutter_column"] == truth["stuck_closed"]["column"] and st["flagged"]
    assert st["slitlet"] == str(truth["stuck_closed"]["slitlet_id"])
