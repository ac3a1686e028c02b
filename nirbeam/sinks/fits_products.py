"""JWST-layout FITS products: ``x1dints`` (TSOMultiSpecModel) and ``rateints``.

x1dints follows jwst >= 1.19 (stdatamodels ``tso_spectable.schema``): one file per
exposure and detector, named as jwst names it (``<exposure>_<det>_x1dints.fits``), with
one ``EXTRACT1D`` table (a row per integration, every schema column with its dtype), an
``INT_TIMES`` table and the exposure's own primary header; detectors are never
interleaved. rateints is written integration by
integration through a memory map, so it never holds the cube in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from nirbeam.sinks.tables import atomic_path

__all__ = ["X1dTable", "primary_hdu", "write_x1dints", "x1dints_hdulist", "x1dints_row_bytes", "write_rateints_fits", "X1DINTS_COLUMNS"]


@dataclass(frozen=True)
class X1dTable:
    """One exposure/detector's spectra: arrays (nint, nwave), per-integration (nint,).

    Attributes
    ----------
    detector : str
    header : mapping
        The exposure's own primary-header keywords.
    int_num : int, (nint,)
    wavelength : float, (nwave,), µm, or NaN without a wavelength solution
    flux, flux_error : float, (nint, nwave), ``flux_unit``
    flux_var_poisson, flux_var_rnoise : float, (nint, nwave), ``flux_unit`` squared
    dq : uint32, (nint, nwave)
    background : float, (nint, nwave), ``flux_unit`` per pixel
    npixels : float, (nint, nwave)
    times : mapping of (nint,) arrays
        ``int_start/mid/end_MJD_UTC`` and ``int_start/mid/end_BJD_TDB`` of these rows.
    segment : int, (nint,), optional
        Segment number (EXSEGNUM) holding each integration.
    flux_unit : str
    wavelength_source : str
        Where the wavelengths come from (``none: ...`` when there are none).
    int_times : mapping, optional
        The exposure's whole INT_TIMES table (``integration_number`` and the six times).
    calibration : str
        How FLUX was calibrated (empty: not calibrated, DN/s).
    """

    detector: str
    header: Mapping[str, object]
    int_num: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    flux_error: np.ndarray
    flux_var_poisson: np.ndarray
    flux_var_rnoise: np.ndarray
    dq: np.ndarray
    background: np.ndarray
    npixels: np.ndarray
    times: Mapping[str, np.ndarray]  # int_start/mid/end_MJD_UTC, int_start/mid/end_BJD_TDB
    segment: np.ndarray | None = None
    flux_unit: str = "DN/s"
    wavelength_source: str = ""
    int_times: Mapping[str, np.ndarray] | None = None
    calibration: str = ""


def primary_hdu(header: Mapping[str, object], model: str, *,
                skip: frozenset[str] = frozenset()) -> fits.PrimaryHDU:
    """A PRIMARY HDU for a product of jwst datamodel ``model``: the exposure's keywords
    (scalars FITS can hold; structural keys and ``skip`` left out), DATAMODL, TELESCOP,
    ORIGIN."""
    ph = fits.Header()
    for k, v in header.items():
        if (isinstance(v, bool | int | float | str) and len(k) <= 8 and k not in _STRUCTURAL
                and k not in skip):
            try:
                ph[k] = v
            except (ValueError, TypeError):  # a value FITS cannot hold: left out
                continue
    ph["DATAMODL"] = model
    ph["TELESCOP"] = "JWST"
    ph["ORIGIN"] = "nirbeam"
    return fits.PrimaryHDU(header=ph)


_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4", "EXTEND",
               "XTENSION", "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "EXTNAME", "EXTVER",
               "DATAMODL", "FILENAME", "FILETYPE"}

#: TSOMultiSpecModel spec table (stdatamodels ``tso_spectable.schema``): name, FITS
#: type code of one element ("D" float64, "J" int32, "UJ" uint32), vector or scalar.
X1DINTS_COLUMNS = (
    ("INT_NUM", "J", False), ("WAVELENGTH", "D", True), ("FLUX", "D", True),
    ("FLUX_ERROR", "D", True), ("FLUX_VAR_POISSON", "D", True),
    ("FLUX_VAR_RNOISE", "D", True), ("FLUX_VAR_FLAT", "D", True),
    ("SURF_BRIGHT", "D", True), ("SB_ERROR", "D", True), ("SB_VAR_POISSON", "D", True),
    ("SB_VAR_RNOISE", "D", True), ("SB_VAR_FLAT", "D", True), ("DQ", "UJ", True),
    ("BACKGROUND", "D", True), ("BKGD_ERROR", "D", True), ("BKGD_VAR_POISSON", "D", True),
    ("BKGD_VAR_RNOISE", "D", True), ("BKGD_VAR_FLAT", "D", True), ("NPIXELS", "D", True),
    ("N_ALONGDISP", "UJ", True), ("SEGMENT", "J", False), ("MJD-BEG", "D", False),
    ("MJD-AVG", "D", False), ("MJD-END", "D", False), ("TDB-BEG", "D", False),
    ("TDB-MID", "D", False), ("TDB-END", "D", False),
)

INT_TIMES_COLUMNS = ("integration_number", "int_start_MJD_UTC", "int_mid_MJD_UTC",
                     "int_end_MJD_UTC", "int_start_BJD_TDB", "int_mid_BJD_TDB",
                     "int_end_BJD_TDB")


def _column(name, code, vector, nw, array, unit=None):
    fmt = (f"{nw}" if vector else "") + ("J" if code == "UJ" else code)
    if code == "UJ":  # FITS has no uint32: int32 with TZERO = 2**31 (astropy maps it)
        return fits.Column(name, fmt, unit=unit, array=np.asarray(array, np.uint32),
                           bzero=2147483648)
    dt = np.int32 if code == "J" else np.float64
    return fits.Column(name, fmt, unit=unit, array=np.asarray(array, dt))


def _x1d_values(t: X1dTable) -> tuple[dict, dict, bool]:
    """The EXTRACT1D column values (name -> array), their units and whether the spectral
    axis is pixels (no wavelengths), shared by :func:`x1dints_hdulist` and
    :func:`x1dints_row_bytes`."""
    n, nw = t.flux.shape
    pixel = (t.wavelength_source or "none").startswith("none")
    wl = np.broadcast_to(np.full(nw, np.nan) if pixel else np.asarray(t.wavelength, float),
                         (n, nw))
    fu = t.flux_unit
    nan = np.full((n, nw), np.nan)
    seg = t.segment if t.segment is not None else np.ones(n, np.int32)
    values = {
        "INT_NUM": t.int_num, "WAVELENGTH": wl, "FLUX": t.flux, "FLUX_ERROR": t.flux_error,
        "FLUX_VAR_POISSON": t.flux_var_poisson, "FLUX_VAR_RNOISE": t.flux_var_rnoise,
        "FLUX_VAR_FLAT": np.zeros((n, nw)),
        "SURF_BRIGHT": nan, "SB_ERROR": nan, "SB_VAR_POISSON": nan, "SB_VAR_RNOISE": nan,
        "SB_VAR_FLAT": nan, "DQ": t.dq, "BACKGROUND": t.background, "BKGD_ERROR": nan,
        "BKGD_VAR_POISSON": nan, "BKGD_VAR_RNOISE": nan, "BKGD_VAR_FLAT": nan,
        "NPIXELS": t.npixels, "N_ALONGDISP": np.ones((n, nw), np.uint32), "SEGMENT": seg,
        "MJD-BEG": t.times["int_start_MJD_UTC"], "MJD-AVG": t.times["int_mid_MJD_UTC"],
        "MJD-END": t.times["int_end_MJD_UTC"], "TDB-BEG": t.times["int_start_BJD_TDB"],
        "TDB-MID": t.times["int_mid_BJD_TDB"], "TDB-END": t.times["int_end_BJD_TDB"],
    }
    units = {"WAVELENGTH": None if pixel else "um", "FLUX": fu, "FLUX_ERROR": fu,
             "FLUX_VAR_POISSON": f"({fu})^2", "FLUX_VAR_RNOISE": f"({fu})^2",
             "FLUX_VAR_FLAT": f"({fu})^2", "BACKGROUND": fu, "MJD-BEG": "d", "MJD-AVG": "d",
             "MJD-END": "d", "TDB-BEG": "d", "TDB-MID": "d", "TDB-END": "d"}
    return values, units, pixel


def x1dints_row_bytes(t: X1dTable) -> bytes:
    """The EXTRACT1D rows of ``t`` as a FITS binary table stores them (big-endian fields
    in :data:`X1DINTS_COLUMNS` order, uint32 columns as int32 with TZERO = 2**31), without
    astropy: the bytes :func:`x1dints_hdulist`'s table data are written as (checked
    against astropy's by :func:`nirbeam.stream.products._write_x1dints` on every file's
    first block, and by tests/test_products_x1d_rows.py)."""
    values, _units, _pixel = _x1d_values(t)
    n, nw = t.flux.shape
    dt = np.dtype([(name, ">i4" if code in ("J", "UJ") else ">f8", (nw,) if vec else ())
                   for name, code, vec in X1DINTS_COLUMNS])
    rec = np.empty(n, dt)
    for name, code, _vec in X1DINTS_COLUMNS:
        v = values[name]
        if code == "UJ":
            v = (np.asarray(v, np.uint32) ^ np.uint32(0x80000000)).view(np.int32)
        elif code == "J":
            v = np.asarray(v, np.int32)
        else:
            v = np.asarray(v, np.float64)
        rec[name] = v
    return rec.tobytes()


def x1dints_hdulist(t: X1dTable) -> fits.HDUList:
    """The TSOMultiSpecModel HDUs of one exposure/detector (see :func:`write_x1dints`)."""
    values, units, pixel = _x1d_values(t)
    n, nw = t.flux.shape
    fu = t.flux_unit
    cols = [_column(name, code, vec, nw, values[name], units.get(name))
            for name, code, vec in X1DINTS_COLUMNS]
    h = fits.BinTableHDU.from_columns(cols, name="EXTRACT1D")
    hd = h.header
    hd["EXTVER"] = 1
    hd["DETECTOR"] = t.detector
    hd["SPORDER"] = 1
    hd["SRCTYPE"] = "POINT"
    hd["DISPAXIS"] = 1
    hd["SLTNAME"] = str(t.header.get("FXD_SLIT", "S1600A1"))
    hd["TIMESYS"] = "UTC"
    hd["TIMEUNIT"] = "d"
    hd["BUNIT"] = (fu, "unit of FLUX, FLUX_ERROR, BACKGROUND")
    if fu == "DN/s":
        hd["COMMENT"] = ("FLUX is in DN/s (count rate), NOT Jy: no PHOTOM calibration was "
                         "applied. SURF_BRIGHT, SB_*, BKGD_ERROR, BKGD_VAR_* are NaN (not "
                         "measured). FLUX_VAR_FLAT is 0: no flat field was applied.")
    if pixel:
        hd["COMMENT"] = ("WAVELENGTH is NaN: this exposure has no wavelength solution; the "
                         "spectrum's element k is detector column k (0-based) of the "
                         "subarray.")
    hd["WLSOURCE"] = str(t.wavelength_source)[:68]
    if t.calibration:
        hd["COMMENT"] = f"FLUX calibrated: {t.calibration}"
    it = t.int_times
    if it is None:
        it = {"integration_number": t.int_num, **{k: t.times[k] for k in INT_TIMES_COLUMNS[1:]}}
    ith = fits.BinTableHDU.from_columns(
        [fits.Column("integration_number", "J", array=np.asarray(it["integration_number"],
                                                                  np.int32))]
        + [fits.Column(k, "D", array=np.asarray(it[k], np.float64)) for k in INT_TIMES_COLUMNS[1:]],
        name="INT_TIMES",
    )
    ph = primary_hdu(t.header, "TSOMultiSpecModel")
    ph.header["BUNIT"] = fu
    return fits.HDUList([ph, h, ith])


def write_x1dints(path: str, table: X1dTable) -> str:
    """Write one exposure/detector's ``x1dints`` file (TSOMultiSpecModel layout).

    One ``EXTRACT1D`` table (a row per integration, every column of stdatamodels'
    ``tso_spectable.schema`` with its dtype), the exposure's ``INT_TIMES`` table and its
    own primary header. FLUX is in DN/s (``BUNIT``/``TUNIT`` say so) unless the table's
    ``flux_unit`` says otherwise; without wavelengths, WAVELENGTH is NaN and the header
    says why.
    """
    if not isinstance(table, X1dTable):
        raise TypeError("write_x1dints: one X1dTable per file (one file per exposure)")
    with atomic_path(path) as tmp:
        x1dints_hdulist(table).writeto(tmp, overwrite=True)
    return path


def write_rateints_fits(
    path: str,
    header: Mapping[str, object],
    nints: int,
    frame_shape: tuple[int, int],
    get_integration,
    times: Mapping[str, np.ndarray],
) -> str:
    """Write a JWST-layout rateints file one integration at a time.

    Parameters
    ----------
    get_integration : callable
        ``get_integration(i) -> dict(sci, err, dq, var_poisson, var_rnoise)`` for the
        0-based integration index ``i``.
    """
    ny, nx = frame_shape
    names = (("SCI", np.float32), ("ERR", np.float32), ("DQ", np.uint32),
             ("VAR_POISSON", np.float32), ("VAR_RNOISE", np.float32))
    it = fits.BinTableHDU.from_columns(
        [fits.Column("integration_number", "J", array=np.arange(1, nints + 1))]
        + [fits.Column(k, "D", array=np.asarray(v)) for k, v in times.items()],
        name="INT_TIMES",
    )
    with atomic_path(path) as tmp:
        fits.HDUList([primary_hdu(header, "CubeModel")]).writeto(tmp, overwrite=True)
        for name, dtype in names:
            shdu = fits.StreamingHDU(tmp, _image_header(name, nx, ny, nints, dtype))
            for i in range(nints):
                d = np.asarray(get_integration(i)[name.lower()])
                if dtype == np.uint32:  # FITS has no uint32: int32 with BZERO = 2**31
                    d = (d.astype(np.int64) - 2**31).astype(">i4")
                else:
                    d = d.astype(">f4")
                shdu.write(d)
            shdu.close()
        fits.append(tmp, it.data, it.header)
    return path


def _image_header(name, nx, ny, nints, dtype) -> fits.Header:
    h = fits.Header()
    h["XTENSION"] = "IMAGE"
    h["BITPIX"] = -32 if dtype == np.float32 else 32
    h["NAXIS"] = 3
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    h["NAXIS3"] = nints
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = name
    if dtype == np.uint32:
        h["BZERO"] = 2147483648
        h["BSCALE"] = 1
    return h
