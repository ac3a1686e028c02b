"""detector1._readonly_c's reshape fast path (session 13, d1glue) gives the arrays, and
add_model_variance the bits, of the broadcast_to + ascontiguousarray it short-cuts."""

import numpy as np
import pytest

from nirbeam.transforms import detector1 as d1
from nirbeam.transforms.flicker_params import ModelVariance


def _old_readonly_c(a, shape):
    out = np.ascontiguousarray(np.broadcast_to(a, shape)).view()
    out.setflags(write=False)
    return out


CASES = [
    ((32, 512), (32, 512), "C"),  # the variance
    ((512,), (1, 512), "C"),  # the per-column walk
    ((1, 512), (1, 512), "C"),
    ((1,), (1, 512), "C"),  # _ZERO_WALK: broadcast, copied
    ((512,), (32, 512), "C"),  # broadcast over rows: copied
    ((32, 512), (32, 512), "F"),  # not C-contiguous: copied
    ((1, 512), (32, 512), "C"),
]


@pytest.mark.parametrize("src, shape, order", CASES)
def test_readonly_c_matches_broadcast(src, shape, order):
    rng = np.random.default_rng(3)
    a = np.asarray(rng.normal(size=src), order=order)
    keep = a.copy()
    new, old = d1._readonly_c(a, shape), _old_readonly_c(a, shape)
    assert new.shape == old.shape == shape
    assert new.dtype == old.dtype
    assert new.flags.c_contiguous and not new.flags.writeable
    assert a.flags.writeable  # the caller's array keeps its flags
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(a, keep)


def _res(rng, ny, nx):
    vr = rng.uniform(1, 5, (ny, nx)).astype(np.float32)
    vp = rng.uniform(0, 5, (ny, nx)).astype(np.float32)
    vr[0, :7] = np.nan
    err = np.sqrt(vp + vr).astype(np.float32)
    err[1, :5] = 0
    return d1.RateResult(rate=np.zeros((ny, nx), np.float32), err=err,
                         dq=np.zeros((ny, nx), np.uint32), var_poisson=vp, var_rnoise=vr)


@pytest.mark.parametrize("walk_shape", [None, (512,), (1, 512), (32, 512)])
@pytest.mark.parametrize("kind", ["group", "difference"])
def test_add_model_variance_bits_unchanged(monkeypatch, walk_shape, kind):
    rng = np.random.default_rng(7)
    ny, nx = 32, 512
    var = rng.uniform(0, 3, (ny, nx))
    var[2, :3] = np.inf
    if walk_shape is None:
        vk = (var, kind)
    else:
        vk = ModelVariance(var, kind, rng.uniform(0, 1, walk_shape))
    new, old = _res(rng, ny, nx), None
    old = d1.RateResult(**{k: getattr(new, k).copy() for k in
                           ("rate", "err", "dq", "var_poisson", "var_rnoise")})
    d1.add_model_variance(new, vk, 8, 0.90156)
    monkeypatch.setattr(d1, "_readonly_c", _old_readonly_c)
    d1.add_model_variance(old, vk, 8, 0.90156)
    for k in ("err", "var_rnoise"):
        assert getattr(new, k).tobytes() == getattr(old, k).tobytes(), k
