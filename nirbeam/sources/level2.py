"""Reader of jwst level-2 slit files: SlitModel and MultiSlitModel FITS (calwebb_spec2
products such as ``*_cal.fits``, ``*_photom.fits`` or msaexp's ``*_phot.<slit>.<source>.fits``).

Layout (stdatamodels ``slit.schema`` / ``multislit.schema``): one ``SCI`` extension per
slit (``EXTVER`` 1..n) carrying the slit keywords (``SLTNAME``, ``SLITID``, ``SOURCEID``,
``SRCNAME``, ``SHUTSTA``, ``SLTSTRT1/2``, ``SLTSIZE1/2``, ``SRCXPOS/SRCYPOS``, ``BUNIT``,
``PIXAR_SR``), then ``ERR``, ``DQ``, ``WAVELENGTH``, ``VAR_POISSON``, ``VAR_RNOISE``,
``VAR_FLAT``, ``BARSHADOW``, ``PATHLOSS_PS``, ``PATHLOSS_UN`` (...) with the same
``EXTVER``. The exposure keywords (``EXP_TYPE``, ``DETECTOR``, ``PATT_NUM``, ``NOD_TYPE``,
``MSAMETFL``, ``MSAMETID``...) are in the primary header.

Each slit becomes a :class:`Level2Slit`: plain arrays plus the keywords, and a
:class:`~nirbeam.core.geometry.SpectralRegion` (:meth:`Level2Slit.region`) placing the
cut-out on the detector. Nothing downstream sees an HDU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from nirbeam.core.geometry import (
    BackgroundRule,
    BoundingBox,
    SpectralRegion,
    TraceRule,
    WavelengthRule,
)
from nirbeam.stream.uncal import BadInputError

__all__ = ["Level2Slit", "read_level2", "is_level2_slit_file", "SLIT_ARRAYS"]

#: Per-slit image extensions read besides SCI (EXTNAME -> attribute); ERR, DQ and
#: WAVELENGTH are required, the others optional (None when absent).
SLIT_ARRAYS = {
    "ERR": "err", "DQ": "dq", "WAVELENGTH": "wavelength", "VAR_POISSON": "var_poisson",
    "VAR_RNOISE": "var_rnoise", "VAR_FLAT": "var_flat", "BARSHADOW": "barshadow",
    "PATHLOSS_PS": "pathloss_ps", "PATHLOSS_UN": "pathloss_un",
}
_REQUIRED = ("ERR", "DQ", "WAVELENGTH")
_MODELS = ("SlitModel", "MultiSlitModel")


@dataclass(frozen=True, eq=False)
class Level2Slit:
    """One slit of a level-2 file.

    Arrays are (ny, nx) float32 in the file's orientation (x = dispersion); ``sci`` and
    ``err`` in ``bunit`` (MJy/sr after photom for a resolved-source calibration, MJy for a
    point-source one), variances in ``bunit`` squared, ``dq`` uint32, ``wavelength`` µm
    (NaN off the slit). ``xstart``/``ystart`` are the 1-based detector pixel of the
    cut-out's first column/row (``SLTSTRT1/2``).
    """

    path: str
    extver: int
    name: str
    exposure: str
    detector: str
    exp_type: str
    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    wavelength: np.ndarray
    bunit: str
    xstart: int
    ystart: int
    slitlet_id: int | None = None
    source_id: int | None = None
    source_name: str = ""
    source_alias: str = ""
    shutter_state: str = ""
    srcxpos: float | None = None
    srcypos: float | None = None
    pixar_sr: float | None = None
    patt_num: int | None = None
    nod_type: str = ""
    numdthpt: int | None = None
    msametfl: str = ""
    msametid: int | None = None
    filter: str = ""
    grating: str = ""
    effexptm: float | None = None
    var_poisson: np.ndarray | None = None
    var_rnoise: np.ndarray | None = None
    var_flat: np.ndarray | None = None
    barshadow: np.ndarray | None = None
    pathloss_ps: np.ndarray | None = None
    pathloss_un: np.ndarray | None = None
    keywords: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the cut-out."""
        return self.sci.shape

    @property
    def bbox(self) -> BoundingBox:
        """The cut-out's detector pixels, 0-based half-open, full-frame frame."""
        ny, nx = self.shape
        return BoundingBox(self.ystart - 1, self.ystart - 1 + ny, self.xstart - 1, self.xstart - 1 + nx)

    def region(self) -> SpectralRegion:
        """The slit as a region: its box on the detector, wavelengths from the file's
        WAVELENGTH map, the trace fitted on the data, background from the nod partners."""
        return SpectralRegion(
            name=self.name, detector=self.detector, bbox=self.bbox,
            trace=TraceRule("fit", 1),
            wavelength=WavelengthRule("map", f"{os.path.basename(self.path)}[WAVELENGTH,{self.extver}]"),
            background=BackgroundRule("nod_partner", partner="other nods"),
        )

    @property
    def variance(self) -> np.ndarray:
        """Total variance: VAR_POISSON + VAR_RNOISE + VAR_FLAT where present, else ERR**2."""
        parts = [v for v in (self.var_poisson, self.var_rnoise, self.var_flat) if v is not None]
        if not parts:
            return np.asarray(self.err, np.float64) ** 2
        return np.sum([np.asarray(p, np.float64) for p in parts], axis=0)


