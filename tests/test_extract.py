"""Extraction kernels against a seeded synthetic BOTS scene with known truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.special import erf

from nirbeam import dqflags
from nirbeam.transforms.extract import (
    ProfileAccumulator,
    aperture_weights,
    box_extract,
    build_profile,
    column_background,
    optimal_extract,
    straight_box_extract,
)
from nirbeam.transforms.trace import TraceModel


@dataclass
class Scene:
    rate: np.ndarray  # (nint, ny, nx) DN/s
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    dq: np.ndarray
    model: np.ndarray  # noiseless (nint, ny, nx)
    true_flux: np.ndarray  # (nint, nx) DN/s
    yc: np.ndarray  # (nx,)
    sigma: np.ndarray  # (nx,)
    background: float
    t_int: float

    @property
    def var(self):
        return self.var_poisson + self.var_rnoise


def true_center(x, nx):
    u = (x - nx / 2) / (nx / 2)
    return 15.3 + 3.0 * u**2 - 1.2 * u  # ~ 4 px of curvature across the detector


def true_sigma(x, nx):
    return 0.7 + 0.8 * x / (nx - 1)  # PSF sigma 0.7 -> 1.5 px with wavelength


def make_scene(
    nint: int = 30,
    ny: int = 32,
    nx: int = 160,
    *,
    seed: int = 1,
    flux_level: float = 2000.0,
    background: float = 2.0,
    read_noise: float = 12.0,
    t_int: float = 10.0,
    transit_depth: float = 0.0,
    noise: bool = True,
) -> Scene:
    """Curved Gaussian trace, pixel-integrated, Poisson + read noise (e-, gain 1)."""
    rng = np.random.default_rng(seed)
    x = np.arange(nx, dtype=np.float64)
    yc = true_center(x, nx)
    sig = true_sigma(x, nx)
    F = flux_level * (0.6 + 0.4 * np.sin(np.pi * (x + 10) / (nx + 20)))  # DN/s per column
    y = np.arange(ny, dtype=np.float64)[:, None]
    frac = 0.5 * (
        erf((y + 0.5 - yc) / (np.sqrt(2) * sig)) - erf((y - 0.5 - yc) / (np.sqrt(2) * sig))
    )  # (ny, nx), sums to ~1 per column
    scale = np.ones(nint)
    if transit_depth:
        i = np.arange(nint)
        scale[(i > nint // 3) & (i < 2 * nint // 3)] -= transit_depth
    true_flux = scale[:, None] * F[None, :]
    model = true_flux[:, None, :] * frac[None] + background
    if noise:
        counts = rng.poisson(np.clip(model, 0, None) * t_int).astype(np.float64)
        counts += rng.normal(0.0, read_noise, size=counts.shape)
        rate = counts / t_int
    else:
        rate = model.copy()
    vp = np.clip(rate, 0, None) / t_int
    vr = np.full_like(rate, (read_noise / t_int) ** 2)
    # true flux: the full Gaussian (frac summed over the infinite column)
    return Scene(
        rate=rate.astype(np.float32),
        var_poisson=vp.astype(np.float32),
        var_rnoise=vr.astype(np.float32),
        dq=np.zeros(rate.shape, np.uint32),
        model=model,
        true_flux=true_flux,
        yc=yc,
        sigma=sig,
        background=background,
        t_int=t_int,
    )


def truth_trace(nx):
    """TraceModel exactly equal to the generator's centre polynomial."""
    c = [15.3 - 0.0, -1.2, 3.0]  # in u = (x - nx/2)/(nx/2)
    # TraceModel scales with x_range=(0, nx-1): t = (x - (nx-1)/2)/((nx-1)/2)
    xs = np.arange(nx, dtype=np.float64)
    tr = TraceModel.from_config(
        np.polynomial.polynomial.polyfit(xs, true_center(xs, nx), 2),
        1.0,
        (0.0, nx - 1.0),
        scaled=False,
    )
    np.testing.assert_allclose(tr.center(xs), true_center(xs, nx), atol=1e-9)
    del c
    return tr


def test_aperture_weights_sum_to_width():
    tr = truth_trace(100)
    w = aperture_weights(tr, (32, 100), 4.3)
    np.testing.assert_allclose(w.sum(axis=0), 8.6, atol=1e-12)
    assert w.min() >= 0 and w.max() <= 1


