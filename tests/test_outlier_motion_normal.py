"""``outliers._motion_normal`` (the motion fit's 3 x 3 weighted normal equations, scalar
accumulators) against its earlier form (sums in a 3 x 3 array and a 3-vector, the same
terms in the same pixel order), bit for bit, and the flags of the batch span path
against a per-integration fit built on that earlier form.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import outliers as O


@numba.njit(cache=True)
def _normal_array_sums(M, G, u, data, w, use):
    """The session-12 ``_motion_normal`` verbatim (the reference)."""
    ny, nx = M.shape
    ata = np.zeros((3, 3), np.float64)
    atd = np.zeros(3, np.float64)
    a = np.empty(3, np.float64)
    n = 0
    for y in range(ny):
        for x in range(nx):
            if not use[y, x]:
                continue
            n += 1
            wv = w[y, x]
            dv = np.float64(data[y, x])
            a[0] = M[y, x]
            a[1] = G[y, x]
            a[2] = G[y, x] * u[x]
            for i in range(3):
                aw = a[i] * wv
                for j in range(3):
                    ata[i, j] += aw * a[j]
                atd[i] += aw * dv
    return ata, atd, n


def _reference_flags(data, err, valid, median, dq, n_sigma, iterations=3):
    """The per-integration motion fit and flags with the reference normal equations."""
    M = np.ascontiguousarray(median, dtype=np.float64)
    data = np.ascontiguousarray(data)
    err = np.ascontiguousarray(err)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    G, u, w, use = O._motion_setup(M, data, err, valid)
    coef = np.array([1.0, 0.0, 0.0])
    for _ in range(iterations):
        ata, atd, n = _normal_array_sums(M, G, u, data, w, use)
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
    return O._motion_flag(M, G, u, data, err, valid, np.ascontiguousarray(dq), coef[0],
                          coef[1], coef[2], float(n_sigma), np.uint32(O.OUTLIER_BITS))


def _case(rng, n, ny, nx, dtype):
    y = np.arange(ny)[:, None]
    prof = np.exp(-0.5 * ((y - ny / 2 + 0.3 * np.sin(np.arange(nx) / 9.0)) / 1.5) ** 2)
    grad = np.gradient(prof, axis=0) if ny > 1 else np.zeros_like(prof)
    shift = rng.normal(0, 0.05, n)
    scale = 1 + rng.normal(0, 0.01, n)
    cube = scale[:, None, None] * 1000 * prof + 3000 * shift[:, None, None] * grad
    err = np.sqrt(np.abs(cube) + 25.0)
    cube = cube + rng.normal(0, 1, cube.shape) * err
    hits = rng.random(cube.shape) < 0.02
    cube[hits] += rng.uniform(3, 40, hits.sum()) * err[hits]
    cube[rng.random(cube.shape) < 0.005] = np.nan
    err[rng.random(err.shape) < 0.003] = 0.0
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.02] = dqflags.DO_NOT_USE
    return cube.astype(dtype), err.astype(dtype), dq


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ny,nx", [(16, 64), (32, 512), (1, 40), (3, 7)])
def test_normal_equations_equal_array_sums(dtype, ny, nx):
    rng = np.random.default_rng(ny * 1000 + nx)
    cube, err, dq = _case(rng, 8, ny, nx, dtype)
    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    med = np.nanmedian(np.where(valid, cube, np.nan), axis=0)
    for j in range(cube.shape[0]):
        M = np.ascontiguousarray(med, np.float64)
        G, u, w, use = O._motion_setup(M, cube[j], err[j], valid[j])
        for mask in (use, use & (rng.random(use.shape) < 0.3), np.zeros_like(use)):
            want = _normal_array_sums(M, G, u, cube[j], w, mask)
            got = O._motion_normal(M, G, u, cube[j], w, mask)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert got[2] == want[2]


@pytest.mark.parametrize("n_sigma", [5.0, 2.0, 0.7])
def test_span_flags_equal_reference_fit(n_sigma):
    rng = np.random.default_rng(int(10 * n_sigma))
    n, ny, nx = 50, 12, 48
    cube, err, dq = _case(rng, n, ny, nx, np.float32)
    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    for a, b in ((0, n), (9, 40), (30, 31)):
        med = np.empty((b - a, ny, nx), np.float64)
        want = O._flag_rolling(cube, err, valid, dq, 9, n_sigma, np.uint32(O.OUTLIER_BITS),
                               True, med, a, b)
        for j in range(a, b):
            want[j] = _reference_flags(cube[j], err[j], valid[j], med[j - a], want[j], n_sigma)
        got = O.flag_outliers(cube, err, dq, window=9, n_sigma=n_sigma, span=(a, b))
        assert np.array_equal(got, want), (a, b)
