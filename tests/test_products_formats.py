"""Products other tools open: x1dints (stdatamodels), calwebb_tso3 whtlt.ecsv, Eureka
SpecData/LCData, per-detector fits; wavelengths only from what a user gives; trace
diagnostics against the simulator's truth.

Two runs of a two-detector G395H simulation (NRS1 + NRS2, 16 integrations of 4 groups):
one with the ``nirbeam.toml`` the simulator writes (its wavelengths as a map file, as a
user gives them), one without any config (no wavelength source: pixel axis).
"""

import glob
import json
import os
import warnings

import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.table import QTable, Table

from nirbeam.sim.simulator import simulate
from nirbeam.stream.cli import EXIT_BAD_INPUT, main, write_sim_config

NINTS = 16


def _shared_spectra():
    """``shared/data/spectra`` beside the checkout (main) or beside its worktree folder."""
    d = os.path.abspath(os.path.dirname(__file__))
    for _ in range(4):
        d = os.path.dirname(d)
        cand = os.path.join(d, "shared", "data", "spectra")
        if os.path.isdir(cand):
            return cand
    return os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "spectra")


SHARED = _shared_spectra()
REAL_SPEC = os.path.join(SHARED, "eureka_nirspec_prism_jw06456003001_SpecData.h5")
REAL_LC = os.path.join(SHARED, "eureka_nirspec_prism_jw06456003001_LCData.h5")
DETS = ("NRS1", "NRS2")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("g395h")
    res = simulate(d / "sim", preset="g395h-sub2048", nints=NINTS, seed=5, ngroups=4,
                   detectors=DETS)
    return res, write_sim_config(res)


@pytest.fixture(scope="module")
def with_wl(sim, tmp_path_factory):
    res, cfg = sim
    out = tmp_path_factory.mktemp("wl") / "out"
    assert main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--config", cfg,
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def no_wl(sim, tmp_path_factory):
    res, _ = sim
    out = tmp_path_factory.mktemp("nowl") / "out"
    assert main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def _group(res, det):
    return f"{res.exposure}_{det.lower()}"


def test_config_references_the_wavelength_map_not_the_truth(sim):
    res, cfg = sim
    text = open(cfg).read()
    assert "wavelength_map" in text and "truth" not in text
    for det in DETS:
        assert os.path.isfile(str(res.wavelength_maps[det]))


def _tso_spectable_schema():
    """stdatamodels' own TSO spectral-table schema: [{'name', 'datatype'}, ...]."""
    import yaml
    from stdatamodels.jwst import datamodels

    path = os.path.join(os.path.dirname(datamodels.__file__), "schemas", "tso_spectable.schema.yaml")
    with open(path) as fh:
        return yaml.safe_load(fh)["datatype"]


