"""Shared pieces of the extraction kernels: the Spectrum record, aperture weights,
per-trace geometry caches, array coercion and the column sort/median helpers.

numpy + numba; no Beam. Split from :mod:`nirbeam.transforms.extract` (which re-exports
the public names).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.trace import TraceModel, window_weights


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One integration's extracted spectrum.

    Attributes
    ----------
    flux : float64, (nx,), DN/s
        Background-subtracted flux per column.
    flux_error : float64, (nx,), DN/s
        1-sigma uncertainty (pixel variances propagated; background error included).
    dq : uint32, (nx,)
        OR of the DQ of masked/rejected pixels in the aperture (0 = clean column).
    npixels : float64, (nx,)
        Aperture weight summed over good pixels (box) or number of pixels used (optimal).
    background : float64, (nx,), DN/s per pixel
        Background level subtracted per pixel.
    method : str
        ``"box"``, ``"straight_box"`` or ``"optimal"``.
    background_var : float64, (nx,), (DN/s)^2, or None
        Variance of the per-pixel background estimate (box extraction; None otherwise).
    """

    flux: np.ndarray
    flux_error: np.ndarray
    dq: np.ndarray
    npixels: np.ndarray
    background: np.ndarray
    method: str = "box"
    background_var: np.ndarray | None = None


def bad_mask(rate: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, bad_bits: int):
    bad = ~np.isfinite(rate)
    if var is not None:
        bad |= ~np.isfinite(var)
    if dq is not None:
        bad |= (np.asarray(dq).astype(np.uint32) & np.uint32(bad_bits)) != 0
    return bad


def aperture_weights(trace: TraceModel, shape: tuple[int, int], half_width: float) -> np.ndarray:
    """Fractional-pixel weights of a curved aperture ``|y - y_c(x)| <= half_width``.

    Parameters
    ----------
    trace : TraceModel
    shape : (ny, nx)
    half_width : float, px

    Returns
    -------
    float64, (ny, nx)
        Overlap (0..1) of each pixel with the aperture; column sums are ``2*half_width``
        where the aperture is fully on the detector.
    """
    ny, nx = shape
    return window_weights(np.arange(ny, dtype=np.float64), trace.center(np.arange(nx)), half_width)


# ---------------------------------------------------------------------------------------
# Per-model geometry, cached (the trace and aperture do not change between integrations)
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _center_cached(trace: TraceModel, nx: int) -> np.ndarray:
    c = np.ascontiguousarray(trace.center(np.arange(nx)), dtype=np.float64)
    c.setflags(write=False)
    return c


@lru_cache(maxsize=16)
def _weights_cached(trace: TraceModel, ny: int, nx: int, half_width: float) -> np.ndarray:
    w = np.ascontiguousarray(
        window_weights(np.arange(ny, dtype=np.float64), _center_cached(trace, nx), half_width),
        dtype=np.float64,
    )
    w.setflags(write=False)
    return w


def trace_center(trace: TraceModel, nx: int) -> np.ndarray:
    """``trace.center(arange(nx))`` (float64, read-only), cached per (trace, nx)."""
    try:
        return _center_cached(trace, int(nx))
    except TypeError:  # unhashable trace-like object: no cache
        return np.ascontiguousarray(trace.center(np.arange(nx)), dtype=np.float64)


def aperture_weights_fast(trace: TraceModel, shape: tuple[int, int], half_width: float):
    """:func:`aperture_weights` (read-only), cached per (trace, shape, half_width)."""
    ny, nx = (int(s) for s in shape)
    try:
        return _weights_cached(trace, ny, nx, float(half_width))
    except TypeError:
        return np.ascontiguousarray(aperture_weights(trace, (ny, nx), half_width))


def as_f64(a, shape) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a)


def as_dq(dq, shape) -> np.ndarray:
    """DQ as C-contiguous uint32 of ``shape`` (zeros for None: no bits, no flags)."""
    if dq is None:
        return np.zeros(shape, np.uint32)
    d = np.asarray(dq)
    if d.dtype != np.uint32:
        d = d.astype(np.uint32)
    if d.shape != shape:
        d = np.broadcast_to(d, shape)
    return np.ascontiguousarray(d)


# ---------------------------------------------------------------------------------------
# numba kernels. Each reproduces the numpy reference (``_*_reference`` below) operation by
# operation in float64: sums run over rows in increasing y, as numpy's axis-0 reductions
# of C-ordered (ny, nx) arrays do, and medians of <= ny values are the mean of the two
# middle order statistics, as np.nanmedian's; so results agree to rounding (in practice
# bit for bit; the tests allow 1e-12 relative).
# ---------------------------------------------------------------------------------------

DNU = np.uint32(dqflags.DO_NOT_USE)
OUTLIER_BIT = np.uint32(dqflags.OUTLIER)


@njit(cache=True, inline="always", error_model="numpy")
def np_maximum(a, b):
    # np.maximum for a NaN-free ``b``: NaN in ``a`` propagates
    if a != a:
        return a
    return a if a >= b else b


@njit(cache=True, inline="always", error_model="numpy")
def median_sorted(a, n):
    # as np.ma.median along an axis (np.nanmedian of <= 600 rows): (low + high) / 2,
    # with low = high for odd n
    h = n // 2
    lo = a[h] if n % 2 == 1 else a[h - 1]
    return (lo + a[h]) / 2.0


@njit(cache=True, error_model="numpy")
def sort_columns(S, n):
    """Sort each column of ``S[:n, :]`` ascending (Batcher odd-even merge network).

    Branch-free min/max compare-exchanges along rows, i.e. vectorised over columns.
    ``S`` must hold +inf below each column's values; comparators reaching past ``n``
    would compare against +inf and are left out. No NaN allowed.
    """
    nx = S.shape[1]
    N = 1
    while N < n:
        N *= 2
    p = 1
    while p < N:
        k = p
        while k >= 1:
            for j in range(k % p, N - k, 2 * k):
                for i in range(min(k, N - j - k)):
                    a = i + j
                    b = a + k
                    if b < n and a // (2 * p) == b // (2 * p):
                        sa = S[a]
                        sb = S[b]
                        for x in range(nx):
                            u = sa[x]
                            v = sb[x]
                            sa[x] = u if u <= v else v
                            sb[x] = v if u <= v else u
            k //= 2
        p *= 2
