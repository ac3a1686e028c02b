"""A real (small) run's store opens labelled in xarray; nirbeam.open_products reads it all."""

import json
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr
from astropy.table import Table

import nirbeam
from nirbeam.sim.simulator import simulate
from nirbeam.sinks import zarr_store
from nirbeam.stream.cli import main

NINTS = 8
DIMS = {"integration", "y", "x", "wavelength", "bin_edge", "group", "coefficient"}
TIME_COORDS = {"integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), preset="prism-sub512", nints=NINTS, seed=11)


@pytest.fixture(scope="module")
def wl_config(sim, tmp_path_factory):
    """The simulator's wavelengths, given as a user gives a wavelength map."""
    p = tmp_path_factory.mktemp("cfg") / "wl.toml"
    m = str(sim.wavelength_maps["NRS1"])
    p.write_text(f'[extract]\nwavelength_map = "{m}"\n')
    return str(p)


@pytest.fixture(scope="module")
def out(sim, wl_config, tmp_path_factory):
    o = tmp_path_factory.mktemp("out") / "products"
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(o),
               "--config", wl_config, "--no-progress"])
    assert rc == 0
    return o


def _group(sim):
    return f"{sim.exposure}_nrs1"


def _open(store, group):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back to unconsolidated" warning either
        return xr.open_zarr(store, group=group, consolidated=True)


def test_every_group_opens_labelled(out, sim):
    store = str(out / "cubes.zarr")
    root = zarr.open_group(store, mode="r")
    assert root.attrs["layout"] == zarr_store.LAYOUT
    g = _group(sim)
    stages = sorted(n for n, _ in root[g].groups())
    assert stages == ["cleaned", "extraction", "lightcurves", "rateints", "references", "spectra",
                      "trace"]
    for stage in stages:
        ds = _open(store, f"{g}/{stage}")
        assert set(ds.dims) <= DIMS, (stage, dict(ds.sizes))
        for name, v in ds.variables.items():
            assert "units" in v.attrs or stage in ("references", "extraction"), (stage, name)
        if stage in ("rateints", "cleaned", "spectra", "lightcurves", "trace"):
            assert TIME_COORDS <= set(ds.coords), stage
            assert ds.sizes["integration"] == NINTS
            np.testing.assert_array_equal(ds["integration_number"], np.arange(1, NINTS + 1))
            assert ds["int_mid_BJD_TDB"].attrs["units"] == "d"
    rate = _open(store, f"{g}/rateints")
    assert rate["sci"].dims == ("integration", "y", "x") and rate.sizes["x"] == 512
    spec = _open(store, f"{g}/spectra")
    assert spec["flux"].dims == ("integration", "wavelength") and "wavelength" in spec.indexes
    assert spec["wavelength"].attrs["units"] == "um"
    refs = _open(store, f"{g}/references")
    assert refs["dark"].dims == ("group", "y", "x") and refs["linearity"].dims[0] == "coefficient"
    lc = _open(store, f"{g}/lightcurves")
    assert lc["flux"].dims == ("integration", "wavelength")
    np.testing.assert_allclose(lc["wavelength"], 0.5 * (lc["bin_edges"][:-1].values + lc["bin_edges"][1:].values))
    attrs = dict(root[g].attrs)
    assert attrs["exposure"]["NINTS"] == NINTS and attrs["nirbeam_version"] == nirbeam.__version__
    assert all(len(v["sha256"]) == 64 for v in attrs["references"].values())
    assert "extract" in attrs["config"]


def test_open_products_api(out, sim):
    p = nirbeam.open_products(out)
    g = _group(sim)
    assert p.groups == [g] and p.consolidated and "lightcurves" in p.stages()
    assert p.run["exposures"][0]["processed"] == NINTS
    rate = p.rateints("nrs1")
    direct = zarr.open_group(str(out / "cubes.zarr"), mode="r")[g]["rateints"]["sci"][:]
    np.testing.assert_array_equal(rate["sci"].values, direct)
    assert p.attrs()["exposure"]["DETECTOR"] == "NRS1"
    # light curves: the zarr cube, the long table and the white-light table agree
    lc = p.lightcurves()
    df = p.speclc()
    wide = df.pivot(index="integration_number", columns="wavelength", values="flux")
    np.testing.assert_allclose(wide.to_numpy(), lc["flux"].values, rtol=0, atol=0, equal_nan=True)
    np.testing.assert_allclose(wide.columns.to_numpy(), lc["wavelength"].values)
    wl = p.whitelight()
    np.testing.assert_array_equal(wl["flux"].to_numpy(), lc["white_flux"].values)
    t = p.whitelight("astropy")
    assert isinstance(t, Table) and str(t["flux"].unit) == "DN / s"
    np.testing.assert_array_equal(t["int_mid_BJD_TDB"], lc["int_mid_BJD_TDB"].values)
    assert p.deadletters().empty
    spec = p.spectra()
    assert spec.sizes["integration"] == NINTS and p.x1dints.endswith("x1dints.fits")
    with pytest.raises(KeyError, match="no stage 'nope'"):
        p.cube("nope")
    with pytest.raises(KeyError, match="no group 'nrs3'"):
        p.cube("rateints", "nrs3")


