"""IRS2 full-frame exposures: layout, reader, REFPIX reference, the reference correction
against jwst's own functions, the simulator and detector1 on an IRS2 record (issue 15)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sim import irs2 as sim_irs2
from nirbeam.sim.fits_writer import UncalSegmentWriter, write_refpix_reference
from nirbeam.stream.uncal import BadInputError, read_ramp, scan_segment
from nirbeam.transforms import irs2

FIXTURE = Path(__file__).parent / "data" / "irs2_jwst.npz"
HAVE_JWST = importlib.util.find_spec("jwst") is not None


# ---------------------------------------------------------------------------------------
# layout


def test_normal_mask_layout():
    m = irs2.normal_mask()
    assert m.shape == (3200,) and m.sum() == 2048
    assert not m[:640].any()  # the reference output
    for k in range(1, 5):
        sec = m[640 * k:640 * (k + 1)]
        assert sec.sum() == 512
        refs = np.flatnonzero(~sec)
        # 32 reads of 4 samples, the first 8 samples in, one every 20
        assert refs.size == 128
        np.testing.assert_array_equal(refs.reshape(32, 4)[:, 0], 8 + 20 * np.arange(32))
        np.testing.assert_array_equal(np.diff(refs.reshape(32, 4), axis=1), 1)
    if HAVE_JWST:
        from jwst.refpix.irs2_subtract_reference import make_irs2_mask

        np.testing.assert_array_equal(make_irs2_mask(3200, 2048, 16, 4), m)


def test_to_normal_orientation():
    a = np.arange(3200)[None, :, None] * np.ones((1, 1, 3))
    keep = irs2.normal_mask()
    np.testing.assert_array_equal(irs2.to_normal(a, "NRS1")[0, :, 0], np.flatnonzero(keep))
    # NRS2: DMS y runs against the detector's fast axis
    np.testing.assert_array_equal(irs2.to_normal(a, "NRS2")[0, :, 0],
                                  np.sort(3199 - np.flatnonzero(keep)))


def test_time_slots_are_a_row_of_distinct_times():
    s = sim_irs2.time_slots()
    for k in range(5):
        assert np.unique(s[k]).size == 640 and s[k].max() < 712 - 8
    assert s[1, 0] == 0 and s[2, -1] == 0  # outputs alternate their read direction


# ---------------------------------------------------------------------------------------
# the correction against jwst


def _check_against_jwst(det):
    ng = {"NRS1": 3, "NRS2": 2}[det]
    data, ref = sim_irs2.comparison_case(ngroups=ng)
    mine = irs2.subtract_reference_irs2(data, ref, det)
    assert mine.shape == (ng, 2048, 2048) and mine.dtype == np.float32
    raw_normal = irs2.to_normal(data, det)
    corr_rms = float(np.std(raw_normal - mine))
    assert corr_rms > 1.0  # the correction does something (DN)
    if HAVE_JWST:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
        from irs2_jwst_fixture import jwst_correct

        jw, bad = jwst_correct(data, ref, det)
        got, want = mine, jw
    else:
        fx = np.load(FIXTURE)
        g, y, x = fx[f"{det}_pos"].T
        got, want, bad = mine[g, y, x], fx[f"{det}_values"], fx[f"{det}_bad_rows"]
    got, want = got.astype(np.float64), want.astype(np.float64)
    # 1e-5 relative, and far below the correction itself
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    assert np.max(np.abs(got - want)) < 1e-4 * corr_rms
    np.testing.assert_array_equal(np.flatnonzero(irs2.bad_reference_rows(data)), bad)


@pytest.mark.parametrize("det", ["NRS1", "NRS2"])
def test_reference_correction_equals_jwst(det):
    _check_against_jwst(det)


# ---------------------------------------------------------------------------------------
# the REFPIX reference in its CRDS layout


def test_refpix_reference_roundtrip(tmp_path):
    from nirbeam.stream.records import ExposureMeta
    from nirbeam.stream.refs import load_irs2_reference

    ref = sim_irs2.comparison_reference()
    dq = {"output": ref.dq_output, "odd_even": ref.dq_odd_even, "mask": ref.dq_mask}
    p = write_refpix_reference(tmp_path / "jwst_nirspec_refpix_0001.fits",
                               {"INSTRUME": "NIRSPEC", "DETECTOR": "NRS1"}, ref.alpha,
                               ref.beta, dq)
    meta = ExposureMeta("e", "NRS1", "NIRSPEC", "NRS_MSASPEC", "NRSIRS2", "FULL", 1, 1,
                        2048, 2048, 1, 3, 5, 0, 14.58889, 72.94445, 145.9, nrs_norm=16,
                        nrs_ref=4)
    back = load_irs2_reference(str(tmp_path), meta)
    np.testing.assert_array_equal(back.alpha, ref.alpha)
    np.testing.assert_array_equal(back.beta, ref.beta)
    np.testing.assert_array_equal(back.dq_mask, ref.dq_mask)
    np.testing.assert_array_equal(back.dq_output, ref.dq_output)
    other = dataclasses.replace(meta, detector="NRS2")
    assert load_irs2_reference(str(tmp_path), other) is None
    # through load_references: chosen for the IRS2 exposure, stand-in only when allowed
    from nirbeam.stream.refs import load_references

    first = (10000 + np.random.default_rng(0).integers(0, 20, (3, 3200, 2048))).astype(np.uint16)
    refs, prov = load_references(str(tmp_path), meta, first_ramp=first, allow_standins=True)
    assert refs.shape == (2048, 2048) and refs.irs2 is not None
    assert prov["REFPIX"]["file"] == p.name
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="REFPIX") as e:
        load_references(str(empty), meta, first_ramp=first, allow_standins=False)
    assert e.value.keyword == "REFTYPE"
    refs0, prov0 = load_references(str(empty), meta, first_ramp=first, allow_standins=True)
    assert refs0.irs2 is None and "standin" in prov0["REFPIX"]
    out = irs2.correct_ramp(first, refs0, meta)  # the stand-in: normal samples, unchanged
    np.testing.assert_array_equal(out, irs2.to_normal(first, "NRS1"))
    lost = dataclasses.replace(refs, irs2=None)  # named but not delivered: refused
    with pytest.raises(ValueError, match="REFPIX"):
        irs2.correct_ramp(first, lost, meta)

    pytest.importorskip("stdatamodels")
    from stdatamodels.jwst import datamodels

    with datamodels.IRS2Model(str(p)) as m:  # the layout stdatamodels reads
        np.testing.assert_array_equal(m.irs2_table["alpha_2"][:4],
                                      [ref.alpha[2, 0].real, ref.alpha[2, 0].imag,
                                       ref.alpha[2, 1].real, ref.alpha[2, 1].imag])
        np.testing.assert_array_equal(m.dq_table["mask"], ref.dq_mask)


# ---------------------------------------------------------------------------------------
# reader


def _primary(**kw):
    h = fits.Header()
    base = dict(TELESCOP="JWST", INSTRUME="NIRSPEC", DETECTOR="NRS1", EXP_TYPE="NRS_MSASPEC",
                READPATT="NRSIRS2", NRS_NORM=16, NRS_REF=4, SUBARRAY="FULL", SUBSTRT1=1,
                SUBSTRT2=1, SUBSIZE1=2048, SUBSIZE2=2048, NINTS=1, NGROUPS=2, NFRAMES=5,
                GROUPGAP=0, TFRAME=14.58889, TGROUP=72.94445, EFFINTTM=72.94445,
                EXPSTART=60000.0)
    base.update(kw)
    for k, v in base.items():
        h[k] = v
    return h


@pytest.fixture(scope="module")
def irs2_file(tmp_path_factory):
    """A simulated 1-integration, 2-group NRSIRS2 file and its traditional cube."""
    d = tmp_path_factory.mktemp("irs2")
    cube = (10000 + np.arange(2)[:, None, None] * 300
            + np.zeros((1, 2048, 2048))).astype(np.uint16)
    path = d / "jw99999001001_01101_00001_nrs1_uncal.fits"
    w = UncalSegmentWriter(path, _primary(), (1, 2, 2048, 2048), readout="NRSIRS2", seed=4)
    w.write(cube)
    w.close()
    return path, cube


def test_reader_reads_irs2_layout(irs2_file):
    path, cube = irs2_file
    info = scan_segment(str(path), require_tso=False)
    assert info.meta.shape == (2, 2048, 2048) and info.meta.image_shape == (2048, 2048)
    assert (info.meta.readpatt, info.meta.nrs_norm, info.meta.nrs_ref) == ("NRSIRS2", 16, 4)
    ramp = read_ramp(info, 1)
    assert ramp.shape == (2, 3200, 2048) and ramp.dtype == np.uint16
    with fits.open(path) as h:
        assert h["SCI"].data.shape == (1, 2, 3200, 2048)
        np.testing.assert_array_equal(h["SCI"].data[0], ramp)
    # the normal samples hold the cube plus read noise; the reference output the bias only
    normal = irs2.to_normal(ramp, "NRS1").astype(float)
    assert abs(np.median(normal[1] - normal[0]) - 300) < 1
    assert abs(np.median(ramp[1, :640]) - np.median(ramp[0, :640])) < 1


def _tiny(tmp_path, name, shape, **kw):
    p = tmp_path / name
    sci = fits.ImageHDU(np.zeros(shape, np.uint16), name="SCI")
    fits.HDUList([fits.PrimaryHDU(header=_primary(**kw)), sci]).writeto(p)
    return str(p)


def test_reader_errors_name_file_extension_keyword(tmp_path):
    p = _tiny(tmp_path, "a_nrs1_uncal.fits", (1, 2, 100, 2048))
    with pytest.raises(BadInputError, match=r"\[SCI\] NAXIS2.*2048 x 3200") as e:
        scan_segment(p, require_tso=False)
    assert "a_nrs1_uncal.fits" in str(e.value)
    p = _tiny(tmp_path, "b_nrs1_uncal.fits", (1, 2, 32, 2048), SUBARRAY="SUB32",
              SUBSIZE2=32)
    with pytest.raises(BadInputError, match=r"\[PRIMARY\] SUBARRAY.*full frame"):
        scan_segment(p, require_tso=False)
    p = _tiny(tmp_path, "c_nrs1_uncal.fits", (1, 2, 100, 2048), NRS_NORM=15)
    with pytest.raises(BadInputError, match=r"NRS_NORM"):
        scan_segment(p, require_tso=False)


def test_irs2_without_subsize_keywords(tmp_path):
    p = tmp_path / "e_nrs1_uncal.fits"
    h = _primary(NGROUPS=1)
    del h["SUBSIZE1"], h["SUBSIZE2"], h["SUBSTRT1"], h["SUBSTRT2"]
    fits.HDUList([fits.PrimaryHDU(header=h),
                  fits.ImageHDU(np.zeros((1, 1, 3200, 2048), np.uint16), name="SCI")]).writeto(p)
    info = scan_segment(str(p), require_tso=False)
    assert info.meta.image_shape == (2048, 2048)
    assert read_ramp(info, 1).shape == (1, 3200, 2048)


def test_traditional_full_frame_still_read(tmp_path):
    p = _tiny(tmp_path, "d_nrs1_uncal.fits", (1, 2, 2048, 2048), READPATT="NRSRAPID")
    info = scan_segment(p, require_tso=False)
    assert read_ramp(info, 1).shape == (2, 2048, 2048)


# ---------------------------------------------------------------------------------------
# detector1 on an IRS2 record


def test_detector1_on_irs2_record(irs2_file):
    from nirbeam.core.records import IntegrationKey, IntegrationRecord, IntTimes
    from nirbeam.transforms.detector1 import calibrate_record
    from nirbeam.transforms.reference import ReferenceArrays

    path, cube = irs2_file
    info = scan_segment(str(path), require_tso=False)
    rec = IntegrationRecord(IntegrationKey("e", "NRS1", 1), info.meta,
                            IntTimes(*(60000.0,) * 6), ramp=read_ramp(info, 1))
    flat = ReferenceArrays.flat(2048, 2048, 2, bias=0.0, readnoise=8.0)
    out = {}
    for name, ref in (("corrected", sim_irs2.matched_reference()), ("standin", None)):
        refs = dataclasses.replace(flat, irs2=ref)
        r = calibrate_record(rec, refs)
        assert r.rate.shape == (2048, 2048)
        out[name] = r.rate[4:-4, 4:-4].astype(np.float64)
    want = 300 / info.meta.tgroup
    for rate in out.values():
        assert abs(np.median(rate) - want) < 0.02 * want
    # the interleaved references take the 1/f noise out: the per-detector-row stripes of
    # the rate image (DMS columns) shrink
    stripes = {k: np.median(v, axis=0).std() for k, v in out.items()}
    assert stripes["corrected"] < 0.5 * stripes["standin"]
