"""Numba paths of the default group-level 1/f cleaning (group_reference='first') and of
its model variance == their plain numpy references, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_flicker import FAST_CASES, _flagged_ramp

from nirbeam import dqflags
from nirbeam.transforms import flicker, flicker_sort
from nirbeam.transforms.flicker import FlickerParams, clean_groups_from_first, make_group_hook


@pytest.mark.parametrize(("method", "kw"), FAST_CASES)
@pytest.mark.parametrize(("ny", "nx", "integer", "dtype"),
                         [(32, 70, False, np.float32), (13, 131, True, np.float64)])
def test_from_first_fast_path_equals_reference(method, kw, ny, nx, integer, dtype):
    rng = np.random.default_rng(40 + ny + nx)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, ny, nx, integer=integer, dtype=dtype)
    gdq[2][rng.random((ny, nx)) < 0.05] |= dqflags.DROPOUT  # a bad bit other than JUMP/SAT
    out, models = clean_groups_from_first(groups, gdq, pdq, mask, method, return_model=True,
                                          **kw)
    ref, ref_models = flicker._clean_groups_from_first_reference(
        groups, gdq, pdq, mask, method, return_model=True, **kw)
    assert out.dtype == np.float32 and models.shape == (5, ny, nx)
    assert np.isnan(out).any()
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(models, ref_models)
    assert np.abs(models).max() > 1.0


def test_from_first_fast_path_large_image_and_bits():
    """> 4096 usable pixels (sample-bracketed medians), uint16 ramps, custom bad bits."""
    rng = np.random.default_rng(41)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 4, 32, 300)
    for method, kw in [("fft", {"background": "median"}),
                       ("median", {"statistic": "mean", "background": "median"})]:
        np.testing.assert_array_equal(
            clean_groups_from_first(groups, gdq, pdq, mask, method, **kw),
            flicker._clean_groups_from_first_reference(groups, gdq, pdq, mask, method, **kw))
    groups, gdq, pdq, mask = _flagged_ramp(rng, 5, 32, 67, integer=True, dtype=np.uint16)
    for kw in ({"bad_group_bits": dqflags.JUMP_DET},
               {"bad_group_bits": dqflags.SATURATED, "bad_pixel_bits": 0}):
        np.testing.assert_array_equal(
            clean_groups_from_first(groups, gdq.astype(np.uint32), pdq, mask, "median", **kw),
            flicker._clean_groups_from_first_reference(groups, gdq, pdq, mask, "median", **kw))


@pytest.mark.parametrize("nx", [90, 20])  # 20: < 600 pixels per group (numpy's small path)
@pytest.mark.parametrize("params", [FlickerParams(), FlickerParams(group_reference="previous"),
                                    FlickerParams(method="fft", fft_alternating=True)])
def test_correction_variance_equals_reference(params, nx):
    rng = np.random.default_rng(42)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, 32, nx)
    cleaned = clean_groups_from_first(groups, gdq, pdq, mask, params.method,
                                      **params.cleaner_kwargs())
    cleaned[3, 4, 10] = np.inf
    got, kind = flicker.correction_variance(cleaned, pdq, mask, params)
    ref, kind_ref = flicker._correction_variance_reference(cleaned, pdq, mask, params)
    assert kind == kind_ref
    assert got.shape == (32, nx) and np.all(got > 0)
    np.testing.assert_array_equal(got, ref)
    # a mask without pixels, and a one-group ramp: no model variance
    assert not flicker.correction_variance(cleaned, pdq, np.zeros_like(mask), params)[0].any()
    assert not flicker.correction_variance(cleaned[:1], pdq, mask, params)[0].any()


def test_default_hook_equals_numpy_reference():
    """make_group_hook(FlickerParams()) (the pipeline's default) == the numpy cleaner and
    variance, output and variance."""
    rng = np.random.default_rng(43)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 5, 32, 128)
    params = FlickerParams()
    got, (var, kind) = make_group_hook(params, mask)(groups, gdq, pdq)
    ref = flicker._clean_groups_from_first_reference(groups, gdq, pdq, mask, params.method,
                                                     **params.cleaner_kwargs())
    np.testing.assert_array_equal(got, ref)
    rvar, rkind = flicker._correction_variance_reference(ref, pdq, mask, params)
    np.testing.assert_array_equal(var, rvar)
    assert kind == rkind == "group"


def _general_hook(params, mask):
    """The hook's general path (per-call cleaner + correction_variance), the reference of
    the fused kernel; the fused hook keeps it as ``general``."""
    hook = make_group_hook(params, mask)
    assert type(hook).__name__ == "_FusedMedianHook"
    return hook, hook.general


FUSED_PARAMS = [
    FlickerParams(),  # the pipeline's default: clipped mean against the first group
    FlickerParams(group_reference="previous"),
    FlickerParams(statistic="median"),
    FlickerParams(background="median", min_pixels=6),
    FlickerParams(error_term=False),
]


@pytest.mark.parametrize("params", FUSED_PARAMS)
@pytest.mark.parametrize(("ny", "nx", "dtype"), [(32, 150, np.float32), (13, 67, np.float64)])
def test_fused_hook_equals_general_hook(params, ny, nx, dtype):
    """The one-call hook (fixed-mask layout, per-block slot sorts, stored MAD) == the
    general hook (clean_groups_from_first / clean_groups + correction_variance, each ==
    its numpy reference above), output and variance bit for bit, with JUMP/SATURATED/
    DROPOUT groups, DO_NOT_USE pixels, NaN, outliers, empty columns and a group whose
    mask values are all NaN (left out of the MAD)."""
    rng = np.random.default_rng(44 + nx)
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, ny, nx, dtype=dtype)
    gdq[2][rng.random((ny, nx)) < 0.05] |= dqflags.DROPOUT
    groups[4][mask] = np.nan  # no value of group 4 in the mask
    groups[3, 1, 7] = np.inf
    fused, general = _general_hook(params, mask)
    got, ref = fused(groups, gdq, pdq), general(groups, gdq, pdq)
    if not params.error_term:
        np.testing.assert_array_equal(got, ref)
        return
    (out, (var, kind)), (rout, (rvar, rkind)) = got, ref
    assert out.dtype == np.float32 and var.dtype == np.float64 and kind == rkind
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(var, rvar)
    assert np.all(np.isfinite(var)) and var.max() > 0
    # the reference itself, to be sure the general path is the numpy one
    ref2 = (flicker._clean_groups_from_first_reference if params.group_reference == "first"
            else flicker._clean_groups_reference)(groups, gdq, pdq, mask, params.method,
                                                  **params.cleaner_kwargs())
    np.testing.assert_array_equal(out, ref2)
    np.testing.assert_array_equal(var, flicker._correction_variance_reference(
        ref2, pdq, mask, params)[0])


def test_fused_hook_edge_cases(monkeypatch):
    """No usable mask pixel, one finite value, uint16 ramps (general path), a mask with
    a column of all rows, and the streamed MAD beyond MAD_STORE_MAX: == general hook."""
    from nirbeam.transforms import flicker_hook

    rng = np.random.default_rng(45)
    ny, nx = 32, 80
    groups, gdq, pdq, mask = _flagged_ramp(rng, 5, ny, nx)
    mask[:, 30] = True
    params = FlickerParams()
    fused, general = _general_hook(params, mask)

    def same(g, q, p):
        (a, (va, ka)), (b, (vb, kb)) = fused(g, q, p), general(g, q, p)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
        assert ka == kb
        return va

    assert same(groups, gdq, pdq).max() > 0
    dead = pdq | np.uint32(dqflags.DO_NOT_USE)
    assert not same(groups, gdq, dead).any()  # no usable mask pixel: no model variance
    one = groups.copy()
    one[1:][:, mask] = np.nan
    one[1][np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = 5.0
    assert not same(one, gdq, pdq).any()  # a single finite value: no model variance
    same(np.round(groups).astype(np.float64), gdq.astype(np.uint32), pdq.astype(np.uint16))
    ints = np.nan_to_num(groups, nan=0.0).clip(0, 6e4).astype(np.uint16)  # general path
    np.testing.assert_array_equal(fused(ints, gdq, pdq)[0], general(ints, gdq, pdq)[0])
    monkeypatch.setattr(flicker_hook, "MAD_STORE_MAX", 100)  # streamed MAD (full frames)
    flicker_hook.hook_median_kernel.recompile()
    try:
        same(groups, gdq, pdq)
    finally:
        monkeypatch.undo()
        flicker_hook.hook_median_kernel.recompile()
    with pytest.raises(ValueError, match="pixeldq"):
        fused(groups, gdq, pdq[:, :-1])


def test_order_pair_abs_equals_numpy():
    """The MAD's second median, |a - c| computed as read, == np.median of the values."""
    rng = np.random.default_rng(46)
    for a in (rng.normal(0, 3, 50001), np.round(rng.normal(0, 2, 9000)), rng.normal(0, 1, 300)):
        c = float(np.median(a))
        buf = np.empty(a.size)
        n = a.size
        assert flicker_sort.order_pair_abs(a, n, c, (n - 1) // 2, n // 2, buf) == np.median(
            np.abs(a - c))


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_fused_hook_light_equals_reference(reference):
    """With a light model (DN per group) the fused hook == the general hook == the numpy
    reference's column models less the mask pixels' mean light x (k - j) per difference
    j -> k, the ramp rebuilt from them, bit for bit; the variance as the general hook's."""
    rng = np.random.default_rng(47)
    ny, nx = 32, 90
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, ny, nx)
    light = np.where(mask, rng.uniform(0.0, 8.0, (ny, nx)), 0.0)
    params = FlickerParams(group_reference=reference)
    hook = make_group_hook(params, mask, light)
    assert type(hook).__name__ == "_FusedMedianHook"
    (out, (var, _)), (gout, (gvar, _)) = (hook(groups, gdq, pdq),
                                          hook.general(groups, gdq, pdq))
    np.testing.assert_array_equal(out, gout)
    np.testing.assert_array_equal(var, gvar)
    first = reference == "first"
    _, models = (flicker._clean_groups_from_first_reference if first
                 else flicker._clean_groups_reference)(groups, gdq, pdq, mask, "median",
                                                       return_model=True,
                                                       **params.cleaner_kwargs())
    n = mask.sum(axis=0)
    lcol = np.where(n > 0, light.sum(axis=0) / np.maximum(n, 1), 0.0)
    want = groups.astype(np.float32).copy()
    acc = 0.0
    for k in range(1, 6):
        m = models[k - 1] - lcol * (k if first else 1)
        acc = m if first else acc + m
        want[k] = (groups[k].astype(np.float64) - acc).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    no_light = make_group_hook(params, mask)(groups, gdq, pdq)[0]
    assert not np.array_equal(out, no_light)
    with pytest.raises(ValueError, match="light"):
        make_group_hook(params, mask, light[:, :-1])
    with pytest.raises(ValueError, match="background"):
        make_group_hook(FlickerParams(background="median"), mask, light)


