"""linearity: polynomial non-linearity correction, as stcal ``linearity``.

``corrected = sum_k c_k raw**k`` (Horner, float32) on every group not flagged
SATURATED. Pixels whose reference DQ has NO_LIN_CORR, or with a NaN coefficient,
or with a zero linear term, are left uncorrected; the last two get NO_LIN_CORR in
the pixel DQ (the first already carries it through ``pixeldq |= linearity_dq``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags

__all__ = ["LinearityParams", "apply_linearity", "linearity_pixel_status", "correct_pixel"]

_SAT = np.uint8(dqflags.SATURATED)
_NO_LIN = np.uint32(dqflags.NO_LIN_CORR)


@dataclass(frozen=True)
class LinearityParams:
    """Parameters of the linearity correction (only the switch)."""

    enabled: bool = True


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def linearity_pixel_status(coeffs, lin_dq, y, x):
    """Return (apply, extra_pixeldq) for one pixel.

    ``apply`` is False for NO_LIN_CORR in the reference DQ, NaN coefficients or a
    zero linear term; ``extra_pixeldq`` is NO_LIN_CORR for the last two cases.
    """
    nc = coeffs.shape[0]
    if lin_dq[y, x] & _NO_LIN:
        return False, np.uint32(0)
    for k in range(nc):
        if np.isnan(coeffs[k, y, x]):
            return False, _NO_LIN
    if nc > 1 and coeffs[1, y, x] == 0:
        return False, _NO_LIN
    return True, np.uint32(0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def correct_value(v, coeffs, y, x):
    """Horner evaluation of the correction polynomial at ``v`` (float32)."""
    nc = coeffs.shape[0]
    r = np.float32(coeffs[nc - 1, y, x] * v)
    for j in range(nc - 2, 0, -1):
        r = np.float32(r + coeffs[j, y, x])
        r = np.float32(r * v)
    r = np.float32(r + coeffs[0, y, x])
    return r


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def correct_pixel(d, gdq, ng, coeffs, y, x):
    """Correct one pixel's groups ``d[:ng]`` in place, skipping SATURATED groups."""
    for g in range(ng):
        if gdq[g] & _SAT:
            continue
        d[g] = correct_value(d[g], coeffs, y, x)


@njit(cache=True, nogil=True, error_model="numpy")
def apply_linearity(groups, groupdq, pixeldq, coeffs, lin_dq):
    """Apply the linearity correction in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN (bias-subtracted); modified in place
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx); OR-ed with ``lin_dq`` and NO_LIN_CORR where needed
    coeffs : float32, (ncoeffs, ny, nx)
    lin_dq : uint32, (ny, nx)
    """
    ng, ny, nx = groups.shape
    for y in range(ny):
        for x in range(nx):
            ok, extra = linearity_pixel_status(coeffs, lin_dq, y, x)
            pixeldq[y, x] |= lin_dq[y, x] | extra
            if not ok:
                continue
            for g in range(ng):
                if groupdq[g, y, x] & _SAT:
                    continue
                groups[g, y, x] = correct_value(groups[g, y, x], coeffs, y, x)
