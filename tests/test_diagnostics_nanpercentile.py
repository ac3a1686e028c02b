"""diagnostics.nanpercentile_along == np.nanpercentile (method "linear") value for value
(the median spectrum plot's 16-84 % band over integrations)."""

import warnings

import numpy as np
import pytest

from nirbeam.sinks.diagnostics import nanpercentile_along


def _ref(a, q, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(a, q, axis=axis)


@pytest.mark.parametrize("shape,axis", [((1200, 24), 0), ((40, 9), 0), ((9, 40), 1),
                                        ((1, 5), 0), ((2, 5), 0), ((7, 3, 5), 1),
                                        ((601, 3), 0)])
@pytest.mark.parametrize("frac", [0.0, 0.3, 0.95])
@pytest.mark.parametrize("q", [[16, 84], [0, 50, 100], 16, [2.5], [[10, 90], [33.3, 66.7]]])
def test_equals_numpy(shape, axis, frac, q):
    rng = np.random.default_rng(abs(hash((shape, frac, str(q)))) % 2**32)
    a = rng.normal(size=shape) * 10 ** rng.uniform(-3, 3, size=shape)
    a[rng.random(shape) < frac] = np.nan
    sl = [slice(None)] * a.ndim
    sl[1 - axis if a.ndim == 2 else 0] = 0
    a[tuple(sl)] = np.round(a[tuple(sl)])  # ties
    if a.shape[1 - axis if a.ndim == 2 else 2] > 2:
        sl[1 - axis if a.ndim == 2 else 2] = 1
        a[tuple(sl)] = np.nan  # an all-NaN slice
    ref = _ref(a, q, axis)
    got = nanpercentile_along(a, q, axis=axis)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)  # NaN where numpy's is NaN


def test_one_value_per_slice_and_other_inputs_to_numpy():
    a = np.full((30, 4), np.nan)
    a[3, 0] = 2.0
    a[:, 1] = np.arange(30.0)
    a[0, 2] = np.inf
    np.testing.assert_array_equal(nanpercentile_along(a, [16, 84]), _ref(a, [16, 84], 0))
    f32 = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = nanpercentile_along(f32, [16, 84])
    assert got.dtype == _ref(f32, [16, 84], 0).dtype
    np.testing.assert_array_equal(got, _ref(f32, [16, 84], 0))


@pytest.mark.parametrize("shape,axis", [((32, 32, 64), 1), ((1200, 40), 0), ((5, 6, 7), 0),
                                        ((5, 6, 7), -1), ((4, 9), 1)])
def test_sorted_along_is_np_sort_bit_for_bit(shape, axis):
    """The contiguous sort is numpy's strided sort, signed zeros' order included."""
    from nirbeam.sinks import diagnostics

    rng = np.random.default_rng(5)
    a = np.round(rng.normal(size=shape) * 2)  # many ties, -0.0 among them
    a[rng.random(shape) < 0.2] = -0.0
    a[rng.random(shape) < 0.2] = np.nan
    got, ref = diagnostics._sorted_along(a, axis), np.sort(a, axis=axis)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got.view(np.int64), ref.view(np.int64))
