"""Outlier flags along time on a bright, moving trace (issue 13).

Simulated here, independently of the pipeline's kernels: a Gaussian trace (sigma 1 px)
whose centre moves by a few milli-pixels per integration (jitter + drift, as JWST
traces do), a 2% transit, Poisson + read noise of known err, and cosmic-ray outliers
of 8-50 sigma. The plain window median (jwst's tso reference) flags the flanks of the
moved trace, mostly the pixels whose noise pushes the same way, and biases the flux of
what is left; the motion reference (window median scaled and moved to the integration)
does not, and keeps the recall of real outliers.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from nirbeam import dqflags
from nirbeam.transforms.outliers import (
    RollingOutlierFlagger,
    flag_outliers,
    motion_reference,
)


def _trace_images(rng, nint=40, ny=24, nx=256, peak_snr=170.0, jitter=0.006, drift=0.02):
    """Pixel-integrated Gaussian trace, (nint, ny, nx) rates, err, outlier mask, dy."""
    x = np.arange(nx)
    yc = 11.3 + 0.8 * (x / nx - 0.5) + 0.3 * np.sin(x / 40.0)
    dy = drift * (np.arange(nint) / (nint - 1) - 0.5) + rng.normal(0, jitter, nint)
    depth = np.where(np.abs(np.arange(nint) - nint / 2) < nint / 5, 0.02, 0.0)
    edges = np.arange(ny + 1)[:, None] - 0.5
    rn2 = 20.0  # DN^2/s^2, read-noise variance of a rate
    # peak pixel rate r with r / sqrt(r/gt + rn2) = peak_snr; Poisson var = rate / k
    k = 5.0
    peak = 0.5 * peak_snr**2 / k * (1 + np.sqrt(1 + 4 * k**2 * rn2 / peak_snr**2))
    colflux = peak / 0.38 * (0.6 + 0.4 * np.cos(x / 70.0) ** 2)
    cube = np.empty((nint, ny, nx))
    truth = np.empty((nint, ny, nx))
    for i in range(nint):
        c = yc + dy[i]
        cdf = 0.5 * (1 + erf((edges - c[None, :]) / np.sqrt(2.0)))
        prof = np.diff(cdf, axis=0)
        truth[i] = 2.0 + colflux[None, :] * prof * (1 - depth[i])
    var = truth / k + rn2
    err = np.sqrt(var)
    cube = truth + rng.normal(size=truth.shape) * err
    outlier = rng.random(truth.shape) < 0.002
    amp = rng.uniform(8, 50, outlier.sum()) * rng.choice([-1.0, 1.0], outlier.sum())
    cube[outlier] += amp * err[outlier]
    dq = np.zeros(truth.shape, np.uint32)
    return (cube.astype(np.float32), err.astype(np.float32), dq, outlier, truth, dy)


@pytest.fixture(scope="module")
def moving():
    return _trace_images(np.random.default_rng(1313))


def test_moving_trace_false_flags_and_recall(moving):
    cube, err, dq, outlier, truth, _ = moving
    bright = truth > 0.2 * truth.max()
    res = {}
    for ref in ("median", "motion"):
        flagged = (flag_outliers(cube, err, dq, 25, 5.0, reference=ref) & dqflags.OUTLIER) != 0
        clean = ~outlier
        false = int(flagged[clean].sum())
        # bias of the flagged clean pixels in units of their err: the noise they take away
        z = ((cube - truth) / err)[flagged & clean]
        res[ref] = (false, flagged[outlier].mean(), float(z.sum()), int(flagged[clean & bright].sum()))
    print("false flags, recall, sum of removed noise (sigma), false on bright:", res)
    _, _, bias_med, fb_med = res["median"]
    f_mot, rec_mot, bias_mot, _ = res["motion"]
    # plain median: clean bright pixels on the moved flanks are flagged (20 here), and
    # what they take away is noise of one sign (+39 sigma summed)
    assert fb_med >= 15
    assert bias_med > 20
    # motion reference: as for pure noise (5 sigma: ~0.06 of 245,760 clean pixels)
    assert f_mot <= 2, f_mot
    assert abs(bias_mot) < 10
    assert rec_mot >= 0.99


def test_motion_reference_measures_the_shift(moving):
    """The fitted shift term is the trace's move against the window (simulator truth)."""
    cube, err, dq, outlier, truth, dy = moving
    valid = ~outlier
    med = np.median(cube, axis=0).astype(np.float64)
    dmed = np.median(dy)
    got = []
    for j in (0, 10, 39):
        _, coef = motion_reference(cube[j], err[j], valid[j], med, 5.0)
        got.append(-coef[1] / coef[0])
    want = dy[[0, 10, 39]] - dmed
    np.testing.assert_allclose(got, want, atol=1.5e-3)


