"""uncal reader: real layout, section reads, segments, and clear errors on bad input."""

import os

import numpy as np
import pytest

from nirbeam.stream.uncal import (
    BadInputError,
    find_uncal_files,
    parse_filename,
    plan_exposures,
    read_ramp,
    scan_segment,
)

EXP = "jw01366004001_04101_00001"


def _ramps(rng, nints, ngroups=4, ny=8, nx=16):
    return rng.integers(0, 65535, (nints, ngroups, ny, nx), dtype=np.uint16)


def _segments(tmp_path, writer, rng, nints=7, per=3, det="NRS1", **kw):
    sci = _ramps(rng, nints)
    paths = []
    segtot = -(-nints // per)
    for s in range(segtot):
        a, b = s * per, min(nints, (s + 1) * per)
        p = tmp_path / f"{EXP}-seg{s + 1:03d}_{det.lower()}_uncal.fits"
        paths.append(writer(p, sci[a:b], nints_total=nints, intstart=a + 1, segnum=s + 1,
                            segtot=segtot, detector=det, **kw))
    return sci, paths


def test_parse_filename():
    assert parse_filename(f"/a/{EXP}-seg002_nrs1_uncal.fits") == (EXP, 2, "NRS1")
    assert parse_filename(f"{EXP}_nrs2_uncal.fits") == (EXP, None, "NRS2")
    assert parse_filename("weird.fits") == ("weird", None, None)


def test_round_trip_segments_in_order(tmp_path, uncal_writer, rng):
    sci, paths = _segments(tmp_path, uncal_writer, rng)
    infos = [scan_segment(p) for p in reversed(paths)]
    (plan,) = plan_exposures(infos)
    assert plan.missing == ()
    assert [s.segnum for s in plan.segments] == [1, 2, 3]
    assert [k.integration for k in plan.keys()] == list(range(1, 8))
    for k in plan.keys():
        seg = plan.segment_of(k.integration)
        ramp = read_ramp(seg, k.integration)
        assert ramp.dtype == np.uint16 and ramp.flags.c_contiguous
        np.testing.assert_array_equal(ramp, sci[k.integration - 1])
        t = seg.times[k.integration]
        assert t.int_start_mjd_utc < t.int_mid_mjd_utc < t.int_end_mjd_utc
        assert not t.derived
    assert plan.meta.nints == 7 and plan.meta.shape == (4, 8, 16)


def test_detectors_kept_apart(tmp_path, uncal_writer, rng):
    s1, _ = _segments(tmp_path, uncal_writer, rng, det="NRS1")
    s2, _ = _segments(tmp_path, uncal_writer, rng, det="NRS2")
    plans = plan_exposures([scan_segment(p) for p in find_uncal_files([str(tmp_path)])])
    assert [p.meta.detector for p in plans] == ["NRS1", "NRS2"]
    for plan, sci in zip(plans, (s1, s2), strict=True):
        np.testing.assert_array_equal(read_ramp(plan.segment_of(5), 5), sci[4])


def test_missing_segment_reported(tmp_path, uncal_writer, rng):
    _, paths = _segments(tmp_path, uncal_writer, rng)
    (plan,) = plan_exposures([scan_segment(p) for p in (paths[0], paths[2])])
    assert plan.missing == (4, 5, 6)
    assert any("missing" in n for n in plan.notes)


def test_overlapping_segment_refused(tmp_path, uncal_writer, rng):
    _, paths = _segments(tmp_path, uncal_writer, rng)
    other = uncal_writer(tmp_path / f"{EXP}-seg009_nrs1_uncal.fits",
                         _ramps(rng, 2), nints_total=7, intstart=3, segnum=9, segtot=3)
    with pytest.raises(BadInputError, match="overlap"):
        plan_exposures([scan_segment(p) for p in [*paths, other]])


def test_identical_duplicate_used_once(tmp_path, uncal_writer, rng):
    sci, paths = _segments(tmp_path, uncal_writer, rng)
    dup_dir = tmp_path / "copy"
    dup_dir.mkdir()
    dup = dup_dir / os.path.basename(paths[1])
    dup.write_bytes(open(paths[1], "rb").read())
    (plan,) = plan_exposures([scan_segment(p) for p in [*paths, str(dup)]])
    assert len(plan.segments) == 3 and plan.missing == ()
    assert any("duplicates" in n for n in plan.notes)


def test_missing_int_times_derived_and_said(tmp_path, uncal_writer, rng):
    p = uncal_writer(tmp_path / f"{EXP}_nrs1_uncal.fits", _ramps(rng, 3), int_times=False)
    info = scan_segment(p)
    assert all(t.derived for t in info.times.values())
    mids = [info.times[i].int_mid_mjd_utc for i in (1, 2, 3)]
    assert np.all(np.diff(mids) > 0)
    assert any("no INT_TIMES" in n for n in info.notes)


@pytest.mark.parametrize(
    "case, match",
    [
        ("not_fits", "not a FITS file"),
        ("truncated", "truncated"),
        ("no_sci", r"\[SCI\].*no SCI extension"),
        ("rank3", r"\[SCI\] NAXIS.*expected 4"),
        ("float", r"\[SCI\] BITPIX.*expected uint16"),
        ("ngroups", r"\[PRIMARY\] NGROUPS"),
        ("nints", r"\[PRIMARY\] INTEND"),
        ("not_nirspec", r"INSTRUME='NIRCAM'"),
        ("not_tso", r"not a time-series"),
        ("bad_keyword", r"\[PRIMARY\] TFRAME.*not a valid float"),
    ],
)
def test_bad_input_errors_name_file_extension_keyword(tmp_path, uncal_writer, rng, case, match):
    p = tmp_path / f"{EXP}_nrs1_uncal.fits"
    sci = _ramps(rng, 2)
    if case == "not_fits":
        p.write_text("hello, this is not FITS\n" * 200)
    elif case == "truncated":
        uncal_writer(p, sci)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) - 4000])  # cuts into INT_TIMES (after SCI)
        with pytest.raises(BadInputError, match=r"\[SCI\].*truncated or corrupt"):
            scan_segment(str(p))
        p.write_bytes(data[: len(data) - 7000])  # cuts into SCI
    elif case == "no_sci":
        from astropy.io import fits
        uncal_writer(p, sci)
        with fits.open(p) as h:
            fits.HDUList([h[0].copy(), h["INT_TIMES"].copy()]).writeto(p, overwrite=True)
    elif case == "rank3":
        from astropy.io import fits
        uncal_writer(p, sci)
        with fits.open(p) as h:
            h2 = fits.HDUList([h[0].copy(), fits.ImageHDU(sci[0], name="SCI")])
            h2.writeto(p, overwrite=True)
    elif case == "float":
        from astropy.io import fits
        uncal_writer(p, sci)
        with fits.open(p) as h:
            fits.HDUList([h[0].copy(), fits.ImageHDU(sci.astype(np.float32), name="SCI")]).writeto(
                p, overwrite=True)
    elif case == "ngroups":
        uncal_writer(p, sci, header={"NGROUPS": 5})
    elif case == "nints":
        uncal_writer(p, sci, header={"INTEND": 3, "NINTS": 3})
    elif case == "not_nirspec":
        uncal_writer(p, sci, header={"INSTRUME": "NIRCAM"})
    elif case == "not_tso":
        uncal_writer(p, sci, header={"EXP_TYPE": "NRS_FIXEDSLIT", "TSOVISIT": False})
    elif case == "bad_keyword":
        uncal_writer(p, sci, header={"TFRAME": "fast"})
    with pytest.raises(BadInputError, match=match) as ei:
        scan_segment(str(p))
    assert str(p) in str(ei.value)


