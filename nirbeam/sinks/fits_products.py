"""JWST-layout FITS products: ``x1dints`` (TSOMultiSpecModel) and ``rateints``.

x1dints follows jwst >= 1.19: one ``EXTRACT1D`` binary table per detector (EXTVER 1, 2..),
one row per integration, vector columns WAVELENGTH, FLUX, FLUX_ERROR, FLUX_VAR_POISSON,
FLUX_VAR_RNOISE, SURF_BRIGHT, DQ, BACKGROUND, NPIXELS and scalar INT_NUM, MJD-BEG/AVG/END,
TDB-BEG/MID/END; detectors are never interleaved. rateints is written integration by
integration through a memory map, so it never holds the cube in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from nirbeam.sinks.tables import atomic_path

__all__ = ["X1dTable", "write_x1dints", "write_rateints_fits"]


@dataclass(frozen=True)
class X1dTable:
    """One detector's spectra: arrays (nint, nwave) and per-integration times (nint,)."""

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


def _primary(header: Mapping[str, object], model: str) -> fits.PrimaryHDU:
    ph = fits.Header()
    for k, v in header.items():
        if isinstance(v, bool | int | float | str) and len(k) <= 8:
            ph[k] = v
    ph["DATAMODL"] = model
    ph["TELESCOP"] = "JWST"
    ph["ORIGIN"] = "nirbeam"
    return fits.PrimaryHDU(header=ph)


def write_x1dints(path: str, tables: Sequence[X1dTable]) -> str:
    """Write an x1dints file with one EXTRACT1D table per detector (never interleaved)."""
    hdus = [_primary(tables[0].header, "TSOMultiSpecModel")]
    for ver, t in enumerate(tables, start=1):
        n, nw = t.flux.shape
        wl = np.broadcast_to(t.wavelength, (n, nw))
        cols = [
            fits.Column("WAVELENGTH", f"{nw}D", unit="um", array=wl),
            fits.Column("FLUX", f"{nw}D", unit="DN/s", array=t.flux),
            fits.Column("FLUX_ERROR", f"{nw}D", unit="DN/s", array=t.flux_error),
            fits.Column("FLUX_VAR_POISSON", f"{nw}D", unit="(DN/s)^2", array=t.flux_var_poisson),
            fits.Column("FLUX_VAR_RNOISE", f"{nw}D", unit="(DN/s)^2", array=t.flux_var_rnoise),
            fits.Column("FLUX_VAR_FLAT", f"{nw}D", unit="(DN/s)^2", array=np.zeros((n, nw))),
            fits.Column("SURF_BRIGHT", f"{nw}D", unit="MJy/sr", array=np.full((n, nw), np.nan)),
            fits.Column("DQ", f"{nw}J", array=t.dq.astype(np.int32)),
            fits.Column("BACKGROUND", f"{nw}D", unit="DN/s", array=t.background),
            fits.Column("NPIXELS", f"{nw}D", array=t.npixels),
            fits.Column("INT_NUM", "J", array=t.int_num),
            fits.Column("MJD-BEG", "D", array=t.times["int_start_MJD_UTC"]),
            fits.Column("MJD-AVG", "D", array=t.times["int_mid_MJD_UTC"]),
            fits.Column("MJD-END", "D", array=t.times["int_end_MJD_UTC"]),
            fits.Column("TDB-BEG", "D", array=t.times["int_start_BJD_TDB"]),
            fits.Column("TDB-MID", "D", array=t.times["int_mid_BJD_TDB"]),
            fits.Column("TDB-END", "D", array=t.times["int_end_BJD_TDB"]),
        ]
        h = fits.BinTableHDU.from_columns(cols, name="EXTRACT1D")
        h.header["EXTVER"] = ver
        h.header["DETECTOR"] = t.detector
        h.header["SPORDER"] = 1
        h.header["SRCTYPE"] = "POINT"
        hdus.append(h)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
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
        fits.HDUList([_primary(header, "CubeModel")]).writeto(tmp, overwrite=True)
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
