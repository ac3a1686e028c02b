"""Time-domain flags of a white-light series: points far from the running median.

Moved from ``nirbeam.stream.products`` (a kernel beside I/O); pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rolling_outliers"]


def rolling_outliers(flux: np.ndarray, good: np.ndarray, window: int = 5,
                     n_sigma: float = 5.0) -> np.ndarray:
    """White-light points more than ``n_sigma`` (robust) from a running median that
    follows the transit (:func:`nirbeam.transforms.lightcurve.flag_lightcurve_outliers`).

    Parameters
    ----------
    flux : float (n,), DN/s
    good : bool (n,), the points that take part
    window : int, points in the running median (centred)
    n_sigma : float, threshold in robust standard deviations

    Returns
    -------
    bool (n,), True where flagged
    """
    from nirbeam.transforms.lightcurve import flag_lightcurve_outliers

    return flag_lightcurve_outliers(flux, good, window=window, n_sigma=n_sigma)
