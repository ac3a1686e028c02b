"""Thresholds pinned exactly: values just above / just below a documented threshold.

Written for the mutants of ``bench/mutation.py`` that statistical tests let through: an
outlier threshold scaled by 1.2 survived because every injected outlier was >= 8 sigma
(recall) or exactly reproduced by a reference that shares the threshold's arithmetic.
Here each pixel's deviation from its (exact) rolling median is a known multiple of its
error, 0.97x to 1.03x the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms.outliers import RollingOutlierFlagger, flag_outliers

FACTORS = np.array([0.97, 0.99, 1.01, 1.03, 1.2, 0.8])


def _cube(n_sigma, nint=31, j_hit=15):
    """A flat series (median exactly 100) per pixel; one integration deviates by
    factor x n_sigma x err, alternating sign, in a row of pixels."""
    nx = FACTORS.size
    cube = np.full((nint, 2, nx), 100.0, np.float32)
    err = np.full(cube.shape, 2.0, np.float32)
    sign = np.where(np.arange(nx) % 2 == 0, 1.0, -1.0)
    cube[j_hit, 0, :] = 100.0 + sign * FACTORS * n_sigma * 2.0
    dq = np.zeros(cube.shape, np.uint32)
    return cube, err, dq, j_hit


@pytest.mark.parametrize("n_sigma", [5.0, 3.5])
@pytest.mark.parametrize("window", [25, 7])
def test_batch_outlier_threshold_is_exact(n_sigma, window):
    cube, err, dq, j = _cube(n_sigma)
    new = flag_outliers(cube, err, dq, window=window, n_sigma=n_sigma)
    flagged = (new & dqflags.OUTLIER) != 0
    np.testing.assert_array_equal(flagged[j, 0], FACTORS > 1.0)
    assert flagged.sum() == int((FACTORS > 1.0).sum())  # nothing else


@pytest.mark.parametrize("n_sigma", [5.0, 3.5])
def test_streaming_outlier_threshold_is_exact(n_sigma):
    cube, err, dq, j = _cube(n_sigma)
    fl = RollingOutlierFlagger(25, n_sigma=n_sigma, start=1, nints=cube.shape[0])
    got = []
    for i in range(cube.shape[0]):
        got += fl.push(1 + i, cube[i], err[i], dq[i])
    got += fl.finish()
    out = dict(got)
    np.testing.assert_array_equal((out[1 + j][0] & dqflags.OUTLIER) != 0, FACTORS > 1.0)
    assert sum(int(((d & dqflags.OUTLIER) != 0).sum()) for d in out.values()) == int(
        (FACTORS > 1.0).sum())
