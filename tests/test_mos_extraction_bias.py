"""MOS extraction against a known truth: the flux of a source the slit's ends truncate
(noiseless, so any error is the method's), a faint galaxy like CEERS 933 with jwst-style
data-derived variances, the master background."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from nirbeam.pipelines.mos import extract_ensemble
from nirbeam.sim.mos import bar_shadow_profile
from nirbeam.transforms import barshadow as bs
from nirbeam.transforms import mos_extract as mx

P, MARGIN, NX = 6, 1, 60
NBOX = 3 * P + 2 * MARGIN
T = bar_shadow_profile(NBOX, MARGIN, P, 4.6, 0.55, 0.75)


def _slitlet(sig, ypos, *, sky=3.0, flux=20.0, noise=0.0, seed=0):
    """Three nods of a 3-shutter slitlet as the simulator makes them ((sky + source) x T),
    divided by the (here exact) bar shadow."""
    rng = np.random.default_rng(seed)
    y = np.arange(NBOX, dtype=float)
    R, VR, VP = [], [], []
    for sh in (1, 0, 2):
        yc = MARGIN + P * sh + (P - 1) / 2 + ypos * P
        prof = ndtr((y + 0.5 - yc) / sig) - ndtr((y - 0.5 - yc) / sig)
        img = T[:, None] * (sky + prof[:, None] * flux) * np.ones((1, NX))
        vr, vp = np.full(img.shape, 0.02), 0.01 * img
        R.append(img + noise * rng.normal(size=img.shape) * np.sqrt(vr + vp))
        VR.append(vr)
        VP.append(vp)
    R, VR, VP = map(np.stack, (R, VR, VP))
    Q = np.zeros(R.shape, np.uint32)
    r, v, q = bs.apply_bar_shadow(R, VR + VP, Q, T)
    parts = tuple(bs.apply_bar_shadow(a, a, Q, T)[1] for a in (VR, VP))
    wl = np.broadcast_to(np.linspace(1, 5, NX)[None], r.shape[1:]).copy()
    wl[~(T >= 0.2)] = np.nan
    info = {"slitlet": "x", "detector": "NRS1", "source_id": 1, "source_name": "x",
            "expected_centers": np.array([MARGIN + P * sh + (P - 1) / 2 for sh in (1, 0, 2)])}
    return r, v, q, wl, parts, info


def test_truncated_extended_source_flux_is_exact_without_noise():
    # an extended source low in its shutter: in the x11 nod a tenth of its light falls
    # beyond the slit's end, so its flux scales with the fitted width (before the
    # continuum refinement the grid's 2.389 px for the true 2.4 px gave -0.4 %)
    r, v, q, wl, parts, info = _slitlet(2.4, -0.14)
    res = extract_ensemble(r, v, q, wl, info, lambda a, lam: np.asarray(a), {}, {}, var_parts=parts)
    assert abs(res.summary["profile"]["sigma0_px"] - 2.4) < 2e-3
    assert abs(np.nanmean(res.spectrum.flux) / 20.0 - 1) < 5e-4


def test_master_background_recovers_the_sky():
    rng = np.random.default_rng(2)
    lam = np.linspace(1, 5, NX)
    sky = 2.0 * np.sqrt(lam)
    cuts, vs, qs, wls = [], [], [], []
    for _ in range(4):
        model = T[:, None] * sky[None, :] * np.ones((3, 1, 1))
        var = 0.02 + 0.01 * model
        c = model + rng.normal(size=model.shape) * np.sqrt(var)
        r, vv, q = bs.apply_bar_shadow(c, var, np.zeros(c.shape, np.uint32), T)
        wl = np.broadcast_to(lam[None], r.shape[1:]).copy()
        wl[~(T >= 0.2)] = np.nan
        cuts.append(r)
        vs.append(vv)
        qs.append(q)
        wls.append(wl)
    mb = mx.master_background(cuts, vs, qs, wls, weights_rows=T)
    s, sv = mb.at(lam)
    z = (s - sky) / np.sqrt(sv)
    assert abs(np.mean(z)) < 0.5 and 0.5 < np.std(z) < 1.5


def test_faint_galaxy_optimal_flux_unbiased_with_model_variance():
    # S/N ~2 per element like CEERS 933. The files' Poisson variances come from each
    # pixel's own value (as jwst's): weighting by them biases the optimal flux high
    # (+3.6 % against the true variances on these realisations, bench/mos_faint_synth.py);
    # the level-2 default (extract_modelled) weights by a variance model instead.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from mos_faint_synth import run_one

    seeds = range(3)
    model = np.array([run_one(s, "model")["optimal_over_truth"] for s in seeds])
    true = np.array([run_one(s, "true")["optimal_over_truth"] for s in seeds])
    files = np.array([run_one(s, "files")["optimal_over_truth"] for s in seeds])
    # paired on the same noise: the weights' effect without the realisations' scatter
    assert abs(np.mean(model - true)) < 0.012, (model, true)
    assert np.mean(files - true) > 0.02, (files, true)
    assert abs(np.mean(model) - 1) < 0.08  # the realisations' own scatter: ~0.06 each


def test_dark_pedestal_and_its_effect_on_the_bar_shadow():
    from nirbeam.transforms import msa_light

    rng = np.random.default_rng(7)
    ped, nx = 0.05, 300
    ref = bar_shadow_profile(NBOX, MARGIN, P, 4.6, 0.42, 1.05)
    # a frame: 6 sky slitlets of NBOX rows with 4 unlit rows between them, plus an offset
    ny = 6 * (NBOX + 4) + 4
    truth = np.zeros((ny, nx))
    rows = np.zeros(ny, bool)
    boxes = []
    for i in range(6):
        y0 = 4 + i * (NBOX + 4)
        truth[y0:y0 + NBOX] = T[:, None] * 2.0
        rows[y0:y0 + NBOX] = True
        boxes.append(y0)
    var = 0.04 + 0.01 * truth
    rate = truth + ped + rng.normal(size=truth.shape) * np.sqrt(var)
    dq = np.zeros(rate.shape, np.uint32)
    lev, err, n = msa_light.dark_pedestal(rate, dq, ~rows)
    assert abs(lev - ped) < 4 * err and n == (~rows).sum() * nx

    def measured(r):
        cuts = [r[y0:y0 + NBOX] for y0 in boxes]
        return bs.measure_bar_shadow(cuts, [var[y0:y0 + NBOX] for y0 in boxes],
                                     [dq[y0:y0 + NBOX] for y0 in boxes], ref)

    end = 1  # a slitlet's partly open end row (T = 0.3)
    biased = measured(rate)
    fixed = measured(rate - lev)
    # (T s + d) / (s + d): the offset lifts the end row's transmission by (1 - T) d / s
    assert biased.transmission[end] - T[end] > 5 * biased.error[end]
    assert abs(fixed.transmission[end] - T[end]) < 4 * fixed.error[end]


def test_nod_offsets_recover_injected_levels():
    rng = np.random.default_rng(3)
    n, ny, nx = 3, 25, 200
    prof = mx.GaussianProfile((14.0, 19.0, 9.0), 0.95)
    along = np.broadcast_to(np.arange(ny, dtype=float)[:, None], (ny, nx))
    inj = np.array([0.006, -0.002, -0.004])
    r = 0.1 + inj[:, None, None] + rng.normal(0, 0.02, (n, ny, nx))
    off = mx.nod_offsets(r, np.zeros(r.shape, np.uint32), along, prof)
    got = off.mean(axis=1)
    assert np.allclose(got, inj - inj.mean(), atol=8e-4), got