def test_curved_box_recovers_flux_straight_box_loses():
    sc = make_scene(nint=1, noise=False, background=0.0)
    tr = truth_trace(sc.rate.shape[2])
    true = sc.true_flux[0].sum()
    for hw in (4.5, 5.0):
        curved = box_extract(sc.rate[0], sc.var[0], sc.dq[0], tr, hw)
        straight = straight_box_extract(sc.rate[0], sc.var[0], sc.dq[0], tr, hw)
        rec_c = curved.flux.sum() / true
        rec_s = straight.flux.sum() / true
        print(f"hw={hw}: curved box recovery {rec_c:.5f}, straight box {rec_s:.5f}")
        assert rec_c >= 0.995
        assert rec_c <= 1.0 + 1e-6
        # the straight box of the same width loses more (here > 3x the curved box's loss)
        assert rec_s < rec_c - 5e-4
        assert (1 - rec_s) > 3 * (1 - rec_c)
        assert curved.method == "box" and straight.method == "straight_box"
        assert not curved.dq.any()


def test_curved_box_with_noise_and_background():
    sc = make_scene(nint=10, seed=3, background=5.0)
    tr = truth_trace(sc.rate.shape[2])
    rec = []
    for i in range(10):
        s = box_extract(sc.rate[i], sc.var[i], sc.dq[i], tr, 5.0, background_region=(8.0, 14.0))
        rec.append(s.flux.sum() / sc.true_flux[i].sum())
        # background estimate unbiased to a few sigma of its own error
        assert abs(np.mean(s.background) - 5.0) < 0.2
        # reported errors consistent with the truth (chi2 per column ~ 1)
        z = (s.flux - sc.true_flux[i]) / s.flux_error
        assert 0.6 < np.std(z) < 1.4
    assert abs(np.mean(rec) - 1.0) < 0.003 and np.min(rec) > 0.994


def test_column_background_median_and_mean():
    sc = make_scene(nint=1, seed=5, background=7.0)
    tr = truth_trace(sc.rate.shape[2])
    for method in ("median", "mean"):
        b, bv = column_background(sc.rate[0], sc.dq[0], tr, (8.0, 14.0), method=method)
        assert abs(b.mean() - 7.0) < 0.15
        # per-column scatter about the truth consistent with the reported variance
        assert 0.5 < np.std(b - 7.0) / np.sqrt(np.mean(bv)) < 1.6
    with pytest.raises(ValueError, match="background method"):
        column_background(sc.rate[0], sc.dq[0], tr, (8.0, 14.0), method="mode")


def _extract_all(sc, tr, profile, hw_box=5.0, sigma_clip=5.0):
    box, opt = [], []
    for i in range(sc.rate.shape[0]):
        b, bv = column_background(sc.rate[i], sc.dq[i], tr, (9.0, 15.0))
        box.append(
            box_extract(sc.rate[i], sc.var[i], sc.dq[i], tr, hw_box, background_region=(9.0, 15.0))
        )
        opt.append(
            optimal_extract(
                sc.rate[i],
                sc.var[i],
                sc.dq[i],
                profile,
                background=b,
                background_var=bv,
                var_rnoise=sc.var_rnoise[i],
                var_poisson=sc.var_poisson[i],
                sigma_clip=sigma_clip,
            )
        )
    return box, opt