def test_every_x1dints_opens_as_tsomultispecmodel(with_wl, sim):
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    res, _ = sim
    files = sorted(glob.glob(str(with_wl / "*_x1dints.fits")))
    assert [os.path.basename(f) for f in files] == [f"{_group(res, d)}_x1dints.fits" for d in DETS]
    for det, f in zip(DETS, files, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "column names don't match schema" either
            m = datamodels.open(f)
        assert type(m).__name__ == "TSOMultiSpecModel"
        m.validate()
        assert m.meta.instrument.detector == det and len(m.spec) == 1
        tab = m.spec[0].spec_table
        assert len(tab) == NINTS and tab["DQ"].dtype == np.uint32
        assert len(m.int_times) == NINTS
        np.testing.assert_array_equal(m.int_times["integration_number"], np.arange(1, NINTS + 1))
        # the file itself holds every schema column, in order, with the schema's dtype
        # (stdatamodels fills a missing column from the schema default when opening)
        schema = _tso_spectable_schema()
        with fits.open(f) as h:
            data = h["EXTRACT1D"].data
            assert list(data.columns.names) == [c["name"] for c in schema]
            for c in schema:
                got = data[c["name"]].dtype.base
                assert (got.kind, got.itemsize) == (np.dtype(c["datatype"]).kind,
                                                    np.dtype(c["datatype"]).itemsize), (c, got)
        # the exposure's own header, and its own detector's wavelengths (from the map)
        with fits.open(f) as h:
            assert h[0].header["DETECTOR"] == det and h[0].header["NINTS"] == NINTS
            assert h["EXTRACT1D"].header["BUNIT"] == "DN/s"
            assert h["EXTRACT1D"].columns["FLUX"].unit == "DN/s"
        truth = fits.getdata(res.truth[det], "TRACE")
        wl = tab["WAVELENGTH"][0]
        np.testing.assert_allclose(wl[truth["x"]], truth["wavelength_um"], rtol=1e-6)
        assert np.isfinite(tab["FLUX"]).all() and np.isnan(tab["SURF_BRIGHT"]).all()
        np.testing.assert_allclose(tab["TDB-MID"], m.int_times["int_mid_BJD_TDB"])


def test_pixel_axis_when_no_source_is_given(no_wl, sim):
    """No column index labelled as a wavelength anywhere, and every product says so."""
    res, _ = sim
    rj = json.loads((no_wl / "run.json").read_text())
    for det in DETS:
        e = rj["products"]["exposures"][_group(res, det)]
        assert e["wavelength_source"].startswith("none")
        assert "NO wavelength solution" in e["spectral_axis"] and e["binning"] == "columns"
    for p in list(no_wl.glob("*.ecsv")) + list(no_wl.glob("*.json")):
        text = p.read_text()
        assert "unit: um" not in text and '"um"' not in text and "_um" not in text, p.name
        if p.suffix == ".ecsv":
            assert "NO wavelength solution" in text, p.name
    root = zarr.open_group(str(no_wl / "cubes.zarr"), mode="r")
    for det in DETS:
        g = root[_group(res, det)]
        for stage in ("spectra", "lightcurves"):
            for name, a in g[stage].arrays():
                assert a.attrs.get("units") != "um", (stage, name)
        assert g["spectra"]["wavelength"].attrs["units"] == "pixel"
        with fits.open(no_wl / f"{_group(res, det)}_x1dints.fits") as h:
            t = h["EXTRACT1D"]
            assert np.isnan(t.data["WAVELENGTH"]).all()
            assert t.columns["WAVELENGTH"].unit is None
            assert "no wavelength solution" in str(t.header["COMMENT"])
    t = Table.read(no_wl / f"speclc_{_group(res, 'NRS1')}.ecsv")
    assert "bin_edges_pixel" in t.meta and "wavelength_um" not in t.meta


def test_wavelength_binning_refused_without_a_source(sim, tmp_path, capsys):
    res, _ = sim
    cfg = tmp_path / "r.toml"
    cfg.write_text('[lightcurve]\nbinning = "resolution"\n')
    rc = main(["run", str(res.outdir), "--refs", str(res.refs_dir), "--config", str(cfg),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "needs wavelengths" in err and "wavelength_map" in err and "native" in err


def test_whtlt_in_calwebb_tso3_layout(with_wl, sim):
    res, _ = sim
    t = QTable.read(with_wl / f"{res.exposure}_whtlt.ecsv", format="ascii.ecsv")
    ours = Table.read(with_wl / "whitelight.ecsv")
    assert t.meta["target_name"] == "WASP-39" and t.meta["exp_type"] == "NRS_BRIGHTOBJ"
    assert t.meta["number_of_integrations"] == NINTS and len(t) == NINTS
    for det in DETS:
        for c in (f"MJD_UTC_{det}", f"BJD_TDB_{det}", f"whitelight_flux_{det}"):
            assert c in t.colnames
        mine = ours[ours["detector"] == det]
        np.testing.assert_array_equal(t[f"whitelight_flux_{det}"].value, mine["flux"])
        np.testing.assert_array_equal(t[f"BJD_TDB_{det}"].value, mine["int_mid_BJD_TDB"])
        assert str(t[f"whitelight_flux_{det}"].unit) == "DN / s"


def test_trace_diagnostics_match_the_truth(with_wl, sim):
    res, _ = sim
    root = zarr.open_group(str(with_wl / "cubes.zarr"), mode="r")
    wl = Table.read(with_wl / "whitelight.ecsv")
    for det in DETS:
        g = root[_group(res, det)]["trace"]
        tr = fits.getdata(res.truth[det], "TRACE")
        cy, wd = g["centroid_y"][:], g["width"][:]
        assert cy.shape == (NINTS,) and tuple(g["centroid_y"].metadata.dimension_names) == ("integration",)
        # the simulated trace does not move: every integration at the true centre
        assert np.all(np.abs(cy - tr["y_center"].mean()) < 0.02), cy
        expect = np.sqrt(np.mean(tr["sigma_psf"]) ** 2 + 1 / 12)  # pixel-integrated Gaussian
        assert np.all(np.abs(wd / expect - 1) < 0.1), (wd, expect)
        np.testing.assert_array_equal(wl[wl["detector"] == det]["trace_centroid_y"], cy)
        sl = Table.read(with_wl / f"speclc_{_group(res, det)}.ecsv")
        np.testing.assert_array_equal(sl["trace_width"], wd)


def test_fit_one_output_per_detector(with_wl, sim, tmp_path):
    res, cfg = sim
    for table, labels in (("whitelight.ecsv", [_group(res, d) for d in DETS]),
                          (f"{res.exposure}_whtlt.ecsv", list(DETS))):
        out = tmp_path / table.split(".")[0]
        assert main(["fit", str(with_wl / table), "--config", cfg, "--out", str(out)]) == 0
        got = sorted(p.name for p in out.glob("fit_*.json"))
        assert got == sorted(f"fit_{lab}.json" for lab in labels)
        for lab in labels:
            d = json.loads((out / f"fit_{lab}.json").read_text())
            assert d["n_points"] <= NINTS and d["beta"] >= 1.0
            assert any("period fixed" in a for a in d["assumptions"])
    # the batch quick-look fit is per detector too
    for det in DETS:
        assert (with_wl / f"fit_{_group(res, det)}.json").is_file()


def test_fit_refuses_without_a_period(with_wl, tmp_path, capsys):
    cfg = tmp_path / "noper.toml"
    cfg.write_text("[fit]\nrp = 0.1\n")
    assert main(["fit", str(with_wl / "whitelight.ecsv"), "--config", str(cfg),
                 "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "per" in capsys.readouterr().err


def _real_layout(path):
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return {k: (v.dims, v.dtype, set(v.attrs) - {"_FillValue"})
                for k, v in ds.variables.items()}, dict(ds.attrs)


@pytest.mark.skipif(not os.path.isfile(REAL_SPEC), reason="shared Eureka files not present")
def test_eureka_export_matches_the_real_files(with_wl, sim, tmp_path):
    import h5py
    import xarray as xr

    res, _ = sim
    dest = tmp_path / "eureka"
    assert main(["export", "eureka", str(with_wl), "--to", str(dest)]) == 0
    for det in DETS:
        g = _group(res, det)
        for kind, real in (("SpecData", REAL_SPEC), ("LCData", REAL_LC)):
            path = dest / f"{g}_{kind}.h5"
            want, want_attrs = _real_layout(real)
            got, got_attrs = _real_layout(path)
            assert set(got) == set(want), (kind, set(got) ^ set(want))
            for k, (dims, dtype, attrs) in want.items():
                assert got[k][0] == dims, (kind, k, got[k][0], dims)
                assert got[k][1] == dtype, (kind, k, got[k][1], dtype)
                assert attrs <= got[k][2], (kind, k, attrs - got[k][2])
            assert got_attrs["data_format"] == want_attrs["data_format"] == "eureka"
            # stored as Eureka stores it (bools as int8 + dtype attribute)
            with h5py.File(path) as h, h5py.File(real) as r:
                mk = "optmask" if kind == "SpecData" else "mask"
                assert h[mk].dtype == r[mk].dtype and h[mk].attrs["dtype"] == "bool"
        # Eureka's own reader (astraeus), when installed
        try:
            from astraeus import xarrayIO as xrio
        except ImportError:
            xrio = None
        spec = (xrio.readXR(str(dest / f"{g}_SpecData.h5"), verbose=False) if xrio
                else xr.open_dataset(dest / f"{g}_SpecData.h5", engine="h5netcdf"))
        lc = (xrio.readXR(str(dest / f"{g}_LCData.h5"), verbose=False) if xrio
              else xr.open_dataset(dest / f"{g}_LCData.h5", engine="h5netcdf"))
        assert spec is not None and lc is not None
        truth = fits.getdata(res.truth[det], "TRACE")
        np.testing.assert_allclose(spec.wave_1d.values[truth["x"]], truth["wavelength_um"],
                                   rtol=1e-6)
        # Stage 4 binning: the mean over the bin's columns, err sqrt(sum e^2) / N
        w = spec.wave_1d.values.astype(float)
        with fits.open(with_wl / f"{g}_x1dints.fits") as h:
            wl64 = h["EXTRACT1D"].data["WAVELENGTH"][0]
        f = np.where(spec.optmask.values, np.nan, spec.optspec.values.astype(float))
        k = 3
        cols = (wl64 >= lc.wave_low.values[k]) & (wl64 < lc.wave_hi.values[k])
        np.testing.assert_allclose(lc.data.values[k], np.nanmean(f[:, cols], axis=1), rtol=1e-5)
        assert np.isfinite(w).all() and (lc.err.values > 0).all()
        wl_tab = Table.read(with_wl / "whitelight.ecsv")
        np.testing.assert_allclose(lc.time.values, wl_tab[wl_tab["detector"] == det]["int_mid_BJD_TDB"])


def test_eureka_export_refused_on_a_pixel_axis(no_wl, tmp_path, capsys):
    assert main(["export", "eureka", str(no_wl), "--to", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "microns" in capsys.readouterr().err


def _photom_ref(path, photmj=2.5e-7):
    """A CRDS-layout NIRSpec FS PHOTOM reference (written by stdatamodels' own model)."""
    from stdatamodels.jwst.datamodels import NrsFsPhotomModel

    n = 50
    t = np.zeros(2, dtype=[("filter", "S12"), ("grating", "S15"), ("slit", "S15"),
                           ("photmj", "f4"), ("uncertainty", "f4"), ("nelem", "i2"),
                           ("wavelength", "f4", (n,)), ("relresponse", "f4", (n,)),
                           ("reluncertainty", "f4", (n,))])
    t["filter"] = ["F290LP", "F290LP"]
    t["grating"] = ["G395H", "G395H"]
    t["slit"] = ["S200A1", "S1600A1"]
    t["photmj"] = [1.0, photmj]
    t["nelem"] = [n, n - 10]
    w = np.linspace(2.6e-6, 5.3e-6, n)  # metres, as some CRDS files give them
    t["wavelength"] = [w, w]
    t["relresponse"] = [np.ones(n), 1.0 + 0.2 * (w - 4e-6) / 1e-6]
    m = NrsFsPhotomModel()
    m.phot_table = t
    m.meta.instrument.name = "NIRSPEC"
    m.meta.instrument.detector = "NRS1"
    m.meta.exposure.type = "NRS_BRIGHTOBJ"
    m.meta.reftype = "PHOTOM"
    m.save(str(path))
    return w[: n - 10] * 1e6, (1.0 + 0.2 * (w - 4e-6) / 1e-6)[: n - 10], photmj


def test_x1dints_in_jy_with_a_photom_reference(with_wl, sim, tmp_path):
    """FLUX = DN/s x PHOTMJ x RELRESPONSE(lambda) x 1e6 (jwst photom for a point source in
    the fixed slit, then extract_1d's sum), from a PHOTOM file, only with wavelengths."""
    import shutil

    pytest.importorskip("stdatamodels")
    from stdatamodels.jwst import datamodels

    from nirbeam.stream.products import finalize_products
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    res, cfg = sim
    ref = tmp_path / "jwst_nirspec_photom_test.fits"
    w_ref, r_ref, photmj = _photom_ref(ref)
    out = tmp_path / "jy"
    shutil.copytree(with_wl, out)
    summary = json.loads((out / "run.json").read_text())
    conf = dict(summary["config_input"])
    conf["extract"] = {**conf.get("extract", {}), "photom": str(ref)}
    conf["products"] = {"fit": False, "plots": False}
    settings = Settings.from_dict(conf)
    plans = plan_exposures([scan_segment(p) for p in summary["inputs"]])
    finalize_products(str(out), str(out / "cubes.zarr"), plans, settings)
    for det in DETS:
        name = f"{_group(res, det)}_x1dints.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            jy = datamodels.open(str(out / name))
        dn = datamodels.open(str(with_wl / name))
        wl = dn.spec[0].spec_table["WAVELENGTH"][0]
        expect = photmj * np.interp(wl, w_ref, r_ref, left=np.nan, right=np.nan) * 1e6
        got = jy.spec[0].spec_table["FLUX"] / dn.spec[0].spec_table["FLUX"]
        ok = np.isfinite(expect)
        assert ok.sum() > 1000
        np.testing.assert_allclose(got[:, ok], np.broadcast_to(expect[ok], got[:, ok].shape),
                                   rtol=1e-6)
        assert np.isnan(jy.spec[0].spec_table["FLUX"][:, ~ok]).all()
        with fits.open(out / name) as h:
            assert h["EXTRACT1D"].header["BUNIT"] == "Jy"
            assert h["EXTRACT1D"].columns["FLUX"].unit == "Jy"
            assert "PHOTMJ" in str(h["EXTRACT1D"].header["COMMENT"])
    # the light curves stay in DN/s (said in their units)
    assert Table.read(out / "whitelight.ecsv")["flux"].unit == "DN / s"


def test_photom_refused_rows_name_what_exists(tmp_path):
    from nirbeam.stream.photom import read_photom
    from nirbeam.stream.uncal import BadInputError

    ref = tmp_path / "p.fits"
    _photom_ref(ref)
    with pytest.raises(BadInputError, match="no row for FILTER=CLEAR, GRATING=PRISM"):
        read_photom(str(ref), "CLEAR", "PRISM")


def test_photom_without_wavelengths_stays_dn_per_s(no_wl, sim, tmp_path):
    import shutil

    pytest.importorskip("stdatamodels")
    from nirbeam.stream.products import finalize_products
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    res, _ = sim
    ref = tmp_path / "photom.fits"
    _photom_ref(ref)
    out = tmp_path / "dn"
    shutil.copytree(no_wl, out)
    summary = json.loads((out / "run.json").read_text())
    settings = Settings.from_dict({"extract": {"photom": str(ref)},
                                   "products": {"fit": False, "plots": False}})
    plans = plan_exposures([scan_segment(p) for p in summary["inputs"]])
    finalize_products(str(out), str(out / "cubes.zarr"), plans, settings)
    with fits.open(out / f"{_group(res, 'NRS1')}_x1dints.fits") as h:
        assert h["EXTRACT1D"].header["BUNIT"] == "DN/s"
