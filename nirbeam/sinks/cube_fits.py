"""The IFU cube as a FITS file in jwst's ``s3d`` (IFUCubeModel) layout.

PRIMARY (the exposure's keywords through the products' shared
:func:`nirbeam.sinks.fits_products.primary_hdu`, ``DATAMODL='IFUCubeModel'``), SCI (float32, (nwave, ny,
nx), MJy/sr), ERR (MJy/sr), DQ (uint32: DO_NOT_USE | NON_SCIENCE where no point reached the
spaxel), WMAP (float32, summed weights). The spatial WCS is linear in the slicer-aligned
frame (jwst's ``coord_system='ifualign'``), arcsec from the pattern's start position:
CTYPE1/2 ``ALPHA``/``BETA`` -- not RA/Dec, which the pipeline does not know without the
telescope's attitude; CTYPE3 ``WAVE`` in µm, linear.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from nirbeam.sinks.fits_products import primary_hdu

__all__ = ["write_s3d"]

_DNU_NONSCI = np.uint32(1 | 512)


def _wcs(h: fits.Header, grid) -> None:
    for i, (ctype, crval, cdelt, unit) in enumerate(
            (("ALPHA", grid.x0, grid.cdelt, "arcsec"), ("BETA", grid.y0, grid.cdelt, "arcsec"),
             ("WAVE", grid.wave0, grid.dwave, "um")), start=1):
        h[f"CTYPE{i}"] = ctype
        h[f"CRPIX{i}"] = 1.0
        h[f"CRVAL{i}"] = float(crval)
        h[f"CDELT{i}"] = float(cdelt)
        h[f"CUNIT{i}"] = unit
    h["WCSAXES"] = 3
    h["COMMENT"] = "ALPHA/BETA: slicer-aligned frame (ifualign), arcsec, not sky RA/Dec"


def write_s3d(path: str, sci, err, wmap, grid, header: dict, meta: dict | None = None) -> str:
    """Write the cube (see the module notes). ``sci``/``err``/``wmap``: (nwave, ny, nx)."""
    sci = np.asarray(sci, np.float32)
    if sci.shape != grid.shape:
        raise ValueError(f"{path}: cube {sci.shape}, expected the grid's {grid.shape}")
    ph = primary_hdu(header, "IFUCubeModel").header  # structural keys left out, as every product
    ph["DATAMODL"] = ("IFUCubeModel", "Type of data model")
    ph["FILETYPE"] = ("calibrated", "Type of data in the file")
    ph["CAL_VER"] = ("nirbeam", "Calibration software (nirbeam, not jwst)")
    for k, v in (meta or {}).items():
        ph[f"HIERARCH NIRBEAM {k.upper()}"] = v
    dq = np.where(np.asarray(wmap) > 0, np.uint32(0), _DNU_NONSCI).astype(np.uint32)
    hdus = [fits.PrimaryHDU(header=ph)]
    for name, arr, unit in (("SCI", sci, "MJy/sr"), ("ERR", np.asarray(err, np.float32), "MJy/sr"),
                            ("DQ", dq, None), ("WMAP", np.asarray(wmap, np.float32), None)):
        h = fits.ImageHDU(arr, name=name)
        if unit:
            h.header["BUNIT"] = unit
        _wcs(h.header, grid)
        hdus.append(h)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
