"""FITS writers of the simulator: CRDS-format references, uncal segments, truth files.

Formats follow the archive's level-1b uncal files (SCI uint16 written as BITPIX=16 with
BZERO=32768, GROUP and INT_TIMES tables) and CRDS reference files (PRIMARY with REFTYPE
and the selection keywords, SCI/ERR/DQ/DQ_DEF or COEFFS).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from astropy.io import fits

from nirbeam import dqflags

__all__ = [
    "dq_def_hdu",
    "write_reference",
    "UncalSegmentWriter",
    "StreamingImageWriter",
    "int_times_hdu",
    "group_table_hdu",
    "write_refpix_reference",
    "READOUTS",
    "readout_keywords",
]

#: readouts the uncal writer knows: traditional (the frame as given) or IRS2 full frame
#: (interleaved reference samples, :func:`nirbeam.sim.irs2.to_irs2`)
READOUTS = ("TRADITIONAL", "NRSIRS2", "NRSIRS2RAPID")

_DQ_DESCR = {
    "DO_NOT_USE": "Bad pixel. Do not use.",
    "SATURATED": "Pixel saturated during exposure",
    "DEAD": "Dead pixel",
    "HOT": "Hot pixel",
    "WARM": "Warm pixel",
    "NO_SAT_CHECK": "Saturation check not available",
    "NO_LIN_CORR": "Linearity correction not available",
    "UNRELIABLE_BIAS": "Bias variance large",
    "UNRELIABLE_DARK": "Dark variance large",
    "REFERENCE_PIXEL": "Pixel is a reference pixel",
    "NONLINEAR": "Pixel highly nonlinear",
}


def dq_def_hdu(names: list[str]) -> fits.BinTableHDU:
    """DQ_DEF table (Bit, Value, Name, Description) for the given standard flag names."""
    vals = [int(getattr(dqflags, n)) for n in names]
    bits = [int(v).bit_length() - 1 for v in vals]
    cols = [
        fits.Column("Bit", "J", array=np.array(bits, np.int32)),
        fits.Column("Value", "K", array=np.array(vals, np.int64)),
        fits.Column("Name", "40A", array=np.array(names)),
        fits.Column("Description", "80A", array=np.array([_DQ_DESCR.get(n, n) for n in names])),
    ]
    return fits.BinTableHDU.from_columns(cols, name="DQ_DEF")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def write_reference(
    path: Path,
    reftype: str,
    common: dict,
    images: dict[str, np.ndarray],
    dq_names: list[str] | None,
    extra: dict | None = None,
    bunit: str | None = None,
) -> Path:
    """Write one CRDS-format reference file.

    Parameters
    ----------
    path : Path
    reftype : str
        SUPERBIAS, DARK, LINEARITY, SATURATION, READNOISE, GAIN or MASK.
    common : dict
        Primary keywords shared by all references (INSTRUME, DETECTOR, SUBARRAY...).
    images : dict
        EXTNAME -> array, written in order.
    dq_names : list of str or None
        Flag names for the DQ_DEF table (None: no DQ_DEF).
    """
    ph = fits.Header()
    ph["DATE"] = (_now(), "Date this file was created (UTC)")
    ph["ORIGIN"] = ("NIRBEAM", "Organization responsible for creating file")
    ph["FILENAME"] = (path.name, "Name of the file")
    ph["TELESCOP"] = "JWST"
    ph["REFTYPE"] = (reftype, "Reference file type")
    for k, v in common.items():
        ph[k] = v
    for k, v in (extra or {}).items():
        ph[k] = v
    hdus = [fits.PrimaryHDU(header=ph)]
    for name, arr in images.items():
        h = fits.ImageHDU(arr, name=name)
        if bunit and name in ("SCI", "ERR"):
            h.header["BUNIT"] = bunit
        hdus.append(h)
    if dq_names is not None:
        hdus.append(dq_def_hdu(dq_names))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def int_times_hdu(times: dict[str, np.ndarray]) -> fits.BinTableHDU:
    """INT_TIMES table for all integrations of the exposure."""
    n = times["int_mid_MJD_UTC"].size
    cols = [fits.Column("integration_number", "J", array=np.arange(1, n + 1, dtype=np.int32))]
    for k in (
        "int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC",
        "int_start_BJD_TDB", "int_mid_BJD_TDB", "int_end_BJD_TDB",
    ):
        cols.append(fits.Column(k, "D", array=np.asarray(times[k], np.float64)))
    return fits.BinTableHDU.from_columns(cols, name="INT_TIMES")


def group_table_hdu(cfg, int_numbers: np.ndarray, times: dict[str, np.ndarray], tgroup: float, ny: int, nx: int) -> fits.BinTableHDU:
    """GROUP table (one row per integration and group of the segment), level-1b layout."""
    from astropy.time import Time

    G = cfg.ngroups
    ii = np.repeat(int_numbers, G)
    gg = np.tile(np.arange(1, G + 1), int_numbers.size)
    start = times["int_start_MJD_UTC"][ii - 1]
    end_mjd = start + (cfg.nresets * cfg.tframe + gg * tgroup) / 86400.0
    bary = times["int_start_BJD_TDB"][ii - 1] + (end_mjd - start)
    t = Time(end_mjd, format="mjd", scale="utc")
    iso = np.array(t.isot)
    day = np.floor(end_mjd - 51544.0).astype(np.int16)  # days since 2000-01-01
    ms_day = (end_mjd - np.floor(end_mjd)) * 86400e3
    ms = np.floor(ms_day).astype(np.int32)
    subms = np.floor((ms_day - ms) * 1e3).astype(np.int16)
    n = ii.size
    cols = [
        fits.Column("integration_number", "I", array=ii.astype(np.int16)),
        fits.Column("group_number", "I", array=gg.astype(np.int16)),
        fits.Column("end_day", "I", array=day),
        fits.Column("end_milliseconds", "J", array=ms),
        fits.Column("end_submilliseconds", "I", array=subms),
        fits.Column("group_end_time", "26A", array=iso),
        fits.Column("number_of_columns", "I", array=np.full(n, nx, np.int16)),
        fits.Column("number_of_rows", "I", array=np.full(n, ny, np.int16)),
        fits.Column("number_of_gaps", "I", array=np.zeros(n, np.int16)),
        fits.Column("completion_code_number", "I", array=np.zeros(n, np.int16)),
        fits.Column("completion_code_text", "36A", array=np.full(n, "COMPLETE")),
        fits.Column("bary_end_time", "D", array=bary),
        fits.Column("helio_end_time", "D", array=bary),
    ]
    return fits.BinTableHDU.from_columns(cols, name="GROUP")


class StreamingImageWriter:
    """Write PRIMARY plus one image extension, appended one plane at a time.

    ``dtype`` uint16 is stored as the archive does (BITPIX=16, BZERO=32768); float32 as
    BITPIX=-32. After :meth:`close`, further HDUs (tables) are appended.
    """

    def __init__(self, path: Path, primary: fits.Header, extname: str, shape: tuple[int, ...], dtype, bunit: str | None = None):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        fits.PrimaryHDU(header=primary).writeto(self.path, overwrite=True)
        h = fits.Header()
        h["XTENSION"] = "IMAGE"
        h["BITPIX"] = {np.dtype(np.uint16): 16, np.dtype(np.float32): -32}[self.dtype]
        h["NAXIS"] = len(shape)
        for i, n in enumerate(shape[::-1], start=1):
            h[f"NAXIS{i}"] = n
        h["PCOUNT"] = 0
        h["GCOUNT"] = 1
        if self.dtype == np.uint16:
            h["BSCALE"] = 1
            h["BZERO"] = 32768
        h["EXTNAME"] = (extname, "extension name")
        if bunit:
            h["BUNIT"] = (bunit, "physical units of the array values")
        # astropy's StreamingHDU wants a str path (it mangles Path objects)
        self._stream = fits.StreamingHDU(str(self.path), h)
        self._expected = shape[0]
        self._plane = tuple(shape[1:])
        self._written = 0

    def write(self, plane: np.ndarray) -> None:
        """Append one plane (shape[1:]) of the declared dtype."""
        if plane.dtype != self.dtype or plane.shape != self._plane:
            raise TypeError(f"{self.path.name}: expected {self.dtype} {self._plane}, got {plane.dtype} {plane.shape}")
        if self.dtype == np.uint16:
            out = (plane.view(np.int16) ^ np.int16(-32768)).astype(">i2")
        else:
            out = plane.astype(">f4")
        self._stream.write(out)
        self._written += 1

    def close(self, tables: list[fits.hdu.base.ExtensionHDU] = ()) -> Path:
        self._stream.close()
        if self._written != self._expected:
            raise RuntimeError(f"{self.path.name}: wrote {self._written} of {self._expected} planes")
        if tables:
            with fits.open(str(self.path), mode="append") as f:
                for t in tables:
                    f.append(t)
        return self.path


class UncalSegmentWriter(StreamingImageWriter):
    """Stream one uncal segment: PRIMARY, SCI (uint16, BZERO=32768), then GROUP/INT_TIMES.

    :meth:`write` appends one integration, uint16 (ngroups, ny, nx).

    ``readout``: ``"TRADITIONAL"`` (default) writes the frames as given; ``"NRSIRS2"`` or
    ``"NRSIRS2RAPID"`` takes full frames (ngroups, 2048, 2048) and writes them in the
    stored IRS2 layout (ngroups, 3200, 2048) with interleaved reference samples, the
    reference output, time-ordered 1/f, alternating column noise and, when
    ``irs2_noise.picture_frame`` is set, a picture-frame offset
    (:func:`nirbeam.sim.irs2.to_irs2`); the PRIMARY header gets READPATT, NRS_NORM=16,
    NRS_REF=4, SUBARRAY FULL and the full-frame SUBSTRT/SUBSIZE. ``detector`` (default
    the header's DETECTOR) sets the read directions; ``seed`` the readout noise.
    """

    def __init__(self, path: Path, primary: fits.Header, shape: tuple[int, int, int, int],
                 readout: str = "TRADITIONAL", *, detector: str | None = None, seed=0,
                 irs2_noise=None):
        self.readout = str(readout).strip().upper()
        kw = readout_keywords(self.readout)
        if kw:
            from nirbeam.sim import irs2 as _sim_irs2

            nints, ngroups, ny, nx = shape
            if (ny, nx) != (2048, 2048):
                raise ValueError(f"{Path(path).name}: readout={self.readout} is full frame; "
                                 f"got frames {ny}x{nx}")
            primary = primary.copy()
            for k, v in kw.items():
                primary[k] = v
            self._layout = _sim_irs2.IRS2Layout(kw["NRS_NORM"], kw["NRS_REF"])
            shape = (nints, ngroups, self._layout.width, nx)
            self._detector = str(detector or primary.get("DETECTOR", "NRS1")).upper()
            self._rng = np.random.default_rng(seed)
            self._noise = irs2_noise or _sim_irs2.IRS2Noise()
            self._to_irs2 = _sim_irs2.to_irs2
        super().__init__(path, primary, "SCI", shape, np.uint16, bunit="DN")

    def write(self, plane: np.ndarray) -> None:
        """Append one integration: (ngroups, ny, nx) uint16, full frame for IRS2."""
        if self.readout != "TRADITIONAL":
            plane = self._to_irs2(plane, self._detector, self._rng, self._noise, self._layout)
        super().write(plane)


def readout_keywords(readout: str) -> dict:
    """PRIMARY keywords of a readout: ``{}`` for traditional, READPATT/NRS_NORM/NRS_REF
    and full-frame SUBARRAY/SUBSTRT/SUBSIZE for IRS2 (what the archive's files carry)."""
    ro = str(readout).strip().upper()
    if ro not in READOUTS:
        raise ValueError(f"readout={readout!r}: expected one of {READOUTS}")
    if ro == "TRADITIONAL":
        return {}
    return {"READPATT": ro, "NRS_NORM": 16, "NRS_REF": 4, "SUBARRAY": "FULL",
            "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 2048, "SUBSIZE2": 2048}


def write_refpix_reference(path: Path, common: dict, alpha: np.ndarray, beta: np.ndarray,
                           dq: dict | None = None, readpatt: str = "NRSIRS2") -> Path:
    """Write a NIRSpec REFPIX (IRS2) reference in its CRDS layout.

    The ``IRS2`` table holds 8 float32 columns ALPHA_0..3, BETA_0..3 of 2 x 712 x 2048
    rows (real and imaginary parts alternating); the ``DQ`` table OUTPUT (uint16, 1-4),
    ODD_EVEN (uint16, 1-2), MASK (uint32, bit k: the k-th reference read is bad), as
    stdatamodels' IRS2Model reads them.

    Parameters
    ----------
    path : Path
    common : dict
        PRIMARY keywords (INSTRUME, DETECTOR...).
    alpha, beta : complex, (4, 712 * 2048)
        ``beta`` multiplies the transform of the interleaved references, ``alpha`` that of
        the reference output (jwst's use of the columns).
    dq : dict with ``output``, ``odd_even``, ``mask`` sequences, or None (empty table)
    readpatt : str
        READPATT keyword (CRDS selects REFPIX by DETECTOR and READPATT).
    """
    path = Path(path)
    ph = fits.Header()
    ph["DATE"] = (_now(), "Date this file was created (UTC)")
    ph["ORIGIN"] = ("NIRBEAM", "Organization responsible for creating file")
    ph["FILENAME"] = (path.name, "Name of the file")
    ph["TELESCOP"] = "JWST"
    ph["REFTYPE"] = ("REFPIX", "Reference file type")
    ph["DATAMODL"] = "IRS2Model"
    for k, v in common.items():
        ph[k] = v
    ph["READPATT"] = readpatt
    ph["SUBARRAY"] = "FULL"
    cols = []
    for name, arr in (("ALPHA", alpha), ("BETA", beta)):
        arr = np.asarray(arr)
        for k in range(4):
            v = np.empty(2 * arr.shape[1], np.float32)
            v[0::2] = arr[k].real
            v[1::2] = arr[k].imag
            cols.append(fits.Column(f"{name}_{k}", "E", array=v))
    irs2 = fits.BinTableHDU.from_columns(cols, name="IRS2")
    dq = dq or {"output": [], "odd_even": [], "mask": []}
    dqt = fits.BinTableHDU.from_columns([
        fits.Column("OUTPUT", "I", bzero=32768, array=np.asarray(dq["output"], np.uint16)),
        fits.Column("ODD_EVEN", "I", bzero=32768, array=np.asarray(dq["odd_even"], np.uint16)),
        fits.Column("MASK", "J", bzero=2**31, array=np.asarray(dq["mask"], np.uint32)),
    ], name="DQ")
    fits.HDUList([fits.PrimaryHDU(header=ph), irs2, dqt]).writeto(path, overwrite=True)
    return path
