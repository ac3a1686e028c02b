"""Tests of the 1/f (flicker) cleaning kernels against simulator truth and plain numpy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirbeam import dqflags
from nirbeam.transforms import flicker
from nirbeam.transforms.flicker import (
    FlickerParams,
    clean_fft,
    clean_groups,
    clean_groups_from_first,
    clean_median,
    clean_nsclean,
    clean_rate,
    cosine_basis,
    make_group_hook,
    scene_mask,
)

NLOH = 12  # new-line overhead, pixel times per column readout


# ----------------------------------------------------------------- simulator (test-only)
def one_over_f(rng, ny, nx, amp, hf=0.1, nloh=NLOH, span=4):
    """1/f noise in readout time, sampled at the pixels of a (ny, nx) DMS image.

    A 1/f time series is drawn over ``span`` frames of readout (y fast, ``nloh`` idle
    ticks per column) and the first frame is kept, so the frame mean is not forced to
    zero. The part varying within a column is scaled by ``hf`` (weak), and the whole
    is scaled so that the column means have standard deviation ``amp``.
    """
    n = span * nx * (ny + nloh)
    f = np.fft.rfftfreq(n)
    spec = np.zeros(f.size, complex)
    spec[1:] = (rng.normal(size=f.size - 1) + 1j * rng.normal(size=f.size - 1)) / np.sqrt(f[1:])
    ts = np.fft.irfft(spec, n)[: nx * (ny + nloh)]
    ts = ts.reshape(nx, ny + nloh)[:, :ny].T
    off = ts.mean(axis=0)
    ts = off[None, :] + hf * (ts - off[None, :])
    return ts * amp / off.std()


def trace_model(ny, nx, peak, width):
    """Curved Gaussian trace: (flux per pixel (ny, nx), centre per column (nx,))."""
    x = np.arange(nx)
    yc = ny / 2 - 0.5 + 3.0 * np.sin(2 * np.pi * 0.7 * x / nx) + 4.0 * ((x - nx / 2) / nx) ** 2
    y = np.arange(ny)[:, None]
    return peak * np.exp(-0.5 * ((y - yc[None, :]) / width) ** 2), yc


def simulate(rng, ny, nx, *, amp=20.0, rn=10.0, peak=2000.0, width=1.5, inject=True):
    """Returns (image with 1/f, same without 1/f, noiseless trace, trace centre)."""
    truth, yc = trace_model(ny, nx, peak, width)
    base = rng.poisson(truth).astype(np.float64) + rng.normal(0.0, rn, (ny, nx))
    noise = one_over_f(rng, ny, nx, amp) if inject else 0.0
    return base + noise, base, truth, yc


def aperture(ny, yc, width, nsig=3.0):
    return np.abs(np.arange(ny)[:, None] - yc[None, :]) <= nsig * width


def draft_mask(rng, ny, nx, n=10, **kw):
    """Scene mask from an independent draft rate (mean of n simulated images)."""
    draft = np.mean([simulate(rng, ny, nx, **kw)[0] for _ in range(n)], axis=0)
    return scene_mask(draft)


def striping_power(resid):
    """Variance over columns of the column means of a residual noise image."""
    return float(np.var(resid.mean(axis=0)))


# ----------------------------------------------------------------- exact offsets
@settings(max_examples=40, deadline=None)
@given(
    ny=st.sampled_from([8, 16, 32]),
    nx=st.integers(4, 64),
    seed=st.integers(0, 2**31 - 1),
    method=st.sampled_from(["median", "fft"]),
    masked_frac=st.floats(0.0, 0.6),
)
def test_pure_column_offsets_removed_exactly(ny, nx, seed, method, masked_frac):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 50.0, nx).astype(np.float32)
    image = np.broadcast_to(offsets[None, :], (ny, nx)).astype(np.float32)
    mask = rng.random((ny, nx)) >= masked_frac
    mask[rng.integers(0, ny), :] = True  # every column keeps at least a pixel...
    mask[: flicker.FlickerParams().min_pixels, :] = True  # ...and enough to be fitted
    fn = clean_median if method == "median" else clean_fft
    cleaned, model = fn(image, mask)
    assert cleaned.dtype == np.float32
    np.testing.assert_allclose(model, image, rtol=0, atol=1e-4 * (1 + np.abs(offsets).max()))
    assert np.abs(cleaned).max() <= 1e-4 * (1 + np.abs(offsets).max())


def test_fft_fits_structure_along_column():
    """A within-column cosine + offset (in the model's span) is removed; median leaves it."""
    ny, nx = 32, 40
    rng = np.random.default_rng(3)
    basis = cosine_basis(ny, 2)
    coef = rng.normal(0, 5, (nx, 3))
    image = (coef @ basis.T).T
    mask = np.ones((ny, nx), bool)
    cleaned, _ = clean_fft(image, mask, n_freq=2, ridge=0.0)
    assert np.abs(cleaned).max() < 1e-9
    cleaned_m, _ = clean_median(image, mask)
    assert np.abs(cleaned_m).max() > 1.0


def test_fft_matches_per_column_lstsq():
    """Batched normal equations == plain numpy lstsq per column (with the ridge rows)."""
    ny, nx = 32, 12
    rng = np.random.default_rng(4)
    image = rng.normal(0, 3, (ny, nx)) + rng.normal(0, 20, nx)[None, :]
    mask = rng.random((ny, nx)) > 0.3
    ridge, nf = 2.5, 2
    _, model = clean_fft(image, mask, n_freq=nf, ridge=ridge, exclude_outliers=False)
    basis = cosine_basis(ny, nf)
    for c in range(nx):
        m = mask[:, c]
        a = np.vstack([basis[m], np.sqrt(ridge) * np.eye(nf + 1)[1:]])
        b = np.concatenate([image[m, c], np.zeros(nf)])
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        np.testing.assert_allclose(model[:, c], basis @ coef, rtol=1e-9, atol=1e-9)


def test_median_matches_plain_numpy_and_fills_columns():
    ny, nx = 16, 10
    rng = np.random.default_rng(5)
    image = rng.normal(0, 1, (ny, nx)).astype(np.float32)
    mask = np.ones((ny, nx), bool)
    mask[:, 3] = False  # no pixels
    mask[2:, 4] = False  # 2 pixels < min_pixels
    mask[:, 0] = False  # edge column: only a right neighbour
    _, model = clean_median(image, mask, min_pixels=4)
    ref = np.array(
        [np.median(image[mask[:, c], c]) if mask[:, c].sum() >= 4 else np.nan for c in range(nx)]
    )
    ok = np.isfinite(ref)
    np.testing.assert_allclose(model[0, ok], ref[ok], rtol=1e-6)
    np.testing.assert_allclose(model[0, 3], 0.5 * (ref[2] + ref[5]), rtol=1e-6)
    np.testing.assert_allclose(model[0, 4], 0.5 * (ref[2] + ref[5]), rtol=1e-6)
    np.testing.assert_allclose(model[0, 0], ref[1], rtol=1e-6)


def test_clipped_mean_statistic_rejects_outlier():
    ny, nx = 32, 8
    rng = np.random.default_rng(6)
    image = rng.normal(0, 1, (ny, nx)) + 7.0
    image[5, 2] = 1e4
    _, model = clean_median(image, np.ones((ny, nx), bool), statistic="mean")
    ref = np.delete(image[:, 2], 5).mean()
    assert abs(model[0, 2] - ref) < 0.5
    assert np.all(np.abs(model[0] - 7.0) < 1.0)


def test_background_kept_in_output():
    ny, nx = 32, 16
    rng = np.random.default_rng(7)
    bg = 100.0 + np.linspace(0, 5, nx)[None, :] * np.ones((ny, 1))
    offsets = rng.normal(0, 10, nx)
    image = bg + offsets[None, :]
    for fn in (clean_median, clean_fft):
        cleaned, model = fn(image, np.ones((ny, nx), bool), background=bg)
        np.testing.assert_allclose(cleaned, bg, atol=1e-9)
        np.testing.assert_allclose(model[0], offsets, atol=1e-9)
        # scalar 'median' background: the common level stays in the image
        cleaned2, _ = fn(image, np.ones((ny, nx), bool), background="median")
        assert np.isclose(np.median(cleaned2), np.median(image), atol=1e-6)


# ----------------------------------------------------------------- scene mask
def test_scene_mask_covers_trace_and_bad_pixels():
    ny, nx = 32, 128
    rng = np.random.default_rng(8)
    img, _, _, yc = simulate(rng, ny, nx, amp=0.0 + 1e-9)
    dq = np.zeros((ny, nx), np.uint32)
    dq[3, 7] = dqflags.DO_NOT_USE
    user = np.ones((ny, nx), bool)
    user[0, :] = False
    tmask = np.zeros((ny, nx), bool)
    tmask[30, 50] = True
    m = scene_mask(img, dq=dq, trace_mask=tmask, user_mask=user)
    assert not (m & aperture(ny, yc, 1.5, 3.0)).any()
    assert not m[3, 7] and not m[0].any() and not m[30, 50]
    far = np.abs(np.arange(ny)[:, None] - yc[None, :]) > 9
    far[0] = False  # excluded by user_mask
    assert m[far].mean() > 0.9  # background mostly kept
    # per-pixel err path gives a similar mask
    m2 = scene_mask(img, err=np.full((ny, nx), 10.0))
    assert not (m2 & aperture(ny, yc, 1.5, 3.0)).any()


def test_scene_mask_dilation_grows_trace_along_y():
    rng = np.random.default_rng(9)
    ny, nx = 32, 64
    img = rng.normal(0, 1, (ny, nx))
    img[14:18] += 1000.0  # sharp-edged trace band
    m0 = scene_mask(img, dilate=0)
    m2 = scene_mask(img, dilate=2)
    assert not m0[14:18].any() and not m2[12:20].any()
    assert m0[[12, 13, 18, 19]].mean() > 0.9
    assert m2.sum() < m0.sum()


def test_scene_mask_ignores_isolated_noise_for_dilation():
    rng = np.random.default_rng(10)
    img = rng.normal(0, 1, (32, 256))
    m = scene_mask(img)
    # only single-pixel clipping (about 2.3 % above 2 sigma), no grown noise clumps
    assert m.mean() > 0.95


def test_scene_mask_rejects_wrong_shape():
    with pytest.raises(ValueError, match="scene_mask dq"):
        scene_mask(np.zeros((4, 5)), dq=np.zeros((5, 4), np.uint32))


# ----------------------------------------------------------------- simulated 1/f
@pytest.fixture(scope="module")
def sim_setup():
    rng = np.random.default_rng(11)
    ny, nx = 32, 512
    mask = draft_mask(rng, ny, nx)
    images = [simulate(rng, ny, nx) for _ in range(6)]
    return ny, nx, mask, images


CLEANERS = [("median", {}), ("median", {"statistic": "mean"}), ("fft", {}), ("nsclean", {})]


@pytest.mark.parametrize(("method", "kw"), CLEANERS)
def test_striping_reduced_and_flux_kept(sim_setup, method, kw):
    ny, nx, mask, images = sim_setup
    for img, base, truth, yc in images:
        cleaned, _ = clean_rate(img, mask, method, **kw)
        before = striping_power(img - base)
        after = striping_power(cleaned - base)
        reduction = 1.0 - after / before
        assert reduction >= 0.90, reduction
        ap = aperture(ny, yc, 1.5)
        flux_change = (cleaned[ap].sum() - base[ap].sum()) / truth[ap].sum()
        assert abs(flux_change) < 1e-3, flux_change


@pytest.mark.parametrize(("method", "kw"), CLEANERS)
def test_white_light_scatter_like_no_injection(method, kw):
    rng = np.random.default_rng(12)
    ny, nx, n = 32, 128, 150
    sim_kw = {"peak": 5000.0}
    mask = draft_mask(rng, ny, nx, **sim_kw)
    _, yc = trace_model(ny, nx, 1.0, 1.5)
    ap = aperture(ny, yc, 1.5)
    wl_clean, wl_raw, wl_none = [], [], []
    for _ in range(n):
        img, base, _, _ = simulate(rng, ny, nx, **sim_kw)
        wl_none.append(base[ap].sum())
        wl_raw.append(img[ap].sum())
        wl_clean.append(clean_rate(img, mask, method, **kw)[0][ap].sum())
    ratio = np.std(wl_clean) / np.std(wl_none)
    assert 0.9 <= ratio <= 1.1, ratio
    assert np.std(wl_raw) / np.std(wl_none) > 1.3  # the injected 1/f does hurt


# ----------------------------------------------------------------- group level
def _ramp(rng, ngroups, ny, nx, amp=20.0, rn=10.0):
    truth, _ = trace_model(ny, nx, 800.0, 1.5)
    clean = np.cumsum(rng.poisson(np.broadcast_to(truth, (ngroups, ny, nx))), axis=0).astype(float)
    clean += rng.normal(0, rn / np.sqrt(2), (ngroups, ny, nx)) + 1000.0
    reads_1f = np.stack([one_over_f(rng, ny, nx, amp) for _ in range(ngroups)])
    return clean, clean + reads_1f, reads_1f


@pytest.mark.parametrize("method", ["median", "fft"])
def test_clean_groups_reintegrates_ramp(method):
    rng = np.random.default_rng(13)
    ng, ny, nx = 6, 32, 128
    clean, groups, reads_1f = _ramp(rng, ng, ny, nx)
    groups = groups.astype(np.float32)
    gdq = np.zeros(groups.shape, np.uint8)
    pdq = np.zeros((ny, nx), np.uint32)
    mask = scene_mask(np.median(np.diff(clean, axis=0), axis=0))
    out, models = clean_groups(groups, gdq, pdq, mask, method, return_model=True)
    assert out.dtype == np.float32 and out.shape == groups.shape
    np.testing.assert_array_equal(out[0], groups[0])  # first group kept
    # rebuilt ramp == first group + cumsum of cleaned differences
    diffs = np.diff(groups.astype(np.float64), axis=0) - models
    rebuilt = groups[0].astype(np.float64) + np.cumsum(diffs, axis=0)
    np.testing.assert_allclose(out[1:], rebuilt, rtol=0, atol=2e-3)
    # stripes in the differences are reduced by >= 90 %
    d_noise = np.diff(reads_1f, axis=0)
    for k in range(ng - 1):
        before = striping_power(d_noise[k])
        after = striping_power(
            np.diff(out.astype(np.float64), axis=0)[k] - np.diff(clean, axis=0)[k]
        )
        assert 1 - after / before >= 0.9


def test_clean_groups_excludes_flagged_pixels_from_fit():
    ny, nx, ng = 16, 8, 3
    groups = np.zeros((ng, ny, nx), np.float32)
    groups[1] = 5.0  # uniform step: offset 5 in every column of diff 0
    groups[2] = 5.0
    groups[1:, 0:10, 2] += 1e5  # a saturated/jumped region in column 2
    gdq = np.zeros(groups.shape, np.uint8)
    gdq[1:, 0:10, 2] = dqflags.SATURATED
    pdq = np.zeros((ny, nx), np.uint32)
    pdq[10:, 3] = dqflags.DO_NOT_USE
    groups[1:, 10:, 3] += 1e5
    mask = np.ones((ny, nx), bool)
    _, models = clean_groups(groups, gdq, pdq, mask, "median", return_model=True)
    np.testing.assert_allclose(models[0], 5.0)
    np.testing.assert_allclose(models[1], 0.0)


def test_clean_groups_jump_flag_excludes_only_the_jump_difference():
    ny, nx, ng = 16, 6, 4
    groups = np.zeros((ng, ny, nx), np.float32)
    groups[2:, 0:10, 2] += 1e5  # jump between groups 1 and 2, flagged on group 2
    groups[3, 0:10, 2] += 3.0  # difference 2 -> 3 of those pixels is 3, of the others 0
    gdq = np.zeros(groups.shape, np.uint8)
    gdq[2, 0:10, 2] = dqflags.JUMP_DET
    _, models = clean_groups(
        groups, gdq, np.zeros((ny, nx), np.uint32), np.ones((ny, nx), bool), return_model=True
    )
    assert models[1, 0, 2] == 0.0  # jump excluded from difference 1 -> 2
    assert models[2, 0, 2] == 3.0  # but used in 2 -> 3 (10 of 16 pixels at 3)


def test_hook_in_detector1():
    """The hook runs inside run_detector1 and removes most of the striping of the rate."""
    from nirbeam.transforms.detector1 import RampTiming, run_detector1
    from nirbeam.transforms.reference import ReferenceArrays

    rng = np.random.default_rng(19)
    ng, ny, nx = 6, 32, 64
    truth, _ = trace_model(ny, nx, 300.0, 1.5)
    clean = 2000.0 + np.cumsum(rng.poisson(np.broadcast_to(truth, (ng, ny, nx))), axis=0)
    clean = clean + rng.normal(0, 5, clean.shape)
    reads = np.stack([one_over_f(rng, ny, nx, 15.0) for _ in range(ng)])
    ramp = np.clip(np.round(clean + reads), 0, 65535).astype(np.uint16)
    ramp0 = np.clip(np.round(clean), 0, 65535).astype(np.uint16)
    refs = ReferenceArrays.flat(ny, nx, ng, bias=2000.0, readnoise=7.0)
    timing = RampTiming(ng)
    rate0 = run_detector1(ramp0, refs, timing).rate
    raw = striping_power(run_detector1(ramp, refs, timing).rate - rate0)
    mask = scene_mask(rate0)
    for method in ("median", "fft", "nsclean"):
        hook = make_group_hook(FlickerParams(method=method), mask)
        rate = run_detector1(ramp, refs, timing, group_hook=hook).rate
        assert striping_power(rate - rate0) < 0.1 * raw, method


def test_group_hook_and_params():
    rng = np.random.default_rng(14)
    ng, ny, nx = 4, 32, 64
    clean, groups, _ = _ramp(rng, ng, ny, nx)
    groups = groups.astype(np.float32)
    gdq = np.zeros(groups.shape, np.uint8)
    pdq = np.zeros((ny, nx), np.uint32)
    mask = scene_mask(np.median(np.diff(clean, axis=0), axis=0))
    for method in ("median", "fft"):
        params = FlickerParams(method=method)
        hook = make_group_hook(params, mask)
        kw = params.cleaner_kwargs()
        # the hook returns the groups cleaned against the first group and the model's
        # variance (issue 13); group_reference='previous' is the difference cleaner
        got, (var, kind) = hook(groups, gdq, pdq)
        np.testing.assert_array_equal(
            got, clean_groups_from_first(groups, gdq, pdq, mask, method, **kw)
        )
        assert kind == "group" and var.shape == (ny, nx) and np.all(var > 0)
        prev = make_group_hook(dataclasses.replace(params, group_reference="previous"), mask)
        np.testing.assert_array_equal(
            prev(groups, gdq, pdq)[0], clean_groups(groups, gdq, pdq, mask, method, **kw)
        )
        # no mask: derived from the ramp itself, still cleans
        out = make_group_hook(params)(groups, gdq, pdq)[0]
        assert striping_power(
            np.diff(out.astype(float), axis=0)[0] - np.diff(clean, axis=0)[0]
        ) < 0.1 * striping_power(
            np.diff(groups.astype(float), axis=0)[0] - np.diff(clean, axis=0)[0]
        )
    assert make_group_hook(FlickerParams(enabled=False), mask)(groups, gdq, pdq) is groups
    assert make_group_hook(FlickerParams(level="rate"), mask)(groups, gdq, pdq) is groups
    with pytest.raises(ValueError, match="method"):
        FlickerParams(method="slope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        FlickerParams().method = "fft"


def test_clean_rate_cube_and_nan_handling():
    rng = np.random.default_rng(15)
    ny, nx, nint = 16, 20, 3
    offsets = rng.normal(0, 10, (nint, 1, nx))
    cube = (np.zeros((nint, ny, nx)) + offsets).astype(np.float32)
    cube[1, 4, 5] = np.nan
    mask = np.ones((ny, nx), bool)
    for method in ("median", "fft"):
        cleaned, model = clean_rate(cube, mask, method)
        assert cleaned.shape == cube.shape
        finite = np.isfinite(cube)
        assert np.abs(cleaned[finite]).max() < 1e-4
        assert np.isnan(cleaned[1, 4, 5])
    with pytest.raises(ValueError, match="clean_rate"):
        clean_rate(np.zeros(5), np.ones(5, bool))


# ----------------------------------------------------------------- nsclean (time series)
def _nsclean_reference(image, mask, fc, tpix=10e-6, nloh=NLOH):
    """Single section, plain numpy: complex-exponential basis, lstsq, apodize."""
    ny, nx = image.shape
    n = nx * (ny + nloh)
    t = (np.arange(nx)[None, :] * (ny + nloh) + np.arange(ny)[:, None]).ravel()
    freq = np.fft.rfftfreq(n, tpix)
    apod = flicker._apodizer(freq, fc)
    ks = np.flatnonzero(apod > 0)
    e = np.exp(2j * np.pi * np.outer(t, ks) / n)
    a = np.hstack([e.real, e.imag[:, (ks > 0) & (ks < n / 2)]])
    m = mask.ravel()
    coef, *_ = np.linalg.lstsq(a[m], image.ravel()[m], rcond=None)
    scale = np.concatenate([apod[ks], apod[ks[(ks > 0) & (ks < n / 2)]]])
    return (a @ (coef * scale)).reshape(ny, nx)


def test_nsclean_single_section_matches_reference():
    rng = np.random.default_rng(16)
    ny, nx = 32, 12
    image = one_over_f(rng, ny, nx, 10.0, hf=1.0) + rng.normal(0, 1, (ny, nx))
    mask = rng.random((ny, nx)) > 0.3
    fc = (3000.0, 5000.0, 1e9, 1e9)  # a few frequencies at this short length
    _, model = clean_nsclean(
        image, mask, fc=fc, npix_iter=10**6, exclude_outliers=False, damping=1e-12
    )
    ref = _nsclean_reference(image, mask, fc)
    np.testing.assert_allclose(model, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_nsclean_removes_slow_signal_and_respects_direction():
    rng = np.random.default_rng(17)
    ny, nx = 32, 256
    t = np.arange(nx)[None, :] * (ny + NLOH) + np.arange(ny)[:, None]
    mask = np.ones((ny, nx), bool)
    mask[12:20] = False
    cleaned, _ = clean_nsclean(np.full((ny, nx), 25.0), mask)  # k = 0 is in every section
    assert np.abs(cleaned).max() < 1e-6
    for f_hz in (50.0, 150.0, 800.0):  # in-band, off the sections' frequency grids
        slow = 10.0 * np.cos(2 * np.pi * f_hz * t * 10e-6 + 0.3)
        cleaned, _ = clean_nsclean(slow, mask)
        assert cleaned[:, 32:-32].std() < 0.03 * 10.0  # interior: sections overlap
        assert cleaned.std() < 0.05 * 10.0  # ends: Gibbs ringing of one section only
    slow = 10.0 * np.cos(2 * np.pi * 150.0 * t * 10e-6)
    img = slow + rng.normal(0, 1, (ny, nx))
    a, _ = clean_nsclean(img, mask)
    b, _ = clean_nsclean(img[:, ::-1], mask[:, ::-1], reverse_columns=True)
    np.testing.assert_allclose(b[:, ::-1], a, atol=1e-9)


def test_nsclean_via_params_and_hook():
    rng = np.random.default_rng(18)
    ng, ny, nx = 3, 32, 64
    clean, groups, _ = _ramp(rng, ng, ny, nx)
    mask = scene_mask(np.median(np.diff(clean, axis=0), axis=0))
    params = FlickerParams(method="nsclean", detector="NRS2")
    assert params.cleaner_kwargs()["reverse_columns"] is True
    out, _ = make_group_hook(params, mask)(
        groups.astype(np.float32), np.zeros(groups.shape, np.uint8), np.zeros((ny, nx), np.uint32)
    )
    before = striping_power(np.diff(groups, axis=0)[0] - np.diff(clean, axis=0)[0])
    after = striping_power(np.diff(out.astype(float), axis=0)[0] - np.diff(clean, axis=0)[0])
    assert after < 0.2 * before


# ----------------------------------------------------------------- fast group path
def _flagged_ramp(rng, ng, ny, nx, *, integer=False, dtype=np.float32):
    """Ramp with column offsets per read, JUMP_DET / SATURATED group flags, DO_NOT_USE
    pixels, NaNs, big outliers, and columns with too few (or no) background pixels."""
    ramp = np.cumsum(rng.normal(40.0, 8.0, (ng, ny, nx)), axis=0)
    ramp += rng.normal(0.0, 15.0, (ng, 1, nx))
    if integer:
        ramp = np.round(ramp + 1000.0)  # many ties in the column statistics
    ramp = ramp.astype(dtype)
    gdq = np.zeros(ramp.shape, np.uint8)
    gdq[rng.random(ramp.shape) < 0.04] |= dqflags.JUMP_DET
    gdq[rng.random(ramp.shape) < 0.02] |= dqflags.SATURATED
    pdq = np.zeros((ny, nx), np.uint32)
    pdq[rng.random((ny, nx)) < 0.05] = dqflags.DO_NOT_USE
    pdq[rng.random((ny, nx)) < 0.05] |= dqflags.HOT  # not a bad_pixel_bits bit: still used
    if np.issubdtype(ramp.dtype, np.floating):
        ramp[rng.random(ramp.shape) < 0.005] = np.nan
        ramp[rng.random(ramp.shape) < 0.003] += 5e3
    mask = rng.random((ny, nx)) > 0.3
    mask[:, 0] = False  # edge column without background pixels: right neighbour only
    mask[2:, 5] = False  # 2 pixels < min_pixels
    mask[:, 9:12] = False  # a run of empty columns
    mask[:, -1] = False
    return ramp, gdq, pdq, mask


FAST_CASES = [
    ("median", {"statistic": "mean"}),  # FlickerParams() default
    ("median", {}),
    ("median", {"statistic": "mean", "clip_sigma": 2.0, "min_pixels": 6}),
    ("median", {"statistic": "mean", "background": "median"}),
    ("median", {"background": -3.25}),
    ("fft", {}),
    ("fft", {"n_freq": 2, "alternating": True, "ridge": 0.5}),
    ("fft", {"background": "median", "outlier_sigma": 3.0}),
    ("fft", {"exclude_outliers": False, "min_pixels": 9, "n_freq": 0}),
]


@pytest.mark.parametrize(("method", "kw"), FAST_CASES)
@pytest.mark.parametrize(
    ("ny", "nx", "integer", "dtype"),
    [(32, 70, False, np.float32), (13, 131, True, np.float32), (16, 40, False, np.float64)],
)
def test_clean_groups_fast_path_equals_reference(method, kw, ny, nx, integer, dtype):
    """The numba path of clean_groups gives bit-identical ramps and models to the
    per-difference numpy reference (tolerance 0; NaN where the reference has NaN)."""
    rng = np.random.default_rng(20 + ny + nx)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, ny, nx, integer=integer, dtype=dtype)
    out, models = clean_groups(groups, gdq, pdq, mask, method, return_model=True, **kw)
    ref, ref_models = flicker._clean_groups_reference(
        groups, gdq, pdq, mask, method, return_model=True, **kw
    )
    assert out.dtype == np.float32 and models.dtype == np.float64
    assert np.isnan(out).any() and np.isnan(out).sum() == np.isnan(ref).sum()
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(models, ref_models)
    assert np.abs(models).max() > 1.0  # the column offsets were fitted
    np.testing.assert_array_equal(clean_groups(groups, gdq, pdq, mask, method, **kw), ref)


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("fft", {}),
        ("fft", {"background": "median"}),
        ("median", {"statistic": "mean", "background": "median"}),
    ],
)
def test_clean_groups_fast_path_equals_reference_large_image(method, kw):
    """> 4096 usable pixels per difference: the sample-bracketed global medians (fft
    outlier sigma, 'median' background) are exact too."""
    rng = np.random.default_rng(35)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 4, 32, 300)
    assert (mask & (pdq == 0)).sum() > 4096
    out, models = clean_groups(groups, gdq, pdq, mask, method, return_model=True, **kw)
    ref, ref_models = flicker._clean_groups_reference(
        groups, gdq, pdq, mask, method, return_model=True, **kw
    )
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(models, ref_models)


