"""Flux calibration of extracted BOTS spectra from a CRDS NIRSpec fixed-slit PHOTOM file.

jwst's photom step for a point source in the fixed slit (NRS_BRIGHTOBJ uses the S1600A1
row) multiplies each pixel's count rate by ``PHOTMJ * RELRESPONSE(lambda)`` (MJy per DN/s;
RELRESPONSE interpolated in wavelength, the reference's wavelengths converted from metres
to microns when below 1e-4), and extract_1d sums the calibrated pixels, so the 1-D flux
in Jy is

    FLUX[Jy] = FLUX[DN/s] * PHOTMJ * RELRESPONSE(lambda) * 1e6

with ``lambda`` the column's wavelength along the trace; columns outside the reference's
wavelength range are NaN. The time-dependence tables (TIMECOEFF_*) are not applied.

Only used when the run has a wavelength solution: without wavelengths there is no
calibration, and products stay in DN/s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["PhotomRow", "read_photom", "conversion_jy_per_dn_s"]


@dataclass(frozen=True)
class PhotomRow:
    """One PHOTOM row: scalar MJy per DN/s, response vs wavelength (µm), and its file."""

    photmj: float
    wavelength_um: np.ndarray
    relresponse: np.ndarray
    source: str


def read_photom(path: str, filter_: str, grating: str, slit: str = "S1600A1") -> PhotomRow:
    """The PHOTOM row for (FILTER, GRATING, SLIT) of a CRDS NIRSpec FS PHOTOM file.

    Raises
    ------
    BadInputError
        No such file, no PHOTOM table, or no matching row (the rows present are listed).
    """
    from astropy.io import fits

    from nirbeam.stream.uncal import BadInputError

    if not os.path.isfile(path):
        raise BadInputError(path, "[extract] photom: no such file")
    with fits.open(path) as h:
        if "PHOTOM" not in [x.name for x in h]:
            raise BadInputError(path, "no PHOTOM table: not a NIRSpec PHOTOM reference", "PHOTOM")
        t = h["PHOTOM"].data
        names = {c.lower(): c for c in t.columns.names}
        need = ("filter", "grating", "slit", "photmj", "nelem", "wavelength", "relresponse")
        missing = [c for c in need if c not in names]
        if missing:
            raise BadInputError(path, f"PHOTOM table lacks columns {missing}", "PHOTOM")

        def s(col):
            return np.char.strip(np.char.upper(np.asarray(t[names[col]]).astype(str)))

        sel = (s("filter") == filter_.upper()) & (s("grating") == grating.upper()) & (
            s("slit") == slit.upper())
        if not sel.any():
            rows = sorted(set(zip(s("filter"), s("grating"), s("slit"), strict=True)))
            raise BadInputError(path, f"no row for FILTER={filter_}, GRATING={grating}, "
                                      f"SLIT={slit}; rows are {rows[:12]}", "PHOTOM")
        i = int(np.flatnonzero(sel)[0])
        n = int(t[names["nelem"]][i])
        w = np.asarray(t[names["wavelength"]][i], np.float64)
        r = np.asarray(t[names["relresponse"]][i], np.float64)
        if n > 0:
            w, r = w[:n], r[:n]
        o = np.argsort(w)
        w, r = w[o], r[o]
        if 0 < w.max() < 1e-4:  # metres, as some references give them
            w = w * 1e6
        return PhotomRow(float(t[names["photmj"]][i]), w, r,
                         f"{os.path.basename(path)} [{filter_}/{grating}/{slit}]")


def conversion_jy_per_dn_s(row: PhotomRow, wavelength_um: np.ndarray) -> np.ndarray:
    """Jy per DN/s at each column's wavelength (NaN outside the reference's range).

    Parameters
    ----------
    row : PhotomRow
    wavelength_um : float, (nx,), µm
    """
    wl = np.asarray(wavelength_um, np.float64)
    if row.wavelength_um.size >= 2:
        resp = np.interp(wl, row.wavelength_um, row.relresponse, left=np.nan, right=np.nan)
    else:
        resp = np.ones_like(wl)
    out = row.photmj * resp * 1e6
    return np.where(np.isfinite(wl) & np.isfinite(out) & (out > 0), out, np.nan)
