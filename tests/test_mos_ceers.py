"""``nirbeam run`` on the three real CEERS MOS nods (source 933): products, profile, and the
flux against a plain-numpy box extraction of the same nod differences."""

from __future__ import annotations

import glob
import json
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nirbeam.stream.cli import main

CEERS = "/work/shared/data/modes/mos_ceers"
FILES = sorted(glob.glob(os.path.join(CEERS, "*_nrs2_phot.138.1345_933.fits")))
pytestmark = pytest.mark.skipif(len(FILES) != 3, reason="CEERS MOS files not present")


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("mos_ceers")
    assert main(["run", CEERS, "--out", str(out)]) == 0
    return out


@np.errstate(invalid="ignore", divide="ignore")
def _numpy_box(summary):
    """Independent box: nod k minus the mean of the other two (numpy), rows within
    +/-2.5 of the fitted trace (whole rows whose centre is inside, partial at the edges),
    NaN/flagged pixels counted as 0, times PIXAR_SR * 1e12, inverse-variance over nods."""
    prof = summary["profile"]
    sci = np.array([fits.getdata(f, "SCI") for f in FILES], float)
    dq = np.array([fits.getdata(f, "DQ") for f in FILES]).astype(np.uint32)
    var = np.array([fits.getdata(f, e) for f in FILES for e in ("VAR_POISSON",)], float)
    var = var + np.array([fits.getdata(f, "VAR_RNOISE") + fits.getdata(f, "VAR_FLAT") for f in FILES])
    pix = fits.getheader(FILES[0], "SCI")["PIXAR_SR"]
    good = np.isfinite(sci) & np.isfinite(var) & (var > 0) & ((dq & 1) == 0)
    ny, nx = sci.shape[1:]
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]
    fl, vv = [], []
    for k in range(3):
        o = [j for j in range(3) if j != k]
        d = sci[k] - sci[o].mean(axis=0)
        v = var[k] + var[o].sum(axis=0) / 4
        ok = good[k] & good[o].all(axis=0)
        c = prof["centers_px"][k] + prof["trace_slope_rows_per_col"] * (x - prof["x_ref"])
        w = np.clip(np.minimum(y + 0.5, c + 2.5) - np.maximum(y - 0.5, c - 2.5), 0, 1)
        fl.append(np.where(ok, d * w, 0).sum(axis=0) * pix * 1e12)
        vv.append(np.where(ok, v * w ** 2, 0).sum(axis=0) * (pix * 1e12) ** 2)
    fl, vv = np.array(fl), np.array(vv)
    wt = np.where(vv > 0, 1 / np.where(vv > 0, vv, 1), 0)
    return (wt * fl).sum(0) / wt.sum(0), 1 / np.sqrt(wt.sum(0))


def test_products_of_source_933(run_out):
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    run = json.loads((run_out / "run.json").read_text())
    (s,) = run["slitlets"]
    assert s["source_id"] == 933 and s["slitlet"] == "138" and s["patt_num"] == [1, 2, 3]
    t = Table.read(run_out / "spec1d_933.ecsv")
    assert t.colnames == ["wavelength", "flux", "flux_error", "dq"]
    assert str(t["flux"].unit) == "uJy" and str(t["wavelength"].unit) == "um"
    w = np.asarray(t["wavelength"])
    assert 1.3 < np.nanmin(w) < 1.5 and 5.2 < np.nanmax(w) < 5.4 and np.all(np.diff(w[np.isfinite(w)]) > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = datamodels.open(str(run_out / "x1d.fits"))
    assert type(m).__name__ == "MultiSpecModel" and m.spec[0].source_id == 933
    np.testing.assert_allclose(np.asarray(m.spec[0].spec_table["FLUX"]) * 1e6, t["flux"], rtol=1e-6,
                               equal_nan=True)
    import zarr

    g = zarr.open_group(str(run_out / "cutouts.zarr"), mode="r")
    assert g["NRS2_138/sci"].shape == (3, 25, 341) and g["NRS2_138"].attrs["units"]["sci"] == "MJy/sr"
    assert all((run_out / p).is_file() for p in run["plots"])
    # the flux conversion is the file's PIXAR_SR
    assert s["flux_conversion"]["pixar_sr"] == pytest.approx(fits.getheader(FILES[0], "SCI")["PIXAR_SR"])


def test_profile_follows_the_nods(run_out):
    (s,) = json.loads((run_out / "run.json").read_text())["slitlets"]
    c = s["profile"]["centers_px"]
    # SHUTSTA 1x1, x11, 11x: the source one shutter up, then one down; equal throws
    assert c[1] > c[0] > c[2]
    assert abs((c[1] - c[0]) - (c[0] - c[2])) < 0.3
    assert 0.5 < s["profile"]["sigma0_px"] < 3.0


def test_flux_against_numpy_box(run_out):
    run = json.loads((run_out / "run.json").read_text())
    (s,) = run["slitlets"]
    fb, eb = _numpy_box(s)
    ratio = s["comparison"]["nod_difference_box_raw_over_optimal_sum"]
    t = Table.read(run_out / "spec1d_933.ecsv")
    f = np.asarray(t["flux"], float)
    e = np.asarray(t["flux_error"], float)
    ok = np.isfinite(f) & np.isfinite(fb)
    # the pipeline's box on the same aperture reproduces the numpy box (within 8 %: the
    # nods are combined with other weights -- the pipeline's variance model, here the
    # files' variances -- and these three nods disagree by 30 % (docs/notes/issue-17.md,
    # session 4), which moves an inverse-variance combination by ~7 %) ...
    assert fb[ok].sum() / f[ok].sum() == pytest.approx(ratio, rel=0.08)
    # ... and the optimal extraction beats it in S/N per element
    assert np.nanmedian(f[ok] / e[ok]) > 1.3 * np.nanmedian(fb[ok] / eb[ok])
    # the two bright features (S/N > 15 per 0.25 um bin) are seen by both
    snr = np.array(s["snr"]["snr"])
    assert (snr > 15).sum() >= 2
