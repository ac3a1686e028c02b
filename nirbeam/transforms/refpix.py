"""refpix: reference-pixel bias-drift correction for NIRSpec subarrays, as jwst does it.

jwst ``refpix`` (``reference_pixels.py``, ``NIRDataset.do_subarray_corrections``)
transforms each group to the detector frame (NIRSpec NRS1: a transpose; NRS2: a
transpose and a 180-degree rotation), takes the sigma-clipped mean (scipy
``sigmaclip``, 3 sigma low and high) of the usable reference pixels in even and in odd
*detector columns*, and subtracts the even mean from every pixel of an even detector
column and the odd mean from the odd ones. A detector column is a DMS row, so in the
DMS frame the classes are the parities of the full-frame DMS row ``SUBSTRT2 - 1 + y``:
the even/odd offsets alternate along the fast-read direction (DMS y). For NRS2 the
180-degree rotation maps full-frame row r to detector column 2047 - r, which swaps the
labels "even" and "odd" but not the two classes, so the correction is the same.

Reference pixels: the full-frame 4-pixel border inside the subarray (from SUBSTRT /
SUBSIZE; a mask's REFERENCE_PIXEL bits may add more) minus DO_NOT_USE and non-finite
values. Subarrays that reach no detector edge (jwst ``NRS_edgeless_subarrays``: SUB512,
SUB512S, SUB32) use the first and last four DMS columns of the subarray as
pseudo-reference pixels, as jwst does. A class without a usable pixel gets no
correction in that group.

Pseudo-reference pixels see light (in PRISM SUB512 the trace crosses them: up to
~10^4 DN/s in a pixel, wings of 0.4-2 DN/s far from it), and jwst takes their plain
clipped means: the light's ramp is then subtracted from every pixel, biasing all rates
(measured -0.23 sigma mean rate pull on the prism-sub512 preset, issue 13). Here
(``RefPixParams.pseudo_light = "detrend"``, the default) each pseudo-reference pixel's
own straight line over the groups (least squares) is removed before the per-group
means: light accumulates linearly, so what is left is the common per-group offset
minus its straight-line part, which no pixel can tell from light. The correction then
removes the groups' non-linear drift (the even/odd random walk's curvature) without
any light; the per-integration straight-line part of the drift stays (its mean is
zero). ``"jwst"`` keeps jwst's plain means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam import dqflags

__all__ = ["RefPixParams", "SubarrayGeometry", "EDGELESS_SUBARRAYS", "reference_columns",
           "reference_mask", "uses_pseudo_reference", "refpix_means", "refpix_means_at", "apply_refpix", "sigma_clipped_mean"]

FULL_FRAME = 2048
NREF = 4
#: NIRSpec subarrays without detector edges (jwst ``NRS_edgeless_subarrays``)
EDGELESS_SUBARRAYS = ("SUB512", "SUB512S", "SUB32")
_DNU = np.uint32(dqflags.DO_NOT_USE)
_REF = np.uint32(dqflags.REFERENCE_PIXEL)


@dataclass(frozen=True)
class SubarrayGeometry:
    """Where the science array sits on the full frame (FITS 1-based keywords).

    Attributes
    ----------
    substrt1, subsize1 : int
        SUBSTRT1 / SUBSIZE1 (x, the NIRSpec dispersion axis).
    substrt2, subsize2 : int
        SUBSTRT2 / SUBSIZE2 (y, the fast-read axis).
    name : str
        SUBARRAY keyword ("" when unknown); edgeless subarrays get pseudo-reference
        pixels.
    """

    substrt1: int = 1
    subsize1: int = FULL_FRAME
    substrt2: int = 1
    subsize2: int = FULL_FRAME
    name: str = ""

    @classmethod
    def from_meta(cls, meta) -> SubarrayGeometry:
        """From an :class:`~nirbeam.stream.records.ExposureMeta`."""
        return cls(int(meta.substrt1), int(meta.subsize1), int(meta.substrt2),
                   int(meta.subsize2), str(getattr(meta, "subarray", "") or "").strip().upper())

    @property
    def row_parity0(self) -> int:
        """Parity of the full-frame 0-based DMS row of subarray y = 0."""
        return (self.substrt2 - 1) % 2


@dataclass(frozen=True)
class RefPixParams:
    """Reference-pixel step parameters (jwst names and defaults).

    Attributes
    ----------
    enabled : bool
    odd_even_columns : bool
        Separate means for even and odd detector columns (DMS rows); False: one mean.
    sigma_clip : float
        Clipping limit of the reference means, sigma (jwst ``sigmaclip`` 3, 3); 0 for a
        plain mean.
    pseudo_reference : bool
        Edgeless subarrays (SUB512, SUB512S, SUB32) use their first and last four
        columns as reference pixels (jwst); False leaves them uncorrected.
    pseudo_light : {"detrend", "jwst"}
        How pseudo-reference pixels' light is kept out (see the module notes).
    """

    enabled: bool = True
    odd_even_columns: bool = True
    sigma_clip: float = 3.0
    pseudo_reference: bool = True
    pseudo_light: str = "detrend"

    def __post_init__(self):
        if self.pseudo_light not in ("detrend", "jwst"):
            raise ValueError(f"refpix pseudo_light: expected 'detrend' or 'jwst', got "
                             f"{self.pseudo_light!r}")


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


def uses_pseudo_reference(geometry: SubarrayGeometry | None, shape: tuple[int, int],
                          params: RefPixParams = RefPixParams(),
                          pixeldq: np.ndarray | None = None) -> bool:
    """True when :func:`reference_mask` falls back to pseudo-reference pixels and their
    light is to be removed (``params.pseudo_light == "detrend"``)."""
    if geometry is None or not params.pseudo_reference or params.pseudo_light != "detrend":
        return False
    if geometry.name not in EDGELESS_SUBARRAYS:
        return False
    ny, nx = shape
    real = reference_mask(geometry, shape, RefPixParams(pseudo_reference=False), pixeldq)
    return not real.any()


def reference_mask(geometry: SubarrayGeometry, shape: tuple[int, int],
                   params: RefPixParams = RefPixParams(),
                   pixeldq: np.ndarray | None = None) -> np.ndarray:
    """(ny, nx) bool: the reference pixels of the subarray (before DQ exclusion).

    The full-frame border (4 columns and 4 rows on each side) inside the subarray,
    pixels with REFERENCE_PIXEL in ``pixeldq``, and for an edgeless subarray (with
    ``params.pseudo_reference``) its first and last four columns.
    """
    ny, nx = shape
    cols = reference_columns(geometry, nx)
    ref = np.zeros((ny, nx), bool)
    ref[:, cols] = True
    yf = geometry.substrt2 - 1 + np.arange(ny)
    ref[(yf < NREF) | (yf >= FULL_FRAME - NREF), :] = True
    if pixeldq is not None:
        ref |= (np.asarray(pixeldq, np.uint32) & _REF) != 0
    if params.pseudo_reference and geometry.name in EDGELESS_SUBARRAYS and not ref.any():
        ref[:, :NREF] = True
        ref[:, nx - NREF:] = True
    return ref


@njit(cache=True, nogil=True, error_model="numpy")
def sigma_clipped_mean(v, n, siglimit):
    """Mean of ``v[:n]`` after iterative clipping at ``siglimit`` standard deviations
    about the mean (scipy.stats.sigmaclip's algorithm, float64); NaN when n == 0.
    ``siglimit <= 0``: the plain mean. Reorders ``v[:n]``."""
    s = 0.0
    for i in range(n):
        s += v[i]
    return _clipped_mean_from_sum(v, n, s, siglimit)


@njit(cache=True, nogil=True, error_model="numpy")
def _clipped_mean_from_sum(v, n, s, siglimit):
    """:func:`sigma_clipped_mean` given ``s``, the in-order float64 sum of ``v[:n]``.

    Two passes per clipping iteration (squared deviations; the partition, which also sums
    the kept values): the partition moves the kept values to the front in their original
    order, so the sum taken there is the next iteration's in-order sum, bit for bit."""
    if n == 0:
        return np.nan
    m = n
    while True:
        mean = s / m
        if siglimit <= 0.0 or m < 2:
            return mean
        ss = 0.0
        for i in range(m):
            d = v[i] - mean
            ss += d * d
        std = np.sqrt(ss / m)
        lo = mean - std * siglimit
        hi = mean + std * siglimit
        k = 0
        s = 0.0
        for i in range(m):
            x = v[i]
            if x >= lo and x <= hi:
                v[i] = v[k]
                v[k] = x
                s += x
                k += 1
        if k == m or k == 0:
            return mean
        m = k


@njit(cache=True, nogil=True, error_model="numpy")
def _ss2(v0, m0, mean0, v1, m1, mean1):
    """In-order sums of squared deviations of two lanes, side by side (two independent
    dependency chains); a lane with m = 0 is skipped."""
    ss0 = 0.0
    ss1 = 0.0
    mm = min(m0, m1)
    for i in range(mm):
        d0 = v0[i] - mean0
        d1 = v1[i] - mean1
        ss0 += d0 * d0
        ss1 += d1 * d1
    for i in range(mm, m0):
        d0 = v0[i] - mean0
        ss0 += d0 * d0
    for i in range(mm, m1):
        d1 = v1[i] - mean1
        ss1 += d1 * d1
    return ss0, ss1


@njit(cache=True, nogil=True, error_model="numpy")
def _keep2(v0, m0, lo0, hi0, v1, m1, lo1, hi1):
    """The clipping partition of :func:`_clipped_mean_from_sum` on two lanes side by
    side: (kept count, in-order sum of the kept values) per lane."""
    k0 = 0
    k1 = 0
    s0 = 0.0
    s1 = 0.0
    mm = min(m0, m1)
    for i in range(mm):
        x0 = v0[i]
        x1 = v1[i]
        if x0 >= lo0 and x0 <= hi0:
            v0[i] = v0[k0]
            v0[k0] = x0
            s0 += x0
            k0 += 1
        if x1 >= lo1 and x1 <= hi1:
            v1[i] = v1[k1]
            v1[k1] = x1
            s1 += x1
            k1 += 1
    for i in range(mm, m0):
        x0 = v0[i]
        if x0 >= lo0 and x0 <= hi0:
            v0[i] = v0[k0]
            v0[k0] = x0
            s0 += x0
            k0 += 1
    for i in range(mm, m1):
        x1 = v1[i]
        if x1 >= lo1 and x1 <= hi1:
            v1[i] = v1[k1]
            v1[k1] = x1
            s1 += x1
            k1 += 1
    return k0, s0, k1, s1


@njit(cache=True, nogil=True, error_model="numpy")
def _clipped_means2(v0, n0, s0, v1, n1, s1, siglimit):
    """:func:`_clipped_mean_from_sum` of two lanes (n0, n1 > 0) at once: each lane runs
    its own iterations with the same operations in the same order (the same bits); the
    passes interleave the lanes while both are still clipping."""
    m0 = n0
    m1 = n1
    a0 = True
    a1 = True
    r0 = np.nan
    r1 = np.nan
    mean0 = 0.0
    mean1 = 0.0
    lo0 = 0.0
    hi0 = 0.0
    lo1 = 0.0
    hi1 = 0.0
    while True:
        if a0:
            mean0 = s0 / m0
            if siglimit <= 0.0 or m0 < 2:
                r0 = mean0
                a0 = False
        if a1:
            mean1 = s1 / m1
            if siglimit <= 0.0 or m1 < 2:
                r1 = mean1
                a1 = False
        if not (a0 or a1):
            return r0, r1
        w0 = m0 if a0 else 0
        w1 = m1 if a1 else 0
        ss0, ss1 = _ss2(v0, w0, mean0, v1, w1, mean1)
        if a0:
            std0 = np.sqrt(ss0 / m0)
            lo0 = mean0 - std0 * siglimit
            hi0 = mean0 + std0 * siglimit
        if a1:
            std1 = np.sqrt(ss1 / m1)
            lo1 = mean1 - std1 * siglimit
            hi1 = mean1 + std1 * siglimit
        k0, t0, k1, t1 = _keep2(v0, w0, lo0, hi0, v1, w1, lo1, hi1)
        if a0:
            if k0 == m0 or k0 == 0:
                r0 = mean0
                a0 = False
            else:
                m0 = k0
                s0 = t0
        if a1:
            if k1 == m1 or k1 == 0:
                r1 = mean1
                a1 = False
            else:
                m1 = k1
                s1 = t1
        if not (a0 or a1):
            return r0, r1


@njit(cache=True, nogil=True, error_model="numpy")
def refpix_means(groups_or_raw, bias, pixeldq, refmask, parity0, odd_even, siglimit,
                 detrend=False):
    """Per-group sigma-clipped means of the reference pixels, per DMS-row parity.

    Parameters
    ----------
    groups_or_raw : (ngroups, ny, nx) DN; raw or bias-subtracted
    bias : float32, (ny, nx); subtracted first (zeros when the data are already
        bias-subtracted); NaN means 0
    pixeldq : uint32, (ny, nx); DO_NOT_USE pixels are left out
    refmask : bool, (ny, nx); the reference pixels (:func:`reference_mask`)
    parity0 : int, parity of the full-frame 0-based DMS row of subarray y = 0
    odd_even : bool; when False both parities get the overall mean
    siglimit : float; clipping limit in sigma (<= 0: plain mean)
    detrend : bool; remove each reference pixel's least-squares line over the groups
        first (pseudo-reference pixels that see light: see the module notes)

    Returns
    -------
    means : float32, (ngroups, 2); index = full-frame DMS row parity; 0 where none
    """
    ys, xs = np.nonzero(refmask)  # row-major order
    return refpix_means_at(groups_or_raw, bias, pixeldq, ys, xs, parity0, odd_even, siglimit,
                           detrend)


@njit(cache=True, nogil=True, error_model="numpy")
def refpix_means_at(groups_or_raw, bias, pixeldq, ys, xs, parity0, odd_even, siglimit,
                    detrend=False):
    """:func:`refpix_means` with the reference pixels given as a list, ``(ys[i], xs[i])``
    in row-major order (``np.nonzero(refmask)``): the same values in the same order, so
    the same means, without scanning the whole frame per group.

    The usable pixels (not DO_NOT_USE; with ``detrend``, a finite line) are listed once
    with their bias and parity; each group's values are summed in order while they are
    copied (the first clipping iteration's sum)."""
    ng = groups_or_raw.shape[0]
    npix = ys.shape[0]
    out = np.zeros((ng, 2), np.float32)
    nref = 0
    for i in range(npix):
        if not (pixeldq[ys[i], xs[i]] & _DNU):
            nref += 1
    cy = np.empty(nref, np.int64)
    cx = np.empty(nref, np.int64)
    cpar = np.empty(nref, np.int64)
    cbias = np.empty(nref, bias.dtype)
    # per-pixel straight line over the groups (detrend): a + b (g - gm)
    lin_a = np.zeros(nref, np.float64)
    lin_b = np.zeros(nref, np.float64)
    gm = 0.5 * (ng - 1)
    sgg = 0.0
    for g in range(ng):
        sgg += (g - gm) * (g - gm)
    nc = 0
    for i in range(npix):
        y = ys[i]
        x = xs[i]
        if pixeldq[y, x] & _DNU:
            continue
        b = bias[y, x]
        if np.isnan(b):
            b = np.float32(0.0)
        if detrend:
            s0 = 0.0
            s1 = 0.0
            ok = True
            for g in range(ng):
                v = np.float64(np.float32(np.float32(groups_or_raw[g, y, x]) - b))
                if not np.isfinite(v):
                    ok = False
                    break
                s0 += v
                s1 += (g - gm) * v
            if not ok:
                continue  # the old per-group skip of a non-finite line
            lin_a[nc] = s0 / ng
            lin_b[nc] = s1 / sgg if sgg > 0 else 0.0
        cy[nc] = y
        cx[nc] = x
        cpar[nc] = (y + parity0) % 2 if odd_even else 0
        cbias[nc] = b
        nc += 1
    buf = np.empty((2, max(nc, 1)), np.float64)
    b0 = buf[0]
    b1 = buf[1]
    for g in range(ng):
        n0 = np.int64(0)  # not the literal 0: numba would also compile the callees
        n1 = np.int64(0)  # for Literal[int](0) while typing (a specialisation never run)
        s0 = 0.0
        s1 = 0.0
        dg = g - gm
        for j in range(nc):
            v = np.float32(np.float32(groups_or_raw[g, cy[j], cx[j]]) - cbias[j])
            vv = np.float64(v)
            if detrend:
                vv = vv - (lin_a[j] + lin_b[j] * dg)
            if np.isfinite(vv):
                if cpar[j] == 0:
                    b0[n0] = vv
                    s0 += vv
                    n0 += 1
                else:
                    b1[n1] = vv
                    s1 += vv
                    n1 += 1
        if n0 > 0 and n1 > 0:  # odd_even: both parities side by side
            r0, r1 = _clipped_means2(b0, n0, s0, b1, n1, s1, siglimit)
            out[g, 0] = np.float32(r0)
            out[g, 1] = np.float32(r1)
        else:
            if n0 > 0:
                out[g, 0] = np.float32(_clipped_mean_from_sum(b0, n0, s0, siglimit))
            if n1 > 0:
                out[g, 1] = np.float32(_clipped_mean_from_sum(b1, n1, s1, siglimit))
            if not odd_even:
                out[g, 1] = out[g, 0]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def apply_refpix(groups, means, parity0):
    """Subtract the per-group DMS-row-parity means in place.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    means : float32, (ngroups, 2)
    parity0 : int, parity of the full-frame DMS row of subarray y = 0
    """
    ng, ny, nx = groups.shape
    for g in range(ng):
        for y in range(ny):
            m = means[g, (y + parity0) % 2]
            for x in range(nx):
                groups[g, y, x] = groups[g, y, x] - m
