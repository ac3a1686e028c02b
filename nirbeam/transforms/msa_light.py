"""Light where no MSA shutter was planned open (failed-open shutters), and planned-open
shutters that pass none (stuck closed).

A failed-open shutter puts a spectrum (sky, and whatever source lies behind it) on
detector rows that no planned slitlet covers. :func:`unplanned_light` compares, row by
row, the light outside every planned slitlet box with the noise: per row, the median over
the columns of the spectral range of the rate (median over nods), against the robust
scatter of such row medians over the dark rows; runs of consecutive rows above
``n_sigma`` are reported with their level. :func:`closed_shutters` compares each shutter
of a slitlet with its neighbours: a shutter whose median level is below ``fraction`` of
the slitlet's brightest shutter (its sky: the minimum over the nods, so that the nod with
the source in it does not count) in every nod is reported as stuck closed.

numpy only; no Beam, no I/O.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["unplanned_light", "closed_shutters", "planned_mask", "dark_pedestal"]


def planned_mask(shape, boxes) -> np.ndarray:
    """bool (ny, nx): True inside any planned box ``(y0, y1, x0, x1)``."""
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def unplanned_light(rates, dqs, planned_rows, *, columns=None, n_sigma: float = 8.0,
                    min_rows: int = 2, bad_bits: int = 1) -> list[dict]:
    """Runs of rows with light outside every planned slitlet.

    Parameters
    ----------
    rates : float, (nods, ny, nx), DN/s
    dqs : uint32, (nods, ny, nx)
    planned_rows : bool, (ny,)
        Rows covered by a planned slitlet (or to ignore: reference pixels).
    columns : slice or None
        Columns to look at (the spectral range); default all.
    n_sigma : float
        Threshold over the robust scatter of the unplanned rows' medians.
    min_rows : int
        Shortest run reported.

    Returns
    -------
    list of dict: ``rows`` [first, last + 1], ``level_dn_s`` (median of the run's row
    medians), ``significance`` (in units of the scatter), ``columns`` [x0, x1]
    (where the run's light is above half its level).
    """
    r = np.asarray(rates, np.float64)
    q = np.asarray(dqs, np.uint32)
    cols = columns if columns is not None else slice(0, r.shape[2])
    good = np.isfinite(r) & ((q & np.uint32(bad_bits)) == 0)
    with warnings.catch_warnings():  # rows or pixels with no good value stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        img = np.nanmedian(np.where(good, r, np.nan), axis=0)  # (ny, nx)
        rowmed = np.nanmedian(img[:, cols], axis=1)
    free = ~np.asarray(planned_rows, bool) & np.isfinite(rowmed)
    if free.sum() < 5:
        return []
    base = np.median(rowmed[free])
    mad = 1.4826 * np.median(np.abs(rowmed[free] - base))
    if not mad > 0:
        mad = float(np.std(rowmed[free])) or 1e-12
    hot = free & (rowmed - base > n_sigma * mad)
    out = []
    y = 0
    ny = hot.size
    while y < ny:
        if not hot[y]:
            y += 1
            continue
        y1 = y
        while y1 < ny and hot[y1]:
            y1 += 1
        if y1 - y >= min_rows:
            lev = float(np.median(rowmed[y:y1] - base))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                prof = np.nanmedian(img[y:y1], axis=0) - base
            on = np.flatnonzero(prof > 0.5 * lev)
            out.append({"rows": [int(y), int(y1)], "level_dn_s": lev,
                        "significance": float(lev / mad),
                        "columns": [int(on[0]), int(on[-1]) + 1] if on.size else None})
        y = y1
    return out


def closed_shutters(cutout, dq, shutter_rows, *, fraction: float = 0.2, bad_bits: int = 1) -> list[int]:
    """Shutters of one slitlet that pass (almost) no light in every nod.

    Parameters
    ----------
    cutout : float, (nods, nrows, nx), DN/s
    dq : uint32, same shape
    shutter_rows : list of (r0, r1)
        Rows of each shutter's open part within the cut-out.
    fraction : float
        A shutter whose level in every nod is below this fraction of the brightest
        shutter's sky level (its minimum over the nods) is closed.

    Returns
    -------
    list of int: 0-based shutter indices found closed.
    """
    c = np.asarray(cutout, np.float64)
    q = np.asarray(dq, np.uint32)
    good = np.isfinite(c) & ((q & np.uint32(bad_bits)) == 0)
    lev = np.array([[np.nanmedian(np.where(good[k, a:b], c[k, a:b], np.nan)) for a, b in shutter_rows]
                    for k in range(c.shape[0])])  # (nods, nshutters)
    sky = np.nanmin(lev, axis=0)            # each shutter's level without the source
    ref = np.nanmax(sky)                     # the brightest shutter's sky
    closed = np.nanmax(lev, axis=0) < fraction * ref

    return [int(i) for i in np.flatnonzero(closed)]


def dark_pedestal(rate, dq, dark_rows, *, columns=None, n_sigma: float = 5.0, bad_bits: int = 1,
                  max_iter: int = 10) -> tuple[float, float, int]:
    """The level of the detector where no light is planned (rows no slitlet covers, not
    flagged as unplanned light): a sigma-clipped mean over those pixels of one nod's rate.

    A rate with an additive offset (the simulator's stage-1 rates carry +0.006 DN/s, 0.06
    of a pixel's noise, on every pixel, lit or not) leaves the nod background untouched
    but biases the bar shadow measured from the sky slitlets: ``(T s + d) / (s + d)`` is
    too high where ``T`` is low (the slitlet's end rows), so those rows are
    under-corrected and a source with light there comes out low. Subtracting this level
    first removes that.

    Returns
    -------
    (level, error, n_pixels); (0, inf, 0) when there is no such pixel.
    """
    r = np.asarray(rate, np.float64)
    q = np.asarray(dq, np.uint32)
    cols = columns if columns is not None else slice(0, r.shape[1])
    m = np.zeros(r.shape, bool)
    m[np.asarray(dark_rows, bool), cols] = True
    m &= np.isfinite(r) & ((q & np.uint32(bad_bits)) == 0)
    v = r[m]
    if v.size < 10:
        return 0.0, float("inf"), 0
    mu, sd = float(np.median(v)), float(1.4826 * np.median(np.abs(v - np.median(v))))
    for _ in range(max_iter):
        keep = np.abs(v - mu) <= n_sigma * sd
        mu_new, sd = float(v[keep].mean()), float(v[keep].std())
        if abs(mu_new - mu) < 1e-6 * max(sd, 1e-30):
            mu = mu_new
            break
        mu = mu_new
    return mu, sd / np.sqrt(max(int(keep.sum()), 1)), int(keep.sum())
