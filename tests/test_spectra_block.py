"""extract_block (a block of integrations in one compiled loop) == extract_integration,
integration by integration, bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import spectra
from nirbeam.transforms.flicker import FlickerParams
from nirbeam.transforms.spectra_block import block_kernel_applies, extract_block
from tests.test_extract import make_scene


def _block(seed: int):
    """A synthetic block (float32 as in the store) with every case the glue handles: NaN
    and DO_NOT_USE pixels, other DQ bits, non-finite and non-positive variances (the
    err**2 fallback), cosmic rays (optimal rejection), a column with no usable pixel."""
    sc = make_scene(nint=7, nx=70, seed=seed, background=2.0)
    rng = np.random.default_rng(seed)
    rate = sc.rate.astype(np.float32)
    vp = sc.var_poisson.astype(np.float32)
    vr = sc.var_rnoise.astype(np.float32)
    err = np.sqrt(sc.var).astype(np.float32)
    dq = np.zeros(rate.shape, np.uint32)
    bad = rng.random(rate.shape) < 0.03
    rate[bad] = np.nan
    dq[bad] |= dqflags.DO_NOT_USE
    dq[rng.random(rate.shape) < 0.02] |= dqflags.DO_NOT_USE
    dq[rng.random(rate.shape) < 0.02] |= dqflags.JUMP_DET
    vp[rng.random(rate.shape) < 0.02] = np.nan
    vr[rng.random(rate.shape) < 0.01] = -1.0
    vp[rng.random(rate.shape) < 0.01] = 0.0
    vr[vp == 0.0] = 0.0  # var = 0: the fallback
    for i in range(rate.shape[0]):
        x = 5 + 7 * i
        rate[i, int(round(sc.yc[x])), x] += 5000.0  # a hit the optimal clip rejects
    dq[2, :, 40] |= dqflags.DO_NOT_USE  # a column with nothing usable
    model = spectra.build_extraction_model(sc.rate, np.zeros(rate.shape, np.uint32),
                                           half_width=4.0, background_region=(9.0, 15.0))
    return rate, err, dq, vp, vr, model


def _fill(n, nx):
    return {k: np.full((n, nx), 7, dt) for k, dt in spectra.SPECTRUM_ARRAYS.items()}


@pytest.mark.parametrize("variant", ["optimal", "box", "no_background", "no_clip"])
def test_extract_block_equals_extract_integration(variant):
    rate, err, dq, vp, vr, model = _block(11)
    if variant == "box":
        model = replace(model, method="box")
    elif variant == "no_background":
        model = replace(model, background_region=None)
    elif variant == "no_clip":
        model = replace(model, sigma_clip=None)
    n, _, nx = rate.shape
    use = np.ones(n, bool)
    use[4] = False  # not extracted: its rows keep what was there
    out = _fill(n, nx)
    extract_block(rate, err, dq, vp, vr, model, None, use, out)
    assert (out["flux"][4] == 7).all() and (out["dq"][4] == 7).all()
    hits = 0
    for i in np.flatnonzero(use):
        want = spectra.extract_integration(rate[i], err[i], dq[i], vp[i], vr[i], model)
        for k, v in want.items():
            assert out[k].dtype == spectra.SPECTRUM_ARRAYS[k]
            got = out[k][i]
            if v.dtype.kind == "f":  # bit for bit, NaN where NaN
                np.testing.assert_array_equal(got.view(np.uint64), v.view(np.uint64),
                                              err_msg=f"{variant} {k} integration {i}")
            else:
                np.testing.assert_array_equal(got, v, err_msg=f"{variant} {k} integration {i}")
        hits += int(np.count_nonzero(want["dq"] & dqflags.OUTLIER))
    if variant in ("optimal", "no_background"):
        assert hits > 0  # the rejection ran
    assert np.isnan(out["flux"][2, 40]) and out["dq"][2, 40] & dqflags.DO_NOT_USE


def test_extract_block_rate_level_cleaning_goes_one_at_a_time():
    rate, err, dq, vp, vr, model = _block(12)
    fp = FlickerParams(level="rate")
    assert not block_kernel_applies(model, fp) and block_kernel_applies(model, FlickerParams())
    n, _, nx = rate.shape
    out = _fill(n, nx)
    use = np.ones(n, bool)
    extract_block(rate, err, dq, vp, vr, model, fp, use, out)
    for i in range(n):
        want = spectra.extract_integration(rate[i], err[i], dq[i], vp[i], vr[i], model, fp)
        for k, v in want.items():
            np.testing.assert_array_equal(out[k][i], v, err_msg=k)
