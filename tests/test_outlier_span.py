"""flag_outliers(span=...) flags a block of the stack exactly as the whole stack does."""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms.outliers import flag_outliers


@pytest.mark.parametrize(("n", "window", "span"),
                         [(90, 25, (25, 57)), (90, 25, (0, 10)), (90, 25, (70, 90)),
                          (20, 25, (5, 9)), (60, 24, (30, 31)), (40, 7, (12, 12))])
def test_span_equals_whole_stack(n, window, span):
    rng = np.random.default_rng(n + window)
    cube = rng.normal(100.0, 1.0, (n, 4, 9)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.03] += 40.0  # outliers
    err = np.full(cube.shape, 1.0, np.float32)
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.02] = dqflags.DO_NOT_USE
    whole = flag_outliers(cube, err, dq, window=window, n_sigma=5.0)
    part = flag_outliers(cube, err, dq, window=window, n_sigma=5.0, span=span)
    a, b = span
    np.testing.assert_array_equal(part[a:b], whole[a:b])
    np.testing.assert_array_equal(part[:a], dq[:a])
    np.testing.assert_array_equal(part[b:], dq[b:])
    if b - a > 5:
        assert (whole[a:b] & dqflags.OUTLIER).any()


def test_span_checked():
    cube = np.zeros((10, 2, 2), np.float32)
    with pytest.raises(ValueError, match="span"):
        flag_outliers(cube, cube + 1, np.zeros(cube.shape, np.uint32), window=5, span=(4, 11))
