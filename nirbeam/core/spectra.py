"""One extracted 1-D spectrum as plain data (the slit modes' shared record; no I/O).

A :class:`Spectrum1D` is what the FS, MOS and IFU pipelines hand to the product writers
(:mod:`nirbeam.sinks.spec1d`): one source in one region (slit, slitlet or spaxel
aperture), its wavelengths (µm), flux, errors, DQ and how it was extracted. The flux unit
is carried as a string and never guessed: ``"uJy"`` (or ``"Jy"``/``"mJy"``) only when a
flux calibration was applied; ``"DN/s"`` otherwise (then a writer that needs µJy refuses).

Frozen dataclass; arrays are checked for matching lengths once, at construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Spectrum1D", "FLUX_DENSITY_TO_UJY", "UnitError", "to_ujy_factor"]

#: Flux-density units a spectrum may carry once calibrated, and their factor to µJy.
FLUX_DENSITY_TO_UJY: dict[str, float] = {"uJy": 1.0, "mJy": 1e3, "Jy": 1e6, "MJy": 1e12}


_DO_NOT_USE = 1  # stdatamodels dqflags DO_NOT_USE (core imports no other nirbeam module)


class UnitError(ValueError):
    """A flux is asked for in a unit it was never calibrated to."""


def to_ujy_factor(unit: str, what: str = "flux") -> float:
    """Multiplier from ``unit`` to µJy.

    Raises
    ------
    UnitError
        When ``unit`` is not a flux density (e.g. ``DN/s``: not flux-calibrated).
    """
    try:
        return FLUX_DENSITY_TO_UJY[unit]
    except KeyError:
        raise UnitError(
            f"{what} is in {unit!r}, not a flux density ({sorted(FLUX_DENSITY_TO_UJY)}): it was "
            "not flux-calibrated, so it cannot be written as uJy (give the pipeline a PHOTOM "
            "reference, or write it in its own unit)") from None


def _vec(name, v, n, dtype=float):
    if v is None:
        return None
    a = np.asarray(v, dtype)
    if a.shape != (n,):
        raise ValueError(f"Spectrum1D.{name}: expected shape ({n},), got {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class Spectrum1D:
    """One source's extracted spectrum in one region.

    Attributes
    ----------
    source_id : int
        Source identifier (FS: the slit's index in the exposure unless a catalogue gives
        one; MOS: the MSA metadata ``source_id``).
    source_name : str
    region : str
        Slit / slitlet / aperture name (``SLTNAME``: ``S1600A1``, ``"12"``...).
    wavelength : float64, (nwave,), µm
        NaN where no wavelength is known (never a column index labelled µm).
    flux, flux_error : float64, (nwave,), ``flux_unit``
    dq : uint32, (nwave,)
        JWST DQ bits; DO_NOT_USE where the flux is not measured.
    flux_unit : str
        ``"uJy"``, ``"mJy"``, ``"Jy"`` when calibrated, ``"DN/s"`` when not.
    flux_var_poisson, flux_var_rnoise : float64, (nwave,), ``flux_unit`` squared, optional
    surf_bright, sb_error : float64, (nwave,), ``sb_unit``, optional (extended sources)
    sb_unit : str
        ``"MJy/sr"`` when known.
    background : float64, (nwave,), ``flux_unit`` (per extraction), optional
    npixels : float64, (nwave,), optional
        Pixels summed per wavelength.
    source_type : str
        ``"POINT"`` or ``"EXTENDED"`` (``SRCTYPE``).
    detector : str
    exposure : str
        Exposure name, or the combination's name for a nod-combined spectrum.
    extraction : mapping
        How it was made: method (``optimal``/``box``), background method, nods combined,
        aperture, calibration applied... (written into the product's metadata).
    wavelength_source : str
        Where the wavelengths come from.
    """

    source_id: int
    source_name: str
    region: str
    wavelength: np.ndarray
    flux: np.ndarray
    flux_error: np.ndarray
    dq: np.ndarray
    flux_unit: str = "DN/s"
    flux_var_poisson: np.ndarray | None = None
    flux_var_rnoise: np.ndarray | None = None
    surf_bright: np.ndarray | None = None
    sb_error: np.ndarray | None = None
    sb_unit: str = ""
    background: np.ndarray | None = None
    npixels: np.ndarray | None = None
    source_type: str = "POINT"
    detector: str = ""
    exposure: str = ""
    extraction: Mapping[str, Any] = field(default_factory=dict)
    wavelength_source: str = ""

    def __post_init__(self):
        wl = np.asarray(self.wavelength, np.float64)
        if wl.ndim != 1:
            raise ValueError(f"Spectrum1D.wavelength: 1-D expected, got shape {wl.shape}")
        n = wl.size
        object.__setattr__(self, "wavelength", wl)
        for name in ("flux", "flux_error"):
            object.__setattr__(self, name, _vec(name, getattr(self, name), n))
        object.__setattr__(self, "dq", _vec("dq", self.dq, n, np.uint32))
        for name in ("flux_var_poisson", "flux_var_rnoise", "surf_bright", "sb_error",
                     "background", "npixels"):
            object.__setattr__(self, name, _vec(name, getattr(self, name), n))
        if self.source_type not in ("POINT", "EXTENDED", "UNKNOWN"):
            raise ValueError(f"Spectrum1D.source_type {self.source_type!r}: expected POINT, "
                             "EXTENDED or UNKNOWN")
        if not self.region or "/" in self.region:
            raise ValueError(f"Spectrum1D.region {self.region!r}: non-empty, no '/'")
        object.__setattr__(self, "source_id", int(self.source_id))
        object.__setattr__(self, "extraction", dict(self.extraction))

    @property
    def size(self) -> int:
        """Number of wavelength elements."""
        return int(self.wavelength.size)

    @property
    def calibrated(self) -> bool:
        """True when the flux is a flux density (µJy/mJy/Jy/MJy)."""
        return self.flux_unit in FLUX_DENSITY_TO_UJY

    def in_unit(self, unit: str) -> Spectrum1D:
        """The same spectrum with flux, errors, variances and background in ``unit``.

        Raises
        ------
        UnitError
            When either unit is not a flux density (an uncalibrated spectrum stays in its
            own unit).
        """
        if unit == self.flux_unit:
            return self
        f = to_ujy_factor(self.flux_unit) / to_ujy_factor(unit, f"target unit {unit!r}")

        def s(a, p=1):
            return None if a is None else a * f ** p

        return replace(self, flux=s(self.flux), flux_error=s(self.flux_error),
                       flux_var_poisson=s(self.flux_var_poisson, 2),
                       flux_var_rnoise=s(self.flux_var_rnoise, 2),
                       background=s(self.background), flux_unit=unit)

    def integrated(self, wmin: float | None = None, wmax: float | None = None) -> tuple[float, float]:
        """Flux density integrated over wavelength (sum of f·Δλ, Δλ by central differences, over good elements):
        ``(value, error)`` in ``flux_unit`` * µm. Elements flagged DO_NOT_USE or non-finite
        are skipped."""
        ok = np.isfinite(self.flux) & np.isfinite(self.wavelength) & (
            (self.dq & np.uint32(_DO_NOT_USE)) == 0)
        if wmin is not None:
            ok &= self.wavelength >= wmin
        if wmax is not None:
            ok &= self.wavelength <= wmax
        w, f, e = self.wavelength[ok], self.flux[ok], self.flux_error[ok]
        if w.size < 2:
            return float("nan"), float("nan")
        o = np.argsort(w)
        w, f, e = w[o], f[o], e[o]
        dw = np.gradient(w)
        return float(np.sum(f * dw)), float(np.sqrt(np.sum((e * dw) ** 2)))
