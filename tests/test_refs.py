"""CRDS reference files: selection, cutting to the subarray, DQ translation, stand-ins."""

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from conftest import require_shared, shared_path

from nirbeam import dqflags
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.refs import index_references, load_references, select_reference
from nirbeam.stream.uncal import BadInputError

CRDS = os.path.abspath(os.environ.get("NIRBEAM_SHARED_CRDS", shared_path("crds")))
SB = os.path.join(CRDS, "jwst_nirspec_superbias_0075.fits")
DARK = os.path.join(CRDS, "jwst_nirspec_dark_0046.fits")


@pytest.fixture(autouse=True)
def _shared_crds():
    require_shared(SB, DARK)  # skipped locally without the shared data, failed in CI


def meta(substrt1=1025, substrt2=957, nx=512, ny=32, subarray="SUB512", ngroups=5, det="NRS1"):
    return ExposureMeta(
        exposure="jw0", detector=det, instrume="NIRSPEC", exp_type="NRS_BRIGHTOBJ",
        readpatt="NRSRAPID", subarray=subarray, substrt1=substrt1, substrt2=substrt2,
        subsize1=nx, subsize2=ny, nints=10, ngroups=ngroups, nframes=1, groupgap=0,
        tframe=0.22616, tgroup=0.22616, effinttm=0.9,
    )


def test_real_superbias_and_dark_load_full_subarray():
    ramp = np.full((5, 32, 512), 12000, np.uint16)
    refs, prov = load_references(CRDS, meta(), first_ramp=ramp, allow_standins=True)
    sb = fits.getdata(SB, "SCI")
    dk = fits.getdata(DARK, "SCI")
    np.testing.assert_array_equal(refs.superbias, sb)
    np.testing.assert_array_equal(refs.dark, dk[:5])
    assert prov["SUPERBIAS"]["file"] == "jwst_nirspec_superbias_0075.fits"
    assert len(prov["DARK"]["sha256"]) == 64
    assert "standin" in prov["GAIN"] and "standin" in prov["READNOISE"]


def test_real_references_cut_to_a_smaller_subarray():
    m = meta(substrt1=1025 + 100, substrt2=957 + 8, nx=64, ny=16, subarray="GENERIC")
    refs, _ = load_references(CRDS, m, first_ramp=np.full((5, 16, 64), 12000, np.uint16),
                              allow_standins=True)
    sb = fits.getdata(SB, "SCI")
    dk = fits.getdata(DARK, "SCI")
    np.testing.assert_array_equal(refs.superbias, sb[8:24, 100:164])
    np.testing.assert_array_equal(refs.dark, dk[:5, 8:24, 100:164])


def test_dq_translated_through_dq_def():
    refs, _ = load_references(CRDS, meta(), first_ramp=np.full((5, 32, 512), 1, np.uint16),
                              allow_standins=True)
    raw = fits.getdata(SB, "DQ").astype(np.uint32)
    # superbias DQ_DEF: bit value 2 is UNRELIABLE_BIAS, 1 is DO_NOT_USE
    expect = np.zeros_like(raw)
    expect[(raw & 1) != 0] |= dqflags.DO_NOT_USE
    expect[(raw & 2) != 0] |= dqflags.UNRELIABLE_BIAS
    np.testing.assert_array_equal(refs.superbias_dq, expect)
    draw = fits.getdata(DARK, "DQ").astype(np.uint32)
    hot = (draw & 4) != 0  # DQ_3 = HOT in this file's DQ_DEF
    assert np.all((refs.dark_dq[hot] & dqflags.HOT) != 0)
    assert not np.any((refs.dark_dq[~hot] & dqflags.HOT) != 0)


def test_refuses_when_no_reference_covers_the_subarray():
    m = meta(substrt1=1, substrt2=1, nx=2048, ny=32, subarray="SUB2048")
    with pytest.raises(BadInputError, match=r"no (SUPERBIAS|DARK) reference covers subarray SUB2048"):
        load_references(CRDS, m, first_ramp=np.zeros((5, 32, 2048), np.uint16))


def test_other_detector_is_not_used(tmp_path):
    m = meta(det="NRS2")
    idx = index_references(CRDS)
    assert select_reference(idx, "SUPERBIAS", m) is None


def test_dark_with_too_few_groups_skipped_with_opt_in():
    # without --allow-standins it is refused (tests/test_badinput_catalogue.py)
    refs, prov = load_references(CRDS, meta(ngroups=12), first_ramp=np.zeros((12, 32, 512), np.uint16),
                                 allow_standins=True)
    assert refs.dark is None
    assert "dark has 10 groups" in prov["DARK"]["standin"] and "NGROUPS=12" in prov["DARK"]["standin"]
    assert "dark not subtracted" in refs.sources["DARK"]


def test_nan_in_reference_flagged_not_propagated(tmp_path):
    d = tmp_path / "crds"
    d.mkdir()
    shutil.copy(SB, d)
    with fits.open(d / os.path.basename(SB), mode="update") as h:
        h["SCI"].data[3, 7] = np.nan
    refs, prov = load_references(str(d), meta(), first_ramp=np.full((5, 32, 512), 1, np.uint16),
                                 allow_standins=True)
    assert np.isfinite(refs.superbias).all()
    assert refs.superbias_dq[3, 7] & dqflags.UNRELIABLE_BIAS
    assert refs.superbias_dq[3, 7] & dqflags.DO_NOT_USE
    assert prov["SUPERBIAS"]["nan_pixels"] == 1


def test_full_frame_reference_cut(tmp_path):
    full = 1 + np.arange(2048 * 2048, dtype=np.float32).reshape(2048, 2048) * 1e-7  # e-/DN
    ph = fits.Header({"REFTYPE": "GAIN", "INSTRUME": "NIRSPEC", "DETECTOR": "NRS1",
                      "SUBARRAY": "FULL", "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 2048,
                      "SUBSIZE2": 2048})
    fits.HDUList([fits.PrimaryHDU(header=ph), fits.ImageHDU(full, name="SCI")]).writeto(
        tmp_path / "jwst_nirspec_gain_0001.fits")
    shutil.copy(SB, tmp_path)
    refs, prov = load_references(str(tmp_path), meta(), first_ramp=np.ones((5, 32, 512), np.uint16),
                                 allow_standins=True)
    np.testing.assert_array_equal(refs.gain, full[956:988, 1024:1536])
    assert prov["GAIN"]["file"] == "jwst_nirspec_gain_0001.fits"