def test_complete_only_drops_unfinished(out, sim, tmp_path):
    o = tmp_path / "partial"
    shutil.copytree(out, o)
    g = zarr.open_group(str(o / "cubes.zarr"), mode="r+", use_consolidated=False)[_group(sim)]
    g["rateints"]["done"][3] = 0  # region writes change no metadata: consolidation stays valid
    p = nirbeam.open_products(o)
    assert p.consolidated
    ds = p.rateints(complete_only=True)
    assert ds["integration_number"].values.tolist() == [1, 2, 3, 5, 6, 7, 8]


def test_consolidated_metadata_valid_after_resume(out, sim, tmp_path, wl_config):
    o = tmp_path / "resumed"
    shutil.copytree(out, o)
    store = str(o / "cubes.zarr")
    g = zarr.open_group(store, mode="r+", use_consolidated=False)[_group(sim)]
    for i in (1, 5):
        g["rateints"]["done"][i] = 0
        g["spectra"]["done"][i] = 0
    shutil.rmtree(o / "cubes.zarr" / _group(sim) / "lightcurves")  # rewritten by the rerun
    rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(o),
               "--config", wl_config, "--no-progress"])
    assert rc == 0
    assert json.loads((o / "run.json").read_text())["metrics"]["detector1.records"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cons = zarr.open_group(store, mode="r", use_consolidated=True)
        walk = zarr.open_group(store, mode="r", use_consolidated=False)
        a = {k: (dict(v.attrs), getattr(v, "shape", None)) for k, v in cons.members(max_depth=None)}
        b = {k: (dict(v.attrs), getattr(v, "shape", None)) for k, v in walk.members(max_depth=None)}
    assert a == b and f"{_group(sim)}/lightcurves/flux" in a
    ds = _open(store, f"{_group(sim)}/lightcurves")
    ref = _open(str(out / "cubes.zarr"), f"{_group(sim)}/lightcurves")
    np.testing.assert_array_equal(ds["flux"].values, ref["flux"].values)
    assert zarr_store.is_consolidated(store, f"{_group(sim)}/spectra")


def test_readme_reading_examples_run(out, sim, tmp_path, monkeypatch):
    """The README's "Reading them" code blocks run as written on a real run's products."""
    import os
    import re

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme[readme.index("Reading them:"): readme.index("## Configuration")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    assert sim.exposure == "jw01366004001_04101_00001"  # the name the README uses
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in blocks:
            exec(b.replace("demo-out/products", str(out)), ns)  # noqa: S102
    assert (tmp_path / "speclc.png").stat().st_size > 1000
    assert ns["ds"].flux.dims == ("integration", "wavelength")


def test_run_to_fsspec_url_matches_local(out, sim, wl_config):
    """OUTDIR as an fsspec URL (memory://): every sink writes there; same products as on disk."""
    import uuid

    import fsspec

    url = f"memory://nirbeam-{uuid.uuid4().hex}/products"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", url,
                   "--config", wl_config, "--no-progress"])
    assert rc == 0
    mem = fsspec.filesystem("memory")
    names = {n.rsplit("/", 1)[-1] for n in mem.ls(url.replace("memory://", "/"), detail=False)}
    local = {p.name for p in out.iterdir()} - {"_deadletters"}
    assert local <= names, local - names
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporaries left
    p, q = nirbeam.open_products(url), nirbeam.open_products(out)
    assert p.consolidated and p.groups == q.groups and p.run["outdir"] == url
    np.testing.assert_array_equal(p.rateints()["sci"].values, q.rateints()["sci"].values)
    np.testing.assert_array_equal(p.lightcurves()["flux"].values, q.lightcurves()["flux"].values)
    np.testing.assert_array_equal(p.whitelight()["flux"], q.whitelight()["flux"])
    assert len(p.whitelight("astropy")) == NINTS and p.deadletters().empty
    with fsspec.open(f"{url}/{_group(sim)}_x1dints.fits", "rb") as fh:
        assert fh.read(6) == b"SIMPLE"


def test_fs_layer_paths_and_atomic_writes(tmp_path):
    import uuid

    from nirbeam.sinks import fs

    assert fs.normalize(f"file://{tmp_path}") == str(tmp_path) and not fs.is_url(f"file://{tmp_path}")
    assert fs.join("s3://b/run", "cubes.zarr") == "s3://b/run/cubes.zarr" and fs.is_url("s3://b")
    for base in (str(tmp_path / "local"), f"memory://nirbeam-{uuid.uuid4().hex}/o"):
        fs.makedirs(base)
        path = fs.join(base, "sub", "a.json")
        fs.write_text(path, '{"a": 1}')
        assert fs.isfile(path) and json.loads(fs.read_text(path)) == {"a": 1}
        with pytest.raises(RuntimeError), fs.atomic_path(fs.join(base, "sub", "b.txt")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("writer died")
        assert fs.listdir(fs.join(base, "sub")) == ["a.json"]  # nothing published, no temporary
        fs.remove(path)
        assert not fs.exists(path)
