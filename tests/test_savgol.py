"""extract_profile.savgol_filter against scipy.signal.savgol_filter(mode="interp").

The run path uses its own Savitzky-Golay filter so that ``scipy.signal`` (and
scipy.stats with it) is not imported; it must give scipy's values bit for bit, so that
the extraction profile, and every product after it, is unchanged.
"""

import numpy as np
import pytest
from scipy.signal import savgol_filter as scipy_savgol

from nirbeam.transforms.extract_profile import savgol_filter


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
@pytest.mark.parametrize("window, order", [(9, 2), (5, 2), (11, 3), (7, 0), (8, 2), (3, 1)])
@pytest.mark.parametrize("axis", [1, 0, -1])
def test_equals_scipy(dtype, window, order, axis):
    rng = np.random.default_rng(window * 10 + order)
    x = (rng.normal(size=(23, 40)) * 100).astype(dtype)
    got = savgol_filter(x, window, order, axis=axis)
    want = scipy_savgol(x, window, order, axis=axis, mode="interp")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_equals_scipy_3d_and_window_equal_to_length():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 9, 6))
    for axis in range(3):
        w = x.shape[axis] | 1 if x.shape[axis] % 2 else x.shape[axis] - 1
        np.testing.assert_array_equal(savgol_filter(x, w, 2, axis=axis),
                                      scipy_savgol(x, w, 2, axis=axis, mode="interp"))


def test_is_a_local_quadratic_fit():
    # independent of scipy: a quadratic is reproduced exactly (edges included), and an
    # interior point is the value at the centre of the least-squares parabola of its window
    t = np.arange(30, dtype=np.float64)
    q = 0.5 * t**2 - 3 * t + 7
    np.testing.assert_allclose(savgol_filter(q[None], 9, 2, axis=1)[0], q, rtol=1e-12, atol=1e-9)
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    got = savgol_filter(x, 9, 2)
    for i in (4, 15, 25):
        c = np.polyfit(np.arange(-4, 5), x[i - 4:i + 5], 2)
        assert got[i] == pytest.approx(np.polyval(c, 0.0), abs=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="polyorder"):
        savgol_filter(np.zeros((2, 10)), 3, 3)
    with pytest.raises(ValueError, match="window_length"):
        savgol_filter(np.zeros((2, 5)), 7, 2)
