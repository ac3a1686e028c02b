"""Issue 14, session 11 (percall): the per-integration Python of detector1 computed once.

Each cache is checked against a recomputation without it (the code it replaced, inline
here), on several inputs, and for its key: a different input gives a different answer,
not the cached one. Products of a whole run are bit-identical (bench/detector1_percall.py
compares them); these tests guard each piece on its own.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.sinks import zarr_store as zs
from nirbeam.transforms import flicker_params as fp
from nirbeam.transforms.detector1 import Detector1Params, RateResult, add_model_variance
from nirbeam.transforms.flicker_params import FlickerParams, ModelVariance


def _efficiency_loop(clip_sigma):
    """clipped_mean_efficiency before its cache (the 200-iteration fixed point)."""
    def core(x):
        return math.erf(x / math.sqrt(2.0)) - 2.0 * x * math.exp(-0.5 * x * x) / math.sqrt(
            2.0 * math.pi)

    lim = float(clip_sigma)
    for _ in range(200):
        lim = float(clip_sigma) * math.sqrt(core(lim) / math.erf(lim / math.sqrt(2.0)))
    return 1.0 / core(lim)


@pytest.mark.parametrize("c", [2.0, 2.5, 3.0, 4.0, 12.0])
def test_clipped_mean_efficiency_cache_is_the_loop(c):
    """Cached == the loop, for each clip level (twice: the second call is a cache hit);
    another clip level gives another factor."""
    assert fp.clipped_mean_efficiency(c) == _efficiency_loop(c)
    assert fp.clipped_mean_efficiency(c) == _efficiency_loop(c)
    if c < 10:  # (no clipping from ~10 sigma: 1.0 exactly)
        assert fp.clipped_mean_efficiency(c) != fp.clipped_mean_efficiency(c + 0.25)


def _walk_fraction_old(n, params):
    """walk_fraction before the cached table (lists rebuilt, the efficiency recomputed)."""
    if params.method == "fft":
        return np.zeros(np.shape(n))
    if params.method != "median":
        return None
    tab = fp.WALK_X_MEDIAN if params.statistic == "median" else fp.WALK_X_CLIPPED
    lim = np.pi / 2 - 1.0 if params.statistic == "median" else (
        _efficiency_loop(fp.CLIP_SIGMA) - 1.0)
    inv = 1.0 / np.maximum(np.asarray(n, np.float64), float(fp.WALK_N[0]))
    x = np.interp(inv, [0.0] + [1.0 / k for k in fp.WALK_N[::-1]], [lim] + list(tab[::-1]))
    return x / (1.0 + x)


def _with_walk_old(var_kind, pixeldq, mask, params):
    msk = np.asarray(mask, bool) & (
        (np.asarray(pixeldq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0)
    n = msk.sum(axis=0)
    f = _walk_fraction_old(n, params)
    good = n >= params.min_pixels
    if f is not None and good.any() and not good.all():
        f = np.where(good, f, np.median(f[good]))
    return f


PARAMS = [FlickerParams(), FlickerParams(statistic="median"), FlickerParams(min_pixels=7),
          FlickerParams(method="fft"), FlickerParams(method="nsclean")]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.method}-{p.statistic}-"
                                                        f"{p.min_pixels}")
def test_walk_fraction_equals_old(params):
    n = np.array([0, 1, 3, 4, 5, 7, 9, 16, 31, 100, 256, 1000])
    got, want = fp.walk_fraction(n, params), _walk_fraction_old(n, params)
    if want is None:
        assert got is None
        return
    np.testing.assert_array_equal(got, want)
    got[0] = -1.0  # a new, writable array every call (callers may edit it)
    assert fp.walk_fraction(n, params)[0] == want[0]


def test_with_walk_cache_equals_recomputation_and_is_keyed():
    """Over integrations whose DO_NOT_USE pixels change (or not), and over parameters:
    the cached walk == the uncached recomputation; the same counts share one read-only
    array; a count that changes changes the answer (not the cached one)."""
    rng = np.random.default_rng(5)
    ny, nx = 24, 40
    mask = rng.random((ny, nx)) < 0.4
    mask[:, 3] = False
    mask[:2, 4] = True  # 2 pixels: under min_pixels
    mask[:, 10] = False
    mask[:12, 10] = True  # 12 pixels, then 11
    var = rng.uniform(0, 2, (ny, nx))
    fp._WALK_CACHE.clear()
    for params in PARAMS:
        seen = {}
        for it in range(6):
            pdq = np.zeros((ny, nx), np.uint32)
            if it >= 3:  # from the fourth integration one mask pixel more is DO_NOT_USE
                y = int(np.flatnonzero(mask[:, 10])[0])
                pdq[y, 10] = dqflags.DO_NOT_USE | dqflags.JUMP_DET
            pdq[0, 0] |= dqflags.SATURATED  # another bit: no effect
            mv = fp.with_walk((var, "group"), pdq, mask, params)
            assert isinstance(mv, ModelVariance) and mv[0] is var and mv[1] == "group"
            want = _with_walk_old((var, "group"), pdq, mask, params)
            if want is None:
                assert mv.walk is None
                continue
            np.testing.assert_array_equal(mv.walk, want)
            assert not mv.walk.flags.writeable
            seen.setdefault(it >= 3, []).append(mv.walk)
        if params.method == "median":
            assert all(w is seen[False][0] for w in seen[False])  # one array per counts
            assert seen[True][0] is not seen[False][0]
            assert seen[True][0][10] != seen[False][0][10]  # fewer pixels: more walk
    a = fp.with_walk((var, "group"), np.zeros((ny, nx), np.uint32), mask, PARAMS[0]).walk
    b = fp.with_walk((var, "group"), np.zeros((ny, nx), np.uint32), mask, PARAMS[1]).walk
    assert not np.array_equal(a, b)  # the statistic is in the key


def test_with_walk_cache_follows_a_swapped_walk_fraction(monkeypatch):
    """bench/model_variance_err.py swaps flicker_params.walk_fraction: the cache must not
    answer with the other function's values."""
    mask = np.ones((8, 5), bool)
    pdq = np.zeros((8, 5), np.uint32)
    p = FlickerParams()
    before = fp.with_walk((None, "group"), pdq, mask, p).walk
    monkeypatch.setattr(fp, "walk_fraction", lambda n, params: None)
    assert fp.with_walk((None, "group"), pdq, mask, p).walk is None
    monkeypatch.undo()
    np.testing.assert_array_equal(fp.with_walk((None, "group"), pdq, mask, p).walk, before)


