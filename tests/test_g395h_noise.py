"""Issue 13: G395H at the noise floor. One test per cause, each able to fail without its fix.

1. 1/f cleaning at group level runs before jump detection (a common-mode column offset in
   one group difference is not flagged as jumps);
3. the flicker parameters take DETECTOR (NRS2 readout direction);
4. a column without usable pixel is NaN (never a 0 summed as flux), and pixels the profile
   fixed do not put DO_NOT_USE on the column;
5. the 1/f model's own noise is in VAR_RNOISE / ERR (chi2 of rates against truth ~ 1);
6. the group-level scene mask excludes the extraction aperture (PSF wings).
Cause 2 (reference pixels) is in tests/test_refpix_jwst.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms.detector1 import RampTiming, run_detector1
from nirbeam.transforms.extract import box_extract, optimal_extract
from nirbeam.transforms.flicker import FlickerParams, make_group_hook, scene_mask
from nirbeam.transforms.lightcurve import white_light
from nirbeam.transforms.reference import ReferenceArrays
from nirbeam.transforms.trace import TraceModel

RNG = np.random.default_rng(1313)


def _ramp_with_column_step(seed=0, ng=12, ny=32, nx=256, rn=14.0, step=120.0, g_step=6):
    """Flat faint scene, white read noise, and in group difference ``g_step`` a common
    offset over a band of columns (a 1/f excursion), persisting in later groups as
    1/f offsets do (the level moved; nothing of the pixel changed)."""
    rng = np.random.default_rng(seed)
    rate = 5.0  # DN/s, on the rows ny // 2 and up; the rows below are dark background
    tg = 1.0
    sig = rate * tg * np.arange(1, ng + 1)[:, None, None] * np.ones((ng, ny, nx))
    sig[:, : ny // 2] = 0.0
    reads = sig + rng.normal(0, rn / np.sqrt(2), (ng, ny, nx))
    band = slice(60, 140)
    reads[g_step:, :, band] += step
    ramp = np.rint(reads + 10000.0).astype(np.uint16)
    refs = ReferenceArrays.flat(ny, nx, ng, bias=10000.0, readnoise=rn)
    return ramp, refs, RampTiming(ng, 1, 0, tg, tg), rate


def test_cause1_cleaning_before_jump_keeps_ramps_whole():
    ramp, refs, timing, rate = _ramp_with_column_step()
    mask = np.zeros(ramp.shape[1:], bool)
    mask[:16] = True
    new = run_detector1(ramp, refs, timing, group_hook=make_group_hook(FlickerParams(), mask))
    old = run_detector1(ramp, refs, timing,
                        group_hook=make_group_hook(FlickerParams(before_jump=False), mask))
    band = slice(60, 140)
    print(f"jumps flagged: cleaning before jump {new.n_jumps}, after jump {old.n_jumps}")
    # the excursion read as a jump in (almost) every pixel of the band when jump ran first
    assert old.n_jumps > 0.9 * 32 * 80
    assert new.n_jumps < 50
    # and the rates of the band stay unbiased and as precise as elsewhere
    assert abs(np.median(new.rate[16:, band]) - rate) < 0.1
    assert np.std(new.rate[16:, band]) < 1.2 * np.std(new.rate[16:, 150:])


def test_cause3_flicker_detector_from_keyword():
    p = FlickerParams(method="nsclean")
    assert p.for_detector("NRS2").cleaner_kwargs()["reverse_columns"] is True
    assert p.for_detector("nrs1").cleaner_kwargs()["reverse_columns"] is False
    assert p.for_detector("UNKNOWN") is p


def test_cause3_pipeline_passes_detector(monkeypatch):
    """The detector1 record step builds its hook from FlickerParams set from DETECTOR."""
    import nirbeam.stream.rate_steps as pl  # Calibrate's module (pipeline re-exports it)
    import nirbeam.transforms.flicker as fl
    from nirbeam.stream.records import ExposureMeta, IntegrationKey, IntegrationRecord, IntTimes
    from nirbeam.stream.settings import Settings

    seen = {}

    def fake_hook(params, mask=None):
        seen["detector"] = params.detector
        return lambda g, q, p: g

    monkeypatch.setattr(fl, "make_group_hook", fake_hook)
    ng, ny, nx = 4, 8, 16
    refs = ReferenceArrays.flat(ny, nx, ng, bias=100.0)
    monkeypatch.setattr(pl, "refs_from_store", lambda *a, **k: refs)
    monkeypatch.setattr(pl, "scene_mask_from_store", lambda *a, **k: None)
    meta = ExposureMeta("jw0_01", "NRS2", "NIRSPEC", "NRS_BRIGHTOBJ", "NRSRAPID", "SUB",
                        1000, 100, nx, ny, 1, ng, 1, 0, 1.0, 1.0, 4.0)
    ramp = np.full((ng, ny, nx), 200, np.uint16)
    rec = IntegrationRecord(IntegrationKey("jw0_01", "NRS2", 1), meta, IntTimes(0, 0, 0, 0, 0, 0),
                            ramp=ramp)
    pl.Calibrate("mem", Settings())(rec)
    assert seen["detector"] == "NRS2"


def _scene(ny=16, nx=40, seed=2):
    rng = np.random.default_rng(seed)
    yc = 7.5
    y = np.arange(ny)[:, None]
    prof = np.exp(-0.5 * ((y - yc) / 1.0) ** 2) * np.ones((1, nx))
    prof /= prof.sum(axis=0, keepdims=True)
    flux = 1000.0 + 10 * np.arange(nx)
    rate = prof * flux[None, :] + rng.normal(0, 0.5, (ny, nx))
    var = np.full((ny, nx), 0.25) + np.abs(prof * flux[None, :]) / 10
    trace = TraceModel(coefficients=(yc,), width_coefficients=(1.0,), x_range=(0.0, nx - 1.0))
    return rate, var, prof, trace, flux


@pytest.mark.parametrize("method", ["box", "optimal"])
def test_cause4_empty_column_is_nan_and_fixed_pixels_not_dnu(method):
    rate, var, prof, trace, flux = _scene()
    dq = np.zeros(rate.shape, np.uint32)
    dq[:, 5] = dqflags.DO_NOT_USE | dqflags.DEAD  # a whole dead column
    dq[7, 9] = dqflags.DO_NOT_USE | dqflags.HOT  # one bad pixel at the trace centre
    if method == "box":
        sp = box_extract(rate, var, dq, trace, 4.0, profile=prof)
    else:
        sp = optimal_extract(rate, var, dq, prof)
    assert np.isnan(sp.flux[5]) and np.isnan(sp.flux_error[5])
    assert sp.dq[5] & dqflags.DO_NOT_USE
    # the profile fixed column 9: a finite flux near the truth, HOT kept, no DO_NOT_USE
    assert np.isfinite(sp.flux[9]) and abs(sp.flux[9] / flux[9] - 1) < 0.02
    assert sp.dq[9] & dqflags.HOT and not sp.dq[9] & dqflags.DO_NOT_USE
    # the white light (also with skip_bits=0, as the live path) never counts the column as 0
    wl = np.arange(rate.shape[1], dtype=float)
    for skip in (0, dqflags.DO_NOT_USE):
        f, _, _ = white_light(sp.flux[None], sp.flux_error[None], sp.dq[None], wl, skip_bits=skip)
        good = np.isfinite(sp.flux)
        expect = good.size * sp.flux[good].mean()
        np.testing.assert_allclose(f[0], expect, rtol=1e-12)


def test_cause6_scene_mask_excludes_aperture():
    ny, nx = 32, 512
    y = np.arange(ny)[:, None]
    yc = 15.3
    core = np.exp(-0.5 * ((y - yc) / 0.9) ** 2)
    wing = 1.0 / (1.0 + ((y - yc) / 2.7) ** 2)  # Lorentzian-like PSF wings
    img = (core / core.sum() * 0.98 + wing / wing.sum() * 0.02) * 4000.0 * np.ones((1, nx))
    img = img + RNG.normal(0, 5.0, (ny, nx))
    err = np.full((ny, nx), 5.0)
    plain = scene_mask(img, err)
    withap = scene_mask(img, err, aperture=6.0)
    inside = np.abs(y - yc) <= 6.0
    print("aperture pixels the plain mask keeps:", plain[np.broadcast_to(inside, (ny, nx))].mean())
    assert plain[np.broadcast_to(inside, (ny, nx))].mean() > 0.02  # wings counted as bkg
    assert not withap[np.broadcast_to(inside, (ny, nx))].any()
    # the wing light left in the background biases a column mean; excluding the aperture
    # removes the part of that bias from within it (wings further out remain)
    bias_plain = np.mean([img[plain[:, x], x].mean() for x in range(nx)])
    bias_ap = np.mean([img[withap[:, x], x].mean() for x in range(nx)])
    print(f"mean background level: plain mask {bias_plain:.3f}, aperture masked {bias_ap:.3f}")
    assert bias_ap < bias_plain - 0.01
    assert FlickerParams().mask_kwargs()["aperture"] == 6.0


def _oof_cube(seed, ng=20, ny=32, nx=512, rn=14.0, oof=8.0, rate_src=3.0):
    """Faint source on rows >= 18, rows < 18 dark; per-column 1/f offsets per group (a
    random walk along the ramp, common to the column) and white read noise."""
    rng = np.random.default_rng(seed)
    rate = np.zeros((ny, nx))
    rate[18:] = rate_src
    sig = np.cumsum(rng.poisson(np.broadcast_to(rate, (ng, ny, nx))), axis=0).astype(float)
    col = np.cumsum(rng.normal(0, oof, (ng, nx)), axis=0)
    reads = 10000.0 + sig + col[:, None, :] + rng.normal(0, rn / np.sqrt(2), (ng, ny, nx))
    refs = ReferenceArrays.flat(ny, nx, ng, bias=10000.0, readnoise=rn, gain=1.0)
    return np.rint(reads).astype(np.uint16), refs, RampTiming(ng, 1, 0, 1.0, 1.0), rate


def _rate_stats(hook_params, oof=8.0, seeds=range(3)):
    """(empirical variance of rate - truth, mean ERR^2) over the source rows."""
    v, e = [], []
    for seed in seeds:
        ramp, refs, timing, rate = _oof_cube(seed, oof=oof)
        mask = np.zeros(rate.shape, bool)
        mask[:16] = True
        hook = None if hook_params is None else make_group_hook(hook_params, mask)
        res = run_detector1(ramp, refs, timing, group_hook=hook)
        v.append((res.rate - rate)[18:])
        e.append(res.err[18:])
    return float(np.var(np.concatenate(v))), float(np.mean(np.concatenate(e) ** 2))


def test_group_models_against_first_group_add_no_random_walk():
    """Fitted on group differences, the clipped-mean / median models' errors add up along
    the ramp; fitted against the first group they stay white (issue 13 noise floor)."""
    base, _ = _rate_stats(None, oof=0.0)
    first, _ = _rate_stats(FlickerParams(), oof=8.0)
    prev, _ = _rate_stats(FlickerParams(group_reference="previous"), oof=8.0)
    med, _ = _rate_stats(FlickerParams(statistic="median"), oof=8.0)
    print(f"rate variance / no-1/f no-cleaning: against first group {first / base:.3f}, "
          f"median {med / base:.3f}, on differences {prev / base:.3f}")
    assert first / base < 1.08 and med / base < 1.12
    assert prev / base > 1.15


def test_cause5_one_over_f_model_noise_in_err():
    """ERR includes the model's noise: empirical variance / mean ERR^2 is that of the
    same ramps without 1/f and without cleaning (the ramp-fit convention), not above."""
    v0, e0 = _rate_stats(None, oof=0.0)
    v1, e1 = _rate_stats(FlickerParams(), oof=8.0)
    v2, e2 = _rate_stats(FlickerParams(error_term=False), oof=8.0)
    r0, r1, r2 = v0 / e0, v1 / e1, v2 / e2
    print(f"var/err^2: no 1/f {r0:.4f}, cleaned with model noise {r1:.4f}, without {r2:.4f}")
    assert abs(r1 / r0 - 1) < 0.02
    assert r2 / r0 > 1.025
