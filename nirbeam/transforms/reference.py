"""Reference arrays as the kernels see them: already cut to the science subarray.

Readers in :mod:`nirbeam.stream.refs` turn CRDS FITS files into this object; kernels
never see a file. Arrays are (ny, nx) in the science frame unless stated; DQ arrays are
already translated to the standard JWST bit values (via each file's DQ_DEF table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ReferenceArrays"]


@dataclass(frozen=True, eq=False)
class ReferenceArrays:
    """Calibration arrays for one exposure/detector, cut to the subarray.

    Attributes
    ----------
    mask : uint32, (ny, nx)
        Pixel DQ from the MASK reference (standard bits; includes DO_NOT_USE,
        REFERENCE_PIXEL...).
    saturation : float32, (ny, nx), DN (raw, bias included)
        Saturation threshold; NaN where unknown (pixel gets NO_SAT_CHECK).
    saturation_dq : uint32, (ny, nx)
    superbias : float32, (ny, nx), DN
    superbias_dq : uint32, (ny, nx)
    linearity : float32, (ncoeffs, ny, nx)
        Polynomial coefficients: corrected = sum_k c_k * raw**k (raw bias-subtracted DN).
    linearity_dq : uint32, (ny, nx)
    dark : float32, (ngroups, ny, nx), DN, or None
        Dark signal per science group (already averaged for NFRAMES/GROUPGAP).
    dark_dq : uint32, (ny, nx)
    readnoise : float32, (ny, nx), DN
        Read noise of a CDS (two-read) difference, as the READNOISE reference defines it.
    gain : float32, (ny, nx), e-/DN
    sources : dict
        REFTYPE -> description of where the array came from (file name and checksum,
        or the data-derived stand-in used), for provenance.
    irs2 : IRS2Reference or None
        The REFPIX reference of an IRS2 exposure (:mod:`nirbeam.transforms.irs2`); None
        for traditional readouts, or for IRS2 with the stand-in (no interleaved
        reference correction).
    """

    mask: np.ndarray
    saturation: np.ndarray
    saturation_dq: np.ndarray
    superbias: np.ndarray | None
    superbias_dq: np.ndarray
    linearity: np.ndarray | None
    linearity_dq: np.ndarray
    dark: np.ndarray | None
    dark_dq: np.ndarray
    readnoise: np.ndarray
    gain: np.ndarray
    sources: dict[str, str] = field(default_factory=dict)
    irs2: object | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return self.mask.shape

    @classmethod
    def flat(
        cls,
        ny: int,
        nx: int,
        ngroups: int,
        *,
        bias: float = 0.0,
        saturation: float = 65000.0,
        readnoise: float = 14.0,
        gain: float = 1.0,
    ) -> ReferenceArrays:
        """Uniform stand-in references (for tests and data-derived runs)."""
        z32 = np.zeros((ny, nx), np.uint32)
        return cls(
            mask=z32.copy(),
            saturation=np.full((ny, nx), saturation, np.float32),
            saturation_dq=z32.copy(),
            superbias=np.full((ny, nx), bias, np.float32),
            superbias_dq=z32.copy(),
            linearity=None,
            linearity_dq=z32.copy(),
            dark=None,
            dark_dq=z32.copy(),
            readnoise=np.full((ny, nx), readnoise, np.float32),
            gain=np.full((ny, nx), gain, np.float32),
            sources={"all": "uniform stand-in"},
        )