def test_optimal_beats_box_and_is_unbiased():
    sc = make_scene(nint=60, seed=11, flux_level=800.0, read_noise=20.0, transit_depth=0.01)
    nx = sc.rate.shape[2]
    tr = truth_trace(nx)
    bk = np.stack(
        [
            column_background(sc.rate[i], sc.dq[i], tr, (9.0, 15.0))[0]
            for i in range(sc.rate.shape[0])
        ]
    )
    prof = build_profile(sc.rate, tr, 6.0, background=bk)
    assert np.all(prof.sum(axis=0) >= 1.0 - 1e-12) and np.all(prof.sum(axis=0) < 1.01)
    assert prof.min() >= 0
    box, opt = _extract_all(sc, tr, prof)
    wl_box = np.array([s.flux.sum() for s in box])
    wl_opt = np.array([s.flux.sum() for s in opt])
    true = sc.true_flux.sum(axis=1)
    sd_box = np.std(wl_box / true)
    sd_opt = np.std(wl_opt / true)
    bias_opt = np.mean(wl_opt) / np.mean(true) - 1
    bias_box = np.mean(wl_box) / np.mean(true) - 1
    print(
        f"white-light scatter: box {sd_box * 1e6:.0f} ppm, optimal {sd_opt * 1e6:.0f} ppm; "
        f"bias optimal {bias_opt * 1e6:.0f} ppm, box {bias_box * 1e6:.0f} ppm"
    )
    assert sd_opt < sd_box
    assert abs(bias_opt) <= 1e-3
    # per-column errors are honest: pulls ~ N(0, 1)
    z = np.concatenate(
        [(s.flux - t) / s.flux_error for s, t in zip(opt, sc.true_flux, strict=True)]
    )
    assert 0.85 < np.std(z) < 1.2
    # expected white-light scatter from the reported errors matches the measured one
    pred = np.mean([np.sqrt(np.sum(s.flux_error**2)) for s in opt]) / np.mean(true)
    assert 0.7 < sd_opt / pred < 1.4


def test_optimal_rejects_cosmic_ray():
    sc = make_scene(nint=20, seed=21)
    nx = sc.rate.shape[2]
    tr = truth_trace(nx)
    prof = build_profile(sc.rate, tr, 6.0)
    i, x = 7, 60
    y = int(round(sc.yc[x])) + 1
    hit = sc.rate[i].copy()
    hit[y, x] += 3000.0  # a cosmic ray near the trace core
    kw = dict(var_rnoise=sc.var_rnoise[i], var_poisson=sc.var_poisson[i])
    clean = optimal_extract(sc.rate[i], sc.var[i], sc.dq[i], prof, **kw)
    cr = optimal_extract(hit, sc.var[i], sc.dq[i], prof, **kw)
    noclip = optimal_extract(hit, sc.var[i], sc.dq[i], prof, sigma_clip=None, **kw)
    assert abs(cr.flux[x] - sc.true_flux[i, x]) < 4 * cr.flux_error[x]
    assert abs(noclip.flux[x] - sc.true_flux[i, x]) > 20 * noclip.flux_error[x]
    assert cr.dq[x] & dqflags.OUTLIER
    assert cr.npixels[x] == clean.npixels[x] - 1
    # other columns are untouched by the rejection
    others = np.arange(nx) != x
    # (only the extra variance-model iteration differs: ~1e-6 relative)
    np.testing.assert_allclose(cr.flux[others], clean.flux[others], rtol=1e-5)


def test_bad_pixels_are_masked_and_flagged():
    sc = make_scene(nint=10, seed=4, noise=False, background=0.0)
    nx = sc.rate.shape[2]
    tr = truth_trace(nx)
    prof = build_profile(sc.rate, tr, 6.0)
    rate = sc.rate[0].copy()
    dq = sc.dq[0].copy()
    x = 40
    y = int(round(sc.yc[x]))
    rate[y, x] = np.nan
    dq[y, x] = dqflags.DO_NOT_USE | dqflags.HOT
    var = np.full_like(rate, 1.0)
    opt = optimal_extract(rate, var, dq, prof)
    box = box_extract(rate, var, dq, tr, 5.0, profile=prof)
    box_flat = box_extract(rate, var, dq, tr, 5.0)
    assert opt.dq[x] & dqflags.HOT and box.dq[x] & dqflags.HOT
    assert np.count_nonzero(opt.dq) == 1 and np.count_nonzero(box.dq) == 1
    # profile-based recovery of the missing pixel (noiseless scene)
    assert abs(opt.flux[x] / sc.true_flux[0, x] - 1) < 2e-3
    assert abs(box.flux[x] / sc.true_flux[0, x] - 1) < 2e-3
    assert np.isfinite(box_flat.flux[x])


def test_profile_accumulator_matches_batch():
    sc = make_scene(nint=30, seed=8)
    tr = truth_trace(sc.rate.shape[2])
    acc = ProfileAccumulator(tr, sc.rate.shape[1:], 6.0, n_first=10, refresh=10)
    outs = [acc.add(sc.rate[i] - 2.0) for i in range(30)]
    assert outs[8] is None and outs[9] is not None
    batch = build_profile(sc.rate - 2.0, tr, 6.0)
    # the refined streaming profile approaches the batch profile
    err_first = np.abs(outs[9] - batch).max()
    err_last = np.abs(outs[-1] - batch).max()
    assert err_last < 0.02
    assert err_last <= err_first * 1.5


