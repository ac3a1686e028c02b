"""``flag_outliers(reference="motion")`` over a span against ``_motion_flags`` per integration.

Batch and the streaming flagger share one motion fit (``_motion_flags``). These cases pin
that the span-wide flags equal it, bit for bit, called once per integration: ties, NaN,
DO_NOT_USE, one-row frames (no gradient: too few pixels), flat windows (singular
systems), several rejection passes. (Session 9 tried a second, block-wise copy of the fit
for batch: no stage-level gain, so it was removed; a faster fit must stay one code.)
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import outliers as O


def _per_integration(cube, err, dq, window, n_sigma, span):
    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    a, b = span
    med = np.empty((b - a, *cube.shape[1:]), np.float64)
    out = O._flag_rolling(np.ascontiguousarray(cube), np.ascontiguousarray(err), valid,
                          np.ascontiguousarray(dq, np.uint32), window, float(n_sigma),
                          np.uint32(O.OUTLIER_BITS), True, med, a, b)
    for j in range(a, b):
        out[j] = O._motion_flags(cube[j], err[j], valid[j], med[j - a], out[j], n_sigma)
    return out


def _stack(rng, n, ny, nx, dtype):
    y = np.arange(ny)[:, None]
    prof = np.exp(-0.5 * ((y - ny / 2 + 0.3 * np.sin(np.arange(nx) / 9.0)) / 1.5) ** 2)
    shift = rng.normal(0, 0.05, n)
    cube = np.empty((n, ny, nx))
    for i in range(n):
        cube[i] = 1000 * np.roll(prof, 0) * (1 + 0.01 * i / n) + 30 * shift[i] * np.gradient(
            prof, axis=0) * 100 if ny > 1 else 1000 * prof
    err = np.sqrt(np.abs(cube) + 25.0)
    cube = cube + rng.normal(0, 1, cube.shape) * err
    hits = rng.random(cube.shape) < 0.01
    cube[hits] += rng.uniform(3, 40, hits.sum()) * err[hits]  # outliers across the threshold
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.02] = dqflags.DO_NOT_USE
    cube[rng.random(cube.shape) < 0.005] = np.nan
    cube[:, :, :3] = np.round(cube[:, :, :3] / 50) * 50  # ties
    err[rng.random(err.shape) < 0.003] = 0.0
    return cube.astype(dtype), err.astype(dtype), dq


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ny,nx", [(16, 64), (1, 40), (3, 7)])
@pytest.mark.parametrize("n_sigma", [5.0, 2.0])
def test_block_motion_flags_equal_per_integration(dtype, ny, nx, n_sigma):
    rng = np.random.default_rng(ny * 100 + nx + int(n_sigma))
    n = 60
    cube, err, dq = _stack(rng, n, ny, nx, dtype)
    flagged = []
    for span in ((0, n), (7, 41), (30, 31), (10, 10)):
        want = _per_integration(cube, err, dq, 9, n_sigma, span)
        got = O.flag_outliers(cube, err, dq, 9, n_sigma, span=span)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        flagged.append(int((want != dq).sum()))
    if ny * nx > 500:
        assert flagged[0] > 20  # flags (and rejection passes) were exercised


def test_block_motion_flat_and_invalid_windows():
    """A flat window median (dM/dy = 0: singular 3 x 3, the plain median) and frames with
    fewer than 3 usable pixels keep the per-integration result."""
    rng = np.random.default_rng(5)
    n, ny, nx = 30, 8, 20
    cube = np.full((n, ny, nx), 100.0, np.float32) + rng.normal(0, 1, (n, ny, nx)).astype(np.float32)
    cube[:, :, :10] = 100.0  # flat half
    err = np.ones((n, ny, nx), np.float32)
    dq = np.zeros((n, ny, nx), np.uint32)
    dq[12:18] = dqflags.DO_NOT_USE
    dq[12:18, 0, :2] = 0  # 2 usable pixels
    cube[3, 2, 15] += 50
    want = _per_integration(cube, err, dq, 7, 3.0, (0, n))
    np.testing.assert_array_equal(O.flag_outliers(cube, err, dq, 7, 3.0), want)
    np.testing.assert_array_equal(O.flag_outliers(cube[:, :, :10], err[:, :, :10], dq[:, :, :10], 7, 3.0),
                                  _per_integration(cube[:, :, :10], err[:, :, :10], dq[:, :, :10], 7, 3.0, (0, n)))
