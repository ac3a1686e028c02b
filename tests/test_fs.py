"""FS end to end on a cut-down ALLSLITS nod set (96 columns, 2-point nod, 2 integrations):
simulator layout and geometry against the real CV3 file, the mode's regions, stage 1 with
every slit masked, products (x1d with stdatamodels, spec1d, zarr cut-outs, plots) and the
fluxes against truth.json: the joint nod fit within 0.5 %, the nod difference short."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nirbeam.core.records import ExposureMeta
from nirbeam.modes import mode_for
from nirbeam.modes.fs import FS, FS_SLITS, source_id_of
from nirbeam.sim import fs as simfs

COLS = (1201, 96)


@pytest.fixture(scope="module")
def fsrun(tmp_path_factory):
    from nirbeam.pipelines.fs import run_fs

    d = tmp_path_factory.mktemp("fs")
    sim = simfs.simulate_fs(d / "sim", "fs", seed=3, x_window=COLS, ngroups=5)
    res = run_fs([str(d / "sim")], str(d / "out"), refs_dir=str(sim.refs_dir))
    return sim, res, d / "out"


def _meta(substrt2, subsize2, substrt1=1, subsize1=2048, **kw):
    return ExposureMeta("jw1", "NRS1", "NIRSPEC", "NRS_FIXEDSLIT", "NRSRAPID", "X", substrt1,
                        substrt2, subsize1, subsize2, 1, 5, 1, 0, 1.0, 1.0, 4.0, **kw)


def test_uncal_layout_and_fs_keywords(fsrun):
    sim, _, _ = fsrun
    assert len(sim.uncal) == 2
    for k, p in enumerate(sim.uncal, start=1):
        with fits.open(p) as f:
            h = f[0].header
            assert h["EXP_TYPE"] == "NRS_FIXEDSLIT" and h["FXD_SLIT"] == "S1600A1"
            assert h["PATT_NUM"] == k and h["NUMDTHPT"] == 2 and h["PATTTYPE"] == "2-POINT-NOD"
            assert h["NOD_TYPE"] == "NONE"  # stdatamodels: 2-POINT-NOD is a PATTTYPE
            assert h["SUBARRAY"] == "ALLSLITS" and h["SUBSTRT2"] == 897 and h["SUBSIZE2"] == 256
            assert h["SUBSTRT1"] == COLS[0] and h["SUBSIZE1"] == COLS[1]
            assert h["YOFFSET"] == simfs.NOD_OFFSETS["2-POINT-NOD"][k - 1]
            assert f["SCI"].data.dtype.byteorder in ">=" and f["SCI"].header["BZERO"] == 32768
            assert f["SCI"].data.shape == (2, 5, 256, COLS[1])
            assert {"GROUP", "INT_TIMES"} <= {x.name for x in f}
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = datamodels.open(str(sim.uncal[0]))
        m.validate()  # the level-1b keywords are the schema's (types and enums)
    assert type(m).__name__ == "Level1bModel" and m.meta.exposure.type == "NRS_FIXEDSLIT"
    assert m.meta.dither.position_number == 1 and m.meta.dither.primary_type == "2-POINT-NOD"
    m.close()
    truth = json.loads(sim.truth_json.read_text())
    assert set(truth["sources"]) == {str(source_id_of("S1600A1")), str(source_id_of("S200A2"))}
    for t in truth["sources"].values():
        assert len(t["wavelength_um"]) == len(t["flux_ujy"]) > 100


def test_geometry_is_the_cv3_trace_and_the_ids_agree():
    y0, x0, lam, s = simfs.cv3_geometry()
    with fits.open(simfs.default_geometry_dir() / simfs.CV3_TRACE) as f:
        raw = f["LAMBDA1"].data * 1e6
        assert (f["LAMBDA1"].header["CRPIX1"], f["LAMBDA1"].header["CRPIX2"]) == (-662.0, -1050.0)
    ok = np.isfinite(lam)
    np.testing.assert_allclose(lam[ok], raw[ok], rtol=1e-6)
    assert (y0, x0) == (1055, 667)  # 0-based: CRVAL 5 + 1 - CRPIX, minus one
    g = simfs.slit_geometries()["S200A1"]
    assert g.y0 >= y0 and g.x0 == x0
    assert simfs.SLITS == FS_SLITS  # the simulator's ids are the mode's
    assert [simfs.SOURCE_IDS[s] for s in FS_SLITS] == [source_id_of(s) for s in FS_SLITS]


def test_fs_regions_follow_the_subarray(fsrun):
    from nirbeam.pipelines.fs import _GeomSettings
    from nirbeam.sources.fs_refs import find_fs_references, read_fsgeom

    sim, _, _ = fsrun
    geom = read_fsgeom(find_fs_references(str(sim.refs_dir), "NRS1")["FSGEOM"])
    allslits = FS.regions(_meta(897, 256), _GeomSettings(geom))
    assert [r.name for r in allslits] == list(FS_SLITS)
    sub2048 = FS.regions(_meta(963, 32), _GeomSettings(geom))  # the BOTS window
    assert [r.name for r in sub2048] == ["S1600A1"]
    assert mode_for(_meta(897, 256)) is FS
    for r in allslits:
        assert r.background.kind == "nod_partner" and r.wavelength.kind == "map"


def test_stage1_masks_every_slit_for_1f(fsrun):
    from nirbeam.sinks import zarr_store

    sim, res, out = fsrun
    s1 = res.summary["stage1"]
    assert all(v["scene_mask_from_mode"] and v["completed"] == 2 for v in s1.values())
    g = next(iter(s1))
    arrays, _ = zarr_store.load_arrays(str(out / "cubes.zarr"), f"{g}/references")
    usable = arrays["scene_mask"].astype(bool)  # True: background pixel for the 1/f fit
    cut = json.loads((out / "fs.json").read_text())["slits"]
    for r in cut.values():
        a, attrs = zarr_store.load_arrays(str(out / "cubes.zarr"), r["store_group"])
        y0, y1, x0, x1 = attrs["box"]
        inside = np.abs(np.nan_to_num(a["along_slit"], nan=9)) <= 0.5
        assert not usable[y0:y1, x0:x1][inside].any(), r["slit"]


def test_products_open_and_fluxes_match_truth(fsrun):
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    sim, res, out = fsrun
    truth = json.loads(sim.truth_json.read_text())["sources"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = datamodels.open(str(out / "x1d.fits"))
    assert type(m).__name__ == "MultiSpecModel"
    m.validate()
    assert sorted(s.source_id for s in m.spec) == sorted(int(k) for k in truth)
    by = {s.name: s for s in m.spec}
    assert by["S1600A1"].source_type == "POINT" and by["S200A2"].source_type == "EXTENDED"
    for sid, t in truth.items():
        tab = Table.read(out / f"spec1d_{sid}.ecsv")
        assert str(tab["flux"].unit) == "uJy" and str(tab["wavelength"].unit) == "um"
        ok = (np.asarray(tab["dq"]) & 1) == 0
        ref = np.interp(tab["wavelength"][ok], t["wavelength_um"], t["flux_ujy"])
        ratio = np.sum(tab["flux"][ok]) / np.sum(ref)
        tol = 0.005 if t["source_type"] == "POINT" else 0.01
        assert abs(ratio - 1) < tol, (sid, t["slit"], ratio)
        # x1d and ECSV hold the same spectrum (Jy vs uJy)
        sp = by[t["slit"]].spec_table
        np.testing.assert_allclose(sp["FLUX"][ok] * 1e6, tab["flux"][ok], rtol=1e-12)
    # the nod difference over-subtracts the point source's wings: several per cent short
    s = json.loads((out / "fs.json").read_text())["slits"]
    prim = next(v for v in s.values() if v["slit"] == "S1600A1")
    t = truth[str(source_id_of("S1600A1"))]
    sums = {}
    for meth in ("joint", "nod"):
        sp = prim["spectra"][meth]
        f, w = np.asarray(sp["flux"], float), np.asarray(sp["wavelength"], float)
        ok = np.isfinite(f) & ((np.asarray(sp["dq"]) & 1) == 0)
        sums[meth] = f[ok].sum() / np.interp(w[ok], t["wavelength_um"], t["flux_ujy"]).sum()
    assert sums["nod"] < sums["joint"] - 0.01 and abs(sums["joint"] - 1) < 0.005, sums
    where = json.loads(sim.truth_json.read_text())["nod_offsets_arcsec"]  # pointing errors in
    assert where != pytest.approx([-0.25, 0.25], abs=0.005)
    assert prim["centers_fitted"] == pytest.approx(where, abs=0.005)  # the profile fit finds them


def test_cutouts_and_plots(fsrun):
    from nirbeam.sinks import zarr_store

    _, res, out = fsrun
    for p in res.products["plots"]:
        assert os.path.getsize(p) > 10_000
    r = next(v for v in res.summary["slits"].values() if v["slit"] == "S200A2")
    assert r["store_group"].endswith("_nrs1/S200A2/cutouts")  # ModePlan.store_group
    a, attrs = zarr_store.load_arrays(str(out / "cubes.zarr"), r["store_group"])
    assert a["rate"].shape[0] == 2 and a["wavelength"].shape == a["rate"].shape[1:]
    lam = a["wavelength"][np.isfinite(a["wavelength"])]
    assert 1.0 < lam.min() < lam.max() < 1.84  # um, from the CV3 map
    assert "background_masked" in a and attrs["source_type"] == "EXTENDED"


def test_cli_dispatches_fs_inputs_by_exp_type(fsrun):
    from nirbeam.pipelines.common import ensemble_mode_of

    sim, _, _ = fsrun
    assert ensemble_mode_of([str(sim.outdir)]) == "fs"
    assert ensemble_mode_of([str(sim.outdir / "refs")]) is None  # no uncal files: BOTS path


def test_fs_references_errors_and_psf_table(fsrun, tmp_path):
    from nirbeam.sources.fs_refs import FsReferenceError, find_fs_references, read_psf

    sim, _, _ = fsrun
    psf = read_psf(find_fs_references(str(sim.refs_dir), "NRS1")["PSF"])
    u = np.linspace(-1.5, 1.5, 301)
    for lam in (1.03, 1.41, 1.77):  # between the table's wavelengths
        np.testing.assert_allclose(psf.cdf(u, np.full_like(u, lam)), simfs.psf_cdf(u, lam),
                                   atol=2e-3)
    with pytest.raises(FsReferenceError, match="FSGEOM, PSF, PHOTOM"):
        find_fs_references(str(tmp_path), "NRS1")