def test_build_profile_background_region():
    """A background pedestal left in the profile biases the optimal flux; the
    background_region option removes it (same result as passing the background)."""
    sc = make_scene(nint=20, seed=13, background=4.0)
    tr = truth_trace(sc.rate.shape[2])
    bk = np.stack([column_background(sc.rate[i], sc.dq[i], tr, (9.0, 15.0))[0] for i in range(20)])
    p_auto = build_profile(sc.rate, tr, 6.0, background_region=(9.0, 15.0))
    p_given = build_profile(sc.rate, tr, 6.0, background=bk)
    p_none = build_profile(sc.rate, tr, 6.0)
    np.testing.assert_allclose(p_auto, p_given, atol=1e-12)

    def bias(prof):
        wl = [
            optimal_extract(
                sc.rate[i],
                sc.var[i],
                sc.dq[i],
                prof,
                background=bk[i],
                var_rnoise=sc.var_rnoise[i],
                var_poisson=sc.var_poisson[i],
            ).flux.sum()
            for i in range(20)
        ]
        return np.mean(wl) / sc.true_flux.sum(axis=1).mean() - 1

    b_auto, b_none = bias(p_auto), bias(p_none)
    print(
        f"optimal bias: profile bkg-subtracted {b_auto * 1e6:.0f} ppm, not {b_none * 1e6:.0f} ppm"
    )
    assert abs(b_auto) < 1e-3
    assert abs(b_none) > 3 * abs(b_auto)


# ---------------------------------------------------------------------------------------
# numba kernels against the previous numpy implementation (kept as ``_*_reference``).
# Both evaluate the same float64 expressions with sums over rows in increasing y, so they
# agree to rounding; the kernels are bit-identical in practice, the tests allow 1e-12 of
# each output array's largest magnitude (a relative bound that stays meaningful for flux
# values near zero after background subtraction). DQ flags and pixel counts: exact.
# ---------------------------------------------------------------------------------------

from unittest import mock  # noqa: E402

from nirbeam.transforms import extract as _ex  # noqa: E402

RTOL_KERNEL = 1e-12


def assert_spectra_equal(new, ref, what=""):
    for name in ("flux", "flux_error", "npixels", "background"):
        a, b = np.asarray(getattr(new, name)), np.asarray(getattr(ref, name))
        assert a.shape == b.shape, (what, name)
        fin = np.abs(b[np.isfinite(b)])
        scale = float(np.max(fin)) if fin.size else 0.0
        np.testing.assert_allclose(
            a, b, rtol=RTOL_KERNEL, atol=RTOL_KERNEL * scale, err_msg=f"{what} {name}"
        )
    assert new.dq.dtype == np.uint32
    np.testing.assert_array_equal(new.dq, ref.dq, err_msg=f"{what} dq")
    assert new.method == ref.method


