"""MaskWalk (the fused group hook's cached with_walk) gives with_walk's values."""

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms import flicker_params as fp


def _params(**kw):
    return fp.FlickerParams(**{"method": "median", **kw})


@pytest.mark.parametrize("stat", ["median", "mean"])
def test_mask_walk_matches_with_walk_as_pixeldq_changes(stat):
    rng = np.random.default_rng(3)
    params = _params(statistic=stat)
    ny, nx = 16, 40
    mask = rng.random((ny, nx)) < 0.5
    mask[:, 3] = False  # a column under min_pixels: takes the others' median
    mask[:2, 3] = True
    mw = fp.MaskWalk(mask, params)
    var = rng.random((ny, nx))
    p0 = np.zeros((ny, nx), np.uint32)
    p1 = p0.copy()
    p1[np.nonzero(mask)[0][:5], np.nonzero(mask)[1][:5]] = dqflags.DO_NOT_USE
    p2 = p0.copy()
    p2[~mask] = dqflags.DO_NOT_USE  # off the mask: counts unchanged
    seq = [p0, p0.copy(), p1, p1, p0, p2, p1.astype(np.uint16), p1.astype(np.int32), p0]
    for p in seq:
        got = mw((var, "difference"), p)
        want = fp.with_walk((var, "difference"), p, mask, params)
        assert got[0] is var and got[1] == "difference"
        np.testing.assert_array_equal(got.walk, want.walk)
        assert got.walk.dtype == want.walk.dtype


def test_mask_walk_sees_pixeldq_modified_in_place():
    params = _params()
    mask = np.ones((200, 6), bool)
    mw = fp.MaskWalk(mask, params)
    p = np.zeros((200, 6), np.uint32)
    var = np.ones((200, 6))
    a = mw((var, "group"), p).walk.copy()
    p[:150, 2] = dqflags.DO_NOT_USE  # the caller reuses its array: the cache must notice
    b = mw((var, "group"), p).walk
    np.testing.assert_array_equal(b, fp.with_walk((var, "group"), p, mask, params).walk)
    assert not np.array_equal(a, b)


def test_mask_walk_follows_a_swapped_walk_fraction(monkeypatch):
    params = _params()
    mask = np.ones((200, 6), bool)
    mw = fp.MaskWalk(mask, params)
    p = np.zeros((200, 6), np.uint32)
    var = np.ones((200, 6))
    mw((var, "group"), p)
    monkeypatch.setattr(fp, "walk_fraction", lambda n, prm: np.full(np.shape(n), 0.25))
    np.testing.assert_array_equal(mw((var, "group"), p).walk, np.full(6, 0.25))
