"""``outliers._flag_rolling`` (windows down the columns of a (window + 2, nx) buffer in the
cube's dtype, the slide's loops turned round: :func:`~nirbeam.transforms.outliers._slide_rows`)
against its session-13 form (one float64 (window + 2,) window per pixel, ``_slide_row``),
bit for bit: stored medians (the motion reference's input) and flags, on seeded stacks with
ties, signed zeros, NaN, DO_NOT_USE, infinite errors, shifted edge windows, spans, windows
of 1 and 2 and of all integrations, float32 and float64 cubes.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import outliers as O


@numba.njit(cache=True, inline="always", error_model="numpy")
def _ref_slide_window(a, b, o, v, window):
    """The session-13 ``_slide_window`` verbatim (the reference)."""
    for k in range(1, window + 1):
        am = a[k - 1]
        ak = a[k]
        ap = a[k + 1]
        t0 = am if am < o else ak  # a'[k - 1]
        t1 = ak if ak < o else ap  # a'[k]
        b[k] = t1 if t1 <= v else (t0 if t0 > v else v)


@numba.njit(cache=True, error_model="numpy")
def _ref_slide_row(A, B, cnt, cube, valid, ps, pe, y, window, nx):
    """The session-13 ``_slide_row`` verbatim (the reference)."""
    for x in range(nx):
        o = np.inf
        v = np.inf
        if ps >= 0 and valid[ps, y, x]:
            o = np.float64(cube[ps, y, x])
            cnt[x] -= 1
        if pe >= 0 and valid[pe, y, x]:
            v = np.float64(cube[pe, y, x])
            cnt[x] += 1
        _ref_slide_window(A[x], B[x], o, v, window)


@numba.njit(cache=True)
def _ref_flag_rolling(cube, err, valid, dq, window, n_sigma, bits, store, med_out, start, stop):
    """The session-13 ``_flag_rolling`` verbatim (the reference)."""
    n, ny, nx = cube.shape
    if stop < 0 or stop > n:
        stop = n
    start = max(start, 0)
    out = dq.astype(np.uint32)
    w = max(window, 1)
    A = np.empty((nx, w + 2), np.float64)
    B = np.empty((nx, w + 2), np.float64)
    cnt = np.zeros(nx, np.int64)
    s0 = 0 if n <= window else min(max(start - window // 2, 0), n - window)
    for y in range(ny):
        A[:] = np.inf
        A[:, 0] = -np.inf
        B[:] = A
        cnt[:] = 0
        ps = s0
        pe = s0
        for j in range(start, stop):
            if n <= window:
                s = 0
                e = n
            else:
                s = min(max(j - window // 2, 0), n - window)
                e = s + window
            while ps < s or pe < e:
                _ref_slide_row(A, B, cnt, cube, valid, ps if ps < s else -1,
                               pe if pe < e else -1, y, w, nx)
                A, B = B, A
                if ps < s:
                    ps += 1
                if pe < e:
                    pe += 1
            for x in range(nx):
                c = cnt[x]
                if store and c == 0:
                    med_out[j - start, y, x] = np.nan
                if c == 0 or not (valid[j, y, x] or store):
                    continue
                h = c // 2 + 1
                if c % 2 == 1:
                    med = A[x, h]
                else:
                    med = 0.5 * (A[x, h - 1] + A[x, h])
                if store:
                    med_out[j - start, y, x] = med
                    continue
                ev = np.float64(err[j, y, x])
                if np.isfinite(ev) and abs(np.float64(cube[j, y, x]) - med) > n_sigma * ev:
                    out[j, y, x] |= bits
    return out


def _stack(seed, n, ny, nx, dtype):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100.0, 2.0, (n, ny, nx))
    ties = rng.random(cube.shape) < 0.5
    cube[ties] = np.round(cube[ties] * 2) / 2  # many ties
    hot = rng.random(cube.shape) < 0.02
    cube[hot] += rng.choice([-40.0, 40.0], hot.sum())  # outliers both ways
    cube = cube.astype(dtype)
    cube[rng.random(cube.shape) < 0.1] = -0.0
    cube[rng.random(cube.shape) < 0.05] = np.nan
    cube[rng.random(cube.shape) < 0.01] = np.inf
    err = (0.5 + rng.random(cube.shape)).astype(np.float32)
    err[rng.random(cube.shape) < 0.02] = np.inf
    err[rng.random(cube.shape) < 0.02] = np.nan
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.1] = dqflags.DO_NOT_USE
    dq[rng.random(cube.shape) < 0.1] |= dqflags.SATURATED
    dq[:, 0, 0] = dqflags.DO_NOT_USE  # a pixel never valid: NaN medians
    dq[: n // 2, -1, -1] = dqflags.DO_NOT_USE  # a window emptied, then refilled
    return cube, err, dq


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "window", "span", "nx"),
                         [(70, 25, (0, 70), 37), (70, 24, (20, 51), 64), (9, 25, (0, 9), 13),
                          (40, 1, (0, 40), 9), (40, 2, (3, 38), 17), (33, 7, (30, 33), 40),
                          (60, 25, (0, 60), 512), (26, 25, (1, 25), 31), (5, 5, (0, 5), 8)])
def test_rows_kernel_equals_session13_kernel(dtype, n, window, span, nx):
    cube, err, dq = _stack(n * 1000 + window * 10 + nx, n, 3, nx, dtype)
    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    a, b = span
    bits = np.uint32(O.OUTLIER_BITS)
    for store in (True, False):
        shape = (b - a, 3, nx) if store else (1, 1, 1)
        med_new = np.full(shape, -123.0)
        med_ref = np.full(shape, -123.0)
        new = O._flag_rolling(cube, err, valid, dq, window, 3.0, bits, store, med_new, a, b)
        ref = _ref_flag_rolling(cube, err, valid, dq, window, 3.0, bits, store, med_ref, a, b)
        assert new.dtype == ref.dtype == np.uint32
        np.testing.assert_array_equal(new, ref)
        assert med_new.tobytes() == med_ref.tobytes()  # bit for bit, NaN and -0.0 included
        if store:
            assert np.isnan(med_new[:, 0, 0]).all()
        else:
            assert (new != dq).any() or window < 3  # the flags were exercised


def test_flag_outliers_integer_cube_equals_float64():
    """A non-float cube is handed to the kernel as float64 (its window buffers follow the
    cube's dtype): the same flags as the float64 stack of the same values."""
    rng = np.random.default_rng(14)
    cube = rng.integers(-50, 50, (30, 4, 21)).astype(np.int32)
    cube[rng.random(cube.shape) < 0.02] = 900
    err = np.full(cube.shape, 2.0, np.float32)
    dq = np.zeros(cube.shape, np.uint32)
    for ref in ("median", "motion"):
        got = O.flag_outliers(cube, err, dq, window=7, n_sigma=4.0, reference=ref)
        want = O.flag_outliers(cube.astype(np.float64), err, dq, window=7, n_sigma=4.0,
                               reference=ref)
        np.testing.assert_array_equal(got, want)
        assert (got != 0).any()
