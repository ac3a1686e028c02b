"""IFU end to end on the simulator (cut-down frame): nirbeam simulate --preset ifu-small,
nirbeam run (dispatched by EXP_TYPE) on Beam, products checked against the truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nirbeam.stream.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def ifu_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ifu")
    assert main(["simulate", str(d / "sim"), "--preset", "ifu-small", "--seed", "2"]) == 0
    assert main(["run", str(d / "sim"), "--out", str(d / "out")]) == 0
    return d / "sim", d / "out"


def test_simulated_uncal_is_level1b_ifu(ifu_run):
    from astropy.io import fits

    sim, _ = ifu_run
    files = sorted(sim.glob("*_uncal.fits"))
    assert len(files) == 4
    with fits.open(files[1]) as f:
        h = f[0].header
        assert h["EXP_TYPE"] == "NRS_IFU" and h["PATT_NUM"] == 2 and h["NUMDTHPT"] == 4
        assert f["SCI"].data.dtype == np.uint16 and f["SCI"].data.ndim == 4
        assert {"GROUP", "INT_TIMES"} <= {x.name for x in f}
    with fits.open(sim / "ifu_refs" / "geometry_nrs1.fits") as g:
        assert set(np.unique(g["SLICE"].data)) == set(range(-1, 30))


def test_mode_plan_has_30_slices(ifu_run):
    from nirbeam.modes import mode_for
    from nirbeam.sources.ifu_refs import read_geometry

    sim, _ = ifu_run
    geo = read_geometry(str(sim / "ifu_refs" / "geometry_nrs1.fits"))

    class Meta:
        exposure, detector, exp_type, image_shape = "e", "NRS1", "NRS_IFU", geo.slice.shape

    plan = mode_for(Meta)
    assert plan.name == "ifu" and plan.ensemble(None).kind == "dither"
    regs = plan.regions(Meta, {"slice_map": geo.slice, "geometry_source": geo.path})
    assert [r.slice_index for r in regs] == list(range(30))
    for r in regs:
        assert np.all(geo.slice[r.bbox.slices()][geo.slice[r.bbox.slices()] >= 0] >= 0)
        assert (geo.slice[r.bbox.slices()] == r.slice_index).sum() == (geo.slice == r.slice_index).sum()


def test_sources_fluxes_within_2_percent_of_truth(ifu_run):
    from astropy.table import Table

    sim, out = ifu_run
    truth = json.loads((sim / "truth.json").read_text())["sources"]
    for sid, t in truth.items():
        tab = Table.read(out / f"spec1d_{sid}.ecsv")
        assert tab["wavelength"].unit == "um" and tab["flux"].unit == "uJy"
        w, f = np.asarray(tab["wavelength"]), np.asarray(tab["flux"])
        ok = np.isfinite(f)
        assert ok.mean() > 0.95
        tr = np.interp(w[ok], t["wavelength_um"], t["flux_ujy"])
        assert np.sum(f[ok]) / np.sum(tr) == pytest.approx(1.0, abs=0.02), sid


def test_cube_conserves_flux_and_wander_is_corrected(ifu_run):
    _, out = ifu_run
    s = json.loads((out / "run.json").read_text())
    assert s["flux_conservation"]["median_ratio"] == pytest.approx(1.0, abs=0.01)
    cdelt = s["grid"]["cdelt"]
    before, after = s["wander"]["before"], s["wander"]["after"]
    assert max(before["smooth_ptp_x"], before["smooth_ptp_y"]) > 0.1 * cdelt
    assert max(after["smooth_ptp_x"], after["smooth_ptp_y"]) < 0.1 * cdelt
    # the injected one-exposure hot pixels are flagged, and few else
    n_inj = len(json.loads((out.parent / "sim" / "truth.json").read_text())["outliers"])
    assert n_inj <= s["outliers_flagged"] <= 2 * n_inj


def test_products_open_with_stdatamodels_and_zarr(ifu_run):
    import zarr
    from stdatamodels.jwst import datamodels as dm

    _, out = ifu_run
    s = json.loads((out / "run.json").read_text())
    with dm.open(s["products"]["s3d"]) as m:
        assert type(m).__name__ == "IFUCubeModel"
        assert m.data.shape == (s["grid"]["nwave"], s["grid"]["ny"], s["grid"]["nx"])
        m.validate()
    with dm.open(str(out / "x1d.fits")) as x:
        assert type(x).__name__ == "MultiSpecModel" and len(x.spec) == 2
    g = zarr.open_group(str(out / "cube.zarr"), mode="r")
    grp = [k for k in g.group_keys()][0]
    sci = g[f"{grp}/s3d/sci"]
    assert tuple(sci.metadata.dimension_names) == ("wavelength", "y", "x")
    assert sci.chunks[0] == s["settings"]["planes_per_chunk"]
    fits_sci = dm.open(s["products"]["s3d"]).data
    np.testing.assert_array_equal(np.asarray(sci[:]), fits_sci)
    assert (out / "plots" / "white_light.png").stat().st_size > 0


def test_beam_cube_equals_the_in_process_build(ifu_run):
    """Planes built by Beam workers and written block by block into zarr are the planes of
    the in-process reference (build_cube) on the same cloud."""
    from nirbeam.pipelines.ifu import load_cloud, read_cube
    from nirbeam.transforms import cube as ck

    _, out = ifu_run
    s = json.loads((out / "run.json").read_text())
    group = [k for k in __import__("zarr").open_group(str(out / "cube.zarr"), mode="r").group_keys()][0]
    sci, err, wmap, grid = read_cube(str(out / "cube.zarr"), f"{group}/s3d")
    ref, var, w = ck.build_cube(load_cloud(str(out / "work" / "cloud")), grid, s["settings"]["weighting"])
    np.testing.assert_array_equal(np.isnan(sci), np.isnan(ref))
    ok = np.isfinite(sci)
    np.testing.assert_allclose(sci[ok], ref[ok].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(err[ok], np.sqrt(var[ok]).astype(np.float32), rtol=1e-6)


def test_ifu_settings_from_set_overrides():
    from nirbeam.pipelines.ifu import settings_from_overrides

    st = settings_from_overrides(["ifu.weighting=\"emsm\"", "ifu.planes_per_chunk=8"])
    assert st.weighting == "emsm" and st.planes_per_chunk == 8
    with pytest.raises(ValueError, match="ifu.KEY"):
        settings_from_overrides(["extract.trace_deg=2"])
    with pytest.raises(ValueError, match="weighting"):
        settings_from_overrides(["ifu.weighting=\"bilinear\""])


def test_ifu_input_without_its_references_is_bad_input(ifu_run, tmp_path, capsys):
    import shutil

    sim, _ = ifu_run
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(sorted(sim.glob("*_uncal.fits"))[0], d)
    shutil.copytree(sim / "refs", d / "refs")
    assert main(["run", str(d), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "geometry_nrs1.fits" in err and "Traceback" not in err