def test_light_model_keeps_the_mask_light_in_the_columns():
    """Static light on the mask pixels (PSF wings) is not a column offset: with the light
    model the column offsets are recovered without it (cleaned ramp = truth within the
    noise, mean bias < 0.05 DN per group), without it every pixel of the column loses the
    mask pixels' mean light (the bias the light model removes, issue 13)."""
    rng = np.random.default_rng(48)
    ng, ny, nx = 8, 32, 400
    mask = np.ones((ny, nx), bool)
    mask[12:20] = False  # the trace
    wing = 3.0 / (1.0 + np.abs(np.arange(ny) - 15.5)[:, None] / 3.0) ** 2 * np.ones(nx)
    light = np.where(mask, wing, 0.0)  # DN per group
    truth = np.cumsum(np.broadcast_to(wing + 50.0 * ~mask, (ng, ny, nx)), axis=0)
    offsets = rng.normal(0, 20.0, (ng, 1, nx))
    groups = (truth + offsets + rng.normal(0, 2.0, (ng, ny, nx))).astype(np.float32)
    gdq = np.zeros(groups.shape, np.uint8)
    pdq = np.zeros((ny, nx), np.uint32)
    params = FlickerParams()
    want = truth + offsets[0]  # each group gets the first group's offsets (the reference)
    with_light = make_group_hook(params, mask, light)(groups, gdq, pdq)[0]
    without = make_group_hook(params, mask)(groups, gdq, pdq)[0]
    per_group_bias = [(with_light[k] - want[k]).mean() / k for k in range(1, ng)]
    assert np.max(np.abs(per_group_bias)) < 0.05, per_group_bias
    lost = (light * mask).sum(axis=0).mean() / mask.sum(axis=0).mean()  # DN per group
    bias = [(without[k] - want[k]).mean() / k for k in range(1, ng)]
    np.testing.assert_allclose(bias, -lost, atol=0.05)


