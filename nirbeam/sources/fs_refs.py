"""Readers of the fixed-slit calibration references: slit geometry (FSGEOM), the
point-source profile (PSF) and the flux calibration (PHOTOM with per-slit PATHLOSS).

Each becomes plain arrays in a frozen dataclass at this boundary; the kernels never see
a file. Errors name the file, the extension and what was expected.

* FSGEOM: PRIMARY ``REFTYPE = 'FSGEOM'``; per slit one ``WAVELENGTH`` (um) and one
  ``ALONGSLIT`` (arcsec, positive in the sense of the YOFFSET nod offsets) image with the
  same ``EXTVER``, keywords ``SLTNAME``, ``XSTART``/``YSTART`` (0-based full-frame column
  and row of the first pixel), ``SLITLEN``/``SLITWID`` (arcsec).
* PSF: ``CDF`` image (nwave, noffset): the cumulative along-slit profile of a point
  source, with ``WAVELENGTH`` (um) and ``OFFSET`` (arcsec) tables.
* PHOTOM: ``PHOTOM`` table (``WAVELENGTH`` um, ``RELRESP`` DN/s per uJy in one column of
  ``DISPERS`` um), ``PATHLOSS`` tables per slit (``SLTNAME``; ``WAVELENGTH``,
  ``PS_TRANS`` the across-slit transmission of a centred point source).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = ["SlitMap", "FsGeometry", "PsfProfile", "FsPhotom", "read_fsgeom", "read_psf",
           "read_photom", "find_fs_references", "FsReferenceError"]


class FsReferenceError(ValueError):
    """A fixed-slit reference is missing or malformed."""


@dataclass(frozen=True, eq=False)
class SlitMap:
    """One slit's footprint: full-frame origin (0-based), maps, size (arcsec)."""

    name: str
    y0: int
    x0: int
    wavelength: np.ndarray
    along_slit: np.ndarray
    length: float
    width: float
    min_rows: float = 0.9  # fraction of the slit's lit rows a subarray must hold

    def window(self, substrt1: int, substrt2: int, nx: int, ny: int):
        """The part inside a subarray (SUBSTRT 1-based, size): ``(y0, y1, x0, x1)`` in the
        subarray frame and the maps cut to it; None when the slit is not on it (fewer
        than ``min_rows`` of the rows its light falls on, or fewer than 4 columns)."""
        sy0, sx0 = self.y0 - (substrt2 - 1), self.x0 - (substrt1 - 1)
        h, w = self.wavelength.shape
        y0, x0 = max(0, sy0), max(0, sx0)
        y1, x1 = min(ny, sy0 + h), min(nx, sx0 + w)
        if y1 <= y0 or x1 - x0 < 4:
            return None
        lit = (np.abs(np.nan_to_num(self.along_slit, nan=1e9)) <= self.length / 2).any(axis=1)
        rows = np.flatnonzero(lit) + sy0
        if rows.size == 0 or ((rows >= y0) & (rows < y1)).mean() < self.min_rows:
            return None
        cut = (slice(y0 - sy0, y1 - sy0), slice(x0 - sx0, x1 - sx0))
        lam, s = self.wavelength[cut], self.along_slit[cut]
        cols = np.flatnonzero(np.isfinite(lam).any(axis=0) & np.isfinite(s).any(axis=0))
        if cols.size < 4:
            return None
        a, b = cols[0], cols[-1] + 1
        return (y0, y1, x0 + a, x0 + b), lam[:, a:b], s[:, a:b]


@dataclass(frozen=True, eq=False)
class FsGeometry:
    path: str
    detector: str
    slits: dict


@dataclass(frozen=True, eq=False)
class PsfProfile:
    """Tabulated cumulative profile; :meth:`cdf` interpolates (bilinear)."""

    path: str
    wavelength: np.ndarray
    offset: np.ndarray
    table: np.ndarray

    def cdf(self, u, lam):
        """CDF at along-slit offsets ``u`` (arcsec) and wavelengths ``lam`` (um), any shape."""
        u = np.asarray(u, np.float64)
        lam = np.asarray(lam, np.float64)
        wl, off, t = self.wavelength, self.offset, self.table
        li = np.clip(np.searchsorted(wl, lam) - 1, 0, wl.size - 2)
        fl = np.clip((lam - wl[li]) / (wl[li + 1] - wl[li]), 0, 1)
        uc = np.clip(u, off[0], off[-1])
        ui = np.clip(np.searchsorted(off, uc) - 1, 0, off.size - 2)
        fu = (uc - off[ui]) / (off[ui + 1] - off[ui])
        a = t[li, ui] * (1 - fu) + t[li, ui + 1] * fu
        b = t[li + 1, ui] * (1 - fu) + t[li + 1, ui + 1] * fu
        out = a * (1 - fl) + b * fl
        return np.where(u <= off[0], 0.0, np.where(u >= off[-1], 1.0, out))


