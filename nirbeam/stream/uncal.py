"""Reader for JWST level-1b ``uncal`` FITS segments, one integration at a time.

The boundary between files and records: headers and INT_TIMES become an
:class:`~nirbeam.stream.records.ExposureMeta` and :class:`IntTimes` rows; the SCI cube is
never loaded whole. One integration is read by a memory map of exactly its bytes
(``(ngroups, ny, nx)`` big-endian uint16), so memory per integration is its own size.

Every problem raises :class:`BadInputError` naming the file, the extension, the keyword
and what was expected.

Size note: over 600 lines on purpose: one reader of one format (level-1b segments, traditional and IRS2): header checks, segment planning and memory-mapped ramp reads share the same error messages; the IRS2 layout is in irs2_layout.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from nirbeam.stream import irs2_layout as _irs2_layout
from nirbeam.stream.records import ExposureMeta, IntegrationKey, IntTimes

__all__ = [
    "BadInputError",
    "SegmentInfo",
    "ExposurePlan",
    "parse_filename",
    "scan_segment",
    "plan_exposures",
    "read_ramp",
    "find_uncal_files",
]

_NAME_RE = re.compile(
    r"^(?P<exposure>.+?)(?:-seg(?P<seg>\d{3}))?_(?P<det>nrs1|nrs2|nrs\w*|[a-z]+\d*)_(?P<suffix>uncal)\.fits$",
    re.IGNORECASE,
)

SECONDS_PER_DAY = 86400.0
TT_MINUS_UTC_S = 69.184  # 37 leap seconds + 32.184 s, valid since 2017


class BadInputError(ValueError):
    """An input file (or set of files) that cannot be processed as given."""

    def __init__(self, path, message, extension=None, keyword=None):
        self.path = str(path)
        self.extension = extension
        self.keyword = keyword
        where = self.path
        if extension:
            where += f"[{extension}]"
        if keyword:
            where += f" {keyword}"
        super().__init__(f"{where}: {message}")


def parse_filename(path: str) -> tuple[str, int | None, str | None]:
    """Return (exposure id, segment number or None, detector or None) from a file name.

    ``jw01366004001_04101_00001-seg002_nrs1_uncal.fits`` gives
    ``("jw01366004001_04101_00001", 2, "NRS1")``. Names that do not follow the JWST
    pattern give (root without ``.fits``, None, None).
    """
    name = os.path.basename(str(path))
    m = _NAME_RE.match(name)
    if not m:
        root = name[:-5] if name.lower().endswith(".fits") else name
        return root, None, None
    seg = int(m["seg"]) if m["seg"] else None
    return m["exposure"], seg, m["det"].upper()


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment holds, from its headers (no pixel data read).

    Attributes
    ----------
    path : str
    meta : ExposureMeta
    segnum : int
        EXSEGNUM (1 for unsegmented files).
    intstart, intend : int
        1-based inclusive integration range of the exposure held by this file.
    data_offset : int
        Byte offset of the SCI data in the file.
    times : dict
        integration number -> IntTimes for this segment's integrations.
    notes : tuple of str
        Things the reader substituted or repaired (e.g. derived times), for provenance.
    bad_times : tuple of (int, str)
        Integrations whose INT_TIMES row failed a check, with the reason: their times are
        interpolated from the good rows and the integration is flagged DO_NOT_USE.
    """

    path: str
    meta: ExposureMeta
    segnum: int
    intstart: int
    intend: int
    data_offset: int
    sci_bitpix: int
    times: dict = field(hash=False, compare=False)
    notes: tuple[str, ...] = ()
    bad_times: tuple[tuple[int, str], ...] = ()

    @property
    def nints(self) -> int:
        """Integrations held in this segment."""
        return self.intend - self.intstart + 1

    @property
    def integration_bytes(self) -> int:
        """Bytes of one integration's ramp on disk."""
        g, y, x = _irs2_layout.raw_shape(self.meta)
        return g * y * x * 2


def _kw(header, key, path, ext, kind=None, default=...):
    if key not in header:
        if default is not ...:
            return default
        raise BadInputError(path, f"missing keyword {key}", ext, key)
    val = header[key]
    if kind is not None:
        try:
            val = kind(val)
        except (TypeError, ValueError):
            raise BadInputError(
                path, f"keyword {key}={val!r} is not a valid {kind.__name__}", ext, key
            ) from None
    return val


def _find_ext(hdul, name):
    for i, h in enumerate(hdul):
        if h.name.upper() == name:
            return i
    return None


