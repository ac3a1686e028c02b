"""Picture-frame correction of full frames, against the simulator's truth (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam.sim.irs2 import picture_frame_template
from nirbeam.transforms.picture_frame import (
    PictureFrameHook,
    background_mask,
    correct_picture_frame,
    region_masks,
)

N = 2048


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(5)
    ng = 3
    t = np.arange(ng)[:, None, None]
    tmpl = picture_frame_template(N)
    # light only in the slits (between them the detector is dark, as in MOS/FS): the
    # correction reads any centre-edge difference of the background as picture frame
    sky = np.zeros((N, N), np.float32)
    for y0 in (300, 900, 1500):
        sky[y0:y0 + 6, 150:1900] = 300.0  # bright slits the background mask leaves out
    truth = 1e4 + sky[None] * t + rng.standard_normal((ng, N, N)).astype(np.float32) * 4
    amp = np.array([0.0, 8.0, 25.0])[:, None, None]  # drifting picture frame, DN
    return truth.astype(np.float32), (truth + amp * tmpl).astype(np.float32), tmpl


def _slope_residual(g, truth):
    return ((g[-1] - g[0]) - (truth[-1] - truth[0])).astype(np.float64) / (g.shape[0] - 1)


def test_regions():
    c, e = region_masks(np.ones((N, N), bool))
    assert not (c & e).any()
    assert c[76, 76] and not c[75, 76] and not c[1984, 1000]
    assert e[4, 1000] and e[1000, 2042] and not e[3, 1000] and not e[2043, 1000]
    assert not e[1000, 1000]


def test_removes_the_picture_frame_to_the_noise(case):
    truth, data, tmpl = case
    before = _slope_residual(data, truth)
    g = data.copy()
    PictureFrameHook(tmpl)(g, None, np.zeros((N, N), np.uint32))
    after = _slope_residual(g, truth)
    y, x = np.mgrid[:N, :N]
    edge = (np.minimum(np.minimum(y, N - 1 - y), np.minimum(x, N - 1 - x)) < 60) & (
        np.minimum(np.minimum(y, N - 1 - y), np.minimum(x, N - 1 - x)) >= 4)
    centre = (y > 300) & (y < 1700) & (x > 300) & (x < 1700)
    off_before = np.median(before[edge]) - np.median(before[centre])
    off_after = np.median(after[edge]) - np.median(after[centre])
    assert off_before > 5.0  # DN per group: the pattern is there
    inner = (slice(4, -4), slice(4, -4))
    # medians of pattern + noise are not pattern medians + 0: jwst's statistics leave
    # ~10% of the edge offset at this noise (8 and 25 DN amplitudes, 4 DN read noise)
    assert abs(off_after) < 0.2 * off_before
    # what is left is the statistics' error (a scaled template), not the noise: the same
    # noise realisation is in the truth
    assert after[inner].std() < 0.2 * before[inner].std()


def test_no_picture_frame_no_change(case):
    truth, _, tmpl = case
    g = truth.copy()
    PictureFrameHook(tmpl)(g, None, None)
    r = _slope_residual(g, truth)[4:-4, 4:-4]
    assert abs(np.median(r)) < 0.2 and r.std() < 0.5  # DN per group; read noise 4 DN


def test_background_mask_leaves_out_the_scene(case):
    truth, _, _ = case
    bg = background_mask(truth[-1] - truth[0])
    assert not bg[900:906, 150:1900].any()
    assert bg[500:600, 500:600].mean() > 0.9


def test_single_group_and_wrong_shape_left_alone(case):
    _, data, tmpl = case
    one = data[:1].copy()
    assert not correct_picture_frame(one, tmpl, np.ones((N, N), bool))
    np.testing.assert_array_equal(one, data[:1])
    small = np.ones((2, 32, 32), np.float32)
    assert PictureFrameHook(tmpl)(small, None, None) is small
    assert PictureFrameHook.before_jump is False  # jwst: after jump, before ramp fit
