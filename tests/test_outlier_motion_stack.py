"""The stacked motion fit (``outliers._motion_fit`` over (n, ny, nx)) against the
per-integration fit it replaced, bit for bit.

``_reference_fit`` below is the session-12 ``_motion_fit`` verbatim (one frame: the
per-frame passes and numpy ``cond`` / ``solve`` on one 3 x 3 system). The stack must give
every integration the same coefficients (exactly) and the same flags, through
``_motion_flags`` on a stack and through ``flag_outliers``'s span path.
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import outliers as O


def _reference_fit(data, err, valid, median, n_sigma, iterations=3):
    M = np.ascontiguousarray(median, dtype=np.float64)
    data = np.ascontiguousarray(data)
    err = np.ascontiguousarray(err)
    G, u, w, use = O._motion_setup(M, data, err, np.ascontiguousarray(valid, dtype=np.bool_))
    coef = np.array([1.0, 0.0, 0.0])
    for _ in range(max(int(iterations), 1)):
        ata, atd, n = O._motion_normal(M, G, u, data, w, use)
        if n < 3:
            break
        if not np.all(np.isfinite(ata)) or np.linalg.cond(ata) > 1e12:
            coef = np.array([1.0, 0.0, 0.0])
            break
        coef = np.linalg.solve(ata, atd)
        _, changed = O._motion_apply(M, G, u, data, err, use, coef[0], coef[1], coef[2],
                                     float(n_sigma), True)
        if not changed:
            break
    flags = O._motion_flag(M, G, u, data, err, np.ascontiguousarray(valid, dtype=np.bool_),
                           np.zeros(M.shape, np.uint32), coef[0], coef[1], coef[2],
                           float(n_sigma), np.uint32(O.OUTLIER_BITS))
    return coef, flags


def _case(rng, n, ny, nx, dtype):
    y = np.arange(ny)[:, None]
    prof = np.exp(-0.5 * ((y - ny / 2 + 0.3 * np.sin(np.arange(nx) / 9.0)) / 1.5) ** 2)
    grad = np.gradient(prof, axis=0) if ny > 1 else np.zeros_like(prof)
    med = 1000 * prof
    shift = rng.normal(0, 0.05, n)
    scale = 1 + rng.normal(0, 0.01, n)
    cube = scale[:, None, None] * med + 3000 * shift[:, None, None] * grad
    err = np.sqrt(np.abs(cube) + 25.0)
    cube = cube + rng.normal(0, 1, cube.shape) * err
    hits = rng.random(cube.shape) < 0.02
    cube[hits] += rng.uniform(3, 40, hits.sum()) * err[hits]
    valid = rng.random(cube.shape) > 0.02
    cube[rng.random(cube.shape) < 0.005] = np.nan
    valid &= np.isfinite(cube)
    err[rng.random(err.shape) < 0.003] = 0.0
    med = np.broadcast_to(med, cube.shape).copy()
    med[rng.random(med.shape) < 0.003] = np.nan
    med[3] = 7.0  # a flat median: no gradient, singular system
    valid[5, :, 2:] = False  # two usable pixels: too few to fit
    med[6] = med[6, ::-1] if ny > 1 else med[6]
    return cube.astype(dtype), err.astype(dtype), valid, med


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ny,nx", [(16, 64), (32, 512), (1, 40), (3, 7)])
@pytest.mark.parametrize("n_sigma", [5.0, 2.0, 0.5])
def test_stack_fit_equals_per_integration(dtype, ny, nx, n_sigma):
    rng = np.random.default_rng(ny * 1000 + nx + int(10 * n_sigma))
    n = 24
    cube, err, valid, med = _case(rng, n, ny, nx, dtype)
    *_, coef = O._motion_fit(cube, err, valid, med, n_sigma)
    dq = np.zeros(cube.shape, np.uint32)
    flags = O._motion_flags(cube, err, valid, med, dq, n_sigma)
    for j in range(n):
        c, f = _reference_fit(cube[j], err[j], valid[j], med[j], n_sigma)
        assert np.array_equal(coef[j], c), (j, coef[j], c)
        assert np.array_equal(flags[j], f), j
        assert np.array_equal(O._motion_flags(cube[j], err[j], valid[j], med[j], dq[j],
                                              n_sigma), f), j


def test_flag_outliers_span_equals_per_integration_reference():
    rng = np.random.default_rng(7)
    n, ny, nx = 60, 12, 48
    cube, err, _, _ = _case(rng, n, ny, nx, np.float32)
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.02] = dqflags.DO_NOT_USE
    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    for a, b in ((0, n), (9, 40), (30, 31)):
        med = np.empty((b - a, ny, nx), np.float64)
        want = O._flag_rolling(cube, err, valid, dq, 9, 3.0, np.uint32(O.OUTLIER_BITS), True,
                               med, a, b)
        for j in range(a, b):
            _, f = _reference_fit(cube[j], err[j], valid[j], med[j - a], 3.0)
            want[j] |= f
        got = O.flag_outliers(cube, err, dq, window=9, n_sigma=3.0, span=(a, b))
        assert np.array_equal(got, want), (a, b)
