"""IRS2 through ``nirbeam run`` (issue 15): a FULL-frame FS nod set written in NRSIRS2 by
the simulator (interleaved reference samples, a matched REFPIX reference), calibrated by
the batch pipeline (REFPIX coefficients carried to the workers in the store, the draft
1/f scene mask through the IRS2 step), products against truth.json; and the refusal of an
IRS2 exposure without a REFPIX reference."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nirbeam.sim import fs as simfs
from nirbeam.stream.cli import main

# IRS2 costs ~4 s per full-frame group here (twice per exposure: the draft scene mask and
# detector1): 1 integration of 3 groups per nod, ~1.5-2.5 min under this machine's load
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def irs2run(tmp_path_factory):
    d = tmp_path_factory.mktemp("irs2run")
    sim = simfs.simulate_fs(d / "sim", "fs-full", seed=4, nints=1, ngroups=3)
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(d / "out"),
               "--no-progress"])
    return sim, rc, d / "out"


def test_fs_presets_readout():
    assert simfs.FS_PRESETS["fs-full"].irs2  # FULL frame: IRS2 as real FULL-frame exposures
    assert not simfs.FS_PRESETS["fs"].irs2  # ALLSLITS: traditional NRSRAPID
    assert not simfs.FsConfig(frame="FULL", x_window=(1, 96)).irs2  # a window: traditional
    assert not simfs.FsConfig(frame="FULL", readout="traditional").irs2
    with pytest.raises(ValueError, match="full frame only"):
        simfs.FsConfig(readout="NRSIRS2")  # ALLSLITS
    with pytest.raises(ValueError, match="FsConfig.readout"):
        simfs.FsConfig(readout="NRSIRS3")


def test_refpix_coefficients_roundtrip_the_store(tmp_path):
    from nirbeam.sim.irs2 import comparison_reference
    from nirbeam.sinks import zarr_store
    from nirbeam.stream import rate_steps

    root = str(tmp_path / "c.zarr")
    zarr_store.save_arrays(root, "g/references", {"mask": np.zeros((4, 4), np.uint32)})
    ref = comparison_reference()  # complex alpha/beta and a DQ table
    rate_steps._save_irs2(root, "g", ref)
    got = rate_steps._irs2_from_store(root, "g", {"irs2_refpix": True})
    for name in ("alpha", "beta", "dq_output", "dq_odd_even", "dq_mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    assert got.alpha.dtype == np.complex64 and got.source == ref.source
    assert rate_steps._irs2_from_store(root, "g", {}) is None  # a traditional exposure
    rate_steps._save_irs2(root, "g", None)  # stale coefficients removed
    assert "irs2" not in zarr_store.open_root(root)["g/references"]


@slow
def test_irs2_fs_run_gives_products(irs2run):
    from nirbeam.sinks import zarr_store
    from nirbeam.stream.pipeline import refs_from_store
    from nirbeam.stream.refs import read_irs2_reference

    sim, rc, out = irs2run
    assert rc == 0
    with fits.open(sim.uncal[0]) as f:
        h = f[0].header
        assert (h["READPATT"], h["NRS_NORM"], h["NRS_REF"], h["SUBARRAY"]) == (
            "NRSIRS2", 16, 4, "FULL")
        assert f["SCI"].data.shape == (1, 3, 3200, 2048)  # the stored IRS2 layout
    run = json.loads((out / "run.json").read_text())
    assert run["metrics"]["detector1.records"] == 2
    dead = list((out / "deadletters").glob("*")) if (out / "deadletters").exists() else []
    assert not dead, dead
    refpix = str(sim.refs_dir / "jwst_nirspec_refpix_nrs1_sim.fits")
    want = read_irs2_reference(refpix)
    root = str(out / "cubes.zarr")
    for g, v in run["stage1"].items():
        assert v["completed"] == 1 and v["scene_mask_from_mode"]
        assert v["references"]["REFPIX"]["file"] == os.path.basename(refpix)
        # the coefficients are in the store (self-contained), not re-read from the file
        got = refs_from_store(root, g, "irs2-test").irs2
        assert got is not None and got.source == want.source
        np.testing.assert_array_equal(got.alpha, want.alpha)
        np.testing.assert_array_equal(got.beta, want.beta)
        arrays, attrs = zarr_store.load_arrays(root, f"{g}/references")
        assert attrs["irs2_refpix"] and arrays["mask"].shape == (2048, 2048)  # normal pixels
    truth = json.loads(sim.truth_json.read_text())["sources"]
    for sid, t in truth.items():
        tab = Table.read(out / f"spec1d_{sid}.ecsv")
        ok = (np.asarray(tab["dq"]) & 1) == 0
        assert ok.sum() > 1000
        ref = np.interp(tab["wavelength"][ok], t["wavelength_um"], t["flux_ujy"])
        ratio = np.sum(tab["flux"][ok]) / np.sum(ref)
        tol = 0.005 if t["source_type"] == "POINT" else 0.01  # as tests/test_fs.py
        assert abs(ratio - 1) < tol, (sid, t["slit"], ratio)


@slow
def test_irs2_run_without_refpix_exits_2(irs2run, tmp_path, capsys):
    sim, _, _ = irs2run
    refs = tmp_path / "refs"
    refs.mkdir()
    for p in sim.refs_dir.iterdir():
        if "refpix" not in p.name:
            os.symlink(p, refs / p.name)
    rc = main(["run", str(sim.uncal[0]), str(sim.uncal[1]), "--refs", str(refs),
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "REFPIX" in err and "--allow-standins" in err, err

