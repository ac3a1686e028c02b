"""1/f cleaning: a readout-order-aware filter of the per-column offsets (issue 13).

The group-level cleaner (``method='median'``) fits one offset per column and group (or
group difference) to the ~16 scene-mask pixels of the column, and subtracts it from every
pixel of the column, so the estimate's noise (variance ``sigma^2 = k s^2 / n``, the
model variance the pipeline reports) enters all of them. The offsets themselves are
samples of the 1/f series at the column cadence: the fast read runs along y, the columns
are read one after the other along x (NRS1 towards +x, NRS2 towards -x: the same
neighbours), so along x they are a 1/f^alpha series, with most of their power at low
frequencies, while the estimation noise is white (independent columns).

:func:`readout_wiener` filters each difference's offsets along x in the basis of the
DCT-II (even extension at both ends: no wrap-around jump of a periodic transform): the
power of coefficient ``j`` of a 1/f^alpha segment is ``A j^-alpha`` (checked against the
simulator's ``one_over_f_columns``: tests/test_flicker_readout.py), the noise's is
``sigma^2``. ``A`` is fitted per integration to the periodogram of all its differences
(weighted least squares, ``sigma^2`` known), and each coefficient is multiplied by the
Wiener weight ``W_j = A j^-alpha / (A j^-alpha + sigma^2)`` (``W_0 = 1``: the mean offset
over the columns, bias drifts included, is kept as fitted). Per coefficient the error of
the filtered offset has variance ``W_j sigma^2`` (the noise left, ``W_j^2 sigma^2``,
plus the 1/f the filter leaves in the data, ``(1 - W_j)^2 A j^-alpha``), so the model
variance the pipeline reports is scaled by the mean weight (:func:`readout_wiener`'s
``gain``; issue 13 cause 5: the error terms follow the estimator).

Only per-column offsets (``method='median'``); one offset per column over all rows, as
the cleaner (the four outputs of a full frame are not told apart).
"""

from __future__ import annotations

import numpy as np

#: spectral index of the 1/f power along the readout order (the simulator's alpha; the
#: NIRSpec 1/f of Schlawin et al. 2020 is ~1)
ALPHA = 1.0

#: rounds of the weighted least-squares fit of the 1/f amplitude
_ROUNDS = 6


def readout_wiener(offsets: np.ndarray, noise_var: float, alpha: float = ALPHA):
    """Wiener-filter the per-column offsets of one integration along the readout order.

    Parameters
    ----------
    offsets : float64, (nd, nx)
        Column offsets of each group (difference), DN.
    noise_var : float
        Variance (DN^2) of one column's offset estimate (white along x).
    alpha : float
        Spectral index of the 1/f power along x.

    Returns
    -------
    filtered : float64, (nd, nx)
        The offsets with each DCT coefficient ``j >= 1`` multiplied by ``W_j``.
    gain : float
        Mean of ``W_j`` over the nx coefficients (``W_0 = 1``): the factor of the model
        variance. 1.0 (and ``offsets`` unchanged) when there is nothing to filter
        (nx < 4, no finite positive ``noise_var``, non-finite offsets).
    amp : float
        The fitted ``A`` (DN^2; NaN when not fitted).
    """
    from scipy.fft import dct, idct

    o = np.asarray(offsets, np.float64)
    nd, nx = o.shape
    if nx < 4 or nd < 1 or not (np.isfinite(noise_var) and noise_var > 0) or not np.isfinite(o).all():
        return o.copy(), 1.0, float("nan")
    c = dct(o, type=2, norm="ortho", axis=1)
    p = c[:, 1:] ** 2
    u = np.arange(1, nx, dtype=np.float64) ** -float(alpha)
    pm = p.mean(axis=0)  # the differences share one spectrum
    s2 = float(noise_var)
    amp = max(float(np.sum(pm - s2) / np.sum(u)), 0.0)
    for _ in range(_ROUNDS):
        # var(mean of nd periodogram values) ~ 2 (A u + s2)^2 / nd: weights 1 / (A u + s2)^2
        wt = 1.0 / (amp * u + s2) ** 2
        amp = max(float(np.sum(wt * u * (pm - s2)) / np.sum(wt * u * u)), 0.0)
    w = np.ones(nx)
    w[1:] = amp * u / (amp * u + s2)
    filtered = idct(c * w[None, :], type=2, norm="ortho", axis=1)
    return filtered, float(w.mean()), amp


def noise_level(var_row: np.ndarray) -> float:
    """The white noise level of the column offsets from the model variance of one row
    (``var[0]`` of the cleaner, DN^2 per column): its mean over the columns."""
    v = np.asarray(var_row, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def rebuild_ramp(groups, offs, from_first):
    """float32 ramp ``g[k] - offs[k - 1]`` per column (from the first group), or ``g[k]``
    less the running sum of ``offs`` (group differences); group 0 as given (the fused
    kernel's arithmetic, ``mode=2``)."""
    g = np.asarray(groups)
    out = np.empty(g.shape, np.float32)
    out[0] = g[0]
    acc = np.zeros(g.shape[1:])
    for k in range(1, g.shape[0]):
        mk = np.broadcast_to(offs[k - 1][None, :], g.shape[1:])
        acc = mk if from_first else acc + mk
        out[k] = (np.asarray(g[k], np.float64) - acc).astype(np.float32)
    return out
