"""End to end: simulate -> nirbeam run -> products; accounting, resume, bad input, detectors."""

import json
import os
import shutil

import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import Table

from nirbeam.sim.simulator import simulate
from nirbeam.stream.cli import EXIT_BAD_INPUT, main

NINTS = 24


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    return simulate(d, preset="prism-sub512", nints=NINTS, seed=3, ints_per_segment=10)


@pytest.fixture(scope="module")
def run1(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "products"
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def _group(sim):
    return f"{sim.exposure}_nrs1"


def test_run_accounts_for_every_integration(run1, sim):
    rj = json.loads((run1 / "run.json").read_text())
    (e,) = rj["exposures"]
    assert e["nints"] == NINTS and e["processed"] == NINTS and e["deadlettered"] == 0
    assert e["complete"] and len(e["segments"]) == 3
    assert rj["runner"]["name"] == "direct"
    assert rj["metrics"]["detector1.records"] == NINTS
    assert all("sha256" in v for v in e["references"].values())
    assert (run1 / "deadletter.jsonl").read_text() == ""


def test_rateints_match_truth(run1, sim):
    g = zarr.open_group(str(run1 / "cubes.zarr"), mode="r")[_group(sim)]["rateints"]
    # batch rateints: one chunk per block of integrations (one writer each)
    from nirbeam.stream.pipeline import rate_block_size

    assert g["sci"].shape == (NINTS, 32, 512)
    assert g["sci"].chunks == (rate_block_size(NINTS), 32, 512) and g["sci"].chunks[0] > 1
    assert tuple(g["sci"].metadata.dimension_names) == ("integration", "y", "x")
    sci, err, dq = g["sci"][:], g["err"][:], g["dq"][:]
    truth = fits.getdata(sim.truth_file, "TRUE_RATE")
    cr = fits.getdata(sim.truth_file, "COSMIC_RAYS")
    bad = (dq & 1) != 0
    for i, y, x in zip(cr["integration"], cr["y"], cr["x"], strict=True):
        bad[i - 1, y, x] = True  # jumps: fit segments are noisier; judged by detector1 tests
    chi = ((sci - truth) / err)[~bad & (err > 0)]
    chi2 = np.mean(chi**2)
    assert 0.85 < chi2 < 1.2, chi2


def test_whitelight_table_and_times(run1, sim):
    t = Table.read(run1 / "whitelight.ecsv")
    assert list(t.colnames[:2]) == ["exposure", "detector"]
    for c in ("integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC", "flux", "flux_error", "dq"):
        assert c in t.colnames
    assert len(t) == NINTS and list(t["integration_number"]) == list(range(1, NINTS + 1))
    it = fits.getdata(sim.uncal[0], "INT_TIMES")
    np.testing.assert_array_equal(t["int_mid_BJD_TDB"], it["int_mid_BJD_TDB"][:NINTS])
    # no wavelength source given to this run: the spectral axis is in pixels, and says so
    assert t.meta["instrument"] == "NIRSPEC" and "column_range_pixel" in t.meta
    assert "wavelength_range_um" not in t.meta and t.meta["wavelength_source"]["NRS1"].startswith("none")
    truth = fits.getdata(sim.truth_file, "LIGHTCURVE")["white_flux_dn_s"]
    ratio = np.asarray(t["flux"]) / truth
    assert np.std(ratio / np.median(ratio)) < 3 * np.median(
        fits.getdata(sim.truth_file, "LIGHTCURVE")["theoretical_sigma_white"])
    import pandas as pd

    df = pd.read_parquet(run1 / "whitelight.parquet")
    np.testing.assert_array_equal(df["flux"].to_numpy(), np.asarray(t["flux"]))


def test_x1dints_layout(run1, sim):
    # one file per exposure and detector, named as jwst names it, every schema column
    from nirbeam.sinks.fits_products import X1DINTS_COLUMNS

    with fits.open(run1 / f"{_group(sim)}_x1dints.fits") as h:
        ext = h["EXTRACT1D"]
        assert ext.header["DETECTOR"] == "NRS1"
        assert len(ext.data) == NINTS
        assert ext.columns.names == [c for c, _, _ in X1DINTS_COLUMNS]
        assert ext.data["FLUX"].shape == (NINTS, 512)
        assert len(h["INT_TIMES"].data) == NINTS


def test_rerun_skips_completed_and_is_identical(run1, sim, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run1, out)
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out), "--no-progress"])
    assert rc == 0
    rj = json.loads((out / "run.json").read_text())
    assert rj["exposures"][0]["skipped_complete"] == NINTS
    assert rj["metrics"].get("detector1.records", 0) == 0
    a = Table.read(run1 / "whitelight.ecsv")
    b = Table.read(out / "whitelight.ecsv")
    np.testing.assert_array_equal(a["flux"], b["flux"])


def test_interrupted_run_resumes_bit_identical(run1, sim, tmp_path):
    """Markers of some integrations removed (a run killed mid-way): the rerun redoes them."""
    out = tmp_path / "resumed"
    shutil.copytree(run1, out)
    g = zarr.open_group(str(out / "cubes.zarr"), mode="r+")[_group(sim)]
    done = g["rateints"]["done"]
    for i in (2, 7, 15):
        done[i] = 0
        g["rateints"]["sci"][i] = 0.0  # half-written region
        g["spectra"]["done"][i] = 0
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out), "--no-progress"])
    assert rc == 0
    rj = json.loads((out / "run.json").read_text())
    assert rj["metrics"]["detector1.records"] == 3
    a = zarr.open_group(str(run1 / "cubes.zarr"), mode="r")[_group(sim)]
    b = zarr.open_group(str(out / "cubes.zarr"), mode="r")[_group(sim)]
    for stage, name in (("rateints", "sci"), ("rateints", "dq"), ("spectra", "flux")):
        np.testing.assert_array_equal(a[stage][name][:], b[stage][name][:])


