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