@dataclass(frozen=True, eq=False)
class FsPhotom:
    path: str
    wavelength: np.ndarray
    relresp: np.ndarray
    dispersion: float
    ps_trans: dict  # slit -> (wavelength, transmission)

    def response(self, lam, dlam_per_column):
        """DN/s per uJy in a column of wavelength ``lam`` (um) spanning ``dlam_per_column``."""
        r = np.interp(lam, self.wavelength, self.relresp, left=np.nan, right=np.nan)
        return r * np.abs(dlam_per_column) / self.dispersion

    def point_transmission(self, slit: str, lam):
        if slit not in self.ps_trans:
            raise FsReferenceError(f"{self.path}: no PATHLOSS table for slit {slit!r} "
                                   f"(have {sorted(self.ps_trans)})")
        w, t = self.ps_trans[slit]
        return np.interp(lam, w, t, left=np.nan, right=np.nan)


def _reftype(path: str) -> str:
    try:
        return str(fits.getval(path, "REFTYPE", 0)).strip().upper()
    except Exception:  # noqa: BLE001 - not a reference: no type
        return ""


def find_fs_references(refs_dir: str, detector: str) -> dict[str, str]:
    """Paths of the FSGEOM, PSF and PHOTOM references for ``detector`` in ``refs_dir``.

    Raises
    ------
    FsReferenceError
        Naming the folder and the reference types that are missing.
    """
    out: dict[str, str] = {}
    for name in sorted(os.listdir(refs_dir)):
        if not name.endswith(".fits"):
            continue
        p = os.path.join(refs_dir, name)
        t = _reftype(p)
        if t in ("FSGEOM", "PSF", "PHOTOM"):
            det = str(fits.getval(p, "DETECTOR", 0)).strip().upper()
            if det == detector.upper():
                out.setdefault(t, p)
    missing = [t for t in ("FSGEOM", "PSF", "PHOTOM") if t not in out]
    if missing:
        raise FsReferenceError(
            f"{refs_dir}: no {', '.join(missing)} reference for {detector} (FITS with PRIMARY "
            "REFTYPE and DETECTOR): the fixed-slit pipeline needs the slit geometry, the "
            "point-source profile and the flux calibration")
    return out


def read_fsgeom(path: str) -> FsGeometry:
    """FSGEOM reference -> :class:`FsGeometry` (see the module notes)."""
    slits = {}
    with fits.open(path) as f:
        det = str(f[0].header.get("DETECTOR", "")).strip().upper()
        waves = {h.ver: h for h in f if h.name == "WAVELENGTH"}
        alongs = {h.ver: h for h in f if h.name == "ALONGSLIT"}
        if not waves:
            raise FsReferenceError(f"{path}: no WAVELENGTH extension (expected one per slit)")
        for ver, hw in waves.items():
            if ver not in alongs:
                raise FsReferenceError(f"{path}[WAVELENGTH,{ver}]: no ALONGSLIT extension with "
                                       "the same EXTVER")
            ha = alongs[ver]
            for k in ("SLTNAME", "XSTART", "YSTART", "SLITLEN", "SLITWID"):
                if k not in hw.header:
                    raise FsReferenceError(f"{path}[WAVELENGTH,{ver}]: keyword {k} missing")
            lam = np.asarray(hw.data, np.float64)
            s = np.asarray(ha.data, np.float64)
            if lam.shape != s.shape:
                raise FsReferenceError(f"{path}[{ver}]: WAVELENGTH {lam.shape} and ALONGSLIT "
                                       f"{s.shape} differ")
            name = str(hw.header["SLTNAME"]).strip()
            slits[name] = SlitMap(name, int(hw.header["YSTART"]), int(hw.header["XSTART"]), lam,
                                  s, float(hw.header["SLITLEN"]), float(hw.header["SLITWID"]))
    return FsGeometry(path, det, slits)


def read_psf(path: str) -> PsfProfile:
    """PSF reference -> :class:`PsfProfile`."""
    with fits.open(path) as f:
        for e in ("CDF", "WAVELENGTH", "OFFSET"):
            if e not in f:
                raise FsReferenceError(f"{path}: extension {e} missing (PSF reference)")
        t = np.asarray(f["CDF"].data, np.float64)
        wl = np.asarray(f["WAVELENGTH"].data["WAVELENGTH"], np.float64)
        off = np.asarray(f["OFFSET"].data["OFFSET"], np.float64)
    if t.shape != (wl.size, off.size):
        raise FsReferenceError(f"{path}[CDF]: shape {t.shape}, expected ({wl.size}, {off.size})")
    return PsfProfile(path, wl, off, t)


def read_photom(path: str) -> FsPhotom:
    """PHOTOM reference -> :class:`FsPhotom`."""
    with fits.open(path) as f:
        if "PHOTOM" not in f:
            raise FsReferenceError(f"{path}: extension PHOTOM missing")
        disp = f[0].header.get("DISPERS")
        if disp is None:
            raise FsReferenceError(f"{path}[PRIMARY]: keyword DISPERS (um per column of "
                                   "RELRESP) missing")
        p = f["PHOTOM"].data
        ps = {}
        for h in f:
            if h.name == "PATHLOSS":
                ps[str(h.header["SLTNAME"]).strip()] = (np.asarray(h.data["WAVELENGTH"], float),
                                                        np.asarray(h.data["PS_TRANS"], float))
        return FsPhotom(path, np.asarray(p["WAVELENGTH"], float), np.asarray(p["RELRESP"], float),
                        float(disp), ps)
