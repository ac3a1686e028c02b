"""FS (fixed slits) as a mode plan: one region per slit on the detector; the ensemble is
the nod pattern; products x1d, spec1d, per-slit cut-outs and plots.

The regions come from the FSGEOM reference (slit boxes on the full frame), cut to the
exposure's subarray: SUB2048/SUB512 hold S1600A1 only, ALLSLITS and FULL all five. The
primary slit (FXD_SLIT) holds a point source; the others are treated as extended (jwst's
rule). ``settings`` is an object with ``geometry`` (a
:class:`nirbeam.sources.fs_refs.FsGeometry`): the plan itself reads no file.
"""

from __future__ import annotations

from nirbeam.core.geometry import (
    BackgroundRule,
    BoundingBox,
    EnsembleAxis,
    ModePlan,
    SpectralRegion,
    TraceRule,
    WavelengthRule,
)

__all__ = ["FS", "FS_SLITS", "fs_regions", "fs_ensemble", "source_id_of", "primary_slit"]

FS_SLITS = ("S200A1", "S200A2", "S400A1", "S1600A1", "S200B1")


def source_id_of(slit: str) -> int:
    """Source id of a fixed slit's spectrum: its place in ``FS_SLITS`` (1..5)."""
    return FS_SLITS.index(slit) + 1


def primary_slit(meta) -> str:
    """FXD_SLIT of the exposure (S1600A1 when the header has none)."""
    return str(dict(getattr(meta, "extra", ())).get("FXD_SLIT", "S1600A1")).strip().upper() or "S1600A1"


def fs_regions(meta, settings) -> tuple[SpectralRegion, ...]:
    """Every slit of ``settings.geometry`` that falls on the exposure's science array."""
    geom = settings.geometry
    out = []
    for name in FS_SLITS:
        sm = geom.slits.get(name)
        if sm is None:
            continue
        w = sm.window(meta.substrt1, meta.substrt2, meta.subsize1, meta.subsize2)
        if w is None:
            continue
        (y0, y1, x0, x1), _, _ = w
        out.append(SpectralRegion(
            name, meta.detector, BoundingBox(y0, y1, x0, x1), TraceRule("none"),
            WavelengthRule("map", f"FSGEOM {geom.path}"),
            BackgroundRule("nod_partner", partner="the other nods of the pattern")))
    return tuple(out)


def fs_ensemble(settings) -> EnsembleAxis:
    """The nods of a pattern (integrations of one nod are combined first)."""
    return EnsembleAxis("nod")


FS = ModePlan(
    name="fs",
    exp_types=("NRS_FIXEDSLIT",),
    find_regions=fs_regions,
    ensemble=fs_ensemble,
    products=("rateints", "rate", "cutouts", "x1d", "spec1d", "plots"),
)
