"""zarr_store: labelled layout, idempotent region writes, parallel writers, consolidation."""

import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from nirbeam.sinks import zarr_store as zs

ARR = {"sci": np.float32, "dq": np.uint32}
ATTRS = {"sci": {"units": "DN/s", "description": "rate"}, "dq": {"units": "", "description": "dq"}}


def _coords(n):
    return {
        "integration_number": np.arange(1, n + 1, dtype=np.int32),
        "int_mid_BJD_TDB": 60000.5 + np.arange(n) / 1440.0,
        "int_mid_MJD_UTC": 60000.4 + np.arange(n) / 1440.0,
    }


def _stage(root, n=6, shape=(4, 8), group="e_nrs1", stage="rateints"):
    return zs.prepare_stage(root, group, stage, n, shape, ARR, coords=_coords(n), array_attrs=ATTRS)


def _open(root, group, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(root, group=group, **kw)


def test_stage_opens_labelled_in_xarray(tmp_path, rng):
    root = str(tmp_path / "c.zarr")
    _stage(root)
    sci = rng.normal(100, 5, (6, 4, 8)).astype(np.float32)
    for i in range(1, 7):
        zs.write_integration(root, "e_nrs1", "rateints", i, {"sci": sci[i - 1], "dq": np.full((4, 8), i)})
    ds = _open(root, "e_nrs1/rateints", consolidated=False)
    assert ds["sci"].dims == ("integration", "y", "x")
    assert {"integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC"} <= set(ds.coords)
    assert ds["int_mid_BJD_TDB"].attrs["units"] == "d" and ds["sci"].attrs["units"] == "DN/s"
    assert "description" in ds["integration_number"].attrs
    np.testing.assert_array_equal(ds["sci"].values, sci)
    np.testing.assert_array_equal(ds["dq"].values[:, 0, 0], np.arange(1, 7))
    assert ds["sci"].encoding["chunks"] == (1, 4, 8)
    assert np.all(ds["done"].values == 1)


def _chunk_bytes(root, key):
    with open(os.path.join(root, *key.split("/")), "rb") as fh:
        return fh.read()


def test_region_rewrite_is_idempotent_and_shape_checked(tmp_path, rng):
    root = str(tmp_path / "c.zarr")
    _stage(root)
    frame = rng.normal(0, 1, (4, 8)).astype(np.float32)
    zs.write_integration(root, "e_nrs1", "rateints", 3, {"sci": frame, "dq": np.zeros((4, 8))})
    key = "e_nrs1/rateints/sci/c/2/0/0"
    first = _chunk_bytes(root, key)
    zs.write_integration(root, "e_nrs1", "rateints", 3, {"sci": frame, "dq": np.zeros((4, 8))})
    assert _chunk_bytes(root, key) == first
    assert zs.completed(root, "e_nrs1", "rateints").tolist() == [False, False, True, False, False, False]
    with pytest.raises(zs.StoreError, match="e_nrs1/rateints/sci integration 4.*shape"):
        zs.write_integration(root, "e_nrs1", "rateints", 4, {"sci": np.zeros((4, 9))})
    with pytest.raises(zs.StoreError, match="outside 1..6"):
        zs.write_integration(root, "e_nrs1", "rateints", 7, {"sci": frame})
    with pytest.raises(zs.StoreError, match="e_nrs1/rateints/sci holds"):
        _stage(root, shape=(4, 9))  # a rerun with another frame shape is refused


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from nirbeam.sinks import zarr_store as zs
    root, parity = sys.argv[1], int(sys.argv[2])
    for i in range(1 + parity, 81, 2):
        zs.write_integration(root, "g", "s", i, {"sci": np.full((4, 8), i, np.float32),
                                                   "dq": np.full((4, 8), i, np.uint32)})
""")


def test_two_processes_write_different_integrations_lose_nothing(tmp_path):
    root = str(tmp_path / "c.zarr")
    zs.prepare_stage(root, "g", "s", 80, (4, 8), ARR)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, root, str(p)], env=env) for p in (0, 1)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    a = zarr.open_group(root, mode="r")["g/s"]
    want = np.arange(1, 81)
    np.testing.assert_array_equal(a["sci"][:, 2, 3], want)
    np.testing.assert_array_equal(a["dq"][:].reshape(80, -1).min(axis=1), want)
    assert zs.completed(root, "g", "s").all()


def _tree(root, consolidated):
    """{path: attrs} of every node, read through consolidated metadata or by walking."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(root, mode="r", use_consolidated=consolidated)
        return {k: dict(v.attrs) for k, v in g.members(max_depth=None)}


def test_consolidated_metadata_never_stale(tmp_path):
    root = str(tmp_path / "c.zarr")
    _stage(root)
    zs.save_arrays(root, "e_nrs1/references", {"gain": np.ones((4, 8), np.float32)})
    zs.consolidate(root, {"nirbeam_version": "test"})
    for p in ("", "e_nrs1", "e_nrs1/rateints", "e_nrs1/references"):
        assert zs.is_consolidated(root, p), p
    assert _tree(root, True) == _tree(root, False)
    # consolidated metadata at every level: any group opens in one read
    g = zarr.open_group(root, path="e_nrs1/rateints", mode="r", use_consolidated=True)
    assert "sci" in g.metadata.consolidated_metadata.metadata
    # a later writer (a resumed run) strips it before changing anything
    _stage(root, stage="spectra")
    zs.set_attrs(root, "e_nrs1", {"late": 1})
    for p in ("", "e_nrs1", "e_nrs1/rateints"):
        assert not zs.is_consolidated(root, p), p
    seen = _tree(root, None)  # what a reader gets now: the real store
    assert "e_nrs1/spectra/sci" in seen and seen["e_nrs1"]["late"] == 1
    zs.consolidate(root)
    assert _tree(root, True) == _tree(root, False)
    assert "e_nrs1/spectra/sci" in _tree(root, True)
    assert zarr.open_group(root, mode="r").attrs["layout"] == zs.LAYOUT
    # region writes change no metadata: the consolidated view stays valid
    zs.write_integration(root, "e_nrs1", "spectra", 2, {"sci": np.ones((4, 8))})
    assert zs.is_consolidated(root) and _tree(root, True) == _tree(root, False)
    ds = _open(root, "e_nrs1/spectra", consolidated=True)
    assert float(ds["sci"][1].mean()) == 1.0 and int(ds["done"][1]) == 1


def test_unconsolidate_after_interrupted_consolidate(tmp_path):
    """Root consolidated, a subgroup not (consolidate killed half-way): strip still works."""
    root = str(tmp_path / "c.zarr")
    _stage(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(root)
    assert zs.unconsolidate(root) and not zs.is_consolidated(root)
    assert not zs.unconsolidate(root)
    root_json = json.load(open(os.path.join(root, "zarr.json")))
    assert "consolidated_metadata" not in root_json or root_json["consolidated_metadata"] is None


def test_save_arrays_dims(tmp_path):
    root = str(tmp_path / "c.zarr")
    zs.save_arrays(root, "g/references", {
        "gain": np.ones((4, 8), np.float32), "dark": np.zeros((3, 4, 8), np.float32),
        "trace": np.arange(8.0), "coeffs": np.arange(3.0), "skip": None,
    }, attrs={"sources": {"gain": "x.fits"}}, dims={"dark": ("group", "y", "x")})
    ds = _open(root, "g/references", consolidated=False)
    assert ds["gain"].dims == ("y", "x") and ds["dark"].dims == ("group", "y", "x")
    assert ds["trace"].dims == ("x",) and ds["coeffs"].dims == ("coeffs_axis0",)
    assert "skip" not in ds and ds.attrs["sources"] == {"gain": "x.fits"}
    arrays, attrs = zs.load_arrays(root, "g/references")
    assert set(arrays) == {"gain", "dark", "trace", "coeffs"}
    with pytest.raises(zs.StoreError, match="g/references/gain: 2-D array given 1 dimension"):
        zs.save_arrays(root, "g/references", {"gain": np.ones((4, 8))}, dims={"gain": ("x",)})


def test_save_lightcurves_labelled(tmp_path, rng):
    root = str(tmp_path / "c.zarr")
    n, nb = 5, 3
    edges = np.array([1.0, 1.5, 2.5, 4.0])
    flux = rng.normal(1, 0.01, (n, nb))
    c = _coords(n)
    zs.save_lightcurves(root, "g/lightcurves", flux=flux, flux_error=np.full((n, nb), 0.01),
                        dq=np.zeros((n, nb), np.uint32), bin_edges=edges,
                        white_flux=flux.sum(1), white_flux_error=np.full(n, 0.02),
                        white_dq=np.zeros(n, np.uint32), attrs={"wavelength_source": "test"}, **c)
    ds = _open(root, "g/lightcurves", consolidated=False)
    assert ds["flux"].dims == ("integration", "wavelength") and ds["white_flux"].dims == ("integration",)
    np.testing.assert_allclose(ds["wavelength"].values, [1.25, 2.0, 3.25])
    np.testing.assert_array_equal(ds["wavelength_low"].values, edges[:-1])
    np.testing.assert_array_equal(ds["wavelength_high"].values, edges[1:])
    assert {"bin_edges", "int_mid_BJD_TDB", "integration_number"} <= set(ds.coords)
    assert ds["wavelength"].attrs["units"] == "um" and ds["flux"].attrs["units"] == "DN/s"
    np.testing.assert_array_equal(ds["flux"].sel(wavelength=2.0).values, flux[:, 1])
    with pytest.raises(zs.StoreError, match="g/lightcurves: bin_edges"):
        zs.save_lightcurves(root, "g/lightcurves", flux=flux, flux_error=flux, dq=flux,
                            bin_edges=edges[:-1], **c)


def test_store_functions_on_fsspec_memory():
    root = f"memory://nirbeam-{uuid.uuid4().hex}/cubes.zarr"
    zs.forget_cache()
    _stage(root, n=3)
    zs.write_integration(root, "e_nrs1", "rateints", 2, {"sci": np.full((4, 8), 2.0), "dq": np.ones((4, 8))})
    assert zs.completed(root, "e_nrs1", "rateints").tolist() == [False, True, False]
    assert float(zs.read_integration(root, "e_nrs1", "rateints", 2, ["sci"])["sci"].mean()) == 2.0
    zs.save_arrays(root, "e_nrs1/extraction", {"profile": np.ones((4, 8))})
    zs.consolidate(root)
    assert zs.is_consolidated(root) and zs.is_consolidated(root, "e_nrs1/rateints")
    ds = _open(root, "e_nrs1/rateints", consolidated=True)
    assert ds["sci"].dims == ("integration", "y", "x") and float(ds["sci"][1].mean()) == 2.0
    _stage(root, n=3, stage="spectra")
    assert not zs.is_consolidated(root)
