"""IFU (NIRSpec integral-field unit) as a mode plan: 30 slice regions per detector, found
in the geometry reference's SLICE map; the ensemble is the dither pattern; the products
are the cube set.

``settings`` is an object (or mapping) with ``slice_map``: the SLICE map of the exposure's
detector (int, (ny, nx), -1 off the slices), read by the pipeline from the geometry
reference (``ifu_refs/geometry_<det>.fits``, as jwst's ``assign_wcs`` gives the slices) and
``geometry_source`` naming that file. A region's box is the slice's bounding box; it has
no trace (the rows of a slice are its spatial axis), its wavelengths are the map's, and
the IFU has no per-region background rule (the dithers are combined in the cube).
"""

from __future__ import annotations

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

__all__ = ["IFU", "ifu_regions", "ifu_ensemble", "NSLICES", "slice_name"]

NSLICES = 30


def slice_name(s: int) -> str:
    """Region name of slice ``s`` (0-based): ``slice_NN``."""
    return f"slice_{s:02d}"


def _get(settings, key):
    if isinstance(settings, dict):
        return settings.get(key)
    return getattr(settings, key, None)


def ifu_regions(meta, settings) -> tuple[SpectralRegion, ...]:
    """The 30 slice regions of an exposure/detector, from the SLICE map in ``settings``."""
    smap = _get(settings, "slice_map")
    src = str(_get(settings, "geometry_source") or "IFU geometry reference")
    if smap is None:
        raise ValueError(f"{getattr(meta, 'exposure', '?')}: the IFU plan needs the SLICE map "
                         "of the geometry reference (settings.slice_map)")
    smap = np.asarray(smap)
    if smap.shape != tuple(meta.image_shape):
        raise ValueError(f"{src}: SLICE map {smap.shape}, expected the science array's "
                         f"{tuple(meta.image_shape)}")
    regions = []
    for s in range(NSLICES):
        rows, cols = np.nonzero(smap == s)
        if rows.size == 0:
            raise ValueError(f"{src}: extension SLICE has no pixel of slice {s} (expected 30 slices)")
        box = BoundingBox(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        regions.append(SpectralRegion(slice_name(s), meta.detector, box, TraceRule("none"),
                                      WavelengthRule("map", src), BackgroundRule("none"),
                                      slice_index=s))
    return tuple(regions)


def ifu_ensemble(settings) -> EnsembleAxis:
    """The exposures of a dither pattern are the ensemble (outliers across dithers)."""
    return EnsembleAxis("dither")


IFU = ModePlan(
    name="ifu",
    exp_types=("NRS_IFU",),
    find_regions=ifu_regions,
    ensemble=ifu_ensemble,
    products=("rate", "cal", "s3d", "x1d", "spec1d", "plots"),
)
