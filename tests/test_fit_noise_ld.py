"""Fit: red noise (time-averaging beta), limb darkening per bin with priors, no default
orbit, and light-curve tables of nirbeam, jwst and Eureka read one detector at a time."""

import os

import numpy as np
import pytest
from astropy.table import QTable, Table

from nirbeam.sources.lightcurve_tables import read_lightcurve_tables
from nirbeam.transforms.transit import (
    FitConfig,
    fit_spectroscopic,
    fit_transit,
    time_averaging_beta,
    transit_model,
)

TRUE = dict(t0=0.0, per=3.0, rp=0.12, a=10.0, inc=88.5, ecc=0.0, w=90.0, u1=0.15, u2=0.25)
CFG = dict(per=3.0, t0=0.0, rp=0.1, a=10.0, inc=88.5, u=(0.15, 0.25), free=("rp",))


def _shared(*parts):
    d = os.path.abspath(os.path.dirname(__file__))
    for _ in range(4):
        d = os.path.dirname(d)
        cand = os.path.join(d, "shared", "data", *parts)
        if os.path.exists(cand):
            return cand
    return os.path.join("shared", "data", *parts)


def test_beta_is_one_for_white_noise_and_large_for_red_noise():
    rng = np.random.default_rng(3)
    betas_white = [time_averaging_beta(rng.normal(0, 1, 1000)) for _ in range(20)]
    # white noise: beta ~ 1 (floored at 1; the mean of noisy ratios sits slightly above)
    assert np.mean(betas_white) < 1.1
    # red noise: white + a random walk of comparable total scatter
    red = rng.normal(0, 1, 1000) + np.cumsum(rng.normal(0, 0.15, 1000))
    red -= np.polyval(np.polyfit(np.arange(1000), red, 1), np.arange(1000))
    assert time_averaging_beta(red) > 2.0


def test_red_noise_inflates_the_errors():
    rng = np.random.default_rng(8)
    t = np.linspace(-0.15, 0.15, 600)
    red = np.convolve(rng.normal(0, 1, t.size + 59), np.ones(60) / np.sqrt(60), "valid")
    f = transit_model(t, TRUE) + 400e-6 * rng.normal(size=t.size) + 300e-6 * red
    e = np.full(t.size, 500e-6)
    on = fit_transit(t, f, e, FitConfig(**CFG))
    off = fit_transit(t, f, e, FitConfig(**CFG, red_noise=False))
    assert on.beta > 1.3 and off.beta == 1.0
    assert on.errors["rp"] == pytest.approx(off.errors["rp"] * on.beta, rel=1e-6)
    assert any("beta" in a for a in on.assumptions)


def test_no_default_period():
    t = np.linspace(-0.1, 0.1, 100)
    with pytest.raises(ValueError, match="no orbital period"):
        fit_transit(t, np.ones(t.size), np.full(t.size, 1e-3), FitConfig())
    assert FitConfig().per is None


def test_limb_darkening_per_bin_reduces_the_chromatic_bias():
    """Bins whose true limb darkening differs from the white light's: with the white-light
    coefficients fixed the depths are biased; free with priors they are not."""
    rng = np.random.default_rng(11)
    t = np.linspace(-0.12, 0.12, 1500)
    u1s = np.array([0.0, 0.55])
    noise = 80e-6
    flux = np.stack([transit_model(t, dict(TRUE, u1=u)) + rng.normal(0, noise, t.size)
                     for u in u1s], axis=1)
    err = np.full_like(flux, noise)
    white = fit_transit(t, flux.mean(axis=1), err[:, 0] / np.sqrt(2),
                        FitConfig(**{**CFG, "u": (0.275, 0.25)}))
    wl = np.array([3.0, 4.0])
    from dataclasses import replace

    fixed = fit_spectroscopic(t, flux, err, wl, replace(white, config=replace(white.config,
                                                                               spec_ld="fixed")))
    prior = fit_spectroscopic(t, flux, err, wl, replace(
        white, config=replace(white.config, spec_ld="prior", ld_prior_sigma=0.3)))
    pull_fixed = (fixed.rp - TRUE["rp"]) / fixed.rp_error
    pull_prior = (prior.rp - TRUE["rp"]) / prior.rp_error
    print("rp pulls, LD fixed to white:", np.round(pull_fixed, 1), " LD free with priors:",
          np.round(pull_prior, 1), " u1 fitted:", np.round(prior.limb_darkening()[0][:, 0], 3))
    # the fixed fit's bias, in units of the honest (per-bin LD) error: large. (Its own
    # pulls stay ~3.7 only because sqrt(chi2/dof) and beta inflate its errors.)
    bias_fixed = np.abs(fixed.rp - TRUE["rp"]) / prior.rp_error
    print("fixed-LD bias / per-bin-LD error:", np.round(bias_fixed, 1))
    assert np.max(bias_fixed) > 5 and np.max(np.abs(pull_fixed)) > 3
    assert np.all(np.abs(pull_prior) < 3)
    u_fit = prior.limb_darkening()[0][:, 0]
    assert abs(u_fit[0] - u1s[0]) < abs(0.275 - u1s[0]) and abs(u_fit[1] - u1s[1]) < abs(0.275 - u1s[1])


def _two_detector_curves(n=300, seed=1):
    rng = np.random.default_rng(seed)
    t = np.linspace(-0.15, 0.15, n)
    out = {}
    for det, rp, level in (("NRS1", 0.12, 1000.0), ("NRS2", 0.10, 600.0)):
        f = level * (transit_model(t, dict(TRUE, rp=rp)) + rng.normal(0, 300e-6, n))
        out[det] = (t, f, np.full(n, level * 300e-6))
    return out