def damaged_scene(seed, nx=96, *, nan_frac=0.02, dq_frac=0.03, ties=False):
    """One integration of the synthetic scene with NaNs, flagged pixels, empty columns."""
    rng = np.random.default_rng(seed)
    sc = make_scene(nint=12, nx=nx, seed=seed, background=3.0)
    tr = truth_trace(nx)
    prof = build_profile(sc.rate, tr, 6.0, background_region=(9.0, 15.0))
    rate = sc.rate[0].astype(np.float64)
    if ties:  # integer-valued: equal values, even/odd counts, MAD = 0 columns
        rate = np.round(rate)
        rate[:, 5] = 4.0
    var = sc.var[0].astype(np.float64)
    dq = np.zeros(rate.shape, np.uint32)
    nan = rng.random(rate.shape) < nan_frac
    rate[nan] = np.nan
    var[rng.random(rate.shape) < nan_frac / 2] = np.inf
    flagged = rng.random(rate.shape) < dq_frac
    dq[flagged] = rng.choice(
        [dqflags.DO_NOT_USE, dqflags.DO_NOT_USE | dqflags.HOT, dqflags.JUMP_DET], flagged.sum()
    )
    dq[rng.random(rate.shape) < 0.02] |= dqflags.SATURATED  # not a bad bit below
    rate[:, 10] = np.nan  # a column with nothing usable at all
    dq[:, 11] = dqflags.DO_NOT_USE  # ... and one flagged throughout
    y = np.arange(rate.shape[0])[:, None]
    dist = np.abs(y - tr.center(np.arange(nx))[None, :])
    off = dist >= 9.0
    rate[:, 20][off[:, 20]] = np.nan  # no background pixels, aperture intact
    dq[:, 21][off[:, 21]] = dqflags.DO_NOT_USE
    region = np.flatnonzero((dist[:, 22] >= 9.0) & (dist[:, 22] <= 15.0))
    dq[region[1:], 22] = dqflags.DO_NOT_USE  # a single background pixel (n = 1)
    rate[region[0], 22], dq[region[0], 22] = 3.5, 0
    # cosmic rays near the core, several in two columns (several rejection passes)
    for x, dy in ((30, (0,)), (31, (-1, 0, 1)), (45, (1, -2)), (60, (0,))):
        for d in dy:
            rate[int(round(sc.yc[x])) + d, x] += 1500.0 * (1 + abs(d))
    vp = np.clip(np.nan_to_num(rate, nan=0.0), 0, None) / sc.t_int
    vr = np.full(rate.shape, (12.0 / sc.t_int) ** 2)
    vr[3, 7] = np.nan
    return rate, var, dq, vp, vr, tr, prof


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_column_background_kernel_matches_reference(seed, ties):
    rate, _, dq, _, _, tr, _ = damaged_scene(seed, ties=ties)
    bits = dqflags.DO_NOT_USE
    for method in ("median", "mean"):
        for clip in (3.0, 1.0, None):
            for region in ((9.0, 15.0), (6.5, 7.5), (40.0, 50.0)):  # last: no pixels
                kw = dict(method=method, sigma_clip=clip, bad_bits=bits)
                b1, v1 = column_background(rate, dq, tr, region, **kw)
                b0, v0 = _ex._column_background_reference(rate, dq, tr, region, **kw)
                what = f"{method} clip={clip} region={region}"
                np.testing.assert_allclose(b1, b0, rtol=RTOL_KERNEL, atol=0, err_msg=what)
                np.testing.assert_allclose(v1, v0, rtol=RTOL_KERNEL, atol=0, err_msg=what)
                if region == (9.0, 15.0):
                    assert b1[10] == 0 and v1[10] == 0 and b1[20] == 0  # no usable pixel
                    assert v1[22] == 0 and b1[22] != 0  # one pixel: level, no variance
    # variance propagated from the pixel variances (some non-finite: scatter for that column)
    rate, var, dq, vp, vr, tr, _ = damaged_scene(seed, ties=ties)
    pv = vp + vr
    for method in ("median", "mean"):
        kw = dict(method=method, bad_bits=bits, var=pv)
        b1, v1 = column_background(rate, dq, tr, (9.0, 15.0), **kw)
        b0, v0 = _ex._column_background_reference(rate, dq, tr, (9.0, 15.0), **kw)
        np.testing.assert_allclose(b1, b0, rtol=RTOL_KERNEL, atol=0)
        np.testing.assert_allclose(v1, v0, rtol=RTOL_KERNEL, atol=0)
        _, vs = column_background(rate, dq, tr, (9.0, 15.0), method=method, bad_bits=bits)
        assert np.any(v1 != vs)  # not the scatter
        assert v1[22] > 0  # one pixel: its own variance
    # dq None and float32 input
    b1, v1 = column_background(rate.astype(np.float32), None, tr, (9.0, 15.0))
    b0, v0 = _ex._column_background_reference(rate.astype(np.float32), None, tr, (9.0, 15.0))
    np.testing.assert_allclose(b1, b0, rtol=RTOL_KERNEL, atol=0)
    np.testing.assert_allclose(v1, v0, rtol=RTOL_KERNEL, atol=0)


