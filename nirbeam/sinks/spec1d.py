"""1-D spectra products of the slit modes: ``x1d.fits`` (jwst MultiSpecModel) and
``spec1d_<source_id>.ecsv``.

x1d follows stdatamodels' ``multispec.schema`` (jwst calwebb_spec2/spec3 ``_x1d``): the
exposure's primary header, then one ``EXTRACT1D`` binary table per spectrum (``EXTVER``
1..n, in order), each with every column of ``spectable.schema`` in its order and dtype
(WAVELENGTH um, FLUX and FLUX_ERROR in Jy as jwst writes them, ..., DQ uint32, NPIXELS)
and the spectrum's keywords (SLTNAME, SOURCEID, SRCNAME, SRCTYPE, DETECTOR, SPORDER,
DISPAXIS, ...). A spectrum that was not flux-calibrated keeps its own unit (``TUNIT`` and
``BUNIT`` say ``DN/s`` and a COMMENT says it is not Jy): no flux is ever labelled with a
unit it was not calibrated to.

The ECSV has columns ``wavelength`` (um), ``flux`` and ``flux_error`` (uJy), ``dq``,
and the spectrum's metadata. It is written only for calibrated spectra
(:class:`~nirbeam.core.spectra.UnitError` otherwise) unless ``allow_uncalibrated``,
which writes the flux in its own unit, says so in the column units and sets
``meta['flux_calibrated'] = False``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from nirbeam.core.spectra import Spectrum1D, UnitError, to_ujy_factor
from nirbeam.sinks.fits_products import primary_hdu
from nirbeam.sinks.fs import atomic_path

__all__ = ["X1D_COLUMNS", "x1d_hdulist", "write_x1d", "spec1d_table", "write_spec1d_ecsv",
           "spec1d_name", "UnitError"]

#: stdatamodels ``spectable.schema`` columns: name, numpy dtype.
X1D_COLUMNS: tuple[tuple[str, str], ...] = (
    ("WAVELENGTH", "float64"), ("FLUX", "float64"), ("FLUX_ERROR", "float64"),
    ("FLUX_VAR_POISSON", "float64"), ("FLUX_VAR_RNOISE", "float64"),
    ("FLUX_VAR_FLAT", "float64"), ("SURF_BRIGHT", "float64"), ("SB_ERROR", "float64"),
    ("SB_VAR_POISSON", "float64"), ("SB_VAR_RNOISE", "float64"), ("SB_VAR_FLAT", "float64"),
    ("DQ", "uint32"), ("BACKGROUND", "float64"), ("BKGD_ERROR", "float64"),
    ("BKGD_VAR_POISSON", "float64"), ("BKGD_VAR_RNOISE", "float64"),
    ("BKGD_VAR_FLAT", "float64"), ("NPIXELS", "float64"),
)


def _x1d_unit(sp: Spectrum1D) -> tuple[str, float]:
    """(unit written in the x1d, factor from the spectrum's unit): Jy when calibrated."""
    if sp.calibrated:
        return "Jy", to_ujy_factor(sp.flux_unit) / to_ujy_factor("Jy")
    return sp.flux_unit, 1.0


def _sq(unit: str) -> str:
    return f"({unit})^2" if "/" in unit else f"{unit}^2"


def _table_hdu(sp: Spectrum1D, extver: int) -> fits.BinTableHDU:
    n = sp.size
    unit, f = _x1d_unit(sp)
    nan = np.full(n, np.nan)

    def opt(a, p=1):
        return nan if a is None else a * f ** p

    sb = nan if sp.surf_bright is None else sp.surf_bright
    sbe = nan if sp.sb_error is None else sp.sb_error
    values = {
        "WAVELENGTH": sp.wavelength, "FLUX": sp.flux * f, "FLUX_ERROR": sp.flux_error * f,
        "FLUX_VAR_POISSON": opt(sp.flux_var_poisson, 2),
        "FLUX_VAR_RNOISE": opt(sp.flux_var_rnoise, 2),
        "FLUX_VAR_FLAT": nan, "SURF_BRIGHT": sb, "SB_ERROR": sbe, "SB_VAR_POISSON": nan,
        "SB_VAR_RNOISE": nan, "SB_VAR_FLAT": nan, "DQ": sp.dq,
        "BACKGROUND": opt(sp.background), "BKGD_ERROR": nan, "BKGD_VAR_POISSON": nan,
        "BKGD_VAR_RNOISE": nan, "BKGD_VAR_FLAT": nan,
        "NPIXELS": nan if sp.npixels is None else sp.npixels,
    }
    sbu = sp.sb_unit or None
    units = {"WAVELENGTH": "um", "FLUX": unit, "FLUX_ERROR": unit,
             "FLUX_VAR_POISSON": _sq(unit), "FLUX_VAR_RNOISE": _sq(unit),
             "FLUX_VAR_FLAT": _sq(unit), "SURF_BRIGHT": sbu, "SB_ERROR": sbu,
             "BACKGROUND": unit}
    cols = []
    for name, dt in X1D_COLUMNS:
        a = np.asarray(values[name], dt)
        if dt == "uint32":  # FITS has no uint32: int32 with TZERO = 2**31
            cols.append(fits.Column(name, "J", array=a, bzero=2147483648))
        else:
            cols.append(fits.Column(name, "D", unit=units.get(name), array=a))
    h = fits.BinTableHDU.from_columns(cols, name="EXTRACT1D")
    hd = h.header
    hd["EXTVER"] = extver
    hd["SLTNAME"] = (sp.region, "slit name")
    hd["SOURCEID"] = (int(sp.source_id), "source ID")
    hd["SRCNAME"] = (str(sp.source_name)[:68], "source name")
    hd["SRCTYPE"] = (sp.source_type, "source type used for calibration")
    if sp.detector:
        hd["DETECTOR"] = sp.detector
    hd["SPORDER"] = 1
    hd["DISPAXIS"] = 1
    hd["BUNIT"] = (unit, "unit of FLUX, FLUX_ERROR, BACKGROUND")
    hd["WLSOURCE"] = str(sp.wavelength_source or "unknown")[:68]
    ex = sp.extraction
    if "source_ypos" in ex:
        hd["SRCYPOS"] = (float(ex["source_ypos"]), "source position in slit (y-axis)")
    if "source_xpos" in ex:
        hd["SRCXPOS"] = (float(ex["source_xpos"]), "source position in slit (x-axis)")
    for k in ("method", "background"):
        if k in ex:
            hd[f"HIERARCH NIRBEAM {k.upper()}"] = str(ex[k])[:60]
    if not sp.calibrated:
        hd["COMMENT"] = (f"FLUX is in {unit}, NOT Jy: no flux calibration was applied.")
    hd["COMMENT"] = ("FLUX_VAR_FLAT, SB_VAR_*, BKGD_ERROR and BKGD_VAR_* are NaN: not "
                     "measured.")
    return h


def x1d_hdulist(spectra: Sequence[Spectrum1D], header: Mapping[str, object]) -> fits.HDUList:
    """The MultiSpecModel HDUs (see :func:`write_x1d`)."""
    if not spectra:
        raise ValueError("x1d: no spectra to write (an x1d holds at least one EXTRACT1D)")
    ph = primary_hdu(header, "MultiSpecModel", skip=frozenset({"BUNIT"}))
    return fits.HDUList([ph] + [_table_hdu(sp, i) for i, sp in enumerate(spectra, start=1)])


def write_x1d(path: str, spectra: Sequence[Spectrum1D], header: Mapping[str, object]) -> str:
    """Write ``x1d.fits``: one EXTRACT1D per spectrum, in the order given.

    Parameters
    ----------
    path : str
        Local path or fsspec URL.
    spectra : sequence of Spectrum1D
    header : mapping
        Primary-header keywords (the exposure's: INSTRUME, DETECTOR, EXP_TYPE, FILTER,
        GRATING, FXD_SLIT...). Structural keywords are dropped.
    """
    with atomic_path(path) as tmp:
        x1d_hdulist(list(spectra), header).writeto(tmp, overwrite=True)
    return path


def spec1d_name(source_id: int) -> str:
    """File name of a source's ECSV: ``spec1d_<source_id>.ecsv``."""
    return f"spec1d_{int(source_id)}.ecsv"


def spec1d_table(sp: Spectrum1D, *, allow_uncalibrated: bool = False) -> Table:
    """The ECSV table of one spectrum (see the module notes).

    Raises
    ------
    UnitError
        When the spectrum is not flux-calibrated and ``allow_uncalibrated`` is False.
    """
    if sp.calibrated:
        s = sp.in_unit("uJy")
        unit = "uJy"
    elif allow_uncalibrated:
        s, unit = sp, sp.flux_unit
    else:
        raise UnitError(
            f"spec1d for source {sp.source_id} ({sp.region}): flux is in {sp.flux_unit!r}, "
            "not flux-calibrated; the ECSV's flux column is uJy. Give the pipeline a flux "
            "calibration (PHOTOM reference) or pass allow_uncalibrated=True to write "
            f"{sp.flux_unit!r}")
    t = Table()
    t["wavelength"] = s.wavelength
    t["wavelength"].unit = "um"
    t["flux"] = s.flux
    t["flux"].unit = unit
    t["flux_error"] = s.flux_error
    t["flux_error"].unit = unit
    t["dq"] = s.dq.astype(np.uint32)
    t["wavelength"].description = f"wavelength ({s.wavelength_source or 'source unknown'})"
    t["flux"].description = "flux density" if sp.calibrated else "NOT flux-calibrated"
    t["dq"].description = "JWST DQ bits (DO_NOT_USE=1: not measured)"
    meta = {
        "source_id": int(sp.source_id), "source_name": sp.source_name, "slit": sp.region,
        "source_type": sp.source_type, "detector": sp.detector, "exposure": sp.exposure,
        "flux_calibrated": bool(sp.calibrated), "flux_unit": unit,
        "wavelength_source": sp.wavelength_source,
        "extraction": json.loads(json.dumps(dict(sp.extraction), default=str)),
    }
    t.meta.update(meta)
    return t


def write_spec1d_ecsv(path: str, sp: Spectrum1D, *, allow_uncalibrated: bool = False) -> str:
    """Write one source's ``spec1d_<source_id>.ecsv`` (``path`` is the file; see
    :func:`spec1d_name`). Raises :class:`~nirbeam.core.spectra.UnitError` for an
    uncalibrated spectrum unless ``allow_uncalibrated``."""
    t = spec1d_table(sp, allow_uncalibrated=allow_uncalibrated)
    with atomic_path(path) as tmp:
        t.write(tmp, format="ascii.ecsv", overwrite=True)
    return path