def test_two_detectors_never_mixed(tmp_path):
    curves = _two_detector_curves()
    # nirbeam's long table
    rows = {k: [] for k in ("exposure", "detector", "int_mid_BJD_TDB", "flux", "flux_error", "dq")}
    for det, (t, f, e) in curves.items():
        rows["exposure"] += ["jw01"] * t.size
        rows["detector"] += [det] * t.size
        rows["int_mid_BJD_TDB"] += list(t)
        rows["flux"] += list(f)
        rows["flux_error"] += list(e)
        rows["dq"] += [0] * t.size
    Table(rows).write(tmp_path / "whitelight.ecsv")
    # jwst's whtlt (no error column)
    q = QTable()
    for det, (t, f, _e) in curves.items():
        q[f"MJD_UTC_{det}"] = t
        q[f"BJD_TDB_{det}"] = t
        q[f"whitelight_flux_{det}"] = f
    q.write(tmp_path / "jw01_whtlt.ecsv")
    cfg = FitConfig(per=3.0, t0=0.0, rp=0.11, a=10.0, inc=88.5, u=(0.15, 0.25), free=("rp",))
    for name, labels in (("whitelight.ecsv", ["jw01_nrs1", "jw01_nrs2"]),
                         ("jw01_whtlt.ecsv", ["NRS1", "NRS2"])):
        got = read_lightcurve_tables(tmp_path / name)
        assert sorted(got) == labels
        for lab, det in zip(labels, ("NRS1", "NRS2"), strict=True):
            t, f, e = curves[det]
            np.testing.assert_array_equal(got[lab]["flux"], f)
            r = fit_transit(got[lab]["time"], got[lab]["flux"], got[lab]["error"], cfg,
                            mask=got[lab]["use"])
            assert abs(r.params["rp"] - (0.12 if det == "NRS1" else 0.10)) < 4 * r.errors["rp"]
        if name.startswith("jw01"):  # the error estimated from the scatter, and said
            e_est = got["NRS1"]["error"][0] / np.median(curves["NRS1"][1])
            assert e_est == pytest.approx(300e-6, rel=0.15)
            assert any("no error column" in n for n in got["NRS1"]["notes"])


@pytest.mark.skipif(not os.path.isfile(_shared("spectra", "eureka_nirspec_prism_jw06456003001_LCData.h5")),
                    reason="shared Eureka files not present")
def test_reads_eurekas_lcdata():
    import h5py

    p = _shared("spectra", "eureka_nirspec_prism_jw06456003001_LCData.h5")
    (c,) = read_lightcurve_tables(p).values()
    with h5py.File(p) as h:
        np.testing.assert_array_equal(c["flux"], h["flux_white"][...])
        np.testing.assert_array_equal(c["use"], ~h["mask_white"][...].astype(bool))
    assert c["time"].size == 24


def test_joint_fit_only_on_request(tmp_path):
    from nirbeam.stream.cli import main
    from nirbeam.transforms.transit import fit_joint

    # the same planet seen by two detectors (different levels and baselines)
    rng = np.random.default_rng(9)
    t = np.linspace(-0.15, 0.15, 300)
    same = {}
    for det, level in (("NRS1", 1000.0), ("NRS2", 600.0)):
        f = level * transit_model(t, TRUE) * (1 + 2e-3 * t) + level * rng.normal(0, 300e-6, t.size)
        same[det] = (t, f, np.full(t.size, level * 300e-6), np.ones(t.size, bool))
    cfg = FitConfig(per=3.0, t0=0.0, rp=0.11, a=10.0, inc=88.5, u=(0.15, 0.25), free=("rp",))
    j = fit_joint(same, cfg)
    one = fit_transit(*same["NRS1"][:3], cfg)
    assert abs(j["params"]["rp"] - 0.12) < 4 * j["errors"]["rp"]
    # two curves of equal quality: the joint error is ~1/sqrt(2) of one curve's
    assert j["errors"]["rp"] / one.errors["rp"] == pytest.approx(2 ** -0.5, rel=0.25)
    assert set(j["baselines"]) == {"NRS1", "NRS2"}
    # through the CLI: per detector by default, one joint file with --joint
    q = QTable()
    for det, (tt, f, _e, _u) in same.items():
        q[f"BJD_TDB_{det}"] = tt
        q[f"whitelight_flux_{det}"] = f
        q[f"whitelight_flux_error_{det}"] = _e
    q.write(tmp_path / "x_whtlt.ecsv")
    (tmp_path / "c.toml").write_text('[fit]\nper = 3.0\nt0 = 0.0\nrp = 0.11\na = 10.0\n'
                                     'inc = 88.5\nu = [0.15, 0.25]\nfree = ["rp"]\n')
    assert main(["fit", str(tmp_path / "x_whtlt.ecsv"), "--config", str(tmp_path / "c.toml"),
                 "--out", str(tmp_path / "sep")]) == 0
    assert sorted(p.name for p in (tmp_path / "sep").glob("*.json")) == ["fit_NRS1.json",
                                                                         "fit_NRS2.json"]
    assert main(["fit", str(tmp_path / "x_whtlt.ecsv"), "--config", str(tmp_path / "c.toml"),
                 "--out", str(tmp_path / "joint"), "--joint"]) == 0
    assert [p.name for p in (tmp_path / "joint").glob("*.json")] == ["fit_joint.json"]
