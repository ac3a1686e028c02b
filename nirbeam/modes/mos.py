"""MOS (NIRSpec micro-shutter array, EXP_TYPE ``NRS_MSASPEC``) as a mode plan: the
regions are the open slitlets of the exposure, the ensemble is the nod pattern.

Regions come from either
* the MSA metadata file (``MSAMETFL``, rows of ``MSAMETID`` and ``PATT_NUM``, read by
  :mod:`nirbeam.sources.msa`) placed on the detector by an MSA geometry reference
  (:class:`MSAGeometry`: the detector row of each shutter column, the column offset of
  each shutter row, the wavelength polynomial) -- for nirbeam's own stage 1 from uncal;
* or the slits of jwst level-2 files (:mod:`nirbeam.sources.level2`, each with its box
  and WAVELENGTH map) -- for calwebb_spec2 products.

Every region's background rule is ``nod_partner`` (the other nods of the pattern); the
slitlets without a primary shutter (background slitlets) are the sky reference of the
exposure (master background, bar-shadow profile).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from nirbeam.core.geometry import (
    BackgroundRule,
    BoundingBox,
    EnsembleAxis,
    ModePlan,
    SpectralRegion,
    TraceRule,
    WavelengthRule,
)

__all__ = ["MOS", "MSAGeometry", "mos_regions", "mos_ensemble", "slitlet_region", "is_mos_level2",
           "is_mos_uncal", "read_geometry"]


@dataclass(frozen=True)
class MSAGeometry:
    """Where MSA shutters land on one detector (a linear model; the simulator's, or a
    fit to a real exposure's traces).

    The shutter of quadrant ``q``, row ``r`` and column ``c`` (1-based, as SHUTTER_INFO)
    has its along-slit centre at detector row ``y0 + pitch * (c - 1)`` (0-based, rows run
    along the slit) and its spectrum starts at detector column ``x0 + dx * (r - 1)``,
    ``nx_spec`` columns long, with wavelength ``lam(t) = sum_k wave[k] t**k`` µm,
    ``t = column - start`` (columns 0-based). ``open_rows`` is the open part of a shutter
    (rows, centred), the rest of the pitch being the bar between shutters.
    """

    detector: str
    y0: float
    pitch: float
    x0: int
    dx: int
    nx_spec: int
    wave: tuple[float, ...]
    open_rows: float
    source: str = ""

    def row_of(self, column: float) -> float:
        return self.y0 + self.pitch * (column - 1)

    def column_of_row(self, y: float) -> float:
        """Inverse of :meth:`row_of` (the shutter column whose centre is at row ``y``)."""
        return (y - self.y0) / self.pitch + 1

    def x_start(self, shutter_row: int) -> int:
        return int(self.x0 + self.dx * (shutter_row - 1))

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def read_geometry(path: str) -> MSAGeometry:
    """An :class:`MSAGeometry` from its JSON reference file (keys as the fields)."""
    with open(path) as fh:
        d = json.load(fh)
    missing = [k for k in MSAGeometry.__dataclass_fields__ if k not in d and k != "source"]
    if missing:
        raise ValueError(f"{path}: MSA geometry reference lacks {missing}")
    d["wave"] = tuple(float(v) for v in d["wave"])
    d.setdefault("source", os.path.basename(path))
    return MSAGeometry(**{k: d[k] for k in MSAGeometry.__dataclass_fields__})


def slitlet_region(slitlet, geom: MSAGeometry, shape: tuple[int, int], margin: int = 1) -> SpectralRegion:
    """One MSA slitlet (:class:`nirbeam.sources.msa.MSASlitlet`) as a region: the rows of
    its shutters (``pitch`` rows each, from the first shutter's first row) plus ``margin``
    rows either side, the columns of its spectrum."""
    ny, nx = shape
    cmin, cmax = min(slitlet.columns), max(slitlet.columns)
    first = int(np.floor(geom.row_of(cmin) - (geom.pitch - 1) / 2 + 0.5)) - margin
    y0 = max(0, first)
    y1 = min(ny, first + int(round((cmax - cmin + 1) * geom.pitch)) + 2 * margin)
    x0 = max(0, geom.x_start(slitlet.xcen))
    x1 = min(nx, x0 + geom.nx_spec)
    return SpectralRegion(
        name=slitlet.name, detector=geom.detector, bbox=BoundingBox(y0, y1, x0, x1),
        trace=TraceRule("fit", 1),
        wavelength=WavelengthRule("polynomial", f"MSA geometry {geom.source}", tuple(geom.wave)),
        background=BackgroundRule("nod_partner", partner="other nods"))


def mos_regions(meta, settings) -> tuple[SpectralRegion, ...]:
    """The open slitlets of an exposure/detector.

    ``meta.extra`` must carry ``MSAMETFL`` (a path, or a name found next to the exposure
    in ``MSA_DIR``), ``MSAMETID``, ``PATT_NUM`` and ``MSA_GEOMETRY`` (the geometry
    reference's path): the MOS pipeline adds them from the uncal headers and the
    references folder.
    """
    from nirbeam.sources.msa import read_msa

    extra = dict(meta.extra)
    for k in ("MSAMETFL", "MSAMETID", "PATT_NUM", "MSA_GEOMETRY"):
        if k not in extra:
            raise ValueError(f"{meta.exposure} {meta.detector}: MOS regions need {k} (uncal "
                             "primary header MSAMETFL/MSAMETID/PATT_NUM; MSA geometry reference)")
    msa = extra["MSAMETFL"]
    if not os.path.isabs(msa) and extra.get("MSA_DIR"):
        msa = os.path.join(extra["MSA_DIR"], msa)
    geom = read_geometry(extra["MSA_GEOMETRY"])
    slits = read_msa(msa, int(extra["MSAMETID"]), int(extra["PATT_NUM"]))
    return tuple(slitlet_region(s, geom, meta.image_shape) for s in slits if not s.fixed_slit)


def mos_ensemble(settings) -> EnsembleAxis:
    """The nods of the pattern (3-shutter slitlet nods: three exposures)."""
    return EnsembleAxis("nod")


def is_mos_level2(inputs) -> bool:
    """True when every FITS input (files, or the ``*.fits`` of folders) is a jwst level-2
    slit file of EXP_TYPE NRS_MSASPEC."""
    from astropy.io import fits

    from nirbeam.sources.level2 import is_level2_slit_file

    paths = []
    for p in inputs:
        p = str(p)
        if os.path.isdir(p):
            paths += [os.path.join(p, f) for f in sorted(os.listdir(p)) if f.lower().endswith(".fits")]
        elif os.path.isfile(p):
            paths.append(p)
    if not paths:
        return False
    for p in paths:
        if not is_level2_slit_file(p):
            return False
        try:
            if str(fits.getheader(p).get("EXP_TYPE", "")).strip().upper() != "NRS_MSASPEC":
                return False
        except OSError:
            return False
    return True


def is_mos_uncal(inputs) -> bool:
    """True when the inputs (files, or the ``*_uncal.fits`` of folders) are uncal
    exposures of EXP_TYPE NRS_MSASPEC."""
    from astropy.io import fits

    paths = []
    for p in inputs:
        p = str(p)
        if os.path.isdir(p):
            paths += [os.path.join(p, f) for f in sorted(os.listdir(p)) if f.endswith("_uncal.fits")]
        elif os.path.isfile(p) and p.endswith(".fits"):
            paths.append(p)
    if not paths:
        return False
    try:
        return all(str(fits.getheader(p).get("EXP_TYPE", "")).strip().upper() == "NRS_MSASPEC"
                   and str(fits.getheader(p).get("DATAMODL", "")) not in ("SlitModel", "MultiSlitModel")
                   for p in paths)
    except OSError:
        return False


MOS = ModePlan(
    name="mos",
    exp_types=("NRS_MSASPEC",),
    find_regions=mos_regions,
    ensemble=mos_ensemble,
    products=("x1d", "spec1d", "cutouts", "plots"),
)