def test_order_pair_any_ranks_equals_numpy():
    """order_pair (narrowed brackets, fused first pass) at any pair of ranks, the ends
    included (where a bracket can hold rank lo but miss hi), == numpy's order statistics."""
    rng = np.random.default_rng(49)
    for a in (rng.normal(0, 1, 30000), rng.standard_cauchy(5000),
              np.round(rng.normal(0, 3, 20000))):
        n = a.size
        s = np.sort(a)
        buf = np.empty(n)
        for lo in (0, 1, n // 7, (n - 1) // 2, n - 3, n - 2):
            for hi in (lo, lo + 1):
                assert flicker_sort.order_pair(a, n, lo, hi, buf) == 0.5 * (s[lo] + s[hi]), (
                    n, lo, hi)


def test_light_model_integrations_follow_a_group_budget():
    """The draft's light model takes LIGHT_GROUPS groups' worth of integrations: 16 of a
    5-group PRISM ramp (the budget the truth-pull tests ran with), 4 of a 20-group ramp,
    never fewer than the scene mask's 3 and never more than LIGHT_NINTS."""
    from nirbeam.transforms.flicker_light import LIGHT_NINTS, light_nints

    assert light_nints(5) == 16 == LIGHT_NINTS
    assert light_nints(20) == 4
    assert light_nints(70) == 3
    assert light_nints(70, n_min=5) == 5
    assert light_nints(1) == LIGHT_NINTS
    assert light_nints(6) == 14  # ceil(80 / 6)


def test_light_model_only_for_one_trace_subarrays():
    """The light model is a BOTS subarray's: full frames (FS/MOS/IFU, their slits'
    light is not one trace's wings) and scene masks a mode gives get none, and the
    common-offset fit refuses a frame whose dense design would be rows x 4 columns wide
    (a 2048-row frame asked for 233 GiB)."""
    from nirbeam.transforms.flicker_light import LIGHT_MAX_ROWS, common_offset, light_applies

    assert light_applies((32, 512)) and light_applies((32, 2048))
    assert not light_applies((2048, 2048))
    assert not light_applies((32, 512), trace_mask=np.zeros((32, 512), bool))
    big = np.zeros((LIGHT_MAX_ROWS + 1, 8), np.float32)
    assert common_offset(big, np.ones(big.shape, bool)) == (0.0, np.inf)


def test_draft_reads_no_more_than_the_first_segment_for_the_light():
    """The draft's light integrations stay within the first segment (the stream prepares
    from it, batch makes the same draft), never fewer than the scene mask's 3; without the
    light model (or for a full frame) only those 3."""
    from types import SimpleNamespace

    from nirbeam.stream.rate_steps import draft_nints

    meta = SimpleNamespace(subsize2=32, subsize1=512, ngroups=5)
    on = SimpleNamespace(flicker=SimpleNamespace(light_model=True))
    off = SimpleNamespace(flicker=SimpleNamespace(light_model=False))
    assert draft_nints(meta, on) == 16
    assert draft_nints(meta, on, first_segment_end=150) == 16
    assert draft_nints(meta, on, first_segment_end=8) == 8
    assert draft_nints(meta, on, first_segment_end=2) == 3
    assert draft_nints(meta, off, first_segment_end=150) == 3
    full = SimpleNamespace(subsize2=2048, subsize1=2048, ngroups=5)
    assert draft_nints(full, on, first_segment_end=150) == 3
