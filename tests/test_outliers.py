"""Tests of time-domain outlier flagging: simulator truth, plain numpy, batch == streaming."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirbeam import dqflags
from nirbeam.transforms.outliers import (
    OUTLIER_BITS,
    RollingOutlierFlagger,
    flag_outliers,
    window_bounds,
    window_median,
)


# ----------------------------------------------------------------- simulator (test-only)
def simulate_rates(rng, nint, ny, nx, *, frac=0.002, smin=8.0, smax=50.0, bad_frac=0.002):
    """Constant-ish rates (slow 1 % dip + drift) with Gaussian noise of known err.

    Returns (cube float32, err float32, dq uint32, outlier bool, sigma_injected float).
    """
    level = rng.uniform(50.0, 5000.0, (1, ny, nx))
    t = np.linspace(-1, 1, nint)[:, None, None]
    shape = 1.0 - 0.01 * (np.abs(t) < 0.3) + 0.002 * t
    err = np.sqrt(level / 10.0) * rng.uniform(0.8, 1.2, (nint, ny, nx))
    cube = level * shape + rng.normal(size=(nint, ny, nx)) * err
    outlier = rng.random((nint, ny, nx)) < frac
    amp = rng.uniform(smin, smax, outlier.sum()) * rng.choice([-1.0, 1.0], outlier.sum())
    cube[outlier] += amp * err[outlier]
    injected = np.zeros(cube.shape)
    injected[outlier] = np.abs(amp)
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < bad_frac] = dqflags.DO_NOT_USE
    dq[rng.random(cube.shape) < 0.01] |= dqflags.JUMP_DET  # bits that must survive
    return cube.astype(np.float32), err.astype(np.float32), dq, outlier, injected


def reference_flags(cube, err, dq, window, n_sigma):
    """Plain numpy: nanmedian per pixel over the shifted window."""
    n = cube.shape[0]
    data = np.where((dq & dqflags.DO_NOT_USE) == 0, cube.astype(np.float64), np.nan)
    new = dq.copy()
    for j in range(n):
        if n <= window:
            s, e = 0, n
        else:
            s = min(max(j - window // 2, 0), n - window)
            e = s + window
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(data[s:e], axis=0)
            hit = np.isfinite(data[j]) & (
                np.abs(data[j] - med) > n_sigma * err[j].astype(np.float64)
            )
        new[j][hit] |= OUTLIER_BITS
    return new


# ----------------------------------------------------------------- batch
def test_recall_and_false_flags():
    rng = np.random.default_rng(21)
    nint, ny, nx = 200, 16, 128
    cube, err, dq, outlier, injected = simulate_rates(rng, nint, ny, nx, frac=0.003)
    cube0, dq0 = cube.copy(), dq.copy()
    new = flag_outliers(cube, err, dq, window=25, n_sigma=5.0)
    flagged = (new & dqflags.OUTLIER) != 0
    usable = (dq & dqflags.DO_NOT_USE) == 0
    target = outlier & usable & (injected >= 8.0)
    recall = flagged[target].mean()
    clean = ~outlier & usable
    false_rate = flagged[clean].mean()
    assert target.sum() > 1000
    assert recall >= 0.99, recall
    assert false_rate <= 1e-3, false_rate
    # flagged pixels get DO_NOT_USE|OUTLIER; everything else (and the inputs) untouched
    np.testing.assert_array_equal(new[flagged], dq[flagged] | OUTLIER_BITS)
    np.testing.assert_array_equal(new[~flagged], dq[~flagged])
    np.testing.assert_array_equal(cube, cube0)
    np.testing.assert_array_equal(dq, dq0)
    assert not flagged[~usable].any()


def test_matches_plain_numpy_reference():
    rng = np.random.default_rng(22)
    for nint, window in [(60, 25), (30, 7), (10, 25), (40, 6)]:
        cube, err, dq, _, _ = simulate_rates(rng, nint, 6, 9, frac=0.02, bad_frac=0.05)
        cube[3, 2, 2] = np.nan
        new = flag_outliers(cube, err, dq, window=window, n_sigma=5.0, reference="median")
        np.testing.assert_array_equal(new, reference_flags(cube, err, dq, window, 5.0))


def test_window_bounds_shifted_edges():
    assert window_bounds(0, 100, 25) == (0, 25)
    assert window_bounds(12, 100, 25) == (0, 25)
    assert window_bounds(13, 100, 25) == (1, 26)
    assert window_bounds(99, 100, 25) == (75, 100)
    assert window_bounds(87, 100, 25) == (75, 100)
    assert window_bounds(3, 10, 25) == (0, 10)


def test_edges_use_shifted_full_window():
    """A step in time: at the start, the window is [0, 25), not truncated [0, 13)."""
    n, w = 30, 25
    cube = np.zeros((n, 1, 1), np.float32)
    cube[10:] = 100.0
    err = np.ones_like(cube)
    dq = np.zeros(cube.shape, np.uint32)
    new = flag_outliers(cube, err, dq, window=w, reference="median")
    # shifted window for j < 13 holds 10 zeros and 15 hundreds: median 100
    assert ((new[:10, 0, 0] & dqflags.OUTLIER) != 0).all()
    assert not (new[10:, 0, 0] & dqflags.OUTLIER).any()
    np.testing.assert_array_equal(new, reference_flags(cube, err, dq, w, 5.0))


def test_window_median_even_odd_and_invalid():
    stack = np.array([1.0, 5.0, 2.0, 8.0], np.float32).reshape(4, 1, 1)
    valid = np.ones((4, 1, 1), bool)
    assert window_median(stack, valid)[0, 0] == 3.5
    valid[3] = False
    assert window_median(stack, valid)[0, 0] == 2.0
    assert np.isnan(window_median(stack, np.zeros((4, 1, 1), bool))[0, 0])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="flag_outliers err"):
        flag_outliers(np.zeros((3, 2, 2)), np.zeros((3, 2, 1)), np.zeros((3, 2, 2), np.uint32))
    with pytest.raises(ValueError, match="window"):
        flag_outliers(
            np.zeros((3, 2, 2)), np.zeros((3, 2, 2)), np.zeros((3, 2, 2), np.uint32), window=0
        )


# ----------------------------------------------------------------- streaming
def shuffled_within(rng, n, lateness):
    """Order 0..n-1 where every index arrives at most `lateness` positions late."""
    keys = np.arange(n) + rng.uniform(0, lateness, n)
    return list(np.argsort(keys, kind="stable"))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    nint=st.integers(1, 70),
    window=st.integers(2, 25),
    lateness=st.integers(0, 12),
    know_n=st.booleans(),
)
def test_streaming_equals_batch(seed, nint, window, lateness, know_n):
    rng = np.random.default_rng(seed)
    ny, nx = 6, 8
    cube, err, dq, _, _ = simulate_rates(rng, nint, ny, nx, frac=0.02, bad_frac=0.02)
    batch = flag_outliers(cube, err, dq, window=window)
    start = 1
    fl = RollingOutlierFlagger(window, start=start, nints=nint if know_n else None)
    got = []
    max_buf = 0
    for j in shuffled_within(rng, nint, lateness):
        got += fl.push(start + int(j), cube[j], err[j], dq[j])
        max_buf = max(max_buf, fl.buffered)
    got += fl.finish()
    assert [k for k, _ in got] == list(range(start, start + nint))
    for k, d in got:
        np.testing.assert_array_equal(d, batch[k - start])
    # bounded memory: window + how far out of order things came (+1 for the arrival)
    assert max_buf <= window + lateness + 2


def test_streaming_band_of_rows_and_early_release():
    rng = np.random.default_rng(23)
    nint, ny, nx, window = 50, 8, 10, 25
    cube, err, dq, _, _ = simulate_rates(rng, nint, ny, nx, frac=0.02)
    # bands equal the full frame for the plain median (the motion fit sees only its band)
    batch = flag_outliers(cube, err, dq, window=window, reference="median")
    bands = [slice(0, 3), slice(3, 8)]
    flaggers = [RollingOutlierFlagger(window, rows=b, start=1, reference="median") for b in bands]
    released = {b.start: [] for b in bands}
    first_release_at = None
    for j in range(nint):
        for b, fl in zip(bands, flaggers, strict=True):
            out = fl.push(j + 1, cube[j], err[j], dq[j])
            if out and first_release_at is None:
                first_release_at = j
            released[b.start] += out
    # integration 1 is released as soon as integrations 1..25 are in
    assert first_release_at == window - 1
    for b, fl in zip(bands, flaggers, strict=True):
        released[b.start] += fl.finish()
    full = np.concatenate([np.stack([d for _, d in released[b.start]]) for b in bands], axis=1)
    np.testing.assert_array_equal(full, batch)


def test_streaming_errors():
    fl = RollingOutlierFlagger(3, start=1)
    z = np.zeros((2, 2), np.float32)
    zq = np.zeros((2, 2), np.uint32)
    fl.push(1, z, z + 1, zq)
    with pytest.raises(ValueError, match="duplicated"):
        fl.push(1, z, z + 1, zq)
    fl.push(3, z, z + 1, zq)
    with pytest.raises(ValueError, match="never arrived"):
        fl.finish()
    with pytest.raises(ValueError, match="shape"):
        RollingOutlierFlagger(3).push(1, z, np.zeros((3, 2)), zq)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), w=st.integers(1, 40), ties=st.booleans())
def test_window_median_equals_numpy(seed, w, ties):
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 4, (w, 3, 5)) if ties else rng.normal(size=(w, 3, 5))
    stack = stack.astype(np.float32)
    valid = rng.random(stack.shape) > 0.3
    got = window_median(stack, valid)
    for y in range(3):
        for x in range(5):
            v = stack[valid[:, y, x], y, x].astype(np.float64)
            if v.size:
                assert got[y, x] == np.median(v)
            else:
                assert np.isnan(got[y, x])


@pytest.mark.parametrize(("n", "window", "span"),
                         [(70, 25, (0, 70)), (70, 24, (20, 51)), (9, 25, (0, 9)),
                          (40, 1, (0, 40)), (40, 2, (3, 38)), (33, 7, (30, 33))])
def test_rolling_window_medians_equal_nanmedian(n, window, span):
    """The sliding sorted windows of the batch kernel (one integration out and one in per
    step, as selects over the window) hold the window's values: its stored medians (the
    motion reference's input) equal np.nanmedian of each window exactly, with ties,
    signed zeros, NaN, DO_NOT_USE and windows emptied of valid values."""
    from nirbeam.transforms.outliers import _flag_rolling, _valid

    rng = np.random.default_rng(n * 100 + window)
    ny, nx = 3, 37
    cube = (np.round(rng.normal(0.0, 2.0, (n, ny, nx)) * 2) / 2).astype(np.float32)  # ties
    cube[rng.random(cube.shape) < 0.1] = -0.0
    cube[rng.random(cube.shape) < 0.05] = np.nan
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.1] = dqflags.DO_NOT_USE
    dq[:, 0, 0] = dqflags.DO_NOT_USE  # a pixel never valid: NaN medians
    err = np.ones(cube.shape, np.float32)
    valid = _valid(cube, dq, dqflags.DO_NOT_USE)
    a, b = span
    med = np.full((b - a, ny, nx), -123.0)
    _flag_rolling(cube, err, valid, dq, window, 5.0, np.uint32(OUTLIER_BITS), True, med, a, b)
    data = np.where(valid, cube.astype(np.float64), np.nan)
    for j in range(a, b):
        s, e = window_bounds(j, n, window)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(data[s:e], axis=0)
        np.testing.assert_array_equal(med[j - a], want, err_msg=f"integration {j}")
    assert np.isnan(med[:, 0, 0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_nanmedian_axis0_equals_numpy_bit_for_bit(dtype, n):
    """The stage-2 model's medians over the sampled integrations (numba) are numpy's:
    ties, NaN, all-NaN pixels, +-inf, even and odd counts, float32 rounding."""
    from nirbeam.transforms.outliers import nanmedian_axis0

    rng = np.random.default_rng(n)
    a = (rng.normal(0.0, 3.0, (n, 5, 41)) * 1.37).astype(dtype)
    a[rng.random(a.shape) < 0.3] = 1.5  # ties
    a[rng.random(a.shape) < 0.15] = np.nan
    a[:, 0, 0] = np.nan
    a[0, 1, 1] = np.inf
    a[-1, 1, 2] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(a, axis=0)
    got = nanmedian_axis0(a)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    both = np.isfinite(want)
    assert (got[both].view(np.uint8) == want[both].view(np.uint8)).all()
