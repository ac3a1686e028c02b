"""The science regression's photon-draw oracle (bench/science_regression.py) reproduces the
simulator's own Poisson draws, so that ``ratio_vs_draw`` compares the pipeline with the
very photon noise the simulator put into the files (issue 13, PRISM at the noise floor).

With every other effect off (read noise 0, no bias offsets or drifts, no kTC, no 1/f, no
even/odd, no cosmic rays) a simulated ramp is ``rint(min(S - beta S^2 + bias, sat))`` of
the linear signal S; the oracle's S must give the uncal ramps to the DN (the truth rate
is float32, so a few pixels in 10^4 may round the other way by 1 DN).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import science_regression as sr  # noqa: E402

from nirbeam.sim.simulator import simulate  # noqa: E402

QUIET = dict(one_over_f=False, even_odd_dn=0.0, even_odd_drift_dn=0.0, ktc_dn=0.0,
             bias_drift_dn=0.0, bias_int_sigma=0.0, cosmic_rays=False, readnoise_cds=0.0)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("oracle") / "sim", preset="prism-sub512", nints=3,
                    seed=100, **QUIET)


def test_photon_draw_reproduces_the_uncal_ramps(quiet):
    props, draw = sr.photon_draw(quiet, "NRS1")
    truth = fits.getdata(quiet.truth["NRS1"], "TRUE_RATE")
    raw = fits.getdata(quiet.uncal[0], "SCI")
    for i in range(truth.shape[0]):
        s = draw(i, truth[i])
        ramp = np.clip(np.rint(np.minimum(s - props.beta * s * s + props.bias, props.sat_hard)),
                       0, 65535)
        diff = np.abs(ramp - raw[i])
        assert diff.max() <= 1.0, i
        assert (diff > 0).mean() < 1e-3, (i, int((diff > 0).sum()))


def test_oracle_ratio_is_about_one_and_scatters_as_a_sample_rms(tmp_path):
    """A photon draw's white-light RMS / the photon theory is ~1, within the 1/sqrt(2 N)
    scatter of a sample RMS (N = 40 integrations: 0.11; bound 4 of those)."""
    res = simulate(tmp_path / "sim", preset="prism-sub512", nints=40, seed=7, **QUIET)
    o = sr.photon_oracle(res, "NRS1")
    assert abs(o["oracle_ratio"] - 1.0) < 4.0 / np.sqrt(2 * 40), o
    assert o["read_theory_ppm"] < o["photon_theory_ppm"]


def test_floor_terms_say_what_a_reduction_can_reach():
    """``floor_terms`` against its definition on simulated white-light residuals (seeded
    numpy): a curve whose photon draw + read noise is above 1.05 x theory cannot reach
    1.05 (excess_allowed NaN); below it, adding the allowed excess in quadrature gives
    exactly 1.05 x theory; the excess of a curve is its RMS above the floor."""
    rng = np.random.default_rng(3)
    theory = 300.0
    draw = float(np.std(rng.normal(0, 1.13 * 292.0, 400)))  # a high photon draw
    t = sr.floor_terms(1.2 * theory, theory, draw, 70.0)
    assert t["floor_ratio"] == pytest.approx(np.hypot(draw, 70.0) / theory, rel=1e-12)
    assert t["floor_ratio"] > 1.05 and np.isnan(t["excess_allowed_ppm"])
    t = sr.floor_terms(330.0, theory, 280.0, 70.0)
    floor = np.hypot(280.0, 70.0)
    assert np.hypot(floor, t["excess_allowed_ppm"]) == pytest.approx(1.05 * theory, rel=1e-12)
    assert np.hypot(floor, t["excess_ppm"]) == pytest.approx(330.0, rel=1e-12)
    rows = [{"preset": "p", "detector": "D", "ratio": 1.0, "pull": 0.0, "oracle_ratio": 1.0,
             "ratio_vs_draw": 1.0, **sr.floor_terms(330.0, theory, d, 70.0)}
            for d in (280.0, 320.0, 330.0)]
    assert sr.summarise(rows)["p/D"]["n_floor_above_1.05"] == 2


def _fake_work(path, truth, yc, sci, err, dq):
    """A --keep work folder as column_noise reads it: sim/<exp>_nrs1_truth.fits (TRUE_RATE,
    TRACE y_center) and out/cubes.zarr <exp>_nrs1/rateints (sci, err, dq)."""
    import zarr
    from astropy.table import Table

    (path / "sim").mkdir(parents=True)
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(truth.astype(np.float32),
                                                          name="TRUE_RATE"),
                         fits.BinTableHDU(Table({"y_center": yc}), name="TRACE")])
    hdus.writeto(path / "sim" / "jw0_nrs1_truth.fits")
    g = zarr.open_group(str(path / "out" / "cubes.zarr"), mode="w").create_group(
        "jw0_nrs1").create_group("rateints")
    for name, a in (("sci", sci), ("err", err), ("dq", dq)):
        g.create_array(name, shape=a.shape, dtype=a.dtype)[:] = a


def test_column_noise_against_numpy(tmp_path):
    """Two runs on the same truth (seeded numpy), white noise sigma 2 per pixel (ERR 2)
    plus a column offset common to the 8 box rows (+-4 px around y = 9.5) of sigma 2
    (run a) and 1 (run b): per-column box-sum variances 8*4 + 64*4 = 288 and 8*4 + 64 =
    96, so var b/a = 1/3 and chi^2 against ERR 288/32 = 9 and 96/32 = 3, within 5% (400
    integrations)."""
    rng = np.random.default_rng(8)
    ni, ny, nx = 400, 20, 48
    truth = rng.uniform(0, 50, (ni, ny, nx))
    yc = np.full(nx, 9.5)
    nrow = int((np.abs(np.arange(ny) - 9.5) <= 4).sum())
    assert nrow == 8
    for tag, s_col in (("a", 2.0), ("b", 1.0)):
        sci = truth + rng.normal(0, 2, truth.shape) + rng.normal(0, s_col, (ni, 1, nx))
        err = np.full(truth.shape, 2.0, np.float32)
        dq = np.zeros(truth.shape, np.uint32)
        dq[3, 8, 5] = 4  # JUMP_DET in the box: that column-integration is left out
        _fake_work(tmp_path / tag / "seed_1", truth, yc, sci.astype(np.float32), err, dq)
    (row,) = sr.column_noise(tmp_path / "a", tmp_path / "b", "NRS1", 4.0, widths=(1,))
    va, vb = nrow * 4.0 + nrow**2 * 4.0, nrow * 4.0 + nrow**2 * 1.0
    assert row["w1"]["bins"] == nx
    assert row["w1"]["var_ratio_sum"] == pytest.approx(vb / va, rel=0.05)
    assert row["w1"]["chi2_a"] == pytest.approx(va / (4.0 * nrow), rel=0.05)
    assert row["w1"]["chi2_b"] == pytest.approx(vb / (4.0 * nrow), rel=0.05)
