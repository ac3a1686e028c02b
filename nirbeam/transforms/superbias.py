"""superbias: subtract the SUPERBIAS reference from every group.

As jwst ``superbias``: NaN in the reference is replaced by 0 (no correction for
that pixel), ``pixeldq |= superbias_dq``. Arithmetic in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["SuperbiasParams", "subtract_superbias", "bias_value"]


@dataclass(frozen=True)
class SuperbiasParams:
    """Parameters of superbias subtraction (only the switch)."""

    enabled: bool = True


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def bias_value(b):
    """The bias to subtract for one pixel: 0 for NaN (float32)."""
    if np.isnan(b):
        return np.float32(0.0)
    return np.float32(b)


@njit(cache=True, nogil=True, error_model="numpy")
def subtract_superbias(groups, pixeldq, superbias, superbias_dq):
    """Subtract the superbias in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN; modified in place
    pixeldq : uint32, (ny, nx); OR-ed with ``superbias_dq`` in place
    superbias : float32, (ny, nx), DN (NaN -> 0)
    superbias_dq : uint32, (ny, nx)
    """
    ng, ny, nx = groups.shape
    for y in range(ny):
        for x in range(nx):
            b = bias_value(superbias[y, x])
            for g in range(ng):
                groups[g, y, x] = groups[g, y, x] - b
            pixeldq[y, x] |= superbias_dq[y, x]
