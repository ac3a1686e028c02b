"""``lightcurve._bin_rows`` (numpy, used for stacks of ``NUMPY_MIN_ROWS`` spectra or more)
gives ``_bin_core``'s (numba) results bit for bit: NaN and infinite fluxes/errors, -0.0,
flagged columns, empty bins and rows, columns outside every bin, both statistics."""

import numpy as np
import pytest

from nirbeam.transforms import lightcurve as LC


def _case(seed, nint, nx, nbin):
    r = np.random.default_rng(seed)
    f = r.normal(size=(nint, nx)) * 10 ** r.uniform(-3, 3, size=(nint, nx))
    e = np.abs(r.normal(size=(nint, nx)))
    f[r.random(f.shape) < 0.05] = np.nan
    f[r.random(f.shape) < 0.01] = -0.0
    f[r.random(f.shape) < 0.005] = np.inf
    e[r.random(f.shape) < 0.02] = np.inf
    d = (r.integers(0, 8, size=(nint, nx)) * (r.random((nint, nx)) < 0.1)).astype(np.uint32)
    f[: min(3, nint)] = np.nan  # rows with no good column
    idx = r.integers(-1, nbin, size=nx).astype(np.int64)
    if nbin > 3:
        idx[idx == 2] = -1  # a bin without columns
    ncols = np.bincount(idx[idx >= 0], minlength=nbin).astype(np.int64)
    return f, e, d, idx, ncols


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("as_sum", [True, False])
def test_bin_rows_equals_bin_core_bit_for_bit(seed, as_sum):
    nint, nx, nbin = [(70, 64, 1), (200, 300, 20), (64, 512, 100), (90, 33, 7)][seed % 4]
    f, e, d, idx, ncols = _case(seed, nint, nx, nbin)
    for skip in (0, 1, 5):
        a = LC._bin_core(f, e, d, idx, ncols, np.uint32(skip), as_sum)
        b = LC._bin_rows(f, e, d, idx, ncols, np.uint32(skip), as_sum)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8))


def test_bin_spectra_takes_numpy_for_a_stack_and_numba_for_one(monkeypatch):
    f, e, d, _, _ = _case(3, LC.NUMPY_MIN_ROWS, 128, 4)
    wl = np.linspace(1.0, 5.0, 128)
    edges = np.array([1.0, 2.0, 3.5, 5.0])
    ref = LC.bin_spectra(f, e, d, wl, edges)
    one = [LC.bin_spectrum(f[i], e[i], d[i], wl, edges) for i in range(f.shape[0])]
    for k, name in enumerate(("flux", "error", "dq", "npix")):
        stacked = np.stack([o[k] for o in one])
        assert np.array_equal(getattr(ref, name).view(np.uint8), stacked.view(np.uint8))
    calls = []
    real = LC._bin_rows
    monkeypatch.setattr(LC, "_bin_rows", lambda *a: calls.append(1) or real(*a))
    LC.bin_spectra(f, e, d, wl, edges)
    LC.bin_spectra(f[:1], e[:1], d[:1], wl, edges)
    assert calls == [1]
