"""Readers of the IFU references the cube pipeline uses: the geometry maps (what jwst's
``assign_wcs`` gives per pixel), the flux calibration and the point-source aperture
correction. Each returns plain arrays in a frozen dataclass; errors name the file, the
extension and what was expected.

Files (``nirbeam simulate --preset ifu`` writes them into ``OUTDIR/ifu_refs/``):

``geometry_<det>.fits``
    WAVELENGTH (µm), ALPHA (along-slice, arcsec), BETA (across-slice, arcsec): float,
    (ny, nx), NaN off the slices; SLICE: int, (ny, nx), -1 off the slices; primary
    keywords SLICEWID (arcsec across a slice), PIXSCALE (arcsec along a slice per row).
``photom.fits``
    Table PHOTOM: WAVELENGTH (µm), CONVERSION (DN/s per MJy/sr).
``apcorr.fits``
    Table APCORR: WAVELENGTH (µm), RADIUS (arcsec), APCORR (multiplier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = ["IFUGeometry", "IFUPhotom", "IFUApcorr", "read_geometry", "read_photom",
           "read_apcorr", "IFURefError"]


class IFURefError(ValueError):
    """An IFU reference is missing or does not hold what is expected."""


@dataclass(frozen=True, eq=False)
class IFUGeometry:
    """Per-pixel maps of one detector (see the module notes)."""

    path: str
    wave: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    slice: np.ndarray
    slice_width: float
    pixel_scale: float


@dataclass(frozen=True, eq=False)
class IFUPhotom:
    """Flux calibration: ``conversion`` DN/s per MJy/sr at ``wave`` µm."""

    path: str
    wave: np.ndarray
    conversion: np.ndarray

    def at(self, wave_um: np.ndarray) -> np.ndarray:
        """Conversion at ``wave_um`` (linear interpolation; NaN outside the table)."""
        return np.interp(wave_um, self.wave, self.conversion, left=np.nan, right=np.nan)


@dataclass(frozen=True, eq=False)
class IFUApcorr:
    """Point-source aperture ``radius`` (arcsec) and correction ``apcorr`` at ``wave``."""

    path: str
    wave: np.ndarray
    radius: np.ndarray
    apcorr: np.ndarray


def _ext(hdul, name, path):
    if name not in hdul:
        raise IFURefError(f"{path}: no extension {name} (have "
                          f"{[h.name for h in hdul]})")
    return hdul[name]


def _cols(hdu, names, path):
    have = [c.name.upper() for c in hdu.columns]
    for n in names:
        if n not in have:
            raise IFURefError(f"{path}: extension {hdu.name} has no column {n} (have {have})")
    return [np.asarray(hdu.data[n], np.float64) for n in names]


def read_geometry(path: str, shape: tuple[int, int] | None = None) -> IFUGeometry:
    """Read ``geometry_<det>.fits``; with ``shape``, check it is the science array's."""
    if not os.path.isfile(path):
        raise IFURefError(f"{path}: no IFU geometry reference (expected WAVELENGTH, ALPHA, "
                          "BETA and SLICE per pixel)")
    with fits.open(path) as f:
        arrs = {n: np.asarray(_ext(f, n, path).data) for n in ("WAVELENGTH", "ALPHA", "BETA", "SLICE")}
        ph = f[0].header
        for k in ("SLICEWID", "PIXSCALE"):
            if k not in ph:
                raise IFURefError(f"{path}: PRIMARY has no keyword {k} (arcsec)")
        sw, ps = float(ph["SLICEWID"]), float(ph["PIXSCALE"])
    shp = arrs["WAVELENGTH"].shape
    for n, a in arrs.items():
        if a.shape != shp:
            raise IFURefError(f"{path}: extension {n} is {a.shape}, expected {shp} like WAVELENGTH")
    if shape is not None and tuple(shape) != shp:
        raise IFURefError(f"{path}: maps are {shp}, expected the science array's {tuple(shape)}")
    return IFUGeometry(path, arrs["WAVELENGTH"].astype(np.float64), arrs["ALPHA"].astype(np.float64),
                       arrs["BETA"].astype(np.float64), arrs["SLICE"].astype(np.int16), sw, ps)


def read_photom(path: str) -> IFUPhotom:
    """Read ``photom.fits`` (table PHOTOM: WAVELENGTH, CONVERSION)."""
    if not os.path.isfile(path):
        raise IFURefError(f"{path}: no IFU flux calibration (table PHOTOM: WAVELENGTH um, "
                          "CONVERSION DN/s per MJy/sr)")
    with fits.open(path) as f:
        w, c = _cols(_ext(f, "PHOTOM", path), ["WAVELENGTH", "CONVERSION"], path)
    if not (np.all(np.diff(w) > 0) and np.all(c > 0)):
        raise IFURefError(f"{path}: PHOTOM WAVELENGTH must increase and CONVERSION be > 0")
    return IFUPhotom(path, w, c)


def read_apcorr(path: str) -> IFUApcorr:
    """Read ``apcorr.fits`` (table APCORR: WAVELENGTH, RADIUS, APCORR)."""
    if not os.path.isfile(path):
        raise IFURefError(f"{path}: no aperture-correction reference (table APCORR: "
                          "WAVELENGTH um, RADIUS arcsec, APCORR)")
    with fits.open(path) as f:
        w, r, a = _cols(_ext(f, "APCORR", path), ["WAVELENGTH", "RADIUS", "APCORR"], path)
    return IFUApcorr(path, w, r, a)