def test_clean_groups_fast_path_integer_ramp_and_flags():
    """uint16 ramps, uint32 group DQ, custom bad bits and a jump-only DQ: same as reference."""
    rng = np.random.default_rng(31)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 5, 32, 67, integer=True, dtype=np.uint16)
    for kw in (
        {"bad_group_bits": dqflags.JUMP_DET},
        {"bad_group_bits": dqflags.SATURATED, "bad_pixel_bits": 0},
    ):
        for method in ("median", "fft"):
            got = clean_groups(groups, gdq.astype(np.uint32), pdq, mask, method, **kw)
            ref = flicker._clean_groups_reference(groups, gdq, pdq, mask, method, **kw)
            np.testing.assert_array_equal(got, ref)


def test_clean_groups_reference_fallbacks():
    """Settings outside the fast path (array background, weights, nsclean) still run."""
    rng = np.random.default_rng(32)
    ng, ny, nx = 4, 16, 24
    groups, gdq, pdq, mask = _flagged_ramp(rng, ng, ny, nx)
    bg = rng.normal(0, 1, (ng - 1, ny, nx))
    for method, kw in [
        ("median", {"background": bg}),
        ("fft", {"weights": np.full((ny, nx), 2.0)}),
        ("nsclean", {}),
    ]:
        got = clean_groups(groups, gdq, pdq, mask, method, **kw)
        ref = flicker._clean_groups_reference(groups, gdq, pdq, mask, method, **kw)
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(TypeError):
        clean_groups(groups, gdq, pdq, mask, "median", n_freq=2)  # not a clean_median kwarg
    with pytest.raises(ValueError, match="statistic"):
        clean_groups(groups, gdq, pdq, mask, "median", statistic="mode")


