"""Trace centroid and width per integration: moments of the profile along the trace,
checked on synthetic Gaussian traces of known offset and width (numpy reference)."""

import numpy as np
import pytest

from nirbeam.transforms.trace_diagnostics import trace_diagnostics_block

NY, NX = 32, 256


def _image(sigma, offset, background=5.0):
    x = np.arange(NX)
    yc = 15.0 + 0.004 * x  # a tilted trace: samples fall between rows
    y = np.arange(NY)[:, None]
    return yc, 1000.0 * np.exp(-0.5 * ((y - yc - offset) / sigma) ** 2) + background


@pytest.mark.parametrize("sigma", [0.8, 1.2, 2.0])
@pytest.mark.parametrize("offset", [0.0, 0.3, -0.45])
def test_offset_and_width_of_a_gaussian_trace(sigma, offset):
    yc, img = _image(sigma, offset)
    d = trace_diagnostics_block(img[None], np.zeros((1, NY, NX), np.uint32), yc, 7)
    assert d["centroid_offset"][0] == pytest.approx(offset, abs=5e-3)
    assert d["centroid_y"][0] == pytest.approx(offset + yc.mean(), abs=5e-3)
    # linear resampling between rows broadens a point-sampled Gaussian by ~1/6 px^2;
    # the +-7 px window truncates the widest one a little
    expect = np.sqrt(sigma**2 + 1 / 6)
    assert d["width"][0] == pytest.approx(expect, rel=0.03 if sigma < 2 else 0.05)


def test_flagged_pixels_are_left_out():
    yc, img = _image(1.0, 0.2)
    dq = np.zeros((1, NY, NX), np.uint32)
    ref = trace_diagnostics_block(img[None], dq, yc, 7)
    bad = img.copy()
    bad[17, 40:60] = 1e7  # hot pixels near the trace
    dq[0, 17, 40:60] = 1  # DO_NOT_USE
    got = trace_diagnostics_block(bad[None], dq, yc, 7)
    assert got["centroid_offset"][0] == pytest.approx(ref["centroid_offset"][0], abs=2e-3)
    assert got["width"][0] == pytest.approx(ref["width"][0], rel=1e-2)
    unflagged = trace_diagnostics_block(bad[None], np.zeros_like(dq), yc, 7)
    assert abs(unflagged["centroid_offset"][0] - ref["centroid_offset"][0]) > 0.1


def _per_integration(rates, dqs, center, half):
    """The per-integration form (rectified_profile + trace_moments), the reference."""
    from nirbeam.transforms.trace_diagnostics import rectified_profile, trace_moments

    co = np.full(len(rates), np.nan)
    wd = np.full(len(rates), np.nan)
    for i in range(len(rates)):
        off, prof = rectified_profile(rates[i], dqs[i], center, half)
        co[i], wd[i] = trace_moments(off, prof)
    return co, wd


@pytest.mark.parametrize("seed", range(12))
def test_block_equals_per_integration_bit_for_bit(seed):
    """The stacked block form gives rectified_profile + trace_moments' values exactly:
    flagged and NaN pixels (different kept columns per integration), an all-NaN and an
    all-flagged integration, negative fluxes, traces near the edges."""
    rng = np.random.default_rng(seed)
    n = 9
    yc, img = _image(rng.uniform(0.7, 2.0), rng.uniform(-0.5, 0.5))
    yc = yc + rng.uniform(-5, 5)
    rates = (img[None] + rng.normal(0, rng.uniform(0, 30), (n, NY, NX))).astype(np.float32)
    dqs = np.zeros((n, NY, NX), np.uint32)
    if seed % 3:
        dqs[rng.random(dqs.shape) < rng.uniform(0, 0.03)] |= 1
        rates[rng.random(rates.shape) < 0.005] = np.nan
    rates[2] = np.nan
    dqs[4] = 1
    rates[6] *= -1
    half = int(rng.integers(1, 10))
    got = trace_diagnostics_block(rates, dqs, yc, half)
    co, wd = _per_integration(rates, dqs, yc, half)
    np.testing.assert_array_equal(got["centroid_offset"], co)
    np.testing.assert_array_equal(got["width"], wd)
    assert np.isnan(co[2]) and np.isnan(co[4])
    assert np.isfinite(co).sum() >= n - 3
