"""slit2d kernels on seeded synthetic nod ensembles, against plain-numpy references and
the scene's own truth (the flux put in)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import erf

from nirbeam import dqflags
from nirbeam.transforms import slit2d

NY, NX = 40, 24
SLIT = (-1.9, 1.9)  # slit ends, arcsec along the slit
PIX = 0.1  # arcsec per row


def cdf(u, lam):
    """Core Gaussian (sigma 0.08 arcsec x lam) + 15 % broad Lorentzian-like wings."""
    s = 0.08 * np.asarray(lam)
    core = 0.5 * (1 + erf(u / (np.sqrt(2) * s)))
    wing = 0.5 + np.arctan(u / 0.4) / np.pi
    return 0.85 * core + 0.15 * wing


def scene(centers, flux=1000.0, sky=50.0, seed=0, noise=True):
    rng = np.random.default_rng(seed)
    y = np.arange(NY, dtype=float)
    s = (y[:, None] - (NY - 1) / 2) * PIX + 0.002 * np.arange(NX)[None, :]  # slight tilt
    s = np.where(np.abs(s) <= SLIT[1] + PIX / 2, s, np.nan)
    lam = np.broadcast_to(np.linspace(1.0, 1.8, NX), (NY, NX)).copy()
    P = slit2d.profiles_from_cdf(cdf, s, lam, centers, SLIT)
    F = flux * (1 + 0.2 * np.sin(np.arange(NX) / 4))
    bkg = sky * (1 + 0.05 * np.nan_to_num(s))  # sky with a gradient along the slit
    clean = np.where(np.isfinite(s)[None], bkg[None] + F[None, None] * P, np.nan)
    var = np.where(np.isfinite(clean), 4.0 + np.abs(np.nan_to_num(clean)) * 0.01, np.nan)
    rate = clean + (rng.normal(size=clean.shape) * np.sqrt(var) if noise else 0.0)
    dq = np.where(np.isfinite(s), 0, dqflags.DO_NOT_USE).astype(np.uint32)
    dq = np.broadcast_to(dq, rate.shape).copy()
    return dict(rate=rate, var=var, dq=dq, s=s, lam=lam, P=P, F=F, bkg=bkg)


@pytest.mark.parametrize("centers", [(-0.25, 0.25), (-0.5, 0.0, 0.5), (-0.4, -0.2, 0.0, 0.2, 0.4)])
def test_joint_fit_recovers_flux_where_nod_difference_oversubtracts(centers):
    sc = scene(centers, seed=len(centers))
    fit = slit2d.joint_nod_fit(sc["rate"], sc["var"], sc["dq"], sc["P"])
    ratio = np.nanmedian(fit.flux / sc["F"])
    pull = (fit.flux - sc["F"]) / np.sqrt(fit.flux_var)
    assert abs(ratio - 1) < 0.003, ratio
    assert 0.7 < np.std(pull) < 1.3  # the variance is the fit's own
    # background common to all nods: the sky put in
    inside = np.isfinite(sc["s"])
    d = fit.background[inside] - sc["bkg"][inside]
    assert abs(d.mean()) < 0.2 and np.std(d) < 2.5  # per-pixel noise of a 2-nod mean
    # the plain nod difference, box + aperture correction, loses what the other nods'
    # wings put in the aperture: predicted from the profiles themselves
    b, bv = slit2d.nod_difference_background(sc["rate"], sc["var"], sc["dq"])
    box = slit2d.box_extract_nods(sc["rate"], sc["var"], sc["dq"], b, bv, sc["s"], centers,
                                  3.0, profiles=sc["P"])
    comb, _, _ = slit2d.combine_nods(box.flux, box.flux_var, box.dq)
    lost = 1 - np.nanmedian(comb / sc["F"])
    assert lost > 0.02, lost  # several per cent: the overlap of the wings


def test_nod_difference_is_the_mean_of_the_other_nods():
    sc = scene((-0.5, 0.0, 0.5), seed=3)
    r = sc["rate"].copy()
    r[1, 5, 5] = np.nan  # one bad pixel: the others' mean without it
    b, bv = slit2d.nod_difference_background(r, sc["var"], sc["dq"])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.stack([np.nanmean(np.delete(r, k, axis=0), axis=0) for k in range(3)])
    np.testing.assert_allclose(b[:, 10:30], ref[:, 10:30], rtol=1e-12)
    assert b[0, 5, 5] == r[2, 5, 5]


def test_masked_background_leaves_the_source_out():
    centers = (-1.0, 1.0)  # a compact source, throws wider than the masks
    sc = scene(centers, seed=4, noise=False)
    # a source without wide wings: a Gaussian
    g = slit2d.profiles_from_cdf(lambda u, lam: 0.5 * (1 + erf(u / (np.sqrt(2) * 0.12))),
                                 sc["s"], sc["lam"], centers, SLIT)
    rate = np.where(np.isfinite(sc["s"])[None], sc["bkg"][None] + sc["F"] * g, np.nan)
    m = slit2d.source_masks(sc["s"], centers, 0.6)
    bkg, bvar, filled = slit2d.masked_background(rate, sc["var"], sc["dq"], m, sc["s"], order=1)
    inside = np.isfinite(sc["s"])
    np.testing.assert_allclose(bkg[inside], sc["bkg"][inside], rtol=1e-4)
    assert not filled.any()  # every pixel unmasked in some nod
    # without the masks the source would be in it
    b0, _, _ = slit2d.masked_background(rate, sc["var"], sc["dq"], np.zeros_like(m), sc["s"])
    assert np.nanmax(b0 - sc["bkg"]) > 10
    # masked in every nod: filled by the polynomial along the slit (a linear sky: exact)
    m2 = slit2d.source_masks(sc["s"], (0.0, 0.0), 0.6)
    bkg2, _, filled2 = slit2d.masked_background(np.where(inside, sc["bkg"], np.nan)[None].repeat(2, 0),
                                                sc["var"], sc["dq"], m2, sc["s"], order=1)
    assert filled2.sum() > 0
    np.testing.assert_allclose(bkg2[inside], sc["bkg"][inside], rtol=1e-9)


def test_optimal_and_box_on_the_joint_background_agree_with_truth():
    centers = (-0.5, 0.0, 0.5)
    sc = scene(centers, seed=5)
    fit = slit2d.joint_nod_fit(sc["rate"], sc["var"], sc["dq"], sc["P"])
    opt = slit2d.optimal_extract_nods(sc["rate"], sc["var"], sc["dq"], fit.background,
                                      np.zeros((NY, NX)), sc["P"])
    f, v, q = slit2d.combine_nods(opt.flux, opt.flux_var, opt.dq)
    assert abs(np.nanmedian(f / sc["F"]) - 1) < 0.005
    box = slit2d.box_extract_nods(sc["rate"], sc["var"], sc["dq"], fit.background,
                                  np.zeros((NY, NX)), sc["s"], centers, 4.0, profiles=sc["P"])
    fb, vb, _ = slit2d.combine_nods(box.flux, box.flux_var, box.dq)
    assert abs(np.nanmedian(fb / sc["F"]) - 1) < 0.01
    assert np.nanmedian(vb) > np.nanmedian(v)  # optimal is the better estimate


def test_joint_fit_with_model_variances_is_unbiased():
    # Poisson noise on bright data with data-derived variances: the fit weighted by them
    # comes out low; with the variance model it does not (many seeds, mean ratio)
    centers = (-0.25, 0.25)
    r_data, r_model = [], []
    for seed in range(20):
        sc = scene(centers, flux=400.0, sky=5.0, noise=False)
        rng = np.random.default_rng(100 + seed)
        k = 1.0  # (DN/s)^2 per DN/s: a faint source, S/N ~ 10 at the peak pixel
        clean = np.nan_to_num(sc["rate"])
        rate = rng.poisson(np.maximum(clean, 0) / k) * k + rng.normal(0, 0.3, clean.shape)
        rate = np.where(np.isfinite(sc["rate"]), rate, np.nan)
        vr = np.full(rate.shape, 0.09)
        vdata = vr + k * np.maximum(rate, 0)
        a = slit2d.joint_nod_fit(rate, vdata, sc["dq"], sc["P"], sigma_clip=None)
        b = slit2d.joint_nod_fit(rate, vdata, sc["dq"], sc["P"], sigma_clip=None,
                                 var_rnoise=vr, poisson_k=k)
        r_data.append(np.nanmean(a.flux / sc["F"]))
        r_model.append(np.nanmean(b.flux / sc["F"]))
    assert abs(np.mean(r_model) - 1) < 0.004, np.mean(r_model)
    assert np.mean(r_data) < np.mean(r_model) - 0.004, (np.mean(r_data), np.mean(r_model))
    assert slit2d.poisson_factor(rate, k * np.maximum(rate, 0)) == pytest.approx(k)


def test_joint_fit_rejects_a_cosmic_ray():
    centers = (-0.5, 0.5)
    sc = scene(centers, seed=6)
    r = sc["rate"].copy()
    y = int(np.nanargmax(sc["P"][0][:, 7]))
    r[0, y, 7] += 5000.0
    fit = slit2d.joint_nod_fit(r, sc["var"], sc["dq"], sc["P"])
    assert fit.rejected[0, y, 7]
    assert fit.dq[7] & dqflags.OUTLIER
    assert abs(fit.flux[7] - sc["F"][7]) < 4 * np.sqrt(fit.flux_var[7])
    raw = slit2d.joint_nod_fit(r, sc["var"], sc["dq"], sc["P"], sigma_clip=None)
    assert raw.flux[7] / sc["F"][7] - 1 > 0.5


def test_fit_nod_centers_finds_the_offsets():
    true = np.array([-0.33, 0.21])
    sc = scene(tuple(true), seed=7)

    def prof(c):
        return slit2d.profiles_from_cdf(cdf, sc["s"], sc["lam"], c, SLIT)

    got = slit2d.fit_nod_centers(sc["rate"], sc["var"], sc["dq"], prof, true + 0.05,
                                 search=0.1, steps=11)
    np.testing.assert_allclose(got, true, atol=0.01)


def test_combine_nods_and_integrations_match_numpy():
    rng = np.random.default_rng(8)
    f = rng.normal(10, 1, (3, 50))
    v = rng.uniform(0.5, 2, (3, 50))
    q = np.zeros((3, 50), np.uint32)
    q[1, 4] = dqflags.DO_NOT_USE
    q[2, 4] = dqflags.DO_NOT_USE
    q[0, 4] = dqflags.DO_NOT_USE
    q[2, 9] = dqflags.OUTLIER
    out, ov, od = slit2d.combine_nods(f, v, q)
    w = 1 / v
    w[:, 4] = 0
    with np.errstate(invalid="ignore"):
        ref = (w * f).sum(0) / w.sum(0)
    np.testing.assert_allclose(out[np.arange(50) != 4], ref[np.arange(50) != 4], rtol=1e-12)
    assert np.isnan(out[4]) and od[4] & dqflags.DO_NOT_USE and od[9] == dqflags.OUTLIER
    sci = rng.normal(5, 1, (4, 6, 7))
    var = rng.uniform(0.5, 2, (4, 6, 7))
    dq = np.zeros(sci.shape, np.uint32)
    dq[2, 1, 1] = dqflags.JUMP_DET | dqflags.DO_NOT_USE
    r, rv, rdq = slit2d.combine_integrations(sci, var, dq, weights="inverse_variance")
    w = 1 / var
    w[2, 1, 1] = 0
    np.testing.assert_allclose(r, (w * sci).sum(0) / w.sum(0), rtol=1e-12)
    np.testing.assert_allclose(rv, 1 / w.sum(0), rtol=1e-12)
    assert rdq[1, 1] == 0
    r, rv, _ = slit2d.combine_integrations(sci, var, dq)  # equal weights
    m = np.ones(sci.shape)
    m[2, 1, 1] = 0
    np.testing.assert_allclose(r, (m * sci).sum(0) / m.sum(0), rtol=1e-12)
    np.testing.assert_allclose(rv, (m * var).sum(0) / m.sum(0) ** 2, rtol=1e-12)


def test_equal_weights_are_unbiased_where_data_variances_are_not():
    # Poisson integrations with their own (data-derived) variance: inverse-variance
    # weights pull the mean low by ~1/(S/N)^2; equal weights do not
    rng = np.random.default_rng(10)
    true = 25.0
    sci = rng.poisson(true, (4, 200, 200)).astype(float)
    var = np.maximum(sci, 1.0)
    dq = np.zeros(sci.shape, np.uint32)
    eq, _, _ = slit2d.combine_integrations(sci, var, dq)
    iv, _, _ = slit2d.combine_integrations(sci, var, dq, weights="inverse_variance")
    assert abs(eq.mean() / true - 1) < 0.002
    assert iv.mean() / true - 1 < -0.02  # the bias equal weights avoid


def test_ensemble_outliers_use_the_time_series_kernel():
    rng = np.random.default_rng(9)
    sci = rng.normal(100, 1, (5, 8, 8)).astype(np.float32)
    err = np.ones_like(sci)
    sci[3, 2, 2] += 50
    dq = slit2d.flag_ensemble_outliers(sci, err, np.zeros(sci.shape, np.uint32))
    assert dq[3, 2, 2] & dqflags.OUTLIER and dq.sum() == dq[3, 2, 2]
    # too few integrations to tell: nothing flagged
    assert not slit2d.flag_ensemble_outliers(sci[:2], err[:2], np.zeros((2, 8, 8), np.uint32)).any()
