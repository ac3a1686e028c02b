"""Trace position and width per integration (for plots and decorrelation).

Kernel only (numpy). For each integration the rate image is rectified along the fitted
trace (each column resampled at offsets ``-h..h`` px from the trace centre, linear in y),
summed over columns (so bright columns weigh most), the median of the outermost offsets
is subtracted as a local background, and the first two moments of that cross-dispersion
profile give

- ``centroid_offset``: mean offset from the fitted trace, px (+y up);
- ``centroid_y``: ``centroid_offset`` plus the trace centre averaged over columns, px
  (0-based subarray row), Eureka's ``centroid_y``;
- ``width``: the standard deviation of the profile, px (Eureka's ``centroid_sy``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rectified_profile", "trace_moments", "trace_diagnostics_block"]


def _sample_rows(center, half: int, ny: int, nx: int):
    """Where :func:`rectified_profile` samples: the offsets ``-half..half``, the column
    indices, and per (offset, column) the fraction ``f`` above row ``y0c`` (clipped to
    0..ny-2) and whether both rows ``y0c, y0c + 1`` are inside the frame."""
    off = np.arange(-half, half + 1, dtype=np.float64)
    cols = np.arange(nx)
    y = np.asarray(center, np.float64)[None, :] + off[:, None]  # (noff, nx)
    y0 = np.floor(y).astype(np.int64)
    f = y - y0
    inside = (y0 >= 0) & (y0 + 1 <= ny - 1)
    return off, cols, f, inside, np.clip(y0, 0, ny - 2)


def rectified_profile(rate: np.ndarray, dq: np.ndarray, center: np.ndarray, half: int,
                      bad_bits: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cross-dispersion profile summed over columns, sampled along the trace.

    Parameters
    ----------
    rate : float, (ny, nx), DN/s
    dq : uint32, (ny, nx)
    center : float, (nx,), px
        Trace centre (0-based row) per column.
    half : int
        Offsets ``-half..half`` px.
    bad_bits : int
        Pixels with these DQ bits (and non-finite rates) are left out.

    Returns
    -------
    offsets : float64, (2 half + 1,), px
    profile : float64, (2 half + 1,), DN/s summed over the columns
    """
    r = np.asarray(rate, np.float64)
    ny, nx = r.shape
    good = ((np.asarray(dq) & bad_bits) == 0) & np.isfinite(r)
    r = np.where(good, r, 0.0)
    off, cols, f, inside, y0c = _sample_rows(center, half, ny, nx)
    a, b = r[y0c, cols], r[y0c + 1, cols]
    ga, gb = good[y0c, cols], good[y0c + 1, cols]
    ok = inside & ga & gb
    val = np.where(ok, (1 - f) * a + f * b, 0.0)
    # only columns where every offset is usable: the profile's shape is not biased
    colok = np.all(ok, axis=0)
    return off, val[:, colok].sum(axis=1)


def trace_moments(offsets: np.ndarray, profile: np.ndarray, edge: int = 2) -> tuple[float, float]:
    """Centroid and standard deviation (px) of a profile after removing its edge level.

    The median of the ``edge`` outermost samples on each side is subtracted; negative
    values are clipped to 0. NaN when the profile carries no flux.
    """
    p = np.asarray(profile, np.float64)
    o = np.asarray(offsets, np.float64)
    bg = np.median(np.concatenate([p[:edge], p[-edge:]])) if p.size > 2 * edge else 0.0
    w = np.clip(p - bg, 0, None)
    s = w.sum()
    if not s > 0:
        return float("nan"), float("nan")
    c = float((w * o).sum() / s)
    sd = float(np.sqrt((w * (o - c) ** 2).sum() / s))
    return c, sd


def _moments_rows(offsets: np.ndarray, profiles: np.ndarray, edge: int = 2):
    """:func:`trace_moments` of each row of ``profiles`` (n, noff), the same operations
    along the rows (numpy's row sums are its 1-D sums: the same values bit for bit)."""
    n, m = profiles.shape
    if m > 2 * edge:
        bg = np.median(np.concatenate([profiles[:, :edge], profiles[:, -edge:]], axis=1), axis=1)
    else:
        bg = np.zeros(n)
    w = np.clip(profiles - bg[:, None], 0, None)
    s = w.sum(axis=1)
    with np.errstate(all="ignore"):
        c = (w * offsets).sum(axis=1) / s
        sd = np.sqrt((w * (offsets - c[:, None]) ** 2).sum(axis=1) / s)
    bad = ~(s > 0)
    c[bad] = np.nan
    sd[bad] = np.nan
    return c, sd


def trace_diagnostics_block(rates: np.ndarray, dqs: np.ndarray, center: np.ndarray,
                            half: int, bad_bits: int = 1) -> dict[str, np.ndarray]:
    """Centroid offset, centroid row and width for a stack of integrations.

    The values of :func:`rectified_profile` and :func:`trace_moments` per integration,
    bit for bit (tests/test_trace_diagnostics.py), computed for the whole stack at once:
    the two rows about the trace are taken with one ``take`` per array (the sample
    positions are the same for every integration), and the columns kept are summed for
    all integrations together when every integration keeps the same columns.

    Parameters
    ----------
    rates : float, (n, ny, nx), DN/s
    dqs : uint32, (n, ny, nx)
    center : float, (nx,), px
    half : int

    Returns
    -------
    dict of float64 (n,) arrays: ``centroid_offset``, ``centroid_y``, ``width`` (px)
    """
    rates = np.asarray(rates)
    n, ny, nx = rates.shape
    off, cols, f, inside, y0c = _sample_rows(center, half, ny, nx)
    at = np.concatenate([(y0c * nx + cols).ravel(), ((y0c + 1) * nx + cols).ravel()])
    shape = (n, 2, *y0c.shape)
    v = np.asarray(rates.reshape(n, ny * nx).take(at, axis=1), np.float64).reshape(shape)
    good = (np.asarray(dqs).reshape(n, ny * nx).take(at, axis=1).reshape(shape) & bad_bits) == 0
    good &= np.isfinite(v)
    v = np.where(good, v, 0.0)
    ok = inside & good[:, 0] & good[:, 1]
    val = np.where(ok, (1 - f) * v[:, 0] + f * v[:, 1], 0.0)
    # only columns where every offset is usable: the profile's shape is not biased
    colok = np.all(ok, axis=1)  # (n, nx)
    if n and (colok == colok[:1]).all():
        prof = val[:, :, colok[0]].sum(axis=2)
    else:
        prof = np.empty((n, off.size))
        for i in range(n):
            prof[i] = val[i][:, colok[i]].sum(axis=1)
    co, wd = _moments_rows(off, prof)
    return {"centroid_offset": co, "centroid_y": co + float(np.mean(center)), "width": wd}
