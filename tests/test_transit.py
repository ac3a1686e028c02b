"""Quick-look transit fit: real WASP-107b light curve and injected batman transits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import require_shared, shared_path

from nirbeam.sinks.fit_json import write_fit_json
from nirbeam.sources.lightcurve_tables import fit_table, read_lightcurve_table
from nirbeam.transforms.transit import (
    FitConfig,
    fit_spectroscopic,
    fit_transit,
    transit_duration,
    transit_model,
)

LC = shared_path("lightcurves")
ECSV = LC / "wasp107b_g395h_nrs1_white_eureka_s5.ecsv"
PARAMS = LC / "wasp107b_g395h_nrs1_emcee_fitparams.csv"

TRUE = dict(t0=0.0, per=3.0, rp=0.12, a=10.0, inc=88.5, ecc=0.0, w=90.0, u1=0.15, u2=0.25)


def _sim(seed, noise=400e-6, n=500, slope=2e-3):
    rng = np.random.default_rng(seed)
    t = np.linspace(-0.15, 0.15, n)
    f = transit_model(t, TRUE) * (1.0 + slope * t)
    return t, f + rng.normal(0, noise, n), np.full(n, noise)


def _sim_config(**kw):
    base = dict(
        per=3.0,
        t0=0.001,
        rp=0.1,
        a=9.0,
        inc=88.0,
        u=(0.15, 0.25),
        free=("t0", "rp", "a", "inc"),
        baseline_order=1,
    )
    base.update(kw)
    return FitConfig(**base)


def test_wasp107b_rp_matches_published():
    require_shared(ECSV, PARAMS)
    ref = pd.read_csv(PARAMS).set_index("Parameter")
    rp_ref = ref.loc["rp", "Mean"]
    rp_ref_err = 0.5 * (ref.loc["rp", "+1sigma"] - ref.loc["rp", "-1sigma"])
    # Their fit: rp, t0, inc, a, u1, u2 free, linear baseline (c0, c1); period fixed.
    cfg = FitConfig(
        per=5.7214742,
        t0=None,
        rp=0.14,
        a=18.0,
        inc=89.5,
        u=(0.1, 0.2),
        free=("t0", "rp", "a", "inc", "u1", "u2"),
        baseline_order=1,
    )
    res = fit_table(ECSV, cfg)
    rp, erp = res.params["rp"], res.errors["rp"]
    nsig = (rp - rp_ref) / rp_ref_err
    print(
        f"WASP-107b Rp/R* = {rp:.5f} ± {erp:.5f} (published {rp_ref:.5f} ± {rp_ref_err:.5f}); "
        f"diff {nsig:+.2f} sigma; chi2/dof {res.reduced_chi2:.3f}, rms {res.rms_ppm:.0f} ppm; "
        f"inc {res.params['inc']:.3f}, a {res.params['a']:.3f}, t0 {res.params['t0']:.6f}"
    )
    assert res.success
    assert abs(nsig) < 3
    # our error is realistic compared with theirs (same data)
    assert 0.5 < erp / rp_ref_err < 2.0
    assert abs(res.params["t0"] - ref.loc["t0", "Mean"]) < 5 * ref.loc["t0", "+1sigma"]
    assert abs(res.params["a"] - ref.loc["a", "Mean"]) < 0.5
    # residual RMS equals the scatter of the data about the authors' model (~340 ppm)
    assert 250 < res.rms_ppm < 450


def test_injected_depth_pulls():
    """Over several seeds the depth pulls are ~N(0,1): the errors are honest, unbiased."""
    pulls = []
    for seed in range(24):
        t, f, e = _sim(seed)
        r = fit_transit(t, f, e, _sim_config())
        depth, derr = r.depth, r.depth_error
        pulls.append((depth - TRUE["rp"] ** 2) / derr)
    pulls = np.array(pulls)
    print(
        "depth pulls:",
        np.round(pulls, 2),
        "mean",
        pulls.mean().round(2),
        "std",
        pulls.std(ddof=1).round(2),
    )
    assert np.mean(np.abs(pulls) < 1) >= 0.5  # ~68% expected; >= 50% for 24 draws
    assert np.all(np.abs(pulls) < 3.5)
    assert abs(pulls.mean()) < 3 / np.sqrt(pulls.size)  # no bias beyond 3 sigma_mean
    assert 0.6 < pulls.std(ddof=1) < 1.5  # (60 seeds gave 1.04 when written)


def test_error_scaling_when_noise_underestimated():
    t, f, e = _sim(99, noise=600e-6)
    r1 = fit_transit(t, f, e, _sim_config())
    r2 = fit_transit(t, f, e / 2, _sim_config())  # errors claimed 2x too small
    assert r1.error_scale == pytest.approx(1.0, abs=0.1)
    assert r2.reduced_chi2 == pytest.approx(4 * r1.reduced_chi2, rel=0.05)
    assert r2.errors["rp"] == pytest.approx(r1.errors["rp"], rel=0.1)


def test_quadratic_baseline_and_fixed_params():
    rng = np.random.default_rng(5)
    t = np.linspace(-0.15, 0.15, 400)
    f = transit_model(t, TRUE) * (1 + 3e-3 * t + 0.05 * t**2) + rng.normal(0, 300e-6, t.size)
    r = fit_transit(
        t,
        f,
        np.full(t.size, 300e-6),
        _sim_config(baseline_order=2, free=("rp",), t0=0.0, a=10.0, inc=88.5),
    )
    assert set(r.errors) == {"rp", "c0", "c1", "c2"}
    assert r.params["a"] == 10.0 and r.params["inc"] == 88.5
    assert abs(r.params["rp"] - 0.12) < 4 * r.errors["rp"]
    assert abs(r.params["c2"] / r.params["c0"] - 0.05) < 4 * r.errors["c2"]


def test_fit_table_formats_and_dq(tmp_path):
    t, f, e = _sim(7)
    f = f * 1234.0  # unnormalised
    e = e * 1234.0
    dq = np.zeros(t.size, np.uint32)
    dq[::50] = 4
    f_bad = f.copy()
    f_bad[::50] *= 0.5  # rows with dq must be ignored
    df = pd.DataFrame({"int_mid_BJD_TDB": t, "flux": f_bad, "flux_error": e, "dq": dq})
    df.to_parquet(tmp_path / "lc.parquet")
    df.to_csv(tmp_path / "lc.csv", index=False)
    df.rename(columns={"int_mid_BJD_TDB": "tt", "flux": "ff", "flux_error": "ee"}).to_csv(
        tmp_path / "custom.csv", index=False
    )
    cfg = _sim_config()
    ref = fit_transit(t[dq == 0], f[dq == 0], e[dq == 0], cfg)
    for p, cols in [
        ("lc.parquet", None),
        ("lc.csv", None),
        ("custom.csv", {"time": "tt", "flux": "ff", "error": "ee"}),
    ]:
        r = fit_table(tmp_path / p, cfg, columns=cols)
        assert r.time.size == int((dq == 0).sum())
        assert r.params["rp"] == pytest.approx(ref.params["rp"], rel=1e-6)
        assert r.norm == pytest.approx(1234.0, rel=2e-3)
    with pytest.raises(KeyError, match="no time column"):
        read_lightcurve_table(tmp_path / "custom.csv")
    with pytest.raises(ValueError, match="unsupported"):
        read_lightcurve_table(tmp_path / "lc.txt")
    # Eureka names on the real file
    require_shared(ECSV)
    tt, ff, ee, use = read_lightcurve_table(ECSV)
    assert tt.size == 1230 and use.all() and np.median(ee) == pytest.approx(342e-6, rel=0.05)
    out = write_fit_json(ref, tmp_path / "fit.json")
    d = json.loads(out.read_text())
    assert d["params"]["rp"] == pytest.approx(ref.params["rp"]) and "error_note" in d
    assert d["n_points"] == ref.time.size


def test_spectroscopic_depths():
    rng = np.random.default_rng(17)
    t = np.linspace(-0.15, 0.15, 400)
    rps = np.array([0.11, 0.12, 0.125, 0.118])
    flux = np.empty((t.size, rps.size))
    for k, rp in enumerate(rps):
        flux[:, k] = transit_model(t, dict(TRUE, rp=rp)) + rng.normal(0, 800e-6, t.size)
    err = np.full_like(flux, 800e-6)
    white = fit_transit(t, flux.mean(axis=1), err[:, 0] / 2, _sim_config())
    ts = fit_spectroscopic(t, flux, err, np.array([3.0, 3.5, 4.0, 4.5]), white)
    pull = (ts.rp - rps) / ts.rp_error
    print("spectroscopic rp pulls", np.round(pull, 2))
    assert np.all(np.abs(pull) < 3.5)
    np.testing.assert_allclose(ts.depth, ts.rp**2)
    # limb darkening per bin: free with Gaussian priors centred on the white light's
    for r in ts.results:
        assert r.free == ("rp", "u1", "u2") and r.params["inc"] == white.params["inc"]
        assert r.priors["u1"][0] == white.params["u1"]
    fixed = fit_spectroscopic(t, flux, err, np.array([3.0, 3.5, 4.0, 4.5]),
                              replace_config(white, spec_ld="fixed"))
    for r in fixed.results:
        assert r.free == ("rp",) and r.params["u1"] == white.params["u1"]


def replace_config(res, **kw):
    from dataclasses import replace

    return replace(res, config=replace(res.config, **kw))


def test_config_validation_and_duration():
    with pytest.raises(ValueError, match="needs 2"):
        FitConfig(u=(0.1,))
    with pytest.raises(ValueError, match="unknown parameter"):
        FitConfig(free=("rp", "depth"))
    # WASP-107b: T14 ~ 2.75 h
    assert transit_duration(5.7214742, 0.1438, 18.1, 89.63) * 24 == pytest.approx(2.75, abs=0.1)
