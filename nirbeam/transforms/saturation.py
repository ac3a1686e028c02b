"""saturation: flag saturated and A/D-floor groups, as stcal ``flag_saturated_pixels``.

Conventions copied from stcal 1.20 (called by jwst with ``n_pix_grow_sat=1``,
``use_readpatt=True``, ``bias=superbias``):

* a group whose raw value (bias included) is >= the threshold gets SATURATED, and so
  do all later groups (SATURATED only; stcal does not add DO_NOT_USE);
* saturation is grown to the ``(2n+1)^2`` box of neighbours (same groups onwards);
* a group with raw value <= 0 gets AD_FLOOR | DO_NOT_USE (that group only);
* NaN thresholds or NO_SAT_CHECK in the reference DQ: threshold = 65536 (the A/D
  limit + 1) and NO_SAT_CHECK goes to the pixel DQ; ``pixeldq |= saturation_dq``;
* read-pattern checks (``use_readpatt``): with NFRAMES > 1 the group before the first
  saturated one gets DO_NOT_USE when it exceeds ``threshold * mean(reads)/last read``
  (grown like saturation); and when group 3 saturates but group 2 did not, group 2
  gets DO_NOT_USE if group 1 did not predict saturation and the 1->2 jump is larger
  than the remaining dynamic range over the reads of group 2.

The work splits into per-pixel pieces so the fused detector1 kernel can reuse them:
:func:`first_saturated_group` (prepass over the raw ramp), :func:`grow_min` (spatial
growth), :func:`partial_sat_groups` and :func:`flag_pixel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.extending import overload

from nirbeam import dqflags

__all__ = [
    "SaturationParams",
    "ATOD_LIMIT",
    "effective_thresholds",
    "first_saturated_group",
    "grow_min",
    "partial_sat_groups",
    "flag_pixel",
    "flag_pixel_sparse",
    "flag_saturation",
]

ATOD_LIMIT = 65535.0
_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_ADF = np.uint8(dqflags.AD_FLOOR)
_NO_SAT = np.uint32(dqflags.NO_SAT_CHECK)


@dataclass(frozen=True)
class SaturationParams:
    """Saturation step parameters (jwst defaults)."""

    enabled: bool = True
    n_pix_grow_sat: int = 1
    use_readpatt: bool = True


@njit(cache=True, nogil=True, error_model="numpy")
def effective_thresholds(sat, sat_dq):
    """Thresholds and pixel-DQ additions as stcal sets them up.

    Parameters
    ----------
    sat : float32, (ny, nx), DN
    sat_dq : uint32, (ny, nx)

    Returns
    -------
    thresh : float32, (ny, nx); 65536 where NaN or NO_SAT_CHECK
    nosat : bool, (ny, nx); True where no check is done (dilution factor 1 there)
    pdq_add : uint32, (ny, nx); ``sat_dq`` plus NO_SAT_CHECK where NaN
    """
    ny, nx = sat.shape
    thresh = np.empty((ny, nx), np.float32)
    nosat = np.zeros((ny, nx), np.bool_)
    pdq_add = np.empty((ny, nx), np.uint32)
    for y in range(ny):
        for x in range(nx):
            q = sat_dq[y, x]
            t = sat[y, x]
            if np.isnan(t):
                q |= _NO_SAT
            if (q & _NO_SAT) == _NO_SAT:
                thresh[y, x] = np.float32(ATOD_LIMIT + 1.0)
                nosat[y, x] = True
            else:
                thresh[y, x] = t
            pdq_add[y, x] = q
    return thresh, nosat, pdq_add


def _vs_threshold(v):
    """A ramp value as :func:`first_saturated_group` compares it with a float32
    threshold (compiled by the overload below)."""
    return np.float64(v)


@overload(_vs_threshold)
def _vs_threshold_impl(v):
    # float32 where that is exact (integers of up to 16 bits: uint16 raw ramps; float32),
    # so that the selects vectorise 8-wide; float64 otherwise, the comparison numba
    # types for ``ramp >= thresh`` there (the same result either way)
    if (isinstance(v, types.Integer) and v.bitwidth <= 16) or v == types.float32:
        return lambda v: np.float32(v)
    return lambda v: np.float64(v)


@njit(cache=True, nogil=True, error_model="numpy")
def first_saturated_group(ramp, thresh):
    """Index of the first group at or above the threshold (ngroups if none).

    Parameters
    ----------
    ramp : uint16 or float, (ngroups, ny, nx), DN (raw)
    thresh : float32, (ny, nx)

    Returns
    -------
    int16, (ny, nx)
    """
    ng, ny, nx = ramp.shape
    out = np.empty((ny, nx), np.int16)
    # Per row, groups last to first, as selects over the row's pixels (contiguous rows of
    # the ramp; the loops vectorise): the value compared in float32 where exact
    # (:func:`_vs_threshold`), the running index in int32 (an int16 one with a float32
    # mask did not vectorise: 0.19 ms per PRISM integration with the grow_min before it,
    # 0.04 ms after, session 14).
    f = np.empty(nx, np.int32)
    for y in range(ny):
        th = thresh[y]
        for x in range(nx):
            f[x] = ng
        for g in range(ng - 1, -1, -1):
            r = ramp[g, y]
            gg = np.int32(g)
            for x in range(nx):
                f[x] = gg if _vs_threshold(r[x]) >= th[x] else f[x]
        o = out[y]
        for x in range(nx):
            o[x] = np.int16(f[x])
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def grow_min(idx, n):
    """Minimum over the ``(2n+1)^2`` box (clipped at the edges): saturation growth."""
    ny, nx = idx.shape
    if n <= 0:
        return idx.copy()
    # separable: the minimum along the row over [x - n, x + n], then along the column;
    # each as whole-row passes of shifted minima (they vectorise), the same minima as
    # the per-pixel box loops this replaced (session 14)
    tmp = np.empty_like(idx)
    for y in range(ny):
        a = idx[y]
        t = tmp[y]
        for x in range(nx):
            t[x] = a[x]
        for d in range(1, min(n, nx - 1) + 1):
            for x in range(nx - d):
                t[x] = min(t[x], a[x + d])
            for x in range(d, nx):
                t[x] = min(t[x], a[x - d])
    out = np.empty_like(idx)
    for y in range(ny):
        o = out[y]
        for x in range(nx):
            o[x] = tmp[y, x]
        for yy in range(max(0, y - n), min(ny, y + n + 1)):
            t = tmp[yy]
            for x in range(nx):
                o[x] = min(o[x], t[x])
    return out


def read_pattern_dilution(ngroups: int, nframes: int, groupgap: int) -> np.ndarray:
    """``mean(reads)/last read`` per group for the jwst read pattern (float64)."""
    out = np.empty(ngroups, np.float64)
    for g in range(ngroups):
        start = g * (nframes + groupgap)
        reads = np.arange(start + 1, start + nframes + 1, dtype=np.float64)
        out[g] = reads.mean() / reads[-1]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def partial_sat_groups(ramp, satidx, thresh, nosat, dilution):
    """Group flagged DO_NOT_USE by the backward (group-averaging) pass, or -1.

    Only the group just before the (grown) first saturated group can be flagged
    (stcal requires the next group SATURATED and this one neither SATURATED nor
    DO_NOT_USE). Growth of these flags is done by the caller.

    Parameters
    ----------
    ramp : (ngroups, ny, nx) raw DN
    satidx : int16, (ny, nx), grown first saturated group
    thresh : float32, (ny, nx)
    nosat : bool, (ny, nx)
    dilution : float64, (ngroups,)

    Returns
    -------
    int16, (ny, nx)
    """
    ng, ny, nx = ramp.shape
    out = np.full((ny, nx), -1, np.int16)
    for y in range(ny):
        for x in range(nx):
            s = satidx[y, x]
            if s < 1 or s >= ng:
                continue
            g = s - 1
            dil = dilution[g]
            if dil == 1.0:
                continue
            if nosat[y, x]:
                dil = 1.0
            v = ramp[g, y, x]
            if v <= 0:  # already DO_NOT_USE (A/D floor)
                continue
            if v >= thresh[y, x] * dil:
                out[y, x] = g
    return out


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def flag_pixel(ramp, y, x, gdq, s, psat, n_grow, thresh, bias, mean0, last2, nreads1, readpatt,
               check_adf=True):
    """Saturation / A/D floor flags of pixel (y, x), ORed into ``gdq[:ngroups]``.

    Parameters
    ----------
    ramp : (ngroups, ny, nx) raw DN
    gdq : uint8, (>= ngroups,) local group DQ of the pixel
    s : int, grown first saturated group of the pixel
    psat : int16, (ny, nx), partial-saturation group per pixel (-1 none)
    n_grow : int, growth radius
    thresh, bias : float, threshold and bias of the pixel
    mean0, last2, nreads1 : float, read-pattern constants for the group-2 check
    readpatt : bool
    check_adf : bool
        Flag A/D floor groups here (the fused kernel does it while reading the ramp).
    """
    ng = ramp.shape[0]
    for g in range(s, ng):
        gdq[g] |= _SAT
    if check_adf:
        for g in range(ng):
            if ramp[g, y, x] <= 0:
                gdq[g] |= _ADF | _DNU
    flag_pixel_sparse(ramp, y, x, gdq, s, psat, n_grow, thresh, bias, mean0, last2, nreads1,
                      readpatt)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def flag_pixel_sparse(ramp, y, x, gdq, s, psat, n_grow, thresh, bias, mean0, last2, nreads1,
                      readpatt):
    """The DO_NOT_USE flags of :func:`flag_pixel` that few pixels get (the partial
    saturation of a neighbour, the group-2 read-pattern check), ORed into ``gdq``
    (uint8, (>= ngroups,), may be a strided view); arguments as :func:`flag_pixel`.
    Nothing is set when ``psat`` is empty and ``s != 2``."""
    ng, ny, nx = ramp.shape
    if psat.shape[0] > 0:
        for yy in range(max(0, y - n_grow), min(ny, y + n_grow + 1)):
            for xx in range(max(0, x - n_grow), min(nx, x + n_grow + 1)):
                p = psat[yy, xx]
                if p >= 0:
                    gdq[p] |= _DNU
    if readpatt and ng > 2 and s == 2:
        r0 = np.float32(ramp[0, y, x])
        r1 = np.float32(ramp[1, y, x])
        if (np.float32(r0 - bias) / mean0) * last2 + bias < thresh:
            if np.float32(r1 - r0) > np.float32(np.float32(thresh - r0) / nreads1):
                gdq[1] |= _DNU


def readpatt_constants(nframes: int, groupgap: int) -> tuple[float, float, float]:
    """(mean read of group 1, last read of group 3, reads in group 2) for the group-2 check."""
    step = nframes + groupgap
    mean0 = (1 + nframes) / 2.0
    last2 = float(2 * step + nframes)
    return mean0, last2, float(nframes)


@njit(cache=True, nogil=True, error_model="numpy")
def _flag_cube(ramp, groupdq, satidx, psat, n_grow, thresh, bias, mean0, last2, nreads1,
               readpatt):
    ng, ny, nx = ramp.shape
    gdq = np.zeros(ng, np.uint8)
    for y in range(ny):
        for x in range(nx):
            for g in range(ng):
                gdq[g] = groupdq[g, y, x]
            flag_pixel(ramp, y, x, gdq, satidx[y, x], psat, n_grow, thresh[y, x], bias[y, x],
                       mean0, last2, nreads1, readpatt)
            for g in range(ng):
                groupdq[g, y, x] = gdq[g]


def flag_saturation(ramp, groupdq, pixeldq, saturation, saturation_dq, superbias=None,
                    nframes=1, groupgap=0, params: SaturationParams = SaturationParams()):
    """Flag saturation in place (group and pixel DQ) for one integration.

    Parameters
    ----------
    ramp : uint16 or float32, (ngroups, ny, nx), DN, raw (bias included)
    groupdq : uint8, (ngroups, ny, nx); updated in place
    pixeldq : uint32, (ny, nx); updated in place
    saturation : float32, (ny, nx), DN
    saturation_dq : uint32, (ny, nx)
    superbias : float32, (ny, nx) or None; the bias used by the group-2 check
    nframes, groupgap : int
    params : SaturationParams

    Returns
    -------
    satidx : int16, (ny, nx), first saturated group after growth (ngroups if none)
    """
    ng, ny, nx = ramp.shape
    thresh, nosat, pdq_add = effective_thresholds(
        np.asarray(saturation, np.float32), np.asarray(saturation_dq, np.uint32)
    )
    satidx = grow_min(first_saturated_group(ramp, thresh), params.n_pix_grow_sat)
    psat, (mean0, last2, nreads1) = saturation_aux(ramp, satidx, thresh, nosat, nframes,
                                                    groupgap, params)
    bias = (np.zeros((ny, nx), np.float32) if superbias is None
            else np.nan_to_num(np.asarray(superbias, np.float32), nan=0.0))
    _flag_cube(ramp, groupdq, satidx, psat, params.n_pix_grow_sat, thresh, bias,
               mean0, last2, np.float32(nreads1), params.use_readpatt)
    pixeldq |= pdq_add
    return satidx


def saturation_aux(ramp, satidx, thresh, nosat, nframes, groupgap, params):
    """Partial-saturation groups (-1 where none; empty when unused) and group-2 constants."""
    ng, ny, nx = ramp.shape
    if params.use_readpatt and nframes > 1:
        psat = partial_sat_groups(ramp, satidx, thresh, nosat,
                                  read_pattern_dilution(ng, nframes, groupgap))
    else:
        psat = np.full((0, 0), -1, np.int16)
    return psat, readpatt_constants(nframes, groupgap)
