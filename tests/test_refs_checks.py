"""Reference selection and checks (issue 13.7, issue 20.4) on small synthetic CRDS files."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.refs import REFTYPES, index_references, load_references, select_reference
from nirbeam.stream.uncal import BadInputError

NY, NX, NG = 32, 512, 5
EXPSTART = 59800.0  # 2022-08-12


def meta(expstart=EXPSTART, readpatt="NRSRAPID", ngroups=NG):
    return ExposureMeta(
        exposure="jw0", detector="NRS1", instrume="NIRSPEC", exp_type="NRS_BRIGHTOBJ",
        readpatt=readpatt, subarray="SUB512", substrt1=1025, substrt2=957, subsize1=NX,
        subsize2=NY, nints=4, ngroups=ngroups, nframes=1, groupgap=0, tframe=0.22616,
        tgroup=0.22616, effinttm=0.9, expstart=expstart,
    )


def write_ref(path, reftype, *, value=None, useafter="2015-01-01T00:00:00", readpatt="ANY",
              full=False, planes=NG, **cards):
    ny, nx = (2048, 2048) if full else (NY, NX)
    h = {"REFTYPE": reftype, "INSTRUME": "NIRSPEC", "DETECTOR": "NRS1", "READPATT": readpatt,
         "SUBARRAY": "FULL" if full else "SUB512", "SUBSTRT1": 1 if full else 1025,
         "SUBSTRT2": 1 if full else 957, "SUBSIZE1": nx, "SUBSIZE2": ny, "USEAFTER": useafter,
         "NFRAMES": 1, "GROUPGAP": 0, **cards}
    ph = fits.PrimaryHDU(header=fits.Header(h))
    default = {"MASK": 0, "SATURATION": 60000.0, "SUPERBIAS": 12000.0, "READNOISE": 14.0,
               "GAIN": 1.4, "DARK": 0.01, "LINEARITY": None}[reftype]
    v = default if value is None else value
    if reftype == "MASK":
        hdus = [fits.ImageHDU(np.full((ny, nx), v, np.uint32), name="DQ")]
    elif reftype == "LINEARITY":
        c = np.zeros((3, ny, nx), np.float32)
        c[1] = 1.0
        hdus = [fits.ImageHDU(c, name="COEFFS")]
    elif reftype == "DARK":
        hdus = [fits.ImageHDU(np.full((planes, ny, nx), v, np.float32), name="SCI")]
    else:
        hdus = [fits.ImageHDU(np.full((ny, nx), v, np.float32), name="SCI")]
    fits.HDUList([ph, *hdus]).writeto(path, overwrite=True)
    return path


@pytest.fixture
def refdir(tmp_path):
    d = tmp_path / "crds"
    d.mkdir()
    for t in REFTYPES:
        write_ref(d / f"jwst_nirspec_{t.lower()}_0001.fits", t)
    return d


RAMP = np.full((NG, NY, NX), 12000, np.uint16)


def test_complete_folder_loads_without_standins(refdir):
    refs, prov = load_references(str(refdir), meta(), first_ramp=RAMP)
    assert all("sha256" in prov[t] for t in REFTYPES)
    assert float(refs.gain[0, 0]) == pytest.approx(1.4)


def test_useafter_newest_not_after_expstart(refdir):
    write_ref(refdir / "jwst_nirspec_gain_0002.fits", "GAIN", value=1.6, useafter="2022-07-01T00:00:00")
    write_ref(refdir / "jwst_nirspec_gain_0003.fits", "GAIN", value=1.8, useafter="2023-01-01T00:00:00")
    idx = index_references(str(refdir))
    assert select_reference(idx, "GAIN", meta()).path.endswith("_0002.fits")
    assert select_reference(idx, "GAIN", meta(expstart=60000.0)).path.endswith("_0003.fits")
    assert select_reference(idx, "GAIN", meta(expstart=57100.0)).path.endswith("_0001.fits")
    with pytest.raises(BadInputError, match="USEAFTER later than the exposure start"):
        select_reference(idx, "GAIN", meta(expstart=50000.0))


def test_readpatt_applies_to_every_type(refdir):
    write_ref(refdir / "jwst_nirspec_gain_0002.fits", "GAIN", value=1.6, readpatt="NRSIRS2",
              useafter="2022-07-01T00:00:00")
    idx = index_references(str(refdir))
    assert select_reference(idx, "GAIN", meta()).path.endswith("_0001.fits")
    assert select_reference(idx, "GAIN", meta(readpatt="NRSIRS2")).path.endswith("_0002.fits")


def test_identical_copies_are_not_a_conflict_but_different_files_are(refdir):
    shutil.copy(refdir / "jwst_nirspec_gain_0001.fits", refdir / "jwst_nirspec_gain_copy.fits")
    idx = index_references(str(refdir))
    assert select_reference(idx, "GAIN", meta()).path.endswith("_0001.fits")
    write_ref(refdir / "jwst_nirspec_gain_copy.fits", "GAIN", value=1.5)
    with pytest.raises(BadInputError, match=r"gain_0001.fits and .*gain_copy.fits"):
        select_reference(index_references(str(refdir)), "GAIN", meta())


def test_missing_type_needs_opt_in_and_says_the_cost(refdir):
    (refdir / "jwst_nirspec_linearity_0001.fits").unlink()
    with pytest.raises(BadInputError, match=r"no LINEARITY reference .*--allow-standins.*biased"):
        load_references(str(refdir), meta(), first_ramp=RAMP)
    _, prov = load_references(str(refdir), meta(), first_ramp=RAMP, allow_standins=True)
    assert "standin" in prov["LINEARITY"] and "biased" in prov["LINEARITY"]["cost"]


def test_short_dark_refused_or_skipped_as_jwst(refdir):
    write_ref(refdir / "jwst_nirspec_dark_0001.fits", "DARK", planes=3)
    with pytest.raises(BadInputError, match=r"dark has 3 groups .*NGROUPS=5.*dark_current step skips"):
        load_references(str(refdir), meta(), first_ramp=RAMP)
    refs, prov = load_references(str(refdir), meta(), first_ramp=RAMP, allow_standins=True)
    assert refs.dark is None and "dark not subtracted" in prov["DARK"]["standin"]


def test_full_frame_dark_is_read_as_a_section(tmp_path, refdir):
    """A full-frame 2048x2048 dark of 8 frames (128 MiB): only the science window of the
    frames the exposure needs is read (peak allocation far below one full frame)."""
    (refdir / "jwst_nirspec_dark_0001.fits").unlink()
    frames = 8
    path = refdir / "jwst_nirspec_dark_full.fits"
    cube = np.zeros((frames, 2048, 2048), np.float32)
    cube += (np.arange(frames, dtype=np.float32) * 0.01)[:, None, None]
    cube[:, 956:988, 1024:1536] += np.arange(NX, dtype=np.float32) * 1e-4
    write_ref(path, "DARK", full=True, planes=frames)
    with fits.open(path, mode="update") as h:
        h["SCI"].data[:] = cube
    del cube
    tracemalloc.start()
    refs, prov = load_references(str(refdir), meta(), first_ramp=RAMP)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert prov["DARK"]["file"] == path.name
    expect = (np.arange(NG, dtype=np.float32) * 0.01)[:, None, None] + np.arange(NX, dtype=np.float32) * 1e-4
    np.testing.assert_allclose(refs.dark, np.broadcast_to(expect, (NG, NY, NX)), rtol=0, atol=1e-6)
    one_frame = 2048 * 2048 * 4
    assert peak < one_frame / 2, f"peak {peak / 2**20:.1f} MiB while loading references"


def test_nan_gain_refused_partial_nan_flagged(refdir):
    p = refdir / "jwst_nirspec_gain_0001.fits"
    with fits.open(p, mode="update") as h:
        h["SCI"].data[:4] = np.nan  # 4 of 32 rows
    refs, prov = load_references(str(refdir), meta(), first_ramp=RAMP)
    assert prov["GAIN"]["bad_pixels"] == 4 * NX and np.all(refs.mask[:4] & 1)
    with fits.open(p, mode="update") as h:
        h["SCI"].data[:] = np.nan
    with pytest.raises(BadInputError, match="mostly unusable"):
        load_references(str(refdir), meta(), first_ramp=RAMP)


def test_other_instruments_and_broken_files_in_a_cache_do_not_block(refdir):
    """A CRDS cache holds every instrument's files: a MIRI 4-D DARK, which breaks the NIRSpec
    DARK layout, and a FITS file too broken to open do not stop a NIRSpec run; the broken
    file is named once a type turns out to be missing."""
    ph = fits.PrimaryHDU(header=fits.Header({"REFTYPE": "DARK", "INSTRUME": "MIRI",
                                             "DETECTOR": "MIRIMAGE", "SUBARRAY": "FULL"}))
    fits.HDUList([ph, fits.ImageHDU(np.zeros((2, 3, 16, 16), np.float32), name="SCI")]).writeto(
        refdir / "jwst_miri_dark_0001.fits")
    (refdir / "jwst_nirspec_gain_broken.fits").write_bytes(b"SIMPLE  =" + b"x" * 100)
    refs, prov = load_references(str(refdir), meta(), first_ramp=RAMP)
    assert prov["DARK"]["file"] == "jwst_nirspec_dark_0001.fits"
    (refdir / "jwst_nirspec_gain_0001.fits").unlink()
    with pytest.raises(BadInputError, match=r"no GAIN reference .*could not be read: .*gain_broken"):
        load_references(str(refdir), meta(), first_ramp=RAMP)