def test_find_uncal_files_errors(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        find_uncal_files([str(tmp_path / "nope.fits")])
    with pytest.raises(BadInputError, match="no \\*_uncal.fits"):
        find_uncal_files([str(tmp_path)])


def test_simulator_round_trip(tmp_path):
    """simulate -> read: every integration's ramp and times equal what was written."""
    from astropy.io import fits

    from nirbeam.sim.simulator import simulate

    res = simulate(tmp_path, preset="prism-sub512", nints=7, seed=9, ints_per_segment=3,
                   detectors=("NRS1", "NRS2"))
    plans = plan_exposures([scan_segment(str(p)) for p in res.uncal])
    assert [(p.meta.detector, len(p.segments), p.missing) for p in plans] == [
        ("NRS1", 3, ()), ("NRS2", 3, ())]
    for plan in plans:
        for seg in plan.segments:
            with fits.open(seg.path) as h:
                sci = h["SCI"].data
                it = h["INT_TIMES"].data
            assert sci.dtype == np.uint16
            for i in range(seg.intstart, seg.intend + 1):
                np.testing.assert_array_equal(read_ramp(seg, i), sci[i - seg.intstart])
                row = it[it["integration_number"] == i][0]
                t = seg.times[i]
                assert t.int_mid_bjd_tdb == row["int_mid_BJD_TDB"]
                assert t.int_mid_mjd_utc == row["int_mid_MJD_UTC"]
                assert t.int_start_mjd_utc == row["int_start_MJD_UTC"]
        assert plan.meta.ngroups == 5 and plan.meta.subarray == "SUB512"
