"""refpix_means_at / sigma_clipped_mean: same bits as the pre-session-7 code (issue 14).

The session-7 refpix version sums the kept values in the clipping partition pass and the
first iteration's values while they are copied, and lists the usable reference pixels
once per call. The oracle below is a verbatim copy of the previous functions (git
4377bcb, ``nirbeam/transforms/refpix.py``; only renamed), the reference the new code must
equal bit for bit on seeded random inputs: NaN/inf values, DO_NOT_USE pixels, NaN bias,
outliers, all values clipped, tiny counts (0, 1, 2, 3 usable pixels), constant data,
detrended and plain, odd/even and single mean, uint16 raw and float32 inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.refpix import (
    SubarrayGeometry,
    reference_mask,
    refpix_means_at,
    sigma_clipped_mean,
)

_DNU = np.uint32(dqflags.DO_NOT_USE)


# ---- oracle: verbatim copy of refpix.py at 4377bcb (renamed old_*) ----

@njit(cache=True, error_model="numpy")
def old_sigma_clipped_mean(v, n, siglimit):
    """Mean of ``v[:n]`` after iterative clipping at ``siglimit`` standard deviations
    about the mean (scipy.stats.sigmaclip's algorithm, float64); NaN when n == 0.
    ``siglimit <= 0``: the plain mean. Reorders ``v[:n]``."""
    if n == 0:
        return np.nan
    m = n
    while True:
        s = 0.0
        for i in range(m):
            s += v[i]
        mean = s / m
        if siglimit <= 0.0 or m < 2:
            return mean
        ss = 0.0
        for i in range(m):
            d = v[i] - mean
            ss += d * d
        std = np.sqrt(ss / m)
        lo = mean - std * siglimit
        hi = mean + std * siglimit
        k = 0
        for i in range(m):
            if v[i] >= lo and v[i] <= hi:
                t = v[k]
                v[k] = v[i]
                v[i] = t
                k += 1
        if k == m or k == 0:
            return mean
        m = k


@njit(cache=True, error_model="numpy")
def old_refpix_means_at(groups_or_raw, bias, pixeldq, ys, xs, parity0, odd_even, siglimit,
                    detrend=False):
    """:func:`refpix_means` with the reference pixels given as a list, ``(ys[i], xs[i])``
    in row-major order (``np.nonzero(refmask)``): the same values in the same order, so
    the same means, without scanning the whole frame per group."""
    ng = groups_or_raw.shape[0]
    npix = ys.shape[0]
    out = np.zeros((ng, 2), np.float32)
    nref = 0
    for i in range(npix):
        if not (pixeldq[ys[i], xs[i]] & _DNU):
            nref += 1
    buf = np.empty((2, max(nref, 1)), np.float64)
    # per-pixel straight line over the groups (detrend): a + b (g - gm)
    lin_a = np.zeros(npix, np.float64)
    lin_b = np.zeros(npix, np.float64)
    gm = 0.5 * (ng - 1)
    if detrend:
        sgg = 0.0
        for g in range(ng):
            sgg += (g - gm) * (g - gm)
        for i in range(npix):
            y = ys[i]
            x = xs[i]
            if pixeldq[y, x] & _DNU:
                continue
            b = bias[y, x]
            if np.isnan(b):
                b = np.float32(0.0)
            s0 = 0.0
            s1 = 0.0
            ok = True
            for g in range(ng):
                v = np.float64(np.float32(np.float32(groups_or_raw[g, y, x]) - b))
                if not np.isfinite(v):
                    ok = False
                    break
                s0 += v
                s1 += (g - gm) * v
            if ok:
                lin_a[i] = s0 / ng
                lin_b[i] = s1 / sgg if sgg > 0 else 0.0
            else:
                lin_a[i] = np.nan
    for g in range(ng):
        n = np.zeros(2, np.int64)
        for i in range(npix):
            y = ys[i]
            x = xs[i]
            p = (y + parity0) % 2 if odd_even else 0
            if pixeldq[y, x] & _DNU:
                continue
            b = bias[y, x]
            if np.isnan(b):
                b = np.float32(0.0)
            v = np.float32(np.float32(groups_or_raw[g, y, x]) - b)
            vv = np.float64(v)
            if detrend:
                if not np.isfinite(lin_a[i]):
                    continue
                vv = vv - (lin_a[i] + lin_b[i] * (g - gm))
            if np.isfinite(vv):
                buf[p, n[p]] = vv
                n[p] += 1
        if odd_even:
            for p in range(2):
                if n[p] > 0:
                    out[g, p] = np.float32(old_sigma_clipped_mean(buf[p], n[p], siglimit))
        elif n[0] > 0:
            out[g, 0] = np.float32(old_sigma_clipped_mean(buf[0], n[0], siglimit))
            out[g, 1] = out[g, 0]
    return out


# ---- inputs ----

def _case(rng, ng, ny, nx, geom, *, raw, nan_frac=0.0, dnu_frac=0.0, outliers=0.0,
          bias_nan=0.0, spread=8.0):
    """A ramp (uint16 raw with a bias, or float32 bias-subtracted) and its DQ/ref list."""
    base = rng.normal(0.0, spread, (ng, ny, nx))
    base += rng.normal(0.0, 3.0, (ng, 1, 1)) + np.arange(ng)[:, None, None] * 0.7
    if outliers:
        hit = rng.random((ng, ny, nx)) < outliers
        base[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(50, 5e3, hit.sum())
    if raw:
        bias = rng.uniform(9000, 12000, (ny, nx)).astype(np.float32)
        g = np.clip(np.rint(base + bias), 0, 65535).astype(np.uint16)
    else:
        bias = np.zeros((ny, nx), np.float32)
        g = base.astype(np.float32)
        if nan_frac:
            m = rng.random(g.shape) < nan_frac
            g[m] = rng.choice([np.nan, np.inf, -np.inf], m.sum())
    if bias_nan:
        bias[rng.random((ny, nx)) < bias_nan] = np.nan
    pdq = np.zeros((ny, nx), np.uint32)
    if dnu_frac:
        pdq[rng.random((ny, nx)) < dnu_frac] = _DNU | np.uint32(dqflags.JUMP_DET)
    ys, xs = np.nonzero(reference_mask(geom, (ny, nx)))
    return g, bias, pdq, ys, xs, geom.row_parity0


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    # bit for bit (NaN payloads included)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


BENCH = SubarrayGeometry(substrt1=1, subsize1=2048, substrt2=1, subsize2=32, name="SUB2048")
G395H = SubarrayGeometry(substrt1=1, subsize1=2048, substrt2=963, subsize2=32, name="SUB2048")
SUB512 = SubarrayGeometry(substrt1=1045, subsize1=512, substrt2=1001, subsize2=32, name="SUB512")
SMALL = SubarrayGeometry(substrt1=2041, subsize1=8, substrt2=2, subsize2=6, name="")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["bench", "g395h", "sub512", "small"])
def test_refpix_means_at_equals_the_previous_code(seed, kind):
    rng = np.random.default_rng(1400 + seed)
    geom, shape = {"bench": (BENCH, (6, 32, 2048)), "g395h": (G395H, (5, 32, 2048)),
                   "sub512": (SUB512, (7, 32, 512)), "small": (SMALL, (4, 6, 8))}[kind]
    ng, ny, nx = shape
    opts = [dict(raw=True), dict(raw=True, dnu_frac=0.1, bias_nan=0.05, outliers=0.02),
            dict(raw=False, nan_frac=0.03, outliers=0.05, dnu_frac=0.05),
            dict(raw=False, spread=0.0), dict(raw=False, outliers=0.3, spread=1e-3),
            dict(raw=False, dnu_frac=0.97, nan_frac=0.2)][seed]
    g, bias, pdq, ys, xs, par0 = _case(rng, ng, ny, nx, geom, **opts)
    checked = 0
    for odd_even in (True, False):
        for siglimit in (3.0, 0.0, 1.0, 0.3):
            for detrend in (False, True):
                new = refpix_means_at(g, bias, pdq, ys, xs, par0, odd_even, siglimit, detrend)
                old = old_refpix_means_at(g, bias, pdq, ys, xs, par0, odd_even, siglimit,
                                          detrend)
                _same(new, old)
                checked += 1
    assert checked == 16


def test_refpix_means_at_tiny_counts_and_all_unusable():
    rng = np.random.default_rng(7)
    ng, ny, nx = 5, 6, 8
    g, bias, pdq0, ys, xs, par0 = _case(rng, ng, ny, nx, SMALL, raw=False, outliers=0.2)
    usable = np.flatnonzero(np.ones(ys.size, bool))
    seen_nan_free_zero = False
    for keep in (0, 1, 2, 3, 4, 5):
        pdq = pdq0.copy()
        drop = rng.permutation(usable)[keep:]
        pdq[ys[drop], xs[drop]] = _DNU
        for odd_even in (True, False):
            for detrend in (False, True):
                new = refpix_means_at(g, bias, pdq, ys, xs, par0, odd_even, 3.0, detrend)
                old = old_refpix_means_at(g, bias, pdq, ys, xs, par0, odd_even, 3.0, detrend)
                _same(new, old)
                seen_nan_free_zero |= keep == 0 and not new.any()
    assert seen_nan_free_zero  # no usable pixel: zeros
    # every value non-finite in some groups: those groups get 0
    g2 = g.copy()
    g2[1:3] = np.nan
    new = refpix_means_at(g2, bias, pdq0, ys, xs, par0, True, 3.0, False)
    _same(new, old_refpix_means_at(g2, bias, pdq0, ys, xs, par0, True, 3.0, False))
    assert not new[1:3].any() and new[0].all()


def test_sigma_clipped_mean_equals_the_previous_code():
    rng = np.random.default_rng(99)
    n_clipped_runs = 0
    for trial in range(400):
        n = int(rng.choice([0, 1, 2, 3, 4, 5, 17, 256, 4208]))
        kind = trial % 5
        v = rng.normal(rng.uniform(-1e4, 1e4), rng.uniform(1e-6, 50), n)
        if kind == 1:  # outliers, both sides
            m = rng.random(n) < 0.1
            v[m] += rng.choice([-1.0, 1.0], m.sum()) * rng.uniform(10, 1e6, m.sum())
        elif kind == 2:  # constant
            v[:] = v[0] if n else 0.0
        elif kind == 3:  # integers: ties at the limits
            v = np.rint(v / 10.0)
        elif kind == 4:  # two clusters: the clipping walks several times
            v[: n // 3] += 1e3
        siglimit = float(rng.choice([3.0, 2.0, 1.0, 0.5, 0.1, 0.0, -1.0]))
        a = v.copy()
        b = v.copy()
        ra = sigma_clipped_mean(a, n, siglimit)
        rb = old_sigma_clipped_mean(b, n, siglimit)
        assert np.float64(ra).view(np.uint64) == np.float64(rb).view(np.uint64), (trial, ra, rb)
        np.testing.assert_array_equal(a, b)  # the same reordering
        n_clipped_runs += n > 3 and not np.array_equal(a, v)
    assert n_clipped_runs > 50  # the clipping did move values


def test_oracle_agrees_with_scipy_sigmaclip():
    """The oracle itself against scipy.stats.sigmaclip (3, 3): the algorithm, not bits."""
    from scipy import stats

    rng = np.random.default_rng(5)
    for _ in range(50):
        v = rng.normal(0, 5, 3000)
        v[rng.random(3000) < 0.05] += 400
        ref = stats.sigmaclip(v, 3.0, 3.0)[0].mean()
        got = old_sigma_clipped_mean(v.copy(), v.size, 3.0)
        assert abs(got - ref) <= 1e-12 * max(1.0, abs(ref))