def test_streaming_equals_batch_on_moving_trace(moving):
    cube, err, dq, _, _, _ = moving
    batch = flag_outliers(cube, err, dq, 25, 5.0)
    fl = RollingOutlierFlagger(25, 5.0, start=1, nints=cube.shape[0])
    got = []
    for j in range(cube.shape[0]):
        got += fl.push(j + 1, cube[j], err[j], dq[j])
    got += fl.finish()
    np.testing.assert_array_equal(np.stack([d for _, d in got]), batch)


def test_unknown_reference_is_refused():
    z = np.zeros((3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="outlier reference"):
        flag_outliers(z, z + 1, np.zeros(z.shape, np.uint32), 3, 5.0, reference="mean")


def _flags_with(ref_fn, cube, err, dq, window=25, n_sigma=5.0, flag_fn=None):
    """flag_outliers' motion path written out with ``ref_fn`` as the reference (and
    ``flag_fn`` as the comparison, default the module's)."""
    from nirbeam.transforms import outliers as O

    valid = O._valid(cube, dq, dqflags.DO_NOT_USE)
    med = np.empty(cube.shape, np.float64)
    base = O._flag_rolling(cube, err, valid, dq, window, n_sigma, np.uint32(O.OUTLIER_BITS),
                           True, med, 0, cube.shape[0])
    refs = [ref_fn(cube[j], err[j], valid[j], med[j], n_sigma) for j in range(cube.shape[0])]
    flag_fn = flag_fn or O._flag_against
    flags = np.stack([flag_fn(cube[j], err[j], valid[j], base[j], refs[j][0], n_sigma)
                      for j in range(cube.shape[0])])
    return flags, refs


def test_motion_reference_numba_equals_numpy(moving):
    """The numba motion reference against its numpy form (issue 14): the same flags on the
    moving trace (with outliers, so the rejection iterates), NaN/zero-err/bad pixels, a
    one-row band and a flat (singular) median; coefficients and references agree to
    rounding (the 3 x 3 sums are added in another order)."""
    from nirbeam.transforms import outliers as O
    from nirbeam.transforms.outliers import motion_reference_numpy

    cube, err, dq, *_ = moving
    cube, err, dq = cube.copy(), err.copy(), dq.copy()
    rng = np.random.default_rng(14)
    cube[rng.random(cube.shape) < 0.001] = np.nan
    err[rng.random(cube.shape) < 0.001] = 0.0
    dq[rng.random(cube.shape) < 0.002] = dqflags.DO_NOT_USE
    f_fast, r_fast = _flags_with(motion_reference, cube, err, dq)
    f_ref, r_ref = _flags_with(motion_reference_numpy, cube, err, dq,
                               flag_fn=O._flag_against_numpy)
    assert np.array_equal(f_fast, f_ref)
    # and flag_outliers itself (whole stack and a span) gives the numpy-reference flags
    assert np.array_equal(flag_outliers(cube, err, dq), f_ref)
    part = flag_outliers(cube, err, dq, span=(7, 23))
    assert np.array_equal(part[7:23], f_ref[7:23])
    assert ((f_ref & dqflags.OUTLIER) != 0).sum() > 20  # the comparison saw flags
    for (a, ca), (b, cb) in zip(r_fast, r_ref, strict=True):
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = np.isfinite(b)
        np.testing.assert_allclose(a[ok], b[ok], rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(ca, cb, rtol=1e-9, atol=1e-12)
    # degenerate inputs: one row (no gradient), flat median (singular fit), all invalid
    for M, valid in ((np.full((1, 50), 3.0), np.ones((1, 50), bool)),
                     (np.full((8, 50), 3.0), np.ones((8, 50), bool)),
                     (np.arange(400.0).reshape(8, 50), np.zeros((8, 50), bool))):
        d = (M + rng.normal(size=M.shape)).astype(np.float32)
        e = np.ones(M.shape, np.float32)
        a, ca = motion_reference(d, e, valid, M, 5.0)
        b, cb = motion_reference_numpy(d, e, valid, M, 5.0)
        assert np.array_equal(a, b, equal_nan=True) and np.array_equal(ca, cb)


def test_flag_against_equals_numpy():
    """The numba comparison against a reference == its numpy form, on deviations spread
    densely across the threshold (every flip at 5 sigma would show), with NaN data,
    reference and err, zero err, invalid pixels and DQ bits already set."""
    from nirbeam.transforms import outliers as O

    rng = np.random.default_rng(1414)
    shape = (64, 300)
    ref = rng.uniform(10, 1000, shape)
    err = rng.uniform(0.5, 5, shape).astype(np.float32)
    data = (ref + rng.uniform(-10, 10, shape) * err).astype(np.float32)
    for a, frac in ((data, 0.01), (ref, 0.01), (err, 0.01)):
        a[rng.random(shape) < frac] = np.nan
    err[rng.random(shape) < 0.01] = 0.0
    valid = rng.random(shape) > 0.05
    dq = rng.choice(np.array([0, 1, 4, 2**20], np.uint32), shape)
    for n_sigma in (5.0, 3.0):
        fast = O._flag_against(data, err, valid, dq, ref, n_sigma)
        slow = O._flag_against_numpy(data, err, valid, dq, ref, n_sigma)
        assert fast.dtype == slow.dtype == np.uint32
        assert np.array_equal(fast, slow)
        assert 0 < ((fast & dqflags.OUTLIER) != 0).mean() < 1


def test_motion_flags_in_one_pass_equal_reference_then_flag_against():
    """flag_outliers' fused last pass (the motion reference formed pixel by pixel and
    compared at once) == motion_reference, then the numpy comparison against it: data
    spread densely across the threshold around a moved, scaled trace (every flip at
    n_sigma would show), NaN data and err, zero err, invalid pixels, DQ bits set."""
    from nirbeam.transforms import outliers as O

    rng = np.random.default_rng(1515)
    ny, nx = 24, 200
    y = np.arange(ny)[:, None]
    M = 500.0 * np.exp(-0.5 * ((y - 11.3 - 0.002 * np.arange(nx)[None, :]) / 1.4) ** 2) + 20.0
    G = np.gradient(M, axis=0)
    truth = 1.003 * M + 0.02 * G
    for n_sigma in (5.0, 3.0):
        err = rng.uniform(0.5, 5, (ny, nx)).astype(np.float32)
        data = (truth + rng.uniform(-2, 2, (ny, nx)) * n_sigma * err).astype(np.float32)
        data[rng.random(data.shape) < 0.01] = np.nan
        err[rng.random(err.shape) < 0.01] = np.nan
        err[rng.random(err.shape) < 0.01] = 0.0
        valid = (rng.random(data.shape) > 0.05) & np.isfinite(data)
        dq = rng.choice(np.array([0, 1, 4, 2**20], np.uint32), (ny, nx))
        ref, _ = O.motion_reference(data, err, valid, M, n_sigma)
        want = O._flag_against_numpy(data, err, valid, dq, ref, n_sigma)
        got = O._motion_flags(data, err, valid, M, dq, n_sigma)
        assert got.dtype == np.uint32
        assert np.array_equal(got, want)
        assert 0.05 < ((got & dqflags.OUTLIER) != 0).mean() < 0.95