def test_missing_segment_goes_to_dead_letters(sim, tmp_path):
    d = tmp_path / "partial"
    d.mkdir()
    for p in sim.uncal:
        if "seg002" not in os.path.basename(p):
            shutil.copy(p, d)
    out = tmp_path / "out"
    rc = main(["run", str(d), "--refs", str(sim.refs_dir), "--out", str(out), "--no-progress"])
    assert rc == 3  # products incomplete (the missing integrations)
    rj = json.loads((out / "run.json").read_text())
    e = rj["exposures"][0]
    assert not e["products_complete"] and rj["deadletters"] == 10
    assert e["processed"] == NINTS - 10 and e["deadlettered"] == 10 and e["complete"]
    lines = [json.loads(x) for x in (out / "deadletter.jsonl").read_text().splitlines()]
    assert sorted(x["integration"] for x in lines) == list(range(11, 21))
    assert all("missing segment" in x["reason"] for x in lines)
    t = Table.read(out / "whitelight.ecsv")
    assert len(t) == NINTS  # flagged, not dropped
    assert np.all(t["dq"][10:20] & 1) and np.all(np.isnan(t["flux"][10:20]))


def test_bad_input_exit_code_and_message(tmp_path, capsys):
    p = tmp_path / "jw01366004001_04101_00001_nrs1_uncal.fits"
    p.write_text("not fits at all\n" * 300)
    rc = main(["run", str(p), "--out", str(tmp_path / "o")])
    assert rc == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(p) in err and "not a FITS file" in err


def test_bad_config_refused(sim, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[outliers]\nwindoww = 3\n")
    rc = main(["run", str(sim.outdir), "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert rc == EXIT_BAD_INPUT
    assert "windoww" in capsys.readouterr().err


def test_unwritable_outdir(sim, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    rc = main(["run", str(sim.outdir), "--out", str(ro / "file" / "sub"), "--no-progress"])
    assert rc == EXIT_BAD_INPUT
    assert "not writable" in capsys.readouterr().err


def test_two_detectors_kept_apart(tmp_path):
    res = simulate(tmp_path / "sim2", preset="prism-sub512", nints=8, seed=5,
                   detectors=("NRS1", "NRS2"), ints_per_segment=4)
    out = tmp_path / "out2"
    rc = main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out), "--no-progress"])
    assert rc == 0
    rj = json.loads((out / "run.json").read_text())
    assert [(e["detector"], e["processed"]) for e in rj["exposures"]] == [("NRS1", 8), ("NRS2", 8)]
    t = Table.read(out / "whitelight.ecsv")
    assert list(t["detector"]) == ["NRS1"] * 8 + ["NRS2"] * 8  # never interleaved
    assert list(t["integration_number"]) == list(range(1, 9)) * 2
    g = zarr.open_group(str(out / "cubes.zarr"), mode="r")
    for det in ("NRS1", "NRS2"):
        truth = fits.getdata(res.truth[det], "TRUE_RATE")
        r = g[f"{res.exposure}_{det.lower()}"]["rateints"]
        sci, err, dq = r["sci"][:], r["err"][:], r["dq"][:]
        # each detector's rates follow its own truth (PRISM light falls on NRS1 only)
        ok = ((dq & 5) == 0) & (err > 0)
        assert ok.mean() > 0.99
        chi2 = np.mean(((sci - truth) / err)[ok] ** 2)
        assert 0.8 < chi2 < 1.25, (det, chi2)
    for det in ("NRS1", "NRS2"):  # one x1dints per detector, each under its own header
        with fits.open(out / f"{res.exposure}_{det.lower()}_x1dints.fits") as h:
            assert h[0].header["DETECTOR"] == det and h["EXTRACT1D"].header["DETECTOR"] == det


def test_rateints_fits_product(sim, run1, tmp_path):
    out = tmp_path / "withfits"
    shutil.copytree(run1, out)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[products]\nrateints_fits = true\n")
    assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--config", str(cfg), "--no-progress"]) == 0
    g = zarr.open_group(str(out / "cubes.zarr"), mode="r")[_group(sim)]["rateints"]
    with fits.open(out / f"{_group(sim)}_rateints.fits") as h:
        assert [x.name for x in h[1:]] == ["SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "INT_TIMES"]
        np.testing.assert_array_equal(h["SCI"].data, g["sci"][:])
        np.testing.assert_array_equal(h["DQ"].data, g["dq"][:])
        assert h["DQ"].data.dtype == np.uint32
        assert len(h["INT_TIMES"].data) == NINTS
        assert h[0].header["DETECTOR"] == "NRS1"


def test_resume_with_other_detector1_settings_refused(sim, run1, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(run1, out)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[detector1.jump]\nrejection_threshold = 6.0\n")
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
               "--config", str(cfg), "--no-progress"])
    assert rc == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "resuming would mix them" in err
    assert "setting detector1.jump.rejection_threshold: 4.0 -> 6.0" in err
