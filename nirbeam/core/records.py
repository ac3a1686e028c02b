"""Record types: the frozen key of an integration, exposure metadata, integration records,
dead letters.

Everything here is plain data (numpy arrays, strings, numbers); nothing imports Beam. Records
travel through Beam; keys are grouped on, so they pickle deterministically; their
deterministic Beam coder is registered by the Beam wiring
(:mod:`nirbeam.transforms.common`, ``IntegrationKeyCoder``).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "IntegrationKey",
    "ExposureMeta",
    "IntTimes",
    "IntegrationRecord",
    "DeadLetter",
]


@dataclass(frozen=True, order=True, slots=True)
class IntegrationKey:
    """Address of one integration: exposure id, detector, 1-based integration number.

    Parameters
    ----------
    exposure : str
        Exposure id, the file-name root without segment, detector and suffix,
        e.g. ``jw01366004001_04101_00001``.
    detector : str
        ``NRS1`` or ``NRS2`` (upper case, as the DETECTOR keyword).
    integration : int
        1-based integration number within the exposure, as in INT_TIMES.
    """

    exposure: str
    detector: str
    integration: int

    def __post_init__(self):
        if not isinstance(self.integration, int | np.integer) or int(self.integration) < 1:
            raise ValueError(f"integration number must be an int >= 1, got {self.integration!r}")
        object.__setattr__(self, "integration", int(self.integration))
        object.__setattr__(self, "detector", str(self.detector).upper())
        object.__setattr__(self, "exposure", str(self.exposure))

    @property
    def group(self) -> str:
        """Store group name for this key's exposure and detector."""
        return f"{self.exposure}_{self.detector.lower()}"

    @property
    def stream(self) -> tuple[str, str]:
        """(exposure, detector): the series this integration belongs to."""
        return (self.exposure, self.detector)

    def __reduce__(self):
        # Deterministic: a tuple of a str, a str and an int.
        return (IntegrationKey, (self.exposure, self.detector, self.integration))

    def __str__(self) -> str:
        return f"{self.exposure}/{self.detector}/int{self.integration:05d}"

    def encode(self) -> bytes:
        """Deterministic byte encoding (used by the Beam coder)."""
        e = self.exposure.encode()
        d = self.detector.encode()
        return struct.pack(">HH", len(e), len(d)) + e + d + struct.pack(">q", self.integration)

    @classmethod
    def decode(cls, b: bytes) -> IntegrationKey:
        """Inverse of :meth:`encode`."""
        le, ld = struct.unpack(">HH", b[:4])
        e = b[4 : 4 + le].decode()
        d = b[4 + le : 4 + le + ld].decode()
        (i,) = struct.unpack(">q", b[4 + le + ld : 12 + le + ld])
        return cls(e, d, i)


@dataclass(frozen=True, slots=True)
class ExposureMeta:
    """Header facts shared by all integrations of one exposure and detector.

    Times in seconds; SUBSTRT/SUBSIZE 1-based full-frame pixel coordinates, as in the
    FITS keywords (axis 1 = x = dispersion for NIRSpec, axis 2 = y).
    """

    exposure: str
    detector: str
    instrume: str
    exp_type: str
    readpatt: str
    subarray: str
    substrt1: int
    substrt2: int
    subsize1: int
    subsize2: int
    nints: int
    ngroups: int
    nframes: int
    groupgap: int
    tframe: float
    tgroup: float
    effinttm: float
    filter: str = ""
    grating: str = ""
    exsegtot: int = 1
    tsovisit: bool = True
    target: str = ""
    expstart: float = 0.0
    nrs_norm: int = 0
    drpframes1: int = 0
    extra: tuple[tuple[str, Any], ...] = ()
    nrs_ref: int = 0  # NRS_REF of IRS2 exposures (0 otherwise); nrs_norm likewise

    @property
    def shape(self) -> tuple[int, int, int]:
        """(ngroups, ny, nx) of one integration's ramp after the reference-pixel step
        (an IRS2 ramp as read has its interleaved reference samples too)."""
        return (self.ngroups, self.subsize2, self.subsize1)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.subsize2, self.subsize1)

    @property
    def group_name(self) -> str:
        """Store group name (same as :attr:`IntegrationKey.group`)."""
        return f"{self.exposure}_{self.detector.lower()}"

    def header_dict(self) -> dict[str, Any]:
        """The keywords as a JSON-friendly dict (upper-case FITS names)."""
        d = {f.name.upper(): getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("EXTRA")
        d.update(dict(self.extra))
        return d


@dataclass(frozen=True, slots=True)
class IntTimes:
    """One INT_TIMES row (MJD UTC and BJD TDB, days)."""

    int_start_mjd_utc: float
    int_mid_mjd_utc: float
    int_end_mjd_utc: float
    int_start_bjd_tdb: float
    int_mid_bjd_tdb: float
    int_end_bjd_tdb: float
    derived: bool = False  # True when computed from EXPSTART (no INT_TIMES in the file)


@dataclass(frozen=True)
class IntegrationRecord:
    """One integration at some stage of processing.

    Attributes
    ----------
    key : IntegrationKey
    meta : ExposureMeta
    times : IntTimes
    stage : str
        ``"ramp"``, ``"rateints"``, ``"spectrum"``...
    source : str
        Path of the file (segment) the integration came from.
    ramp : uint16 or float32, (ngroups, ny, nx), DN
        Raw ramp (stage ``ramp``); float32 during detector1.
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx)
    rate, err, var_poisson, var_rnoise : float32, (ny, nx), DN/s, (DN/s)^2
    dq : uint32, (ny, nx)
    products : dict
        Later-stage arrays (spectra...), name -> array.
    provenance : tuple of (step, parameters) pairs that ran on this record.
    """

    key: IntegrationKey
    meta: ExposureMeta
    times: IntTimes
    stage: str = "ramp"
    source: str = ""
    ramp: np.ndarray | None = None
    groupdq: np.ndarray | None = None
    pixeldq: np.ndarray | None = None
    rate: np.ndarray | None = None
    err: np.ndarray | None = None
    dq: np.ndarray | None = None
    var_poisson: np.ndarray | None = None
    var_rnoise: np.ndarray | None = None
    products: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: tuple[tuple[str, str], ...] = ()

    def replace(self, **changes) -> IntegrationRecord:
        """Return a copy with fields changed (records are immutable)."""
        return dataclasses.replace(self, **changes)

    def with_step(self, step: str, params: str = "") -> IntegrationRecord:
        """Return a copy with ``(step, params)`` appended to the provenance."""
        return dataclasses.replace(self, provenance=self.provenance + ((step, params),))

    @property
    def nbytes(self) -> int:
        """Bytes held by this record's arrays."""
        arrays = [
            self.ramp, self.groupdq, self.pixeldq, self.rate, self.err, self.dq,
            self.var_poisson, self.var_rnoise, *self.products.values(),
        ]
        return int(sum(a.nbytes for a in arrays if a is not None))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An integration (or whole input) that could not be processed, and why."""

    key: IntegrationKey | None
    step: str
    reason: str
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict for ``deadletter.jsonl``."""
        k = self.key
        return {
            "exposure": k.exposure if k else None,
            "detector": k.detector if k else None,
            "integration": k.integration if k else None,
            "step": self.step,
            "reason": self.reason,
            "source": self.source,
        }
