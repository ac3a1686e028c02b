"""Numba paths of the default group-level 1/f cleaning (group_reference='first') and of
its model variance == their plain numpy references, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_flicker import FAST_CASES, _flagged_ramp

from nirbeam import dqflags
from nirbeam.transforms import flicker
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
