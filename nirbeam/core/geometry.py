"""Geometry as data: where on a detector a mode's spectra are, and how a mode finds them.

A :class:`SpectralRegion` is one spectrum's footprint: a detector bounding box, a trace
model (or none, for a slice whose rows are the spatial axis), a wavelength rule (a
per-pixel map, a polynomial along x, or column indices when nothing is known), a
background rule and, for the IFU, a slice index. The steps after detector1 loop over
regions without knowing which mode made them -- the jwst pattern: ``extract_2d`` cuts
every mode into per-slit models and ``extract_1d`` loops over slits.

A :class:`ModePlan` says how a mode finds its regions (a function of the exposure's
metadata and the settings), along which axis its integrations or exposures form an
ensemble (a time window for a time series; nods or dithers otherwise), and which products
it makes. Plans live in :mod:`nirbeam.modes` (BOTS first); adding a mode is a file there
plus its kernels.

Plain frozen dataclasses: hashable, picklable, comparable; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BoundingBox", "TraceRule", "WavelengthRule", "BackgroundRule", "SpectralRegion",
           "EnsembleAxis", "ModePlan"]


@dataclass(frozen=True)
class BoundingBox:
    """Detector pixels of a region, 0-based, half-open: rows ``y0:y1``, columns ``x0:x1``,
    in the science array's (subarray) frame."""

    y0: int
    y1: int
    x0: int
    x1: int

    def __post_init__(self):
        if not (0 <= self.y0 < self.y1 and 0 <= self.x0 < self.x1):
            raise ValueError(f"empty or negative bounding box {self}")

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    def slices(self) -> tuple[slice, slice]:
        """``image[box.slices()]`` is the region's cut-out."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))


@dataclass(frozen=True)
class TraceRule:
    """How the region's trace is known.

    kind : ``"fit"`` (measured on the data, polynomial of ``degree`` in x), ``"fixed"``
        (``coefficients``, y(x) polynomial, highest power first, in the box frame) or
        ``"none"`` (no trace: a slice or a rectified slit whose rows are the spatial axis).
    """

    kind: str = "fit"
    degree: int = 2
    coefficients: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in ("fit", "fixed", "none"):
            raise ValueError(f"trace rule {self.kind!r}: expected 'fit', 'fixed' or 'none'")
        if self.kind == "fixed" and not self.coefficients:
            raise ValueError("a fixed trace needs coefficients")


@dataclass(frozen=True)
class WavelengthRule:
    """Where the per-pixel wavelengths (µm) come from.

    kind : ``"map"`` (a per-pixel map, ``source`` names the file or the WCS that made it),
        ``"polynomial"`` (``coefficients`` in x, µm) or ``"columns"`` (none known: column
        indices, never labelled µm).
    """

    kind: str = "columns"
    source: str = ""
    coefficients: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in ("map", "polynomial", "columns"):
            raise ValueError(f"wavelength rule {self.kind!r}: expected 'map', 'polynomial' or 'columns'")


@dataclass(frozen=True)
class BackgroundRule:
    """How a region's background is estimated.

    kind : ``"annulus"`` (pixels ``inner..outer`` from the trace on both sides, per
        column), ``"nod_partner"`` (the same region in the ``partner`` nod position,
        subtracted image from image), ``"master_sky"`` (a sky spectrum named ``sky``,
        e.g. from MOS background shutters) or ``"none"``.
    """

    kind: str = "annulus"
    inner: float | None = None
    outer: float | None = None
    partner: str = ""
    sky: str = ""

    def __post_init__(self):
        if self.kind not in ("annulus", "nod_partner", "master_sky", "none"):
            raise ValueError(f"background rule {self.kind!r}: expected 'annulus', "
                             "'nod_partner', 'master_sky' or 'none'")
        if self.kind == "annulus" and not (
                self.inner is not None and self.outer is not None and 0 <= self.inner < self.outer):
            raise ValueError(f"an annulus needs 0 <= inner < outer, got {self.inner}, {self.outer}")
        if self.kind == "nod_partner" and not self.partner:
            raise ValueError("a nod-partner background needs the partner's name")


@dataclass(frozen=True)
class SpectralRegion:
    """One spectrum's footprint on one detector (see the module notes).

    ``name`` is unique within an exposure and detector (BOTS: the slit, ``S1600A1``; FS:
    one per slit; MOS: the slitlet's name; IFU: ``slice_NN``).
    """

    name: str
    detector: str
    bbox: BoundingBox
    trace: TraceRule = field(default_factory=TraceRule)
    wavelength: WavelengthRule = field(default_factory=WavelengthRule)
    background: BackgroundRule = field(default_factory=lambda: BackgroundRule("none"))
    slice_index: int | None = None

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"region name {self.name!r}: non-empty, no '/'")


@dataclass(frozen=True)
class EnsembleAxis:
    """What a mode stacks: ``"time"`` (integrations of a series; the outlier window is
    ``window`` integrations), ``"nod"`` or ``"dither"`` (exposures of a pattern)."""

    kind: str = "time"
    window: int | None = None

    def __post_init__(self):
        if self.kind not in ("time", "nod", "dither"):
            raise ValueError(f"ensemble axis {self.kind!r}: expected 'time', 'nod' or 'dither'")


@dataclass(frozen=True)
class ModePlan:
    """An observing mode as a plan (see the module notes).

    Attributes
    ----------
    name : str
    exp_types : tuple of str
        EXP_TYPE values the mode handles.
    find_regions : callable ``(meta, settings) -> tuple[SpectralRegion, ...]``
        A module-level function (plans are pickled to Beam workers).
    ensemble : callable ``settings -> EnsembleAxis``
    products : tuple of str
        Product names the mode makes, in the order they are built.
    flat_store : bool
        True when the mode has one region per detector and keeps the store path
        ``<exposure>_<det>/<stage>`` (BOTS, unchanged stores); otherwise regions are
        sub-groups ``<exposure>_<det>/<region>/<stage>``.
    """

    name: str
    exp_types: tuple[str, ...]
    find_regions: Callable[[Any, Any], tuple[SpectralRegion, ...]]
    ensemble: Callable[[Any], EnsembleAxis]
    products: tuple[str, ...]
    flat_store: bool = False

    def handles(self, meta) -> bool:
        """Whether an exposure (its ``exp_type``) is this mode's."""
        return str(getattr(meta, "exp_type", "")).upper() in self.exp_types

    def regions(self, meta, settings) -> tuple[SpectralRegion, ...]:
        """The exposure's regions, checked: unique names, boxes inside the science array."""
        regs = tuple(self.find_regions(meta, settings))
        names = [r.name for r in regs]
        if len(set(names)) != len(names):
            raise ValueError(f"mode {self.name}: region names repeat: {names}")
        ny, nx = meta.image_shape
        for r in regs:
            if r.bbox.y1 > ny or r.bbox.x1 > nx:
                raise ValueError(f"mode {self.name}: region {r.name} box {r.bbox} outside the "
                                 f"{ny}x{nx} science array")
        return regs

    def store_group(self, meta, region: SpectralRegion) -> str:
        """Store group of a region: flat for a one-region mode, else a sub-group."""
        from nirbeam.core.schema import group_name

        return group_name(meta.exposure, meta.detector,
                          None if self.flat_store else region.name)
