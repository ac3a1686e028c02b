"""diagnostics.nanmedian_along == np.nanmedian bit for bit (the trace and 1/f plots'
per-column background medians)."""

import warnings

import numpy as np
import pytest

from nirbeam.sinks.diagnostics import nanmedian_along


@pytest.mark.parametrize("shape,axis", [((5, 32, 64), 1), ((3, 7, 11), 1), ((40, 9), 0),
                                        ((6, 1, 8), 1), ((4, 2, 5), 2), ((1200, 16), 0)])
@pytest.mark.parametrize("frac", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("keepdims", [False, True])
def test_equals_numpy(shape, axis, frac, keepdims):
    rng = np.random.default_rng(abs(hash((shape, frac))) % 2**32)
    a = rng.normal(size=shape) * 10 ** rng.uniform(-3, 3, size=shape)
    a[rng.random(shape) < frac] = np.nan
    a[(slice(None),) * axis + (0,)] = np.round(a[(slice(None),) * axis + (0,)])  # ties
    idx = [slice(None)] * a.ndim
    idx[axis - 1 if axis else 1] = 0
    a[tuple(idx)] = np.nan  # all-NaN slices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(a, axis=axis, keepdims=keepdims)
    got = nanmedian_along(a, axis=axis, keepdims=keepdims)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_infinity_goes_to_numpy():
    a = np.array([[1.0, np.inf, 3.0, np.nan], [np.inf, -np.inf, 2.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(nanmedian_along(a, 1), np.nanmedian(a, axis=1))