#: Segments scanned in this process: absolute path -> (stat, sha256 of every byte outside
#: the SCI cube, SegmentInfo, the primary keywords of the TSO check). ``nirbeam run`` scans
#: every input twice (the mode's classification, then the driver); the second scan of an
#: unchanged file is this memo. Bounded (:data:`_SCAN_MEMO_MAX`, oldest dropped first).
_SCAN_MEMO: dict[str, tuple] = {}
_SCAN_MEMO_MAX = 256
_SCAN_MEMO_LOCK = threading.Lock()


def _stat_key(st) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _outside_sci_digest(path: str, size: int, info: SegmentInfo) -> bytes:
    """sha256 of every byte of the file outside the SCI cube's data: all that
    :func:`scan_segment` parses (headers, INT_TIMES and any other extension); with the
    same size, the same bytes there give the same scan."""
    import hashlib

    sci_end = info.data_offset + info.integration_bytes * info.nints
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(info.data_offset))
        fh.seek(sci_end)
        h.update(fh.read(max(size - sci_end, 0)))
    return h.digest()


def _scan_memo_get(path: str, st) -> tuple | None:
    with _SCAN_MEMO_LOCK:
        hit = _SCAN_MEMO.get(os.path.abspath(path))
    if hit is None or hit[0][2] != st.st_size:
        return None
    try:
        same = _outside_sci_digest(path, st.st_size, hit[2]) == hit[1]
    except OSError:
        return None
    return hit if same else None


def _scan_memo_put(path: str, st, info: SegmentInfo, tso_keys: tuple) -> None:
    """Remember a scan whose file did not change while it was scanned (same stat before the
    parse and after the digest; otherwise nothing is remembered)."""
    try:
        digest = _outside_sci_digest(path, st.st_size, info)
        after = os.stat(path)
    except OSError:
        return
    if _stat_key(after) != _stat_key(st):
        return
    key = os.path.abspath(path)
    with _SCAN_MEMO_LOCK:
        _SCAN_MEMO.pop(key, None)
        while len(_SCAN_MEMO) >= _SCAN_MEMO_MAX:
            _SCAN_MEMO.pop(next(iter(_SCAN_MEMO)))
        _SCAN_MEMO[key] = (_stat_key(st), digest, info, tso_keys)