def _constants_old(n, tgroup, kind):
    lag = 0.05
    t = np.arange(n) * float(tgroup)
    w = (t - t.mean()) / ((t - t.mean()) ** 2).sum()
    c_rho = 0.5 * float((w * w).sum())
    if kind == "group":
        c_walk = (1.0 - lag) * float((w[1:] ** 2).sum()) + lag * float(w[1:].sum()) ** 2
    else:
        b = np.cumsum(w[::-1])[::-1][1:]
        c_walk = float((b * b).sum()) - 2.0 * lag * float((b[1:] * b[:-1]).sum())
    return c_rho, c_walk


def _add_old(res, var, kind, walk, n, tgroup):
    """add_model_variance's walk branch before the cache (numpy over broadcast arrays)."""
    c_rho, c_walk = _constants_old(n, tgroup, kind)
    f = np.broadcast_to(np.asarray(walk, np.float64), res.err.shape)
    v = np.broadcast_to(np.asarray(var, np.float64), res.err.shape) * (
        c_rho + (c_walk - c_rho) * f)
    v = np.where(np.isfinite(v), v, 0.0)
    ok = np.isfinite(res.var_rnoise) & (res.err > 0)
    vr = np.where(ok, (res.var_rnoise.astype(np.float64) + v).astype(np.float32),
                  res.var_rnoise)
    tot = res.var_poisson.astype(np.float64) + vr.astype(np.float64)
    err = np.where(ok, np.sqrt(np.maximum(tot, 0.0)).astype(np.float32), res.err)
    return vr, err


def test_walk_constants_cache_equals_recomputation_and_is_keyed():
    from nirbeam.transforms import detector1 as d1

    seen = set()
    for n in (3, 4, 5, 8, 20, 70):  # (at n = 2 both kinds are one delta: equal)
        for tg in (0.90156, 1.0, 10.737):
            for kind in ("group", "difference"):
                got = d1._walk_constants(n, tg, kind == "group")
                assert got == _constants_old(n, tg, kind)
                assert d1._walk_constants(n, tg, kind == "group") == got  # a hit: the same
                seen.add(got)
    assert len(seen) == 6 * 3 * 2  # every (n, tgroup, kind) its own constants


