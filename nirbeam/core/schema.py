"""The store schema as data: stage names, their arrays (dtype, dims, units, description)
and the group path of an exposure/detector (and, for multi-region modes, a region).

The writers (:mod:`nirbeam.sinks.zarr_store`, ``pipeline.prepare_exposure``,
``products.prepare_spectra``) and the readers (:mod:`nirbeam.api`) should take names from
here rather than repeat string constants; the modules that still carry their own copies
are listed in docs/ARCHITECTURE.md ("known gaps"). A test checks that those copies agree
with this module, so a rename here that is not made there fails.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArraySpec", "StageSpec", "RATEINTS", "CLEANED", "SPECTRA", "LIGHTCURVES",
           "REFERENCES", "EXTRACTION", "LIVE_EXTRACTION", "STAGES", "STAGE_SPECS",
           "LAYOUT", "group_name", "stage_path"]

#: Root attribute ``layout`` of ``cubes.zarr``.
LAYOUT = "nirbeam-cubes/1"

RATEINTS = "rateints"
CLEANED = "cleaned"
SPECTRA = "spectra"
LIGHTCURVES = "lightcurves"
REFERENCES = "references"
EXTRACTION = "extraction"
LIVE_EXTRACTION = "live_extraction"
#: Every stage a group may hold, in processing order (``nirbeam.api`` lists these).
STAGES = (RATEINTS, CLEANED, SPECTRA, LIGHTCURVES, REFERENCES, EXTRACTION)


@dataclass(frozen=True)
class ArraySpec:
    """One array of a stage: numpy dtype name, dims after ``integration``, units, meaning."""

    name: str
    dtype: str
    dims: tuple[str, ...]
    units: str
    description: str


@dataclass(frozen=True)
class StageSpec:
    """A per-integration stage: its arrays and its chunking along time.

    ``time_chunk`` 1: integrations are written by independent workers (one per chunk, so
    no two writers share a chunk); a block size: one writer writes aligned blocks.
    """

    name: str
    arrays: tuple[ArraySpec, ...]
    time_chunk: int = 1

    def dtypes(self) -> dict[str, str]:
        """``name -> dtype name`` (what ``zarr_store.prepare_stage`` takes, as numpy dtypes)."""
        return {a.name: a.dtype for a in self.arrays}

    def attrs(self) -> dict[str, dict[str, str]]:
        """``name -> {"units", "description"}``."""
        return {a.name: {"units": a.units, "description": a.description} for a in self.arrays}


_YX = ("y", "x")
_W = ("wavelength",)

STAGE_SPECS: dict[str, StageSpec] = {
    RATEINTS: StageSpec(RATEINTS, (
        ArraySpec("sci", "float32", _YX, "DN/s", "count rate per integration (rateints SCI)"),
        ArraySpec("err", "float32", _YX, "DN/s", "1-sigma error of sci"),
        ArraySpec("dq", "uint32", _YX, "", "pixel DQ, JWST bit values"),
        ArraySpec("var_poisson", "float32", _YX, "(DN/s)^2", "Poisson variance of sci"),
        ArraySpec("var_rnoise", "float32", _YX, "(DN/s)^2", "read-noise variance of sci"),
    ), time_chunk=1),
    CLEANED: StageSpec(CLEANED, (
        ArraySpec("dq", "uint32", _YX, "", "rateints DQ plus OUTLIER flags along time"),
    ), time_chunk=32),
    SPECTRA: StageSpec(SPECTRA, (
        ArraySpec("flux", "float64", _W, "DN/s", "extracted flux per column (configured method)"),
        ArraySpec("flux_error", "float64", _W, "DN/s", "1-sigma error of flux"),
        ArraySpec("box_flux", "float64", _W, "DN/s", "curved-box flux per column"),
        ArraySpec("box_flux_error", "float64", _W, "DN/s", "1-sigma error of box_flux"),
        ArraySpec("flux_var_poisson", "float64", _W, "(DN/s)^2", "Poisson variance of flux"),
        ArraySpec("flux_var_rnoise", "float64", _W, "(DN/s)^2", "read-noise variance of flux"),
        ArraySpec("dq", "uint32", _W, "", "OR of DQ of pixels masked in the aperture"),
        ArraySpec("npixels", "float64", _W, "", "pixels used"),
        ArraySpec("background", "float64", _W, "DN/s", "background per pixel subtracted"),
    ), time_chunk=32),
}

#: Coordinates along ``integration`` (every per-integration stage), name -> (units, meaning).
TIME_COORDS = {
    "integration_number": ("", "1-based integration number (INT_TIMES)"),
    "int_mid_BJD_TDB": ("d", "integration mid-time, BJD_TDB"),
    "int_mid_MJD_UTC": ("d", "integration mid-time, MJD UTC"),
}


def group_name(exposure: str, detector: str, region: str | None = None) -> str:
    """Store group of an exposure/detector: ``<exposure>_<detector lower>``.

    With ``region`` (a multi-region mode: a slit, a slitlet, a slice), the region's
    sub-group ``<exposure>_<detector>/<region>``; BOTS has one region per detector and keeps
    the flat path, so its stores are unchanged.
    """
    g = f"{exposure}_{detector.lower()}"
    return g if region is None else f"{g}/{region}"


def stage_path(group: str, stage: str) -> str:
    """Path of a stage inside the store: ``<group>/<stage>``."""
    return f"{group}/{stage}"