@pytest.mark.parametrize("seed", [0, 3])
def test_box_extract_kernel_matches_reference(seed):
    rate, var, dq, _, _, tr, prof = damaged_scene(seed)
    nx = rate.shape[1]
    for bits in (dqflags.DO_NOT_USE, dqflags.DO_NOT_USE | dqflags.JUMP_DET):
        for region in ((9.0, 15.0), None):
            for p in (prof, None):
                for method in ("median", "mean"):
                    for hw in (3.3, 5.0, 14.0):  # 14: aperture runs off the detector
                        kw = dict(background_method=method, profile=p, bad_bits=bits)
                        new = box_extract(rate, var, dq, tr, hw, region, **kw)
                        ref = _ex._box_extract_reference(rate, var, dq, tr, hw, region, **kw)
                        assert_spectra_equal(
                            new,
                            ref,
                            f"bits={bits} region={region} prof={p is not None} {method} hw={hw}",
                        )
    new = box_extract(rate, var, None, tr, 5.0, (9.0, 15.0))
    ref = _ex._box_extract_reference(rate, var, None, tr, 5.0, (9.0, 15.0))
    assert_spectra_equal(new, ref, "dq=None")
    # the damaged columns really exercise the flag paths
    assert new.dq[10] & dqflags.DO_NOT_USE and new.npixels[10] == 0
    # the aperture-weight cache follows the trace: alternate two traces
    other = TraceModel.from_config(12.0, 1.0, (0.0, nx - 1.0))
    for t in (tr, other, tr, other):
        assert_spectra_equal(
            box_extract(rate, var, dq, t, 4.0, (9.0, 15.0)),
            _ex._box_extract_reference(rate, var, dq, t, 4.0, (9.0, 15.0)),
            "trace swap",
        )
    np.testing.assert_array_equal(
        _ex._aperture_weights_fast(other, rate.shape, 4.0),
        aperture_weights(other, rate.shape, 4.0),
    )
    assert not _ex._aperture_weights_fast(other, rate.shape, 4.0).flags.writeable
    assert aperture_weights(other, rate.shape, 4.0).flags.writeable  # public: a fresh copy
    # straight box goes through the same kernel
    s = straight_box_extract(rate, var, dq, tr, 5.0, (9.0, 15.0))
    flat = TraceModel.from_config(float(np.mean(tr.center(np.arange(nx)))), 1.0, (0.0, nx - 1.0))
    ref = _ex._box_extract_reference(rate, var, dq, flat, 5.0, (9.0, 15.0), _method="straight_box")
    assert_spectra_equal(s, ref, "straight")


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_optimal_extract_kernel_matches_reference(seed):
    rate, var, dq, vp, vr, tr, prof = damaged_scene(seed)
    bk, bv = _ex._column_background_reference(rate, dq, tr, (9.0, 15.0), bad_bits=1)
    passes = []
    for model in (True, False):
        for clip in (5.0, 3.0, None):
            for max_iter in (20, 1, 2):
                for bvar in (bv, None):
                    kw = dict(
                        background=bk,
                        background_var=bvar,
                        sigma_clip=clip,
                        max_iter=max_iter,
                        bad_bits=dqflags.DO_NOT_USE,
                    )
                    if model:
                        kw.update(var_rnoise=vr, var_poisson=vp)
                    new = optimal_extract(rate, var, dq, prof, **kw)
                    ref = _ex._optimal_extract_reference(rate, var, dq, prof, **kw)
                    assert_spectra_equal(
                        new,
                        ref,
                        f"model={model} clip={clip} iter={max_iter} bvar={bvar is not None}",
                    )
                    if clip == 3.0 and max_iter == 20:
                        passes.append(ref.npixels)
    # iterative rejection happened, several pixels in one column (several passes)
    kw = dict(background=bk, var_rnoise=vr, var_poisson=vp, bad_bits=dqflags.DO_NOT_USE)
    kept = optimal_extract(rate, var, dq, prof, sigma_clip=None, **kw).npixels
    assert np.max(kept - passes[0]) >= 3
    assert np.count_nonzero(kept - passes[0]) >= 4
    # no dq, no background, scalar-broadcast read noise
    new = optimal_extract(rate, var, None, prof, var_rnoise=0.5, var_poisson=vp)
    ref = _ex._optimal_extract_reference(rate, var, None, prof, var_rnoise=0.5, var_poisson=vp)
    assert_spectra_equal(new, ref, "dq=None")


