"""Tests of the NIRSpec BOTS simulator: file formats, truth consistency, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from nirbeam import dqflags
from nirbeam.sim import physics as phys
from nirbeam.sim.simulator import PRESETS, SimConfig, main_args, simulate

PRIMARY_KEYS = [
    "TELESCOP", "INSTRUME", "DETECTOR", "EXP_TYPE", "TSOVISIT", "READPATT", "SUBARRAY",
    "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2", "FASTAXIS", "SLOWAXIS", "NINTS",
    "NGROUPS", "NFRAMES", "GROUPGAP", "TFRAME", "TGROUP", "EFFINTTM", "INTSTART", "INTEND",
    "EXSEGNUM", "EXSEGTOT", "EXPSTART", "EXPMID", "EXPEND", "FILTER", "GRATING", "FXD_SLIT",
    "TARGNAME", "PATT_NUM", "FILENAME",
]
REF_KEYS = [
    "REFTYPE", "INSTRUME", "DETECTOR", "SUBARRAY", "SUBSTRT1", "SUBSTRT2", "SUBSIZE1",
    "SUBSIZE2", "READPATT", "EXP_TYPE", "USEAFTER", "PEDIGREE", "DESCRIP", "AUTHOR",
]
INT_TIMES_COLS = [
    "integration_number", "int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC",
    "int_start_BJD_TDB", "int_mid_BJD_TDB", "int_end_BJD_TDB",
]


@pytest.fixture(scope="module")
def prism(tmp_path_factory):
    """Default physics (1/f, cosmic rays, drift), small: 7 integrations in 3 segments."""
    out = tmp_path_factory.mktemp("prism")
    return simulate(out, "prism-sub512", nints=7, seed=11, ints_per_segment=3)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """No cosmic rays, no 1/f, no per-group drift or even/odd offsets, references equal to
    the truth (the presets' realistic reference errors off): slopes must match TRUE_RATE."""
    out = tmp_path_factory.mktemp("clean")
    return simulate(
        out, "prism-sub512", nints=6, seed=5, ints_per_segment=6, ngroups=6,
        cosmic_rays=False, one_over_f=False, bias_drift_dn=0.0, even_odd_dn=0.0,
        even_odd_drift_dn=0.0, linearity_error=0.0, superbias_noise_dn=0.0,
    )


def _is(a, dtype) -> bool:
    """dtype check that ignores FITS big-endian byte order."""
    return a.dtype.newbyteorder("=") == np.dtype(dtype)


def _ramps(res, det="NRS1"):
    return np.concatenate([fits.getdata(p, "SCI") for p in res.uncal_by_detector[det]])


def _refs(res, det="NRS1"):
    r = res.refs[det]
    return {
        "bias": fits.getdata(r["superbias"], "SCI").astype(np.float64),
        "dark": fits.getdata(r["dark"], "SCI").astype(np.float64),
        "coeffs": fits.getdata(r["linearity"], "COEFFS").astype(np.float64),
        "sat": fits.getdata(r["saturation"], "SCI").astype(np.float64),
        "rn": fits.getdata(r["readnoise"], "SCI").astype(np.float64),
        "gain": fits.getdata(r["gain"], "SCI").astype(np.float64),
        "mask": fits.getdata(r["mask"], "DQ"),
    }


# ----------------------------------------------------------------------------------------
# formats
# ----------------------------------------------------------------------------------------
def test_uncal_files_valid(prism):
    cfg = prism.config
    paths = prism.uncal_by_detector["NRS1"]
    assert len(paths) == 3
    assert [p.name for p in paths] == [
        f"jw01366004001_04101_00001-seg{i:03d}_nrs1_uncal.fits" for i in (1, 2, 3)
    ]
    expected_next = 1
    it_ref = None
    for seg, p in enumerate(paths, start=1):
        with fits.open(p, do_not_scale_image_data=True) as f:
            h = f[0].header
            for k in PRIMARY_KEYS:
                assert k in h, f"{p.name}: PRIMARY lacks {k}"
            assert h["INSTRUME"] == "NIRSPEC" and h["EXP_TYPE"] == "NRS_BRIGHTOBJ"
            assert h["TSOVISIT"] is True and h["READPATT"] == "NRSRAPID"
            assert (h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"]) == ("SUB512", 1025, 957)
            assert (h["SUBSIZE1"], h["SUBSIZE2"]) == (512, 32)
            assert (h["FILTER"], h["GRATING"], h["FXD_SLIT"]) == ("CLEAR", "PRISM", "S1600A1")
            assert h["NINTS"] == 7 and h["EXSEGNUM"] == seg and h["EXSEGTOT"] == 3
            assert h["TFRAME"] == pytest.approx(0.22616) and h["TGROUP"] == pytest.approx(0.22616)
            assert h["NFRAMES"] == 1 and h["GROUPGAP"] == 0
            assert h["FILENAME"] == p.name
            assert h["INTSTART"] == expected_next
            expected_next = h["INTEND"] + 1
            assert h["EXPSTART"] < h["EXPMID"] < h["EXPEND"]
            sci = f["SCI"]
            assert sci.header["BITPIX"] == 16 and sci.header["BZERO"] == 32768
            assert sci.header["BUNIT"] == "DN"
            assert sci.data.shape == (h["INTEND"] - h["INTSTART"] + 1, h["NGROUPS"], 32, 512)
            assert "GROUP" in f
            it = f["INT_TIMES"].data
            assert list(it.columns.names) == INT_TIMES_COLS
            assert _is(it["integration_number"], np.int32)
            if it_ref is None:
                it_ref = np.array(it)
            else:
                assert np.array_equal(np.array(it), it_ref), "every segment carries the full table"
        data = fits.getdata(p, "SCI")
        assert data.dtype == np.uint16
    assert expected_next == 8
    n = it_ref["integration_number"]
    assert np.array_equal(n, np.arange(1, 8))
    for k in INT_TIMES_COLS[1:]:
        assert np.all(np.diff(it_ref[k]) > 0)
    assert np.all(it_ref["int_start_MJD_UTC"] < it_ref["int_mid_MJD_UTC"])
    assert np.all(it_ref["int_mid_MJD_UTC"] < it_ref["int_end_MJD_UTC"])
    cadence = np.diff(it_ref["int_start_MJD_UTC"]) * 86400
    assert np.allclose(cadence, cfg.cadence_s, atol=1e-3)
    off = it_ref["int_mid_BJD_TDB"] - it_ref["int_mid_MJD_UTC"]
    # TT-UTC (69.184 s = 0.0008 d) plus a light-travel time below ~0.0058 d
    assert np.all(np.abs(off - 0.0008) < 0.01)
    assert np.all(np.abs(off - 0.0008) > 1e-5), "barycentric correction must be applied"


def test_reference_files_valid(prism):
    cfg = prism.config
    r = prism.refs["NRS1"]
    assert set(r) == {"superbias", "dark", "linearity", "saturation", "readnoise", "gain", "mask"}
    shape = (cfg.subsize2, cfg.subsize1)
    for name, p in r.items():
        assert p.name == f"jwst_nirspec_{name}_nirbeamsim_nrs1.fits"
        with fits.open(p) as f:
            h = f[0].header
            for k in REF_KEYS:
                assert k in h, f"{p.name}: PRIMARY lacks {k}"
            assert h["REFTYPE"] == name.upper()
            assert h["READPATT"] == ("NRSRAPID" if name == "dark" else "ANY")
            assert (h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"]) == ("SUB512", 1025, 957)
            if name in ("superbias", "saturation", "readnoise", "gain"):
                assert _is(f["SCI"].data, np.float32) and f["SCI"].data.shape == shape
            if name in ("superbias", "dark", "linearity", "saturation", "mask"):
                assert _is(f["DQ"].data, np.uint32)
                assert list(f["DQ_DEF"].columns.names) == ["Bit", "Value", "Name", "Description"]
                dd = f["DQ_DEF"].data
                assert np.array_equal(dd["Value"], 2 ** dd["Bit"].astype(np.int64))
                for nm, v in zip(dd["Name"], dd["Value"], strict=True):
                    assert getattr(dqflags, nm) == v
            if name == "dark":
                assert h["NGROUPS"] >= cfg.ngroups and h["NFRAMES"] == 1 and h["GROUPGAP"] == 0
                assert f["SCI"].data.shape == (h["NGROUPS"],) + shape
                assert np.all(np.diff(f["SCI"].data, axis=0) >= 0)
            if name == "linearity":
                c = f["COEFFS"].data
                assert _is(c, np.float32) and c.shape[1:] == shape and c.shape[0] >= 3
            if name == "superbias":
                b = f["SCI"].data
                assert 10000 <= b.min() and b.max() <= 15000
            if name == "saturation":
                s = f["SCI"].data
                assert 55000 <= s.min() and s.max() <= 62000
            if name == "gain":
                assert 1.0 <= f["SCI"].data.min() and f["SCI"].data.max() <= np.float32(1.1)  # float32 data (numpy 1.26 compares in float64)


def test_truth_schema(prism):
    cfg = prism.config
    with fits.open(prism.truth["NRS1"]) as t:
        h = t[0].header
        for k in ("SEED", "T0", "PER", "RP", "A_RS", "INC", "ECC", "W", "U1", "U2", "LDLAW", "GAIN", "RNOISE", "OOF_AMP"):
            assert k in h
        assert h["SEED"] == 11
        assert h["SIM NGROUPS"] == cfg.ngroups
        tr = t["TRUE_RATE"].data
        assert tr.shape == (7, 32, 512) and _is(tr, np.float32)
        trace = t["TRACE"].data
        for c in ("x", "y_center", "sigma_psf", "wavelength_um", "stellar_flux_dn_s"):
            assert c in trace.columns.names
        # column totals of TRUE_RATE out of transit equal stellar_flux_dn_s * relflux
        rel = t["REL_FLUX"].data
        assert np.allclose(tr.sum(axis=1), trace["stellar_flux_dn_s"][None] * rel, rtol=1e-5, atol=1e-2)
        assert np.ptp(trace["y_center"]) > 1.5, "trace must be curved by a few pixels"
        assert np.all(np.diff(trace["wavelength_um"]) > 0)
        s = trace["sigma_psf"]
        assert 0.6 <= s.min() and s.max() <= 1.6
        lc = t["LIGHTCURVE"].data
        for c in ("integration_number", "int_mid_BJD_TDB", "relative_flux", "white_flux_dn_s", "theoretical_sigma_white"):
            assert c in lc.columns.names
        assert np.allclose(lc["white_flux_dn_s"], tr.sum(axis=(1, 2)), rtol=1e-6)
        assert np.all((lc["theoretical_sigma_white"] > 0) & (lc["theoretical_sigma_white"] < 1e-2))
        with fits.open(prism.uncal[0]) as u:
            assert np.array_equal(lc["int_mid_BJD_TDB"], u["INT_TIMES"].data["int_mid_BJD_TDB"])
        for c in ("integration", "group", "y", "x", "amplitude_dn"):
            assert c in t["COSMIC_RAYS"].columns.names
        for c in ("y", "x", "rate"):
            assert c in t["HOT_PIXELS"].columns.names


def test_transit_present_in_truth(prism):
    with fits.open(prism.truth["NRS1"]) as t:
        lc = t["LIGHTCURVE"].data
        rel = lc["relative_flux"]
        depth = 1 - rel.min()
        rp = t[0].header["RP"]
        assert rel.max() == pytest.approx(1.0)
        assert 0.5 * rp**2 < depth < 2 * rp**2
        # batman independently at the same times
        import batman

        h = t[0].header
        p = batman.TransitParams()
        p.t0, p.per, p.rp, p.a, p.inc = h["T0"], h["PER"], h["RP"], h["A_RS"], h["INC"]
        p.ecc, p.w, p.u, p.limb_dark = h["ECC"], h["W"], [h["U1"], h["U2"]], "quadratic"
        trace = t["TRACE"].data
        col = int(np.argmin(np.abs(trace["rp_rs"] - h["RP"])))
        ref = batman.TransitModel(p, lc["int_mid_BJD_TDB"].astype(np.float64)).light_curve(p)
        assert np.allclose(t["REL_FLUX"].data[:, col], ref, atol=2e-6)


# ----------------------------------------------------------------------------------------
# truth vs data
# ----------------------------------------------------------------------------------------
def test_linearity_coeffs_invert_nonlinearity(clean):
    with fits.open(clean.truth["NRS1"]) as t:
        beta = t["NONLIN_BETA"].data.astype(np.float64)
    r = _refs(clean)
    live = beta > 0
    headroom = r["sat"] - r["bias"]  # largest unsaturated measured signal
    for frac in np.linspace(0.02, 1.0, 12):
        m = frac * headroom
        # the true signal that produces measured m: invert m = t - beta t^2
        with np.errstate(invalid="ignore", divide="ignore"):
            true = np.where(live, (1 - np.sqrt(1 - 4 * beta * m)) / (2 * np.where(live, beta, 1)), m)
        corr = phys.apply_linearity(m, r["coeffs"])
        rel = np.abs(corr[live] / true[live] - 1)
        assert rel.max() < 1e-3, f"linearity off by {rel.max():.2e} at {frac:.2f} of headroom"
    # and the correction is not the identity: the effect is percent-level near saturation
    assert np.median(phys.apply_linearity(headroom, r["coeffs"])[live] / headroom[live] - 1) > 0.02


def test_slopes_match_true_rate(clean):
    """First-last group difference, after superbias, linearity and dark, vs TRUE_RATE."""
    cfg = clean.config
    ramps = _ramps(clean).astype(np.float64)
    r = _refs(clean)
    with fits.open(clean.truth["NRS1"]) as t:
        true_rate = t["TRUE_RATE"].data.astype(np.float64)
        dark_rate = t["DARK_RATE"].data.astype(np.float64)
        beta = t["NONLIN_BETA"].data.astype(np.float64)
    G, tg = cfg.ngroups, cfg.tgroup
    good_pix = (r["mask"] == 0) & (dark_rate < 1.0)
    chis = []
    for i in range(ramps.shape[0]):
        raw = ramps[i]
        unsat = np.all(raw < r["sat"], axis=0)
        m = raw - r["bias"]
        lin = phys.apply_linearity(m, r["coeffs"]) - r["dark"][:G]
        slope = (lin[-1] - lin[0]) / ((G - 1) * tg)
        deriv = 1 + 2 * beta * m[-1]
        var = (
            (true_rate[i] + dark_rate) * (G - 1) * tg / r["gain"] + r["rn"] ** 2 + 2 / 12
        ) * deriv**2 / ((G - 1) * tg) ** 2
        sel = good_pix & unsat
        chis.append(((slope - true_rate[i]) ** 2 / var)[sel])
        # bright pixels individually: a wrong gain or rate normalisation would show here
        bright = sel & (true_rate[i] > 1000)
        assert bright.sum() > 200
        z = (slope - true_rate[i])[bright] / np.sqrt(var[bright])
        assert abs(z.mean()) < 5 / np.sqrt(bright.sum()) + 0.05
    chi = np.concatenate(chis)
    red = chi.mean()
    print(f"chi2/dof = {red:.4f} over {chi.size} pixel-integrations")
    # ~1e5 samples: the mean has a statistical spread of ~0.005
    assert 0.96 < red < 1.04, f"chi2/dof = {red:.3f} over {chi.size} pixel-integrations"
    # tails: no gross outliers with cosmic rays off
    assert (chi > 49).mean() < 1e-4


def test_saturation_occurs_but_rarely(tmp_path):
    res = simulate(tmp_path, "prism-sub512", nints=3, seed=2, cosmic_rays=False)
    ramps = _ramps(res)
    sat = _refs(res)["sat"]
    frac_last = (ramps[:, -1] >= sat).mean()
    assert frac_last < 0.01
    assert (ramps[:, 0] >= sat).sum() == 0


def test_cosmic_rays_appear_as_jumps(tmp_path):
    res = simulate(
        tmp_path, "prism-sub512", nints=3, seed=3, ngroups=6, one_over_f=False,
        bias_drift_dn=0.0, cr_rate=3e-3, snowball_rate=0.0,
    )
    ramps = _ramps(res).astype(np.float64)
    r = _refs(res)
    with fits.open(res.truth["NRS1"]) as t:
        cr = t["COSMIC_RAYS"].data
        true_rate = t["TRUE_RATE"].data
    assert len(cr) > 100
    assert set(np.unique(cr["kind"])) <= {"CR", "SNOWBALL"}
    assert cr["amplitude_dn"].max() <= 5000 and cr["amplitude_dn"].min() > 0
    lin = phys.apply_linearity(ramps - r["bias"], r["coeffs"])
    diffs = np.diff(lin, axis=1)  # (nints, G-1, ny, nx)
    # total deposited per (int, group, y, x)
    dep = np.zeros(ramps.shape)
    np.add.at(dep, (cr["integration"] - 1, cr["group"], cr["y"], cr["x"]), cr["amplitude_dn"])
    hit_any = (dep > 0).any(axis=1)
    checked = 0
    for i, g, y, x in zip(*np.nonzero(dep[:, 1:] > 300), strict=True):
        if (dep[i, :, y, x] > 0).sum() != 1 or np.any(ramps[i, :, y, x] >= r["sat"][y, x]):
            continue
        others = np.delete(diffs[i, :, y, x], g)
        jump = diffs[i, g, y, x] - np.median(others)
        amp = dep[i, g + 1, y, x]
        noise = np.sqrt(2 * r["rn"][y, x] ** 2 + 2 * true_rate[i, y, x] * 0.23 + 4 * amp / r["gain"][y, x] * 0 + 50)
        assert abs(jump - amp) < 0.03 * amp + 6 * noise, (i, g, y, x, jump, amp)
        checked += 1
    print(f"{checked} cosmic-ray jumps checked")
    assert checked > 50
    # pixels never hit show no jump larger than 1000 DN
    big = (diffs - np.median(diffs, axis=1, keepdims=True)) > 1000
    assert not np.any(big.any(axis=1) & ~hit_any)


def test_one_over_f_stripes(tmp_path):
    """1/f noise: an offset common to a whole column in each group (vertical stripes)."""

    def top_bottom_corr(res):
        ramps = _ramps(res).astype(np.float64)
        cds = np.diff(ramps, axis=1)  # (n, G-1, ny, nx)
        top = cds[:, :, 0:4, 8:500].mean(axis=2).ravel()
        bottom = cds[:, :, 28:32, 8:500].mean(axis=2).ravel()
        return np.corrcoef(top, bottom)[0, 1], np.std(top - bottom)

    kw = dict(nints=2, seed=4, cosmic_rays=False, bias_drift_dn=0.0)
    on = simulate(tmp_path / "on", "prism-sub512", one_over_f_dn=8.0, **kw)
    off = simulate(tmp_path / "off", "prism-sub512", one_over_f=False, **kw)
    c_on, d_on = top_bottom_corr(on)
    c_off, d_off = top_bottom_corr(off)
    print(f"top/bottom column correlation: 1/f on {c_on:.2f}, off {c_off:.2f}")
    assert c_on > 0.3  # ~0.5 expected: 4-row means still carry ~7 DN of read noise
    assert abs(c_off) < 0.1
    # the stripes cancel in a top-bottom difference: only white noise is left
    assert d_on < 1.3 * d_off
    assert fits.getheader(on.truth_file)["OOF_AMP"] == 8.0


# ----------------------------------------------------------------------------------------
# G395H / SUB2048 with reference pixels, NRS2, full-frame references
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def g395h(tmp_path_factory):
    out = tmp_path_factory.mktemp("g395h")
    return simulate(
        out, "g395h-sub2048", nints=2, seed=7, ngroups=5, ints_per_segment=1,
        detectors=("NRS1", "NRS2"), cosmic_rays=False, one_over_f=False, bias_drift_dn=8.0,
    )


def test_g395h_headers_and_refpix(g395h):
    assert set(g395h.uncal_by_detector) == {"NRS1", "NRS2"}
    assert len(g395h.uncal) == 4
    for det, s2, fast in (("NRS1", 963, 2), ("NRS2", 1055, -2)):
        h = fits.getheader(g395h.uncal_by_detector[det][0])
        assert (h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"], h["SUBSIZE1"], h["SUBSIZE2"]) == ("SUB2048", 1, s2, 2048, 32)
        assert (h["FILTER"], h["GRATING"], h["TFRAME"]) == ("F290LP", "G395H", 0.90156)
        assert h["FASTAXIS"] == fast
        r = _refs(g395h, det)
        refcols = np.r_[0:4, 2044:2048]
        assert np.all(r["mask"][:, refcols] & dqflags.REFERENCE_PIXEL)
        assert not np.any(r["mask"][:, 4:2044] & dqflags.REFERENCE_PIXEL)
        ramps = _ramps(g395h, det).astype(np.float64)
        # reference pixels: no light, no dark (a group difference is noise only)...
        with fits.open(g395h.truth[det]) as t:
            tr = t["TRUE_RATE"].data.astype(np.float64)
            dark_rate = t["DARK_RATE"].data
        d = np.diff(ramps[:, :, :, refcols], axis=1)
        rows = np.r_[0:3, 29:32]
        expected = ((tr + dark_rate)[:, None, rows, 200:1800]) * g395h.config.tgroup
        dark_sci = np.diff(ramps[:, :, rows, 200:1800], axis=1) - expected
        assert abs(d.mean() - dark_sci.mean()) < 1.0
        assert abs(d[:, :, 12:20].mean() - d[:, :, :4].mean()) < 1.5, "no light in reference pixels"
        # ...but they share the per-group bias drift with the light-sensitive pixels
        ref_mean = (ramps[:, :, :, refcols] - r["bias"][:, refcols]).mean(axis=(2, 3))
        dark_rows = np.r_[0:3, 29:32]
        sci = ramps[:, :, dark_rows, 200:1800] - r["bias"][dark_rows, 200:1800]
        sci_mean = np.median(sci - sci[:, :1], axis=(2, 3))
        ref_step = ref_mean - ref_mean[:, :1]
        assert np.corrcoef(ref_step[:, 1:].ravel(), sci_mean[:, 1:].ravel())[0, 1] > 0.8
        # subtracting the reference-pixel drift removes most of it
        assert np.std(sci_mean[:, 1:] - ref_step[:, 1:]) < 0.5 * np.std(sci_mean[:, 1:])
        assert np.all(tr[:, :, refcols] == 0)
        assert tr.sum() > 0
    w1 = fits.getdata(g395h.truth["NRS1"], "TRACE")["wavelength_um"]
    w2 = fits.getdata(g395h.truth["NRS2"], "TRACE")["wavelength_um"]
    assert w1.max() < w2.min()


def test_full_frame_refs_cut_to_subarray(tmp_path):
    kw = dict(nints=1, seed=9, ngroups=3, cosmic_rays=False)
    a = simulate(tmp_path / "sub", "g395h-sub2048", **kw)
    b = simulate(tmp_path / "full", "g395h-sub2048", full_frame_refs=True, **kw)
    ys = slice(963 - 1, 963 - 1 + 32)
    for name, ext in (("gain", "SCI"), ("readnoise", "SCI"), ("saturation", "SCI"), ("mask", "DQ"), ("linearity", "COEFFS")):
        with fits.open(b.refs["NRS1"][name]) as f:
            assert f[0].header["SUBARRAY"] == "FULL"
            full = f[ext].data
        sub = fits.getdata(a.refs["NRS1"][name], ext)
        assert full.shape[-2:] == (2048, 2048)
        assert np.array_equal(full[..., ys, :], sub), name
    m = fits.getdata(b.refs["NRS1"]["mask"], "DQ")
    assert np.all(m[:4] & dqflags.REFERENCE_PIXEL) and np.all(m[:, -4:] & dqflags.REFERENCE_PIXEL)
    # data do not depend on the reference layout
    assert np.array_equal(_ramps(a), _ramps(b))


# ----------------------------------------------------------------------------------------
# determinism, options, API
# ----------------------------------------------------------------------------------------
def test_seeded_determinism(tmp_path):
    kw = dict(nints=4, ints_per_segment=2)
    a = simulate(tmp_path / "a", "prism-sub512", seed=21, **kw)
    b = simulate(tmp_path / "b", "prism-sub512", seed=21, **kw)
    c = simulate(tmp_path / "c", "prism-sub512", seed=22, **kw)
    # segmenting does not change the data
    d = simulate(tmp_path / "d", "prism-sub512", seed=21, nints=4, ints_per_segment=3)
    ra, rb, rc, rd = (_ramps(x) for x in (a, b, c, d))
    assert np.array_equal(ra, rb) and np.array_equal(ra, rd)
    assert not np.array_equal(ra, rc)
    for ext in ("TRUE_RATE", "COSMIC_RAYS", "HOT_PIXELS"):
        assert np.array_equal(fits.getdata(a.truth_file, ext), fits.getdata(b.truth_file, ext))
    for name in a.refs["NRS1"]:
        ext = "DQ" if name == "mask" else ("COEFFS" if name == "linearity" else "SCI")
        assert np.array_equal(fits.getdata(a.refs["NRS1"][name], ext), fits.getdata(b.refs["NRS1"][name], ext))


def test_no_int_times_option(tmp_path):
    res = simulate(tmp_path, "prism-sub512", nints=2, write_int_times=False)
    with fits.open(res.uncal[0]) as f:
        assert "INT_TIMES" not in f
        assert "SCI" in f


def test_transit_off_gives_flat_truth(tmp_path):
    res = simulate(tmp_path, "prism-sub512", nints=3, transit=False, cosmic_rays=False)
    lc = fits.getdata(res.truth_file, "LIGHTCURVE")
    assert np.all(lc["relative_flux"] == 1.0)


def test_api_errors_and_main_args(tmp_path):
    with pytest.raises(TypeError, match="unknown SimConfig field"):
        simulate(tmp_path, "prism-sub512", nints=1, not_a_field=3)
    with pytest.raises(ValueError, match="unknown preset"):
        simulate(tmp_path, "nope", nints=1)
    with pytest.raises(ValueError, match="detectors"):
        SimConfig(detectors=("NRS3",))
    assert {"prism-sub512", "g395h-sub2048"} <= set(PRESETS)
    assert PRESETS["g395h-sub2048"].ngroups == 70
    res = main_args(tmp_path / "m", "prism-sub512", nints=2, seed=1, set=["one_over_f=false", "ngroups=4"])
    assert res.config.one_over_f is False and res.config.ngroups == 4
    assert fits.getheader(res.uncal[0])["NGROUPS"] == 4


def test_theoretical_white_noise_matches_scatter(tmp_path):
    """White-light OLS slopes in the truth aperture scatter as theoretical_sigma_white says."""
    res = simulate(
        tmp_path, "prism-sub512", nints=48, seed=8, transit=False, cosmic_rays=False,
        one_over_f=False, bias_drift_dn=0.0,
    )
    cfg = res.config
    ramps = _ramps(res).astype(np.float64)
    r = _refs(res)
    with fits.open(res.truth_file) as t:
        lc = t["LIGHTCURVE"].data
        yc = t["TRACE"].data["y_center"]
        apw = t[0].header["APHALFW"]
    G, tg = cfg.ngroups, cfg.tgroup
    tk = np.arange(1, G + 1) * tg
    w = (tk - tk.mean()) / ((tk - tk.mean()) ** 2).sum()
    ap = (np.abs(np.arange(32)[:, None] - yc[None, :]) <= apw) & (r["mask"] & dqflags.DEAD == 0)
    lin = phys.apply_linearity(ramps - r["bias"], r["coeffs"]) - r["dark"][:G]
    white = (np.einsum("g,igyx->iyx", w, lin) * ap).sum(axis=(1, 2))
    emp = white.std(ddof=1) / white.mean()
    theory = lc["theoretical_sigma_white"].mean()
    print(f"white-light scatter {emp:.3e}, theoretical {theory:.3e}")
    assert 0.7 < emp / theory < 1.3  # 48 integrations: ~10% precision on a std
    assert np.allclose(white.mean(), lc["aperture_flux_dn_s"].mean(), rtol=2e-3)


def test_snowballs(tmp_path):
    res = simulate(tmp_path, "prism-sub512", nints=3, seed=12, cr_rate=0.0, snowball_rate=2e-4,
                   one_over_f=False, snowball_halo=False)
    cr = fits.getdata(res.truth_file, "COSMIC_RAYS")
    sb = cr[cr["kind"] == "SNOWBALL"]
    assert len(sb) > 20 and len(sb) == len(cr)
    assert sb["amplitude_dn"].max() > 20000
    # round clusters: every snowball pixel lies within 4 px of a core pixel (>= 20 kDN)
    # of a snowball in the same integration and group
    for row in sb:
        same = sb[(sb["integration"] == row["integration"]) & (sb["group"] == row["group"])]
        core = same[same["amplitude_dn"] >= 20000]
        assert len(core) > 0
        assert np.hypot(core["y"] - row["y"], core["x"] - row["x"]).min() <= 4.5
    assert (cr["group"] < res.config.ngroups).all() and (cr["group"] >= 0).all()


def test_readnoise_reference_matches_destriped_cds(tmp_path):
    """With 1/f on, CDS noise left after removing column offsets equals READNOISE."""
    res = simulate(tmp_path, "prism-sub512", nints=3, seed=14, cosmic_rays=False, bias_drift_dn=0.0)
    ramps = _ramps(res).astype(np.float64)
    r = _refs(res)
    with fits.open(res.truth_file) as t:
        tr = t["TRUE_RATE"].data.astype(np.float64)
        dark_rate = t["DARK_RATE"].data
        assert t[0].header["RNOISE"] > t[0].header["RNWHITE"]
    rows = np.r_[0:6, 26:32]
    cols = slice(8, 500)
    cds = np.diff(ramps, axis=1)[:, :, rows, cols]
    resid = cds - cds.mean(axis=2, keepdims=True)
    ok = (r["mask"][rows, cols] == 0) & (dark_rate[rows, cols] < 0.5)
    var_emp = (resid**2)[:, :, ok].mean() * len(rows) / (len(rows) - 1)
    poisson = ((tr[:, rows, cols] + dark_rate[rows, cols]) * res.config.tgroup / r["gain"][rows, cols])
    var_model = (r["rn"][rows, cols] ** 2)[ok].mean() + poisson[:, ok].mean() + 2 / 12
    print(f"destriped CDS variance {var_emp:.1f}, READNOISE^2 + Poisson {var_model:.1f}")
    # ~7e4 samples: 0.5% precision; the pixel-scale 1/f adds ~5% to READNOISE^2
    assert 0.975 < var_emp / var_model < 1.025


def test_snowball_halos(tmp_path):
    """With halos (the presets' default) each snowball also deposits a faint halo out to
    three core radii: pixels beyond 4.5 px of a core, each below 2% of the core."""
    res = simulate(tmp_path, "prism-sub512", nints=2, seed=12, cr_rate=0.0, snowball_rate=2e-4,
                   one_over_f=False)
    assert res.config.snowball_halo
    cr = fits.getdata(res.truth_file, "COSMIC_RAYS")
    far = 0
    for row in cr:
        same = cr[(cr["integration"] == row["integration"]) & (cr["group"] == row["group"])]
        core = same[same["amplitude_dn"] >= 20000]
        d = np.hypot(core["y"] - row["y"], core["x"] - row["x"]).min()
        assert d <= 12.5
        if d > 4.5:
            far += 1
            assert row["amplitude_dn"] < 0.02 * core["amplitude_dn"].max()
    assert far > 50