@pytest.mark.parametrize("walk_shape", ["column", "pixel", "scalar"])
@pytest.mark.parametrize("kind, ng", [("group", 5), ("difference", 9), ("group", 70)])
def test_add_model_variance_walk_is_bit_identical_to_the_broadcast_formula(walk_shape,
                                                                             kind, ng):
    rng = np.random.default_rng(11)
    shape = (6, 13)
    vp = rng.uniform(0, 50, shape).astype(np.float32)
    vr = rng.uniform(0, 5, shape).astype(np.float32)
    err = np.sqrt(vp + vr).astype(np.float32)
    vr[0, 0] = np.nan
    err[1, 1] = 0.0
    var = rng.uniform(0, 30, shape)
    var[2, 2] = np.inf
    walk = {"column": rng.uniform(0, 0.3, shape[1]), "pixel": rng.uniform(0, 0.3, shape),
            "scalar": 0.17}[walk_shape]
    res = RateResult(np.zeros(shape, np.float32), err.copy(), np.zeros(shape, np.uint32),
                     vp.copy(), vr.copy())
    want_vr, want_err = _add_old(res, var, kind, walk, ng, 0.9)
    add_model_variance(res, ModelVariance(var, kind, walk), ng, 0.9)
    np.testing.assert_array_equal(res.var_rnoise, want_vr)
    np.testing.assert_array_equal(res.err, want_err)


def test_describe_is_computed_once_per_instance_and_follows_the_values():
    from nirbeam.transforms.jump import JumpParams

    p = Detector1Params()
    assert p.describe() == "defaults" == p.describe()
    q = Detector1Params(jump=JumpParams(rejection_threshold=5.0))
    assert q.describe() == "jump={'rejection_threshold': 5.0}" == q.describe()
    assert q == Detector1Params(jump=JumpParams(rejection_threshold=5.0))  # eq unchanged
    assert hash(q) == hash(Detector1Params(jump=JumpParams(rejection_threshold=5.0)))
    assert Detector1Params(jump=JumpParams(rejection_threshold=6.0)).describe() != q.describe()


class _Recorder:
    def __init__(self):
        self.values = []

    def update(self, v):
        self.values.append(v)


def test_block_buffers_are_reused_and_missing_rows_read_as_fill(tmp_path, monkeypatch):
    """Three blocks of two: the third fills the first block's arrays again (reused, not
    new); its second integration fails detector1, so its row must read back as the fill
    value and not as the first block's second integration left in the reused arrays."""
    from nirbeam.stream import rate_steps
    from nirbeam.stream.pipeline import RateBlock
    from nirbeam.stream.rate_steps import RATE_ARRAYS, RATEINTS, CalibrateBlock

    root = str(tmp_path / "c.zarr")
    zs.prepare_stage(root, "g", RATEINTS, 6, (4, 8), RATE_ARRAYS, time_chunk=2)

    def calibrate(holder):
        item = holder.pop()
        if item.key.integration == 6:
            raise ValueError("no rate for this one")
        v = np.full((4, 8), float(item.key.integration), np.float32)
        return SimpleNamespace(rate=v, err=v, dq=np.full((4, 8), item.key.integration,
                                                         np.uint32), var_poisson=v,
                               var_rnoise=v)

    handed = []
    real_write = zs.write_block

    def write_block(root, group, stage, start, arrays, ok, wait=True):
        handed.append(arrays["sci"])
        return real_write(root, group, stage, start, arrays, ok, wait=wait)

    monkeypatch.setattr(rate_steps, "read_record", lambda item: item)
    monkeypatch.setattr(zs, "write_block", write_block)
    cb = CalibrateBlock.__new__(CalibrateBlock)  # no Beam metrics outside a pipeline
    cb.root = root
    cb.calibrate = SimpleNamespace(owned=calibrate)
    cb.m = {k: SimpleNamespace(inc=lambda n=1: None)
            for k in ("read.records", "detector1.records", "write_rateints.records",
                      "detector1.deadletters")}
    cb.ms = {"read": _Recorder(), "detector1": _Recorder()}
    cb.block_ms = _Recorder()
    items = [SimpleNamespace(key=SimpleNamespace(integration=i, group="g"),
                             segment=SimpleNamespace(path="x")) for i in range(1, 7)]
    cb.start_bundle()
    dead = []
    for b in range(3):
        dead += list(cb.process(RateBlock("g", 2 * b + 1, 2 * b + 2,
                                          tuple(items[2 * b:2 * b + 2]))))
    assert list(cb.finish_bundle()) == []
    assert [d.key.integration for d in dead] == [6]
    assert handed[2] is handed[0] and handed[1] is not handed[0]  # reused, two sets
    assert cb._spare is None  # released once the bundle is done
    back = zs.read_block(root, "g", RATEINTS, ("sci", "dq"), slice(0, 6))
    np.testing.assert_array_equal(back["sci"][:5, 0, 0], [1, 2, 3, 4, 5])
    assert np.isnan(back["sci"][5]).all()  # the fill value, not integration 2's rate
    assert (back["dq"][5] == zs.fill_values(root, "g", RATEINTS, ("dq",))["dq"]).all()
    np.testing.assert_array_equal(zs.completed(root, "g", RATEINTS),
                                  [True] * 5 + [False])