def test_group_hook_equals_reference_for_default_params():
    rng = np.random.default_rng(33)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 7, 32, 80)
    # the difference cleaner (group_reference='previous'): fast kernels == numpy reference
    for params in (FlickerParams(group_reference="previous"),
                   FlickerParams(method="fft", group_reference="previous")):
        got, _ = make_group_hook(params, mask)(groups, gdq, pdq)
        ref = flicker._clean_groups_reference(
            groups, gdq, pdq, mask, params.method, **params.cleaner_kwargs()
        )
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 16, 31, 32, 33, 64])
def test_sorting_network_sorts_columns(n):
    rng = np.random.default_rng(n)
    comps = flicker._sorting_network(n)
    assert comps.shape[1] == 2 and np.all(comps[:, 0] < comps[:, 1]) and np.all(comps < n)
    s = np.empty((n, flicker._BLOCK))
    s[:] = rng.integers(0, 4, s.shape) if n % 2 else rng.normal(0, 1, s.shape)
    s[rng.random(s.shape) < 0.2] = np.inf
    ref = np.sort(s, axis=0)
    flicker._sort_columns(s, comps, s.shape[1] - 3)
    np.testing.assert_array_equal(s[:, :-3], ref[:, :-3])


def test_large_median_equals_numpy_median():
    """Sample-bracketed selection (and its fallback when the sample misses) == np.median."""
    rng = np.random.default_rng(34)
    buf = np.empty(60001)
    cases = [
        rng.normal(0, 1, 60001),
        rng.standard_cauchy(50000),
        np.round(rng.normal(0, 2, 40000)),  # ties
        np.sort(rng.normal(0, 1, 9000)),
        rng.normal(0, 1, 1001),  # small: direct selection
    ]
    n = 10000  # sample positions all hold the maximum: the bracket misses, fallback
    bad = rng.normal(0, 1, n)
    ns = max(min(int(n ** (2.0 / 3.0)), n // 8), 64)
    bad[(np.arange(ns) * n) // ns] = 1e6
    cases.append(bad)
    for a in cases:
        assert flicker._median(a, a.size, buf) == np.median(a)
        assert flicker._median(a, a.size - 1, buf) == np.median(a[:-1])