def test_optimal_extract_kernel_odd_profiles():
    """Profiles the pipeline never builds: negative values, NaN (propagated as 0 x NaN by
    the reference), empty columns, support over every row."""
    rate, var, dq, vp, vr, tr, prof = damaged_scene(7)
    p = prof.copy()
    p[0, 3] = -0.01
    p[:, 12] = 0.0  # no support
    p[5, 14] = np.nan
    p[:, 16] = 1.0 / p.shape[0]  # support on every row
    p[int(round(15.3)), 17] = np.inf  # f = inf / inf = NaN: NaN residuals, no rejection
    for kw in (dict(var_rnoise=vr, var_poisson=vp), {}):
        new = optimal_extract(rate, var, dq, p, **kw)
        with np.errstate(invalid="ignore"):  # the reference's 0 x inf
            ref = _ex._optimal_extract_reference(rate, var, dq, p, **kw)
        assert_spectra_equal(new, ref, f"odd profile {sorted(kw)}")
        assert new.dq[12] & dqflags.DO_NOT_USE and np.isnan(new.flux[12])  # issue 13: NaN, not 0
    allzero = np.zeros_like(prof)
    assert_spectra_equal(
        optimal_extract(rate, var, dq, allzero),
        _ex._optimal_extract_reference(rate, var, dq, allzero),
        "zero profile",
    )


def test_extract_integration_unchanged_by_kernels():
    """The per-integration stage gives the same arrays with the numpy references."""
    from nirbeam.transforms import spectra

    sc = make_scene(nint=8, nx=80, seed=17, background=2.0)
    dq = np.zeros(sc.rate.shape, np.uint32)
    model = spectra.build_extraction_model(
        sc.rate, dq, half_width=4.0, background_region=(9.0, 15.0)
    )
    rng = np.random.default_rng(5)
    for i in range(3):
        rate = sc.rate[i].copy()
        d = dq[i].copy()
        bad = rng.random(rate.shape) < 0.03
        rate[bad] = np.nan
        d[bad] = dqflags.DO_NOT_USE
        rate[int(round(sc.yc[33])), 33] += 4000.0
        args = (rate, np.sqrt(sc.var[i]), d, sc.var_poisson[i], sc.var_rnoise[i], model)
        new = spectra.extract_integration(*args)
        with (
            mock.patch.object(spectra, "box_extract", _ex._box_extract_reference),
            mock.patch.object(spectra, "optimal_extract", _ex._optimal_extract_reference),
        ):
            ref = spectra.extract_integration(*args)
        assert new.keys() == ref.keys()
        for k in ref:
            scale = float(np.max(np.abs(ref[k])))
            np.testing.assert_allclose(
                new[k], ref[k], rtol=RTOL_KERNEL, atol=RTOL_KERNEL * scale, err_msg=k
            )


def test_optimal_extract_kernel_ties_reject_first_row():
    """Equal largest residuals in a column: like np.argmax, the lower row goes first."""
    ny, nx = 16, 3
    yc = 7.0
    y = np.arange(ny)[:, None]
    prof = np.exp(-0.5 * ((y - yc) / 1.3) ** 2) * np.ones((1, nx))
    prof[np.abs(y[:, 0] - yc) > 4] = 0.0
    prof /= prof.sum(axis=0)
    rate = 1000.0 * prof
    rate[5, :] += 300.0  # symmetric about row 7: bitwise-equal residuals
    rate[9, :] += 300.0
    var = np.full(rate.shape, 4.0)
    dq = np.zeros(rate.shape, np.uint32)
    dq[5, :] = dqflags.JUMP_DET  # not a bad bit: tells which pixel was rejected
    dq[9, :] = dqflags.SATURATED
    for max_iter in (1, 2, 20):
        new = optimal_extract(rate, var, dq, prof, max_iter=max_iter, bad_bits=1)
        ref = _ex._optimal_extract_reference(rate, var, dq, prof, max_iter=max_iter, bad_bits=1)
        assert_spectra_equal(new, ref, f"ties max_iter={max_iter}")
        if max_iter == 1:
            assert np.all(new.dq & dqflags.JUMP_DET) and not np.any(new.dq & dqflags.SATURATED)
        else:
            assert np.all(new.dq & dqflags.JUMP_DET) and np.all(new.dq & dqflags.SATURATED)
