"""REFPIX and PICTUREFRAME from the reference index (USEAFTER / READPATT selection, sha256
in the provenance the resume key reads), the PICTUREFRAME reader and the picture-frame
switch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sim.fits_writer import write_refpix_reference
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.ref_index import file_sha256, index_references, select_reference
from nirbeam.stream.refs import (
    load_irs2_reference,
    load_picture_frame_reference,
    load_references,
    read_picture_frame,
)
from nirbeam.stream.uncal import BadInputError
from nirbeam.transforms.irs2 import NALPHA

MJD_2023_02 = 59995.0  # 2023-02-20


def _meta(expstart=MJD_2023_02, **kw):
    m = ExposureMeta("e", "NRS1", "NIRSPEC", "NRS_MSASPEC", "NRSIRS2", "FULL", 1, 1,
                     2048, 2048, 1, 3, 5, 0, 14.58889, 72.94445, 145.9, nrs_norm=16,
                     nrs_ref=4)
    return dataclasses.replace(m, expstart=expstart, **kw)


def _refpix(folder, name, useafter, value, readpatt="NRSIRS2"):
    a = np.full((4, NALPHA), value, np.complex64)
    return write_refpix_reference(folder / name, {"INSTRUME": "NIRSPEC", "DETECTOR": "NRS1",
                                                  "USEAFTER": useafter}, a, a, None,
                                  readpatt=readpatt)


def _pictureframe(path, useafter="2022-01-01T00:00:00", detector="NRS1", shape=(2048, 2048)):
    ph = fits.PrimaryHDU()
    for k, v in dict(REFTYPE="PICTUREFRAME", INSTRUME="NIRSPEC", DETECTOR=detector,
                     USEAFTER=useafter, DATAMODL="PictureFrameModel", SUBARRAY="FULL").items():
        ph.header[k] = v
    t = np.full(shape, 0.1, np.float32)
    t[76:1984, 76:1984] = 1.1
    fits.HDUList([ph, fits.ImageHDU(t, name="SCI")]).writeto(path)
    return path, t


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    old = _refpix(d, "jwst_nirspec_refpix_0001.fits", "2022-01-01T00:00:00", 0.5)
    new = _refpix(d, "jwst_nirspec_refpix_0002.fits", "2023-01-01T00:00:00", 2.0)
    rapid = _refpix(d, "jwst_nirspec_refpix_0003.fits", "2024-01-01T00:00:00", 3.0,
                    readpatt="NRSIRS2RAPID")
    pf, t = _pictureframe(d / "jwst_nirspec_pictureframe_0001.fits")
    return d, {"old": old, "new": new, "rapid": rapid, "pf": pf, "template": t}


def test_refpix_is_chosen_from_the_index_by_useafter_and_readpatt(folder):
    d, f = folder
    index = index_references(str(d))
    assert {r.reftype for r in index} == {"REFPIX", "PICTUREFRAME"}
    assert select_reference(index, "REFPIX", _meta()).path == str(f["new"])
    early = _meta(expstart=59800.0)  # 2022-08: only the 2022 file applies
    assert select_reference(index, "REFPIX", early).path == str(f["old"])
    got = load_irs2_reference(str(d), early, index)
    assert got.path == str(f["old"].resolve()) and np.allclose(got.beta, 0.5)
    rapid = _meta(expstart=60500.0, readpatt="NRSIRS2RAPID")
    assert load_irs2_reference(str(d), rapid).path == str(f["rapid"].resolve())
    with pytest.raises(BadInputError, match="USEAFTER"):
        select_reference(index, "REFPIX", _meta(expstart=59000.0))


def test_refpix_sha256_in_provenance(folder):
    d, f = folder
    first = (10000 + np.random.default_rng(0).integers(0, 20, (3, 3200, 2048))).astype(np.uint16)
    refs, prov = load_references(str(d), _meta(), first_ramp=first, allow_standins=True)
    assert prov["REFPIX"]["sha256"] == file_sha256(str(f["new"]))
    assert prov["REFPIX"]["file"] == f["new"].name
    assert np.allclose(refs.irs2.beta, 2.0)
    # the picture-frame reference applies to this full frame: chosen and named
    assert prov["PICTUREFRAME"]["sha256"] == file_sha256(str(f["pf"]))


def test_picture_frame_reader(folder, tmp_path):
    d, f = folder
    t, prov = load_picture_frame_reference(str(d), _meta())
    np.testing.assert_array_equal(t, f["template"])
    assert prov["file"] == f["pf"].name and len(prov["sha256"]) == 64
    assert load_picture_frame_reference(str(d), _meta(detector="NRS2")) is None
    bad, _ = _pictureframe(tmp_path / "jwst_nirspec_pictureframe_bad.fits", shape=(64, 64))
    with pytest.raises(BadInputError, match="SCI") as e:
        read_picture_frame(str(bad))
    assert e.value.path == str(bad)


def test_picture_frame_switch_default_off_and_configurable():
    from nirbeam.stream.settings import Settings
    from nirbeam.transforms.detector1 import Detector1Params

    assert Detector1Params().picture_frame.enabled is False  # jwst 3.0: skip = True
    s = Settings.from_dict({"detector1": {"picture_frame": {"enabled": True, "n_sigma": 3.0}}})
    assert s.detector1.picture_frame.enabled and s.detector1.picture_frame.n_sigma == 3.0
    assert "picture_frame" in s.detector1.describe()


def test_picture_frame_template_through_the_store(folder, tmp_path):
    from nirbeam.stream import rate_steps
    from nirbeam.transforms.reference import ReferenceArrays

    d, f = folder
    root = str(tmp_path / "cubes.zarr")
    refs = ReferenceArrays.flat(2048, 2048, 3)
    prov = {"PICTUREFRAME": {"file": f["pf"].name, "path": str(f["pf"])}}
    rate_steps.save_refs_to_store(root, "g_nrs1", refs, prov)
    np.testing.assert_array_equal(rate_steps.picture_frame_from_store(root, "g_nrs1"),
                                  f["template"])
    rate_steps.save_refs_to_store(root, "g_nrs1", refs, {})  # none applies any more
    assert rate_steps.picture_frame_from_store(root, "g_nrs1") is None