def is_level2_slit_file(path: str) -> bool:
    """True for a FITS file whose primary DATAMODL is SlitModel or MultiSlitModel (or,
    without DATAMODL, one with a SCI extension carrying SLTNAME)."""
    try:
        with fits.open(path, memmap=False) as h:
            model = str(h[0].header.get("DATAMODL", ""))
            if model in _MODELS:
                return True
            if model:
                return False
            return any(x.name == "SCI" and "SLTNAME" in x.header for x in h[1:])
    except (OSError, ValueError):
        return False


def _int(v):
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return int(v)


def _float(v):
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return float(v)


def _exposure_root(path: str) -> str:
    """``jw01345062001_03101_00001_nrs2_phot.138.1345_933.fits`` ->
    ``jw01345062001_03101_00001``."""
    name = os.path.basename(path)
    parts = name.split("_")
    if len(parts) >= 3 and parts[0].startswith("jw"):
        return "_".join(parts[:3])
    return name.rsplit(".fits", 1)[0]


def read_level2(path: str) -> tuple[Level2Slit, ...]:
    """Every slit of a level-2 SlitModel/MultiSlitModel FITS file.

    Raises
    ------
    BadInputError
        Naming the file, extension and keyword when a required extension or keyword is
        missing or has the wrong shape (e.g. ``file.fits[DQ,2]: missing: every SCI
        extension needs ERR, DQ and WAVELENGTH with the same EXTVER``).
    """
    path = str(path)
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"cannot open as FITS: {exc}") from None
    with hdul:
        ph = hdul[0].header
        model = str(ph.get("DATAMODL", ""))
        if model and model not in _MODELS:
            raise BadInputError(path, f"DATAMODL={model!r}: expected a level-2 slit file "
                                f"({' or '.join(_MODELS)})", "PRIMARY", "DATAMODL")
        exts: dict[tuple[str, int], fits.ImageHDU] = {}
        for x in hdul[1:]:
            if isinstance(x, fits.ImageHDU):
                exts[(x.name, int(x.header.get("EXTVER", 1)))] = x
        vers = sorted(v for (n, v) in exts if n == "SCI")
        if not vers:
            raise BadInputError(path, "no SCI image extension: not a level-2 slit file", "SCI")
        for key in ("DETECTOR", "EXP_TYPE"):
            if not str(ph.get(key, "")).strip():
                raise BadInputError(path, f"missing {key} (needed to place the slits)", "PRIMARY", key)
        slits = []
        for v in vers:
            sci_h = exts[("SCI", v)]
            h = sci_h.header
            sci = np.asarray(sci_h.data, np.float32)
            if sci.ndim != 2:
                raise BadInputError(path, f"SCI is {sci.ndim}-D {sci.shape}: expected 2-D (ny, nx)",
                                    f"SCI,{v}")
            arrays = {}
            for ext, attr in SLIT_ARRAYS.items():
                hdu = exts.get((ext, v))
                if hdu is None or hdu.data is None:
                    if ext in _REQUIRED:
                        raise BadInputError(path, f"missing: every SCI extension needs {', '.join(_REQUIRED)} "
                                            "with the same EXTVER", f"{ext},{v}")
                    arrays[attr] = None
                    continue
                a = np.asarray(hdu.data)
                if a.shape != sci.shape:
                    raise BadInputError(path, f"shape {a.shape} differs from SCI {sci.shape}", f"{ext},{v}")
                arrays[attr] = a.astype(np.uint32) if ext == "DQ" else a.astype(np.float32)
            name = str(h.get("SLTNAME", "")).strip()
            if not name:
                raise BadInputError(path, "missing SLTNAME (the slit's name)", f"SCI,{v}", "SLTNAME")
            bunit = str(h.get("BUNIT", "")).strip()
            if not bunit:
                raise BadInputError(path, "missing BUNIT: the unit of SCI is unknown", f"SCI,{v}", "BUNIT")
            xstart, ystart = h.get("SLTSTRT1"), h.get("SLTSTRT2")
            if xstart is None or ystart is None:
                raise BadInputError(path, "missing SLTSTRT1/SLTSTRT2: the cut-out's place on the detector",
                                    f"SCI,{v}", "SLTSTRT1" if xstart is None else "SLTSTRT2")
            pixar = _float(h.get("PIXAR_SR", ph.get("PIXAR_SR")))
            slits.append(Level2Slit(
                path=path, extver=v, name=name, exposure=_exposure_root(path),
                detector=str(ph["DETECTOR"]).strip().upper(), exp_type=str(ph["EXP_TYPE"]).strip(),
                sci=sci, bunit=bunit, xstart=int(xstart), ystart=int(ystart),
                slitlet_id=_int(h.get("SLITID")), source_id=_int(h.get("SOURCEID")),
                source_name=str(h.get("SRCNAME", "")).strip(), source_alias=str(h.get("SRCALIAS", "")).strip(),
                shutter_state=str(h.get("SHUTSTA", "")).strip(),
                srcxpos=_float(h.get("SRCXPOS")), srcypos=_float(h.get("SRCYPOS")), pixar_sr=pixar,
                patt_num=_int(ph.get("PATT_NUM")), nod_type=str(ph.get("NOD_TYPE", "")).strip(),
                numdthpt=_int(ph.get("NUMDTHPT")), msametfl=str(ph.get("MSAMETFL", "")).strip(),
                msametid=_int(ph.get("MSAMETID")), filter=str(ph.get("FILTER", "")).strip(),
                grating=str(ph.get("GRATING", "")).strip(), effexptm=_float(ph.get("EFFEXPTM")),
                keywords={k: h[k] for k in ("SRCTYPE", "SRCRA", "SRCDEC", "STLARITY", "SHUTTRID")
                          if k in h},
                **arrays,
            ))
        return tuple(slits)
