"""refpix: reference-pixel bias-drift correction for NIRSpec subarrays.

For a subarray that contains full-frame reference columns (1-based full-frame
x = 1..4 or 2045..2048), each group is corrected by subtracting the mean of its
reference pixels, computed separately for even and odd full-frame columns (jwst's
subarray approach, without its sigma clipping): every pixel of an even full-frame
column gets the even mean subtracted, odd columns the odd mean. Reference pixels with
DO_NOT_USE in the pixel DQ, or non-finite values, are left out of the means. A
subarray without reference columns (e.g. SUB512, SUB32) is a documented no-op, as is
a group whose parity class has no usable reference pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags

__all__ = ["RefPixParams", "SubarrayGeometry", "reference_columns", "refpix_means",
           "apply_refpix"]

FULL_FRAME = 2048
NREF = 4
_DNU = np.uint32(dqflags.DO_NOT_USE)


@dataclass(frozen=True)
class SubarrayGeometry:
    """Where the science array sits on the full frame (FITS 1-based keywords).

    Attributes
    ----------
    substrt1, subsize1 : int
        SUBSTRT1 / SUBSIZE1 (x, the NIRSpec dispersion axis).
    substrt2, subsize2 : int
        SUBSTRT2 / SUBSIZE2 (y); informational.
    """

    substrt1: int = 1
    subsize1: int = FULL_FRAME
    substrt2: int = 1
    subsize2: int = FULL_FRAME

    @classmethod
    def from_meta(cls, meta) -> SubarrayGeometry:
        """From an :class:`~nirbeam.stream.records.ExposureMeta`."""
        return cls(int(meta.substrt1), int(meta.subsize1), int(meta.substrt2),
                   int(meta.subsize2))


@dataclass(frozen=True)
class RefPixParams:
    """Reference-pixel step parameters."""

    enabled: bool = True
    odd_even_columns: bool = True


def reference_columns(geometry: SubarrayGeometry, nx: int) -> np.ndarray:
    """0-based subarray column indices that are full-frame reference columns.

    Raises
    ------
    ValueError
        When SUBSIZE1 disagrees with the array width.
    """
    if geometry.subsize1 != nx:
        raise ValueError(
            f"refpix: SUBSIZE1={geometry.subsize1} but the ramp has nx={nx} columns"
        )
    x0 = geometry.substrt1 - 1  # 0-based full-frame column of subarray x=0
    cols = [c - x0 for c in list(range(NREF)) + list(range(FULL_FRAME - NREF, FULL_FRAME))
            if 0 <= c - x0 < nx]
    return np.asarray(cols, np.int64)


@njit(cache=True, error_model="numpy")
def refpix_means(groups_or_raw, bias, pixeldq, refcols, parity0, odd_even):
    """Per-group means of the reference pixels, per column parity.

    Parameters
    ----------
    groups_or_raw : (ngroups, ny, nx) DN; raw or bias-subtracted
    bias : float32, (ny, nx); subtracted first (zeros when the data are already
        bias-subtracted); NaN means 0
    pixeldq : uint32, (ny, nx)
    refcols : int64, (nref,)
    parity0 : int, full-frame 0-based column parity of subarray x = 0
    odd_even : bool; when False both parities get the overall mean

    Returns
    -------
    means : float32, (ngroups, 2); index = full-frame column parity; 0 where none
    """
    ng, ny, nx = groups_or_raw.shape
    out = np.zeros((ng, 2), np.float32)
    for g in range(ng):
        s = np.zeros(2, np.float64)
        n = np.zeros(2, np.int64)
        for i in range(refcols.shape[0]):
            x = refcols[i]
            p = (x + parity0) % 2 if odd_even else 0
            for y in range(ny):
                if pixeldq[y, x] & _DNU:
                    continue
                b = bias[y, x]
                if np.isnan(b):
                    b = np.float32(0.0)
                v = np.float32(np.float32(groups_or_raw[g, y, x]) - b)
                if np.isfinite(v):
                    s[p] += v
                    n[p] += 1
        if odd_even:
            for p in range(2):
                if n[p] > 0:
                    out[g, p] = np.float32(s[p] / n[p])
        elif n[0] > 0:
            out[g, 0] = np.float32(s[0] / n[0])
            out[g, 1] = out[g, 0]
    return out


@njit(cache=True, error_model="numpy")
def apply_refpix(groups, means, parity0):
    """Subtract the per-group parity means in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    means : float32, (ngroups, 2)
    parity0 : int
    """
    ng, ny, nx = groups.shape
    for g in range(ng):
        for y in range(ny):
            for x in range(nx):
                groups[g, y, x] = groups[g, y, x] - means[g, (x + parity0) % 2]
