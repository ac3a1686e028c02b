"""Bar shadows of MSA slitlets, measured from the exposure's own sky slitlets.

The bars between open shutters of a slitlet shade the light that passes it; jwst divides
by a reference profile (BARSHADOW reference file), which over- and under-corrects at the
shutter edges. Here the profile is measured where the scene is known to be flat along the
slit: the sky-only (background) slitlets of the same exposure, all nods. For every sky
cut-out (rows along the slit, ``nrows``, the same for every slitlet of the geometry) and
column the sky level is the mean of the rows the reference calls fully open
(``ref >= plateau``), and the profile of a row is the sum of its pixels over the sum of
those sky levels (columns, nods, slitlets), with a 5-sigma clip. The same shape applies to every slitlet of that shutter count (the simulator's and
a real MSA's slitlets share their along-slit pixel phase only approximately; a real
exposure would bin by the along-slit coordinate instead of the row).

numpy only; no Beam, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BarShadowProfile", "measure_bar_shadow", "profile_rms", "apply_bar_shadow"]


@dataclass(frozen=True, eq=False)
class BarShadowProfile:
    """A measured along-slit transmission.

    Attributes
    ----------
    transmission : float64, (nrows,)
        1 where the shutters are fully open; NaN where not measured.
    error : float64, (nrows,)
    n_samples : int64, (nrows,)
        Pixels averaged per row.
    n_slitlets : int
    """

    transmission: np.ndarray
    error: np.ndarray
    n_samples: np.ndarray
    n_slitlets: int


def measure_bar_shadow(cutouts, variances, dqs, reference, *, plateau: float = 0.99,
                       n_sigma: float = 5.0, bad_bits: int = 1) -> BarShadowProfile:
    """Measure the profile from sky cut-outs.

    A ratio of sums, not a mean of ratios (a per-column ratio of two noisy sky values is
    biased): per row ``S(y) = sum of the sky pixels`` over every column, nod and
    slitlet where the whole column is good, and ``T(y) = S(y) / mean(S over the fully open
    rows)``. Pixels more than ``n_sigma`` from the model ``T(y) * sky(x)`` are dropped
    (with their column) and the sums redone, until none is.

    Parameters
    ----------
    cutouts : sequence of float arrays (nods, nrows, nx) or (nrows, nx), DN/s
        One per sky slitlet (the same ``nrows``; columns may differ).
    variances : same shapes, (DN/s)^2
    dqs : same shapes, uint32
    reference : float, (nrows,)
        The a-priori profile: it picks the normalising rows (``>= plateau``) and the rows
        inside the slit (``> 0``), nothing else.

    Returns
    -------
    BarShadowProfile
    """
    ref = np.asarray(reference, np.float64)
    norm_rows = ref >= plateau
    inslit = ref > 0
    if not norm_rows.any():
        raise ValueError("measure_bar_shadow: the reference has no fully open rows")
    C, Vv, G = [], [], []
    n = 0
    for c, v, q in zip(cutouts, variances, dqs, strict=True):
        c = np.asarray(c, np.float64)
        v = np.asarray(v, np.float64)
        q = np.asarray(q, np.uint32)
        if c.ndim == 2:
            c, v, q = c[None], v[None], q[None]
        if c.shape[1] != ref.size:
            raise ValueError(f"measure_bar_shadow: cut-out has {c.shape[1]} rows, the reference {ref.size}")
        ok = np.isfinite(c) & np.isfinite(v) & (v > 0) & ((q & np.uint32(bad_bits)) == 0)
        for k in range(c.shape[0]):
            C.append(np.where(ok[k], c[k], 0.0))
            Vv.append(np.where(ok[k], v[k], 0.0))
            G.append(ok[k])
        n += 1
    if not C:
        raise ValueError("measure_bar_shadow: no sky cut-outs")
    C = np.concatenate(C, axis=1)
    Vv = np.concatenate(Vv, axis=1)
    G = np.concatenate(G, axis=1)
    # a row that is closed in a cut-out (stuck shutter: flagged) drops only that row of
    # the cut-out; a column's sky is the mean of its good normalising rows
    col = G[norm_rows].any(axis=0)
    for _ in range(10):
        use = G & col[None, :]
        sky = np.where(col, np.where(use[norm_rows], C[norm_rows], 0).sum(axis=0)
                       / np.maximum(use[norm_rows].sum(axis=0), 1), np.nan)
        num = np.where(use, C, 0.0).sum(axis=1)
        den = np.where(use, np.nan_to_num(sky)[None, :], 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(den > 0, num / den, np.nan)
            t = t / np.nanmean(t[norm_rows])
            chi = (C - t[:, None] * sky[None, :]) / np.sqrt(np.where(use, Vv, np.inf))
        bad = use & (np.abs(chi) > n_sigma) & inslit[:, None]
        if not bad.any():
            break
        G &= ~bad
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(np.where(use, Vv, 0.0).sum(axis=1)) / den
    t = np.where(inslit | (den > 0), t, np.nan)
    return BarShadowProfile(t, err, use.sum(axis=1).astype(np.int64), n)


def profile_rms(a, b, weight_rows) -> float:
    """RMS of ``a - b`` over the rows ``weight_rows`` (bool) where both are finite."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m = np.asarray(weight_rows, bool) & np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[m] - b[m]) ** 2))) if m.any() else float("nan")


def apply_bar_shadow(rate, var, dq, transmission, *, floor: float = 0.2, flag: int = 1):
    """Divide a slitlet's cut-outs (..., nrows, nx) by the transmission (nrows,);
    variances by its square. Rows below ``floor`` (closed or barely open) get ``flag``
    (DO_NOT_USE) and NaN."""
    t = np.asarray(transmission, np.float64)[:, None]
    low = ~(np.isfinite(t) & (t >= floor))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(low, np.nan, np.asarray(rate, np.float64) / t)
        v = np.where(low, np.nan, np.asarray(var, np.float64) / t ** 2)
    q = np.asarray(dq, np.uint32) | np.where(low, np.uint32(flag), np.uint32(0))
    return r, v, q.astype(np.uint32)
