"""dark_current: subtract the per-group DARK reference.

As stcal ``dark_sub``: NaN dark values are replaced by 0, the dark is subtracted
from every group (saturated ones included), ``pixeldq |= dark_dq``. The dark given
here is already averaged to the science NFRAMES/GROUPGAP (one plane per group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["DarkParams", "subtract_dark", "dark_value"]


@dataclass(frozen=True)
class DarkParams:
    """Parameters of dark subtraction (only the switch)."""

    enabled: bool = True


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def dark_value(v):
    """Dark value to subtract: 0 for NaN (float32)."""
    if np.isnan(v):
        return np.float32(0.0)
    return np.float32(v)


@njit(cache=True, nogil=True, error_model="numpy")
def subtract_dark(groups, pixeldq, dark, dark_dq):
    """Subtract the dark in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN; modified in place
    pixeldq : uint32, (ny, nx); OR-ed with ``dark_dq``
    dark : float32, (>= ngroups, ny, nx), DN per group (NaN -> 0)
    dark_dq : uint32, (ny, nx)
    """
    ng, ny, nx = groups.shape
    if dark.shape[0] < ng:
        raise ValueError("dark reference has fewer groups than the science ramp")
    for g in range(ng):
        for y in range(ny):
            for x in range(nx):
                groups[g, y, x] = groups[g, y, x] - dark_value(dark[g, y, x])
    for y in range(ny):
        for x in range(nx):
            pixeldq[y, x] |= dark_dq[y, x]