def scan_segment(path: str, *, require_tso: bool = True) -> SegmentInfo:
    """Read and validate one uncal file's headers and INT_TIMES.

    A file scanned before in this process with the same size and the same bytes outside
    the SCI cube (sha256 of them, read again each time: all that the scan parses) is not
    parsed again: its earlier result is returned (a copy; the TSO check made as
    ``require_tso`` asks).

    Parameters
    ----------
    path : str
        An uncal FITS file.
    require_tso : bool
        Refuse files that are not NIRSpec time-series (EXP_TYPE NRS_BRIGHTOBJ or TSOVISIT).

    Raises
    ------
    BadInputError
        Naming file, extension and keyword for any inconsistency.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise BadInputError(path, "no such file")
    st = os.stat(path)
    hit = _scan_memo_get(path, st)
    if hit is not None:
        if require_tso:
            _check_tso(path, *hit[3])
        return dataclasses.replace(hit[2], times=dict(hit[2].times))
    size = st.st_size
    with open(path, "rb") as fh:
        head = fh.read(30)
    if not head.startswith(b"SIMPLE  =") or size < 2880:
        raise BadInputError(path, f"not a FITS file (starts with {head[:20]!r}, {size} bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except Exception as exc:  # astropy raises several types for broken files
        raise BadInputError(path, f"cannot be opened as FITS ({exc})") from None
    with hdul:
        info, tso_keys = _scan_open(hdul, path, size, require_tso)
    _scan_memo_put(path, st, info, tso_keys)
    return dataclasses.replace(info, times=dict(info.times))


def _check_tso(path, instrume, exp_type, tsovisit):
    """The ``require_tso`` check: INSTRUME NIRSPEC and EXP_TYPE NRS_BRIGHTOBJ or TSOVISIT
    (``tsovisit``: the primary header's value, None when absent)."""
    if instrume != "NIRSPEC":
        raise BadInputError(
            path, f"INSTRUME={instrume!r}; the TSO pipeline expects 'NIRSPEC'", "PRIMARY", "INSTRUME"
        )
    tso = bool(tsovisit) or exp_type == "NRS_BRIGHTOBJ"
    if not tso:
        raise BadInputError(
            path,
            f"EXP_TYPE={exp_type!r} and TSOVISIT={tsovisit!r}: not a time-series "
            "exposure (expected EXP_TYPE='NRS_BRIGHTOBJ' or TSOVISIT=T)",
            "PRIMARY",
            "EXP_TYPE",
        )


def _scan_open(hdul, path, size, require_tso):
    end = 0
    for hdu in hdul:
        info = hdu.fileinfo()
        end = int(info["datLoc"]) + int(info.get("datSpan") or 0)
        if end > size:
            raise BadInputError(
                path,
                f"file is truncated: {hdu.name} needs {end} bytes up to its end, the file has {size}",
                hdu.name,
            )
    if size > end:
        raise BadInputError(
            path,
            f"file is truncated or corrupt: {size - end} bytes after the last complete HDU "
            f"({hdul[-1].name}) do not form a valid HDU (an extension after it is cut short)",
            hdul[-1].name,
        )
    ph = hdul[0].header
    exp_from_name, seg_from_name, det_from_name = parse_filename(path)
    instrume = str(_kw(ph, "INSTRUME", path, "PRIMARY")).strip().upper()
    exp_type = str(ph.get("EXP_TYPE", "")).strip().upper()
    tso_keys = (instrume, exp_type, ph.get("TSOVISIT"))
    if require_tso:
        _check_tso(path, *tso_keys)
    detector = str(_kw(ph, "DETECTOR", path, "PRIMARY")).strip().upper()
    if det_from_name and det_from_name != detector:
        raise BadInputError(
            path, f"DETECTOR={detector!r} but the file name says {det_from_name!r}", "PRIMARY", "DETECTOR"
        )
    sci_i = _find_ext(hdul, "SCI")
    if sci_i is None:
        raise BadInputError(path, "no SCI extension (expected the 4-D uint16 ramp cube)", "SCI")
    sh = hdul[sci_i].header
    naxis = sh.get("NAXIS", 0)
    if naxis != 4:
        raise BadInputError(
            path, f"SCI has {naxis} axes; expected 4 (nints, ngroups, ny, nx)", "SCI", "NAXIS"
        )
    bitpix = sh["BITPIX"]
    bzero = sh.get("BZERO", 0)
    bscale = sh.get("BSCALE", 1)
    if not (bitpix == 16 and bzero == 32768 and bscale == 1):
        raise BadInputError(
            path,
            f"SCI is BITPIX={bitpix}, BZERO={bzero}, BSCALE={bscale}; expected uint16 "
            "(BITPIX=16, BZERO=32768, BSCALE=1)",
            "SCI",
            "BITPIX",
        )
    nx, ny, ngroups_d, nints_d = (sh[f"NAXIS{i}"] for i in (1, 2, 3, 4))

    ngroups = _kw(ph, "NGROUPS", path, "PRIMARY", int)
    nints = _kw(ph, "NINTS", path, "PRIMARY", int)
    if ngroups != ngroups_d:
        raise BadInputError(
            path, f"NGROUPS={ngroups} but SCI holds {ngroups_d} groups (NAXIS3)", "PRIMARY", "NGROUPS"
        )
    intstart = _kw(ph, "INTSTART", path, "PRIMARY", int, default=1)
    intend = _kw(ph, "INTEND", path, "PRIMARY", int, default=intstart + nints_d - 1)
    if intend - intstart + 1 != nints_d:
        raise BadInputError(
            path,
            f"INTSTART={intstart}, INTEND={intend} give {intend - intstart + 1} integrations "
            f"but SCI holds {nints_d} (NAXIS4)",
            "PRIMARY",
            "INTEND",
        )
    if intstart < 1 or intend > nints:
        raise BadInputError(
            path, f"INTSTART..INTEND = {intstart}..{intend} outside 1..NINTS={nints}", "PRIMARY", "INTEND"
        )
    subsize1 = _kw(ph, "SUBSIZE1", path, "PRIMARY", int, default=nx)
    subsize2 = _kw(ph, "SUBSIZE2", path, "PRIMARY", int, default=ny)
    nrs_norm, nrs_ref = 0, 0
    if _irs2_layout.is_irs2_header(ph):  # IRS2: SCI holds the interleaved reference samples
        nrs_norm, nrs_ref = _irs2_layout.check_irs2_header(ph, sh, path)
        ny = subsize2 = _irs2_layout.NROWS  # checked: SUBSIZE2 is 2048 or absent
    if (subsize1, subsize2) != (nx, ny):
        raise BadInputError(
            path,
            f"SUBSIZE1/2 = {subsize1}x{subsize2} but SCI frames are {nx}x{ny}",
            "PRIMARY",
            "SUBSIZE1",
        )
    fileinfo = hdul[sci_i].fileinfo()
    data_offset = int(fileinfo["datLoc"])
    need = data_offset + nints_d * ngroups * sh["NAXIS2"] * nx * 2
    if size < need:
        raise BadInputError(
            path,
            f"file is truncated: SCI needs {need} bytes up to its end, the file has {size}",
            "SCI",
        )
    nframes = _kw(ph, "NFRAMES", path, "PRIMARY", int, default=1)
    groupgap = _kw(ph, "GROUPGAP", path, "PRIMARY", int, default=0)
    tframe = _kw(ph, "TFRAME", path, "PRIMARY", float)
    tgroup = _kw(ph, "TGROUP", path, "PRIMARY", float, default=tframe * (nframes + groupgap))
    effinttm = _kw(ph, "EFFINTTM", path, "PRIMARY", float, default=tgroup * (ngroups - 1))
    exposure = exp_from_name
    segnum = _kw(ph, "EXSEGNUM", path, "PRIMARY", int, default=seg_from_name or 1)
    extra = []
    for k in ("TARG_RA", "TARG_DEC", "FXD_SLIT", "PROGRAM", "OBSERVTN", "VISIT", "EXPOSURE"):
        if k in ph:
            extra.append((k, ph[k]))
    meta = ExposureMeta(
        exposure=exposure,
        detector=detector,
        instrume=instrume,
        exp_type=exp_type,
        readpatt=str(ph.get("READPATT", "")).strip(),
        subarray=str(ph.get("SUBARRAY", "")).strip().upper(),
        substrt1=_kw(ph, "SUBSTRT1", path, "PRIMARY", int, default=1),
        substrt2=_kw(ph, "SUBSTRT2", path, "PRIMARY", int, default=1),
        subsize1=subsize1,
        subsize2=subsize2,
        nints=nints,
        ngroups=ngroups,
        nframes=nframes,
        groupgap=groupgap,
        tframe=tframe,
        tgroup=tgroup,
        effinttm=effinttm,
        filter=str(ph.get("FILTER", "")).strip(),
        grating=str(ph.get("GRATING", "")).strip(),
        exsegtot=_kw(ph, "EXSEGTOT", path, "PRIMARY", int, default=1),
        tsovisit=bool(ph.get("TSOVISIT", False)),
        target=str(ph.get("TARGNAME", "")).strip(),
        expstart=float(ph.get("EXPSTART", 0.0)),
        nrs_norm=nrs_norm,
        extra=tuple(extra),
        nrs_ref=nrs_ref,
    )
    times, notes, bad = _read_int_times(hdul, path, meta, intstart, intend, ph)
    info = SegmentInfo(
        path=os.path.abspath(path),
        meta=meta,
        segnum=segnum,
        intstart=intstart,
        intend=intend,
        data_offset=data_offset,
        sci_bitpix=bitpix,
        times=times,
        notes=tuple(notes),
        bad_times=tuple(sorted(bad.items())),
    )
    return info, tso_keys


_TIME_FIELDS = tuple(f for f in dataclasses.fields(IntTimes) if f.name != "derived")

_TIME_COLS = (
    "int_start_MJD_UTC",
    "int_mid_MJD_UTC",
    "int_end_MJD_UTC",
    "int_start_BJD_TDB",
    "int_mid_BJD_TDB",
    "int_end_BJD_TDB",
)


def _read_int_times(hdul, path, meta, intstart, intend, ph):
    """INT_TIMES rows of this segment's integrations, checked.

    Returns ``(rows, notes, bad)``: integration -> IntTimes, provenance notes, and
    integration -> reason for rows that failed a check (see :func:`check_int_times`).
    """
    notes = []
    it = _find_ext(hdul, "INT_TIMES")
    rows = {}
    bad: dict[int, str] = {}
    if it is not None:
        data = hdul[it].data
        names = {n.lower(): n for n in (data.names if data is not None else [])}
        missing = [c for c in ("integration_number", *_TIME_COLS) if c.lower() not in names]
        if data is None or len(data) == 0:
            notes.append(f"{os.path.basename(path)}[INT_TIMES] is empty")
        elif missing:
            raise BadInputError(
                path, f"INT_TIMES lacks columns {missing}", "INT_TIMES", missing[0]
            )
        else:
            num = np.asarray(data[names["integration_number"]]).astype(np.int64)
            cols = np.stack([np.asarray(data[names[c.lower()]], dtype=np.float64) for c in _TIME_COLS], 1)
            rows, bad, more = check_int_times(num, cols, meta, intstart, intend, path)
            notes.extend(more)
    need = set(range(intstart, intend + 1))
    lacking = sorted(need - set(rows))
    if lacking:
        if it is None:
            notes.append(
                f"{os.path.basename(path)} has no INT_TIMES extension: times of integrations "
                f"{intstart}-{intend} derived from EXPSTART and the readout timing"
            )
        else:
            notes.append(
                f"{os.path.basename(path)}[INT_TIMES] lacks {len(lacking)} of integrations "
                f"{intstart}-{intend}: derived from EXPSTART and the readout timing"
            )
        if "EXPSTART" not in ph:
            raise BadInputError(
                path,
                "no INT_TIMES rows for these integrations and no EXPSTART to derive them from",
                "PRIMARY",
                "EXPSTART",
            )
        derived = derive_int_times(meta, np.array(lacking), ph)
        rows.update(derived)
    return rows, notes, bad


def cycle_seconds(meta: ExposureMeta) -> float:
    """Integration cadence the readout promises: ``(NGROUPS*(NFRAMES+GROUPGAP) - GROUPGAP + 1)
    * TFRAME`` seconds (one reset frame between integrations)."""
    return (meta.ngroups * (meta.nframes + meta.groupgap) - meta.groupgap + 1) * meta.tframe


def check_int_times(num: np.ndarray, cols: np.ndarray, meta: ExposureMeta, intstart: int,
                    intend: int, path: str):
    """Row checks of one segment's INT_TIMES: unique, finite, ordered, plausible.

    The cadence checks need the rows of every segment and are made by
    :func:`check_cadence` when the segments are planned.

    Parameters
    ----------
    num : int, (nrows,)
        ``integration_number`` column.
    cols : float64, (nrows, 6), days
        int_start/mid/end MJD_UTC, int_start/mid/end BJD_TDB.

    Returns
    -------
    rows : dict int -> IntTimes
        The rows of ``intstart..intend`` found in the table, as given.
    bad : dict int -> str
        Integrations whose row failed a check, and why (non-finite, start/mid/end out of
        order, BJD-MJD beyond any light travel time, longer than two cycles).
    notes : list of str

    Raises
    ------
    BadInputError
        The same integration_number twice with different times (which is right cannot be
        told).
    """
    name = os.path.basename(path)
    notes: list[str] = []
    sel = (num >= intstart) & (num <= intend)
    num, cols = num[sel], cols[sel]
    first: dict[int, int] = {}
    for j, n in enumerate(num):
        n = int(n)
        if n in first:
            k = first[n]
            if np.array_equal(cols[k], cols[j], equal_nan=True):
                notes.append(f"{name}[INT_TIMES] lists integration {n} twice (identical rows): used once")
                continue
            raise BadInputError(
                path, f"integration_number {n} appears twice (rows {k + 1} and {j + 1}) with "
                "different times: which is right cannot be told", "INT_TIMES", "integration_number")
        first[n] = j
    cycle = cycle_seconds(meta) / SECONDS_PER_DAY
    rows: dict[int, IntTimes] = {}
    bad: dict[int, str] = {}
    for n in sorted(first):
        r = cols[first[n]]
        rows[n] = IntTimes(*(float(v) for v in r))
        if not np.all(np.isfinite(r)):
            bad[n] = "non-finite time in INT_TIMES"
        elif not (r[0] <= r[1] <= r[2] and r[3] <= r[4] <= r[5]):
            bad[n] = "int_start <= int_mid <= int_end does not hold"
        elif abs(r[4] - r[1]) > 0.02:
            bad[n] = f"BJD_TDB - MJD_UTC = {(r[4] - r[1]) * 86400:.0f} s, beyond any light travel time"
        elif r[2] - r[0] > 2 * cycle + 1 / SECONDS_PER_DAY:
            bad[n] = (f"lasts {(r[2] - r[0]) * 86400:.3f} s, more than two integration cycles "
                      f"({cycle * 86400:.3f} s)")
    return rows, bad, notes


def check_cadence(segments: list[SegmentInfo]) -> list[SegmentInfo]:
    """Check every INT_TIMES row of an exposure against one regular cadence.

    The cadence is the median step between the rows that passed the row checks; it must
    agree within 10% with the cycle TFRAME/NGROUPS/NFRAMES/GROUPGAP promise (else the
    exposure is refused). With three or more such rows, a row more than half a cycle off
    the cadence (out of order, duplicated time, a jump) is bad; with fewer, a row more
    than a minute from EXPSTART + (n-1) cycles is. Bad rows get times on the cadence of
    the good ones (``derived=True``) and are listed in the segment's ``bad_times``.

    Returns the segments, with updated ``times``/``bad_times`` where something was bad.
    """
    meta = segments[0].meta
    bad: dict[int, str] = {i: r for s in segments for i, r in s.bad_times}
    row = {i: t for s in segments for i, t in s.times.items() if not t.derived}
    order = sorted(i for i in row if i not in bad)
    cycle = cycle_seconds(meta) / SECONDS_PER_DAY

    def start(i):
        return row[i].int_start_mjd_utc

    cadence = cycle
    if len(order) >= 2:
        n = np.array(order)
        st = np.array([start(i) for i in order])
        cadence = float(np.median(np.diff(st) / np.diff(n)))
        if cycle > 0 and abs(cadence - cycle) > 0.1 * cycle:
            raise BadInputError(
                segments[0].path,
                f"INT_TIMES rows are {cadence * 86400:.4f} s apart, but TFRAME={meta.tframe}, "
                f"NGROUPS={meta.ngroups}, NFRAMES={meta.nframes}, GROUPGAP={meta.groupgap} give "
                f"an integration cycle of {cycle * 86400:.4f} s", "INT_TIMES", "int_start_MJD_UTC")
    tol = max(0.5 * cadence, 1 / SECONDS_PER_DAY)
    if len(order) >= 3:
        ref0 = float(np.median([start(i) - (i - 1) * cadence for i in order]))
        for i in order:
            off = start(i) - (ref0 + (i - 1) * cadence)
            if abs(off) > tol:
                bad[i] = (f"int_start is {off * 86400:+.3f} s off the cadence of the other rows "
                          f"({cadence * 86400:.4f} s): out of order, duplicated or jumped")
    elif meta.expstart > 0:
        for i in order:
            off = start(i) - (meta.expstart + (i - 1) * cycle)
            if abs(off) > max(tol, 60 / SECONDS_PER_DAY):
                bad[i] = f"int_start is {off * 86400:+.1f} s from EXPSTART + (n-1) cycles"
    if not bad:
        return segments
    good = [i for i in order if i not in bad]
    if good:
        vals = np.array([[getattr(row[i], f.name) for f in _TIME_FIELDS] for i in good])
        offs = np.median(vals - ((np.array(good) - 1) * cadence)[:, None], axis=0)
        fix = {i: IntTimes(*(float(v) for v in offs + (i - 1) * cadence), derived=True) for i in bad}
    else:
        fix = derive_int_times(meta, np.array(sorted(bad)))
    out = []
    for s in segments:
        mine = {i: r for i, r in bad.items() if s.intstart <= i <= s.intend}
        if not mine:
            out.append(s)
            continue
        times = dict(s.times)
        times.update({i: fix[i] for i in mine})
        i0 = min(mine)
        note = (f"{os.path.basename(s.path)}[INT_TIMES]: {len(mine)} row(s) failed the time "
                f"checks (first: integration {i0}: {mine[i0]}); their times are set on the "
                "cadence of the good rows and the integrations flagged DO_NOT_USE")
        out.append(dataclasses.replace(s, times=times, bad_times=tuple(sorted(mine.items())),
                                       notes=(*s.notes, note)))
    return out


def derive_int_times(meta: ExposureMeta, numbers: np.ndarray, header=None) -> dict[int, IntTimes]:
    """Integration times from EXPSTART and the readout pattern (no INT_TIMES table).

    The integration cycle is ``(NGROUPS*(NFRAMES+GROUPGAP) - GROUPGAP + 1) * TFRAME``
    (one reset frame between integrations). BJD_TDB uses astropy's barycentric light
    travel time toward TARG_RA/TARG_DEC seen from the geocentre when those keywords
    exist (JWST is ~1.5e6 km away: up to ~5 s error); without them TDB = UTC + 69.184 s
    with no barycentric correction. Both choices are recorded as ``derived=True``.
    """
    cycle = (meta.ngroups * (meta.nframes + meta.groupgap) - meta.groupgap + 1) * meta.tframe
    dur = meta.effinttm if meta.effinttm > 0 else cycle
    start = meta.expstart + (numbers - 1) * cycle / SECONDS_PER_DAY
    mid = start + dur / 2 / SECONDS_PER_DAY
    end = start + dur / SECONDS_PER_DAY
    tt = TT_MINUS_UTC_S / SECONDS_PER_DAY
    ltt = np.zeros_like(mid)
    extra = dict(meta.extra)
    if "TARG_RA" in extra and "TARG_DEC" in extra:
        try:
            from astropy import units as u
            from astropy.coordinates import EarthLocation, SkyCoord
            from astropy.time import Time

            t = Time(mid, format="mjd", scale="utc", location=EarthLocation.from_geocentric(0, 0, 0, unit=u.m))
            target = SkyCoord(float(extra["TARG_RA"]), float(extra["TARG_DEC"]), unit="deg")
            ltt = t.light_travel_time(target, kind="barycentric").to_value(u.day)
        except Exception:  # pragma: no cover - astropy ephemeris problems
            ltt = np.zeros_like(mid)
    out = {}
    for j, n in enumerate(numbers):
        out[int(n)] = IntTimes(
            float(start[j]), float(mid[j]), float(end[j]),
            float(start[j] + tt + ltt[j]), float(mid[j] + tt + ltt[j]), float(end[j] + tt + ltt[j]),
            derived=True,
        )
    return out


# ---------------------------------------------------------------------------------------
# Reading one integration


def read_ramp(info: SegmentInfo, integration: int) -> np.ndarray:
    """Read one integration's ramp from a segment.

    Parameters
    ----------
    info : SegmentInfo
    integration : int
        1-based exposure integration number, ``info.intstart <= integration <= info.intend``.

    Returns
    -------
    ramp : uint16, (ngroups, ny, nx), DN
        Native byte order; only this integration's bytes are read. IRS2 exposures
        (READPATT NRSIRS2*) give the frames as stored, (ngroups, 3200, 2048) with the
        interleaved reference samples (:mod:`nirbeam.stream.irs2_layout`).
    """
    if not info.intstart <= integration <= info.intend:
        raise BadInputError(
            info.path,
            f"integration {integration} is not in this segment ({info.intstart}..{info.intend})",
            "SCI",
        )
    g, y, x = _irs2_layout.raw_shape(info.meta)
    out = np.empty((g, y, x), np.uint16)
    buf = memoryview(out).cast("B")
    start = info.data_offset + (integration - info.intstart) * out.nbytes
    # read into the result (no memory map: a map's pages of the file would stay resident,
    # counted in the worker's RSS next to the copy: 262 MB more for a 20-group IRS2 frame)
    with open(info.path, "rb") as fh:
        fh.seek(start)
        got = fh.readinto(buf)
        while 0 < got < out.nbytes:
            n = fh.readinto(buf[got:])
            if not n:
                break
            got += n
    if got != out.nbytes:
        raise BadInputError(info.path, f"integration {integration}: SCI data ends after {got} "
                            f"of its {out.nbytes} bytes (file cut short?)", "SCI")
    # on disk: big-endian int16 with BZERO=32768, i.e. the uint16 value with its top bit
    # flipped: the bytes read as big-endian uint16, flipped into native order in one pass
    # (in place: same elements, same strides; byteswap then ^= was two passes, 2x slower)
    np.bitwise_xor(out.view(">u2"), np.uint16(0x8000), out=out)
    return out


# ---------------------------------------------------------------------------------------
# Exposure plans: segments grouped and checked


@dataclass(frozen=True)
class ExposurePlan:
    """All segments of one exposure and detector, checked for gaps and overlaps.

    Attributes
    ----------
    meta : ExposureMeta
    segments : tuple of SegmentInfo, in integration order
    missing : tuple of int
        Integration numbers of 1..NINTS that no segment holds (a missing segment).
    notes : tuple of str
        Substitutions and repairs, for provenance.
    """

    meta: ExposureMeta
    segments: tuple[SegmentInfo, ...]
    missing: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def present(self) -> list[int]:
        """Integration numbers held by the segments."""
        return [i for s in self.segments for i in range(s.intstart, s.intend + 1)]

    def int_times(self) -> dict[str, np.ndarray]:
        """INT_TIMES columns over the whole exposure, float64 (NINTS,), NaN where missing.

        Keys: ``int_{start,mid,end}_MJD_UTC`` and ``int_{start,mid,end}_BJD_TDB`` (days).
        """
        names = ("int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC",
                 "int_start_BJD_TDB", "int_mid_BJD_TDB", "int_end_BJD_TDB")
        out = {k: np.full(self.meta.nints, np.nan) for k in names}
        for s in self.segments:
            for i, t in s.times.items():
                vals = (t.int_start_mjd_utc, t.int_mid_mjd_utc, t.int_end_mjd_utc,
                        t.int_start_bjd_tdb, t.int_mid_bjd_tdb, t.int_end_bjd_tdb)
                for k, v in zip(names, vals, strict=True):
                    out[k][i - 1] = v
        return out

    def keys(self) -> list[IntegrationKey]:
        """Keys of the integrations present, in order."""
        return [IntegrationKey(self.meta.exposure, self.meta.detector, i) for i in self.present]

    def segment_of(self, integration: int) -> SegmentInfo:
        """The segment holding an integration."""
        for s in self.segments:
            if s.intstart <= integration <= s.intend:
                return s
        raise KeyError(integration)


_META_MUST_AGREE = (
    "instrume", "exp_type", "readpatt", "subarray", "substrt1", "substrt2", "subsize1",
    "subsize2", "nints", "ngroups", "nframes", "groupgap", "tframe", "exsegtot",
)


def plan_exposures(infos: list[SegmentInfo]) -> list[ExposurePlan]:
    """Group segments by (exposure, detector), order them, find gaps, refuse overlaps.

    A file given twice (same path or byte-identical header range) is used once. Two
    different files covering the same integrations are refused. Detectors are never mixed.
    """
    by: dict[tuple[str, str], list[SegmentInfo]] = {}
    for s in infos:
        by.setdefault((s.meta.exposure, s.meta.detector), []).append(s)
    plans = []
    for (_exp, _det), segs in sorted(by.items()):
        uniq: dict[str, SegmentInfo] = {}
        notes: list[str] = []
        for s in segs:
            if s.path in uniq:
                notes.append(f"{os.path.basename(s.path)} given twice: used once")
                continue
            uniq[s.path] = s
        segs = sorted(uniq.values(), key=lambda s: (s.intstart, s.segnum))
        first = segs[0]
        for s in segs[1:]:
            for k in _META_MUST_AGREE:
                a, b = getattr(first.meta, k), getattr(s.meta, k)
                if a != b:
                    raise BadInputError(
                        s.path,
                        f"{k.upper()}={b!r} differs from {a!r} in {os.path.basename(first.path)} "
                        "of the same exposure",
                        "PRIMARY",
                        k.upper(),
                    )
        kept: list[SegmentInfo] = []
        for s in segs:
            if kept and s.intstart <= kept[-1].intend:
                prev = kept[-1]
                same = (s.intstart, s.intend) == (prev.intstart, prev.intend) and same_bytes(prev, s)
                if same:
                    notes.append(
                        f"{os.path.basename(s.path)} duplicates {os.path.basename(prev.path)} "
                        f"(integrations {s.intstart}-{s.intend}, identical data): used once"
                    )
                    continue
                raise BadInputError(
                    s.path,
                    f"integrations {s.intstart}-{s.intend} overlap {prev.intstart}-{prev.intend} "
                    f"of {os.path.basename(prev.path)} (duplicated or overlapping segment)",
                    "PRIMARY",
                    "INTSTART",
                )
            kept.append(s)
        kept = check_cadence(kept)
        have = {i for s in kept for i in range(s.intstart, s.intend + 1)}
        missing = tuple(i for i in range(1, first.meta.nints + 1) if i not in have)
        if missing:
            notes.append(
                f"{len(missing)} of NINTS={first.meta.nints} integrations are in no input "
                f"segment (first missing: {missing[0]}): reported as dead letters"
            )
        for s in kept:
            notes.extend(s.notes)
        plans.append(ExposurePlan(first.meta, tuple(kept), missing, tuple(notes)))
    return plans


def same_bytes(a: SegmentInfo, b: SegmentInfo) -> bool:
    """True when two segments hold byte-identical SCI data."""
    if a.integration_bytes * a.nints != b.integration_bytes * b.nints:
        return False
    n = a.integration_bytes * a.nints
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        fa.seek(a.data_offset)
        fb.seek(b.data_offset)
        step = 1 << 22
        done = 0
        while done < n:
            k = min(step, n - done)
            if fa.read(k) != fb.read(k):
                return False
            done += k
    return True


def find_uncal_files(inputs: list[str]) -> list[str]:
    """Expand files and folders into a sorted list of ``*_uncal.fits`` paths."""
    out = []
    for p in inputs:
        p = str(p)
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, n) for n in os.listdir(p) if n.lower().endswith("_uncal.fits")
            )
            if not found:
                raise BadInputError(p, "folder holds no *_uncal.fits files")
            out.extend(found)
        elif os.path.exists(p):
            out.append(p)
        else:
            raise BadInputError(p, "no such file or folder")
    return sorted(dict.fromkeys(os.path.abspath(p) for p in out))
