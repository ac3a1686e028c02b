"""Time-domain flags of a white-light series: points far from the running median.

Moved from ``nirbeam.stream.products`` (a kernel beside I/O); pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rolling_outliers"]


def rolling_outliers(flux: np.ndarray, good: np.ndarray, window: int = 25,
                     n_sigma: float = 5.0) -> np.ndarray:
    """White-light points more than ``n_sigma`` (robust) from the running median.

    Parameters
    ----------
    flux : float (n,), DN/s
    good : bool (n,), the points that take part (fewer than 5: nothing is flagged)
    window : int, points in the running median (centred)
    n_sigma : float, threshold in units of 1.4826 x the median absolute deviation of the
        residuals

    Returns
    -------
    bool (n,), True where flagged
    """
    out = np.zeros(flux.size, bool)
    idx = np.flatnonzero(good)
    if idx.size < 5:
        return out
    f = flux[idx]
    half = window // 2
    med = np.array([np.median(f[max(0, k - half): k + half + 1]) for k in range(f.size)])
    r = f - med
    sig = 1.4826 * np.median(np.abs(r - np.median(r)))
    if sig > 0:
        out[idx[np.abs(r) > n_sigma * sig]] = True
    return out
