"""``scan_segment``'s memo: a second scan of an unchanged file (``nirbeam run`` scans every
input twice, the mode's classification then the driver) returns the first scan's result
without parsing, equal to a fresh parse; any change of the bytes it parses (same size
included) parses again; the TSO check is still made per call; results are copies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nirbeam.stream import uncal
from nirbeam.stream.uncal import BadInputError, scan_segment

EXP = "jw01366004001_04101_00001"


@pytest.fixture
def parses(monkeypatch):
    """Count the FITS parses (fits.open calls) of scan_segment."""
    n = {"open": 0}
    real = uncal.fits.open

    def counting(*a, **k):
        n["open"] += 1
        return real(*a, **k)

    monkeypatch.setattr(uncal.fits, "open", counting)
    monkeypatch.setattr(uncal, "_SCAN_MEMO", {})
    return n


def _fresh(path, require_tso=True):
    """A scan with the memo out of the way (the reference)."""
    saved = dict(uncal._SCAN_MEMO)
    uncal._SCAN_MEMO.clear()
    try:
        return scan_segment(path, require_tso=require_tso)
    finally:
        uncal._SCAN_MEMO.clear()
        uncal._SCAN_MEMO.update(saved)


def _same(a, b):
    assert a == b  # dataclass fields (times is compare=False)
    assert a.times == b.times and a.times is not b.times
    assert dataclasses.astuple(a.meta) == dataclasses.astuple(b.meta)


def test_second_scan_is_not_parsed_and_equals_a_fresh_one(tmp_path, uncal_writer, rng, parses):
    p = str(tmp_path / f"{EXP}_nrs1_uncal.fits")
    uncal_writer(p, rng.integers(0, 65535, (3, 4, 8, 16), dtype=np.uint16))
    a = scan_segment(p, require_tso=False)
    b = scan_segment(p)
    c = scan_segment(p)
    assert parses["open"] == 1
    _same(a, b)
    _same(b, c)
    _same(c, _fresh(p))
    b.times.clear()  # a copy: the memo's own is untouched
    assert scan_segment(p).times == a.times


def test_sci_data_change_alone_keeps_the_memo(tmp_path, uncal_writer, rng, parses):
    p = str(tmp_path / f"{EXP}_nrs1_uncal.fits")
    uncal_writer(p, rng.integers(0, 65535, (3, 4, 8, 16), dtype=np.uint16))
    a = scan_segment(p)
    with open(p, "r+b") as fh:  # the scan reads no SCI byte: not a reason to parse again
        fh.seek(a.data_offset + 10)
        fh.write(b"\x12\x34")
    _same(scan_segment(p), a)
    assert parses["open"] == 1


def test_header_change_of_the_same_size_parses_again(tmp_path, uncal_writer, rng, parses):
    p = tmp_path / f"{EXP}_nrs1_uncal.fits"
    sci = rng.integers(0, 65535, (3, 4, 8, 16), dtype=np.uint16)
    uncal_writer(p, sci)
    a = scan_segment(str(p))
    data = p.read_bytes()
    i = data.index(b"NGROUPS =")
    card = data[i:i + 80]
    p.write_bytes(data[:i] + card.replace(b"   4 ", b"   5 ") + data[i + 80:])  # same size
    assert p.stat().st_size == len(data)
    with pytest.raises(BadInputError, match="NGROUPS=5"):
        scan_segment(str(p))
    assert parses["open"] == 2
    p.write_bytes(data)  # back as it was: the first scan's bytes again, its memo
    _same(scan_segment(str(p)), a)
    assert parses["open"] == 2
    # an INT_TIMES value (after SCI) changed in place: parsed again, the new times
    t = data.rindex(np.float64(a.times[2].int_mid_mjd_utc).byteswap().tobytes())
    new = np.float64(a.times[2].int_mid_mjd_utc + 1e-7).byteswap().tobytes()
    p.write_bytes(data[:t] + new + data[t + 8:])
    b = scan_segment(str(p))
    assert parses["open"] == 3
    assert b.times[2].int_mid_mjd_utc == a.times[2].int_mid_mjd_utc + 1e-7
    _same(b, _fresh(str(p)))


def test_tso_check_is_made_on_a_memo_hit(tmp_path, uncal_writer, rng, parses):
    p = str(tmp_path / f"{EXP}_nrs1_uncal.fits")
    uncal_writer(p, rng.integers(0, 65535, (2, 4, 8, 16), dtype=np.uint16),
                 header={"EXP_TYPE": "NRS_FIXEDSLIT", "TSOVISIT": False})
    scan_segment(p, require_tso=False)
    with pytest.raises(BadInputError) as hit:
        scan_segment(p)
    assert parses["open"] == 1
    with pytest.raises(BadInputError) as fresh:
        _fresh(p)
    assert str(hit.value) == str(fresh.value)
    assert "not a time-series" in str(hit.value)


def test_memo_is_bounded(tmp_path, uncal_writer, rng, parses, monkeypatch):
    monkeypatch.setattr(uncal, "_SCAN_MEMO_MAX", 2)
    paths = []
    for k in range(3):
        p = str(tmp_path / f"{EXP}-seg{k + 1:03d}_nrs1_uncal.fits")
        uncal_writer(p, rng.integers(0, 65535, (2, 4, 8, 16), dtype=np.uint16), nints_total=6,
                     intstart=2 * k + 1, segnum=k + 1, segtot=3)
        scan_segment(p)
        paths.append(p)
    assert len(uncal._SCAN_MEMO) == 2
    scan_segment(paths[2])
    assert parses["open"] == 3
    scan_segment(paths[0])  # dropped first: parsed again
    assert parses["open"] == 4
