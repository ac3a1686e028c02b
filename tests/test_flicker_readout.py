"""The readout-order-aware filter of the 1/f column offsets (FlickerParams.readout_filter
= 'wiener', nirbeam.transforms.flicker_readout): its model against the simulator's 1/f
series, its error against the simulator truth, the model variance it reports, and the
fused hook == the general hook bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dct
from test_flicker import _flagged_ramp

from nirbeam import dqflags
from nirbeam.sim import physics as phys
from nirbeam.transforms.flicker import FlickerParams, make_group_hook
from nirbeam.transforms.flicker_readout import readout_wiener

# prism-sub512: 5 groups, 512 columns, 4 DN of 1/f per read (its low part ~3.3 DN per
# column), ~16 mask pixels per column
NG, NY, NX, AMP = 5, 32, 512, 4.0


def _low_offsets(rng, ng=NG, nx=NX, amp=AMP):
    """The simulator's column-cadence 1/f offsets (ng, nx) of one integration (its low
    part, :func:`nirbeam.sim.physics.one_over_f_columns`)."""
    var_hi = phys.one_over_f_pixel_variance(ng, NY, nx, amp)
    return phys.one_over_f_columns(rng, ng, nx, np.sqrt(amp**2 - var_hi))


def test_dct_power_of_the_simulated_offsets_is_one_over_j():
    """The filter's model: the DCT-II power of coefficient j of the simulator's 1/f
    column offsets (group minus first) falls as j^-1 (alpha = 1): the mean power in
    octave bands times the band's mean j is flat within 25% from j = 2 to 511."""
    rng = np.random.default_rng(7)
    p = np.zeros(NX)
    for _ in range(200):
        low = _low_offsets(rng)
        p += (dct(low[1:] - low[:1], type=2, norm="ortho", axis=1) ** 2).mean(axis=0)
    j = np.arange(NX)
    flat = [np.mean(p[a:2 * a] * j[a:2 * a]) for a in (2, 4, 8, 16, 32, 64, 128, 256)]
    assert np.ptp(flat) / np.mean(flat) < 0.25, flat


def test_wiener_offsets_are_closer_to_the_truth_and_report_their_error():
    """Simulator truth (1/f offsets of 200 integrations) + white estimation noise of
    sigma^2 = 12.9 DN^2 (14 DN CDS / sqrt(16) with the 1/f's pixel part): the filtered
    offsets' mean squared error is < 0.5 sigma^2 (raw: sigma^2; the Wiener bound with
    the true spectrum is 0.37 sigma^2), and gain * sigma^2, the model variance the hook
    reports, is that error within 15%. The mean over the columns (j = 0) is kept."""
    rng = np.random.default_rng(11)
    s2 = 12.9
    err, rep = [], []
    for _ in range(200):
        low = _low_offsets(rng)
        truth = low[1:] - low[:1]
        est = truth + rng.normal(0.0, np.sqrt(s2), truth.shape)
        filt, gain, amp = readout_wiener(est, s2)
        assert amp > 0 and 0 < gain < 1
        np.testing.assert_allclose(filt.mean(axis=1), est.mean(axis=1), rtol=0, atol=1e-9)
        err.append(np.mean((filt - truth) ** 2))
        rep.append(gain * s2)
    mse, reported = float(np.mean(err)), float(np.mean(rep))
    assert mse < 0.5 * s2, mse
    assert abs(reported / mse - 1.0) < 0.15, (reported, mse)


def test_wiener_without_noise_or_columns_is_the_identity():
    o = np.random.default_rng(1).normal(size=(4, 64))
    for s2 in (0.0, np.nan):
        f, gain, _ = readout_wiener(o, s2)
        np.testing.assert_array_equal(f, o)
        assert gain == 1.0
    f, gain, _ = readout_wiener(o[:, :3], 1.0)
    np.testing.assert_array_equal(f, o[:, :3])


def _ramp_with_1f(rng, rn=10.0):
    """Groups (NG, NY, NX) float32: the simulator's 1/f column offsets + white read noise
    ``rn`` per read + a bias; the truth: the offsets."""
    low = _low_offsets(rng)
    g = 1000.0 + low[:, None, :] + rng.normal(0.0, rn, (NG, NY, NX))
    return g.astype(np.float32), low


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_hook_wiener_against_simulator_truth(reference):
    """The default hook with and without the filter on ramps of the simulator's 1/f +
    read noise (10 DN per read, 16 mask rows of 32): the column model of each group
    (group minus the first; with 'previous' of each difference) is closer to the true 1/f offsets with the filter (mean
    squared error < 0.55 of the unfiltered one), and the model variance the filtered hook
    reports is its error within 15%; the unfiltered hook's too (0.83 before its
    clipped-mean and residual factors, tests/test_flicker_errors.py).
    """
    rng = np.random.default_rng(5)
    mask = np.zeros((NY, NX), bool)
    mask[:8] = mask[24:] = True
    gdq = np.zeros((NG, NY, NX), np.uint8)
    pdq = np.zeros((NY, NX), np.uint32)
    res = {}
    for filt in ("none", "wiener"):
        p = FlickerParams(readout_filter=filt, group_reference=reference)
        hook = make_group_hook(p, mask)
        sq, rep = [], []
        r = np.random.default_rng(rng.integers(1 << 30))
        for _ in range(30):
            g, low = _ramp_with_1f(r)
            out, (var, kind) = hook(g, gdq, pdq)
            model = (g[1:].astype(np.float64) - out[1:])[:, 20, :]  # (ng - 1, nx)
            truth = low[1:] - low[:1]
            if reference == "previous":  # the model of each difference, its own error
                model, truth = np.diff(model, axis=0, prepend=0.0), np.diff(low, axis=0)
            sq.append(np.mean((model - truth) ** 2))
            rep.append(var.mean())
        res[filt] = (float(np.mean(sq)), float(np.mean(rep)))
    (mse0, _), (mse1, rep1) = res["none"], res["wiener"]
    print(res)
    assert mse1 < 0.55 * mse0, res
    assert abs(rep1 / mse1 - 1) < 0.15, res
    assert abs(res["none"][1] / mse0 - 1) < 0.15, res


WIENER_PARAMS = [
    FlickerParams(readout_filter="wiener"),
    FlickerParams(readout_filter="wiener", group_reference="previous"),
    FlickerParams(readout_filter="wiener", statistic="median", error_term=False),
]


@pytest.mark.parametrize("params", WIENER_PARAMS)
@pytest.mark.parametrize("with_light", [False, True])
def test_fused_wiener_hook_equals_general_hook(params, with_light):
    """Fused kernel (fit + store, numpy filter, apply) == the general hook (cleaner with
    models, the same filter, rebuilt ramp, correction_variance x gain), bit for bit, on
    the flagged ramps of the other hook tests (NaN, inf, DQ, empty columns)."""
    rng = np.random.default_rng(3)
    ny, nx = 32, 150
    groups, gdq, pdq, mask = _flagged_ramp(rng, 6, ny, nx, dtype=np.float32)
    gdq[2][rng.random((ny, nx)) < 0.05] |= dqflags.DROPOUT
    groups[3, 1, 7] = np.inf
    light = rng.uniform(0, 3, (ny, nx)) if with_light else None
    hook = make_group_hook(params, mask, light)
    assert type(hook).__name__ == "_FusedMedianHook"
    got, ref = hook(groups, gdq, pdq), hook.general(groups, gdq, pdq)
    plain = make_group_hook(FlickerParams(readout_filter="none", statistic=params.statistic,
                                          group_reference=params.group_reference,
                                          error_term=params.error_term), mask, light)
    base = plain(groups, gdq, pdq)
    if not params.error_term:
        np.testing.assert_array_equal(got, ref)
        assert not np.array_equal(got, base)  # the filter did something
        return
    (out, (var, kind)), (rout, (rvar, rkind)) = got, ref
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(var, rvar)
    assert kind == rkind
    assert not np.array_equal(out, base[0])
    assert np.all(var <= base[1][0] * 1.05)  # the filter's model variance is smaller


def test_readout_filter_needs_per_column_offsets():
    with pytest.raises(ValueError, match="readout_filter"):
        FlickerParams(readout_filter="wiener", method="fft")
    with pytest.raises(ValueError, match="readout_filter"):
        FlickerParams(readout_filter="smooth")


def _readout_cube(seed, ng=20, ny=32, nx=512, rn=14.0, amp=8.0, rate_src=3.0):
    """Faint source on rows >= 18, rows < 18 dark; the simulator's 1/f column offsets in
    readout order (one continuous series over the integration, amplitude ``amp`` per
    column) and white read noise (``rn`` per CDS)."""
    rng = np.random.default_rng(seed)
    rate = np.zeros((ny, nx))
    rate[18:] = rate_src
    sig = np.cumsum(rng.poisson(np.broadcast_to(rate, (ng, ny, nx))), axis=0).astype(float)
    col = phys.one_over_f_columns(rng, ng, nx, amp) if amp > 0 else np.zeros((ng, nx))
    reads = 10000.0 + sig + col[:, None, :] + rng.normal(0, rn / np.sqrt(2), (ng, ny, nx))
    return np.rint(reads).astype(np.uint16), rate


def _rate_stats(params, amp, seeds=range(3)):
    """(empirical variance of rate - truth, mean ERR^2) over the source rows."""
    from nirbeam.transforms.detector1 import RampTiming, run_detector1
    from nirbeam.transforms.reference import ReferenceArrays

    v, e = [], []
    for seed in seeds:
        ramp, rate = _readout_cube(seed, amp=amp)
        ng, ny, nx = ramp.shape
        refs = ReferenceArrays.flat(ny, nx, ng, bias=10000.0, readnoise=14.0, gain=1.0)
        mask = np.zeros(rate.shape, bool)
        mask[:16] = True
        hook = None if params is None else make_group_hook(params, mask)
        res = run_detector1(ramp, refs, RampTiming(ng, 1, 0, 1.0, 1.0), group_hook=hook)
        v.append((res.rate - rate)[18:])
        e.append(res.err[18:])
    return float(np.var(np.concatenate(v))), float(np.mean(np.concatenate(e) ** 2))


def test_wiener_rates_are_quieter_and_err_follows():
    """Rates (run_detector1, 20 groups, 1/f of the simulator in readout order): with the
    filter their variance is lower than with the plain column offsets, and the ERR the
    pipeline reports follows: var / ERR^2 equals that of the same ramps without 1/f and
    without cleaning within 2% (issue 13 cause 5), as it does without the filter.
    Measured 0.993 (plain) and 0.992 (wiener) with the walk of the clipped mean
    (flicker_params.walk_fraction); 0.9945 / 0.993 without it; 0.973 / 0.977 while
    add_model_variance took the 'first' models' errors as white per group (they share
    group 0's mask noise: the slope sees half the white-noise variance), 0.980 / 0.982
    before that, when the hook's model variance was 0.83 of its error. Bound 2%: the
    white-per-group formula fails it.

    ``group_reference='previous'`` (plain): 0.984, bound 3% (the rate variance is 1.21x
    that without 1/f, against 1.03x with 'first': the clipped mean's nonlinear part is a
    random walk along the summed differences; the e2e's own standard error ~1%). Red with
    the random walk of the whole model variance (0.336) and with the 'first' formula
    (1.158). Not asserted: 'previous' with the filter, 0.953 (its ERR overstated ~2.5%:
    the filter's mean weight scales both parts alike)."""
    v0, e0 = _rate_stats(None, amp=0.0)
    v1, e1 = _rate_stats(FlickerParams(), amp=8.0)
    v2, e2 = _rate_stats(FlickerParams(readout_filter="wiener"), amp=8.0)
    v3, e3 = _rate_stats(FlickerParams(group_reference="previous"), amp=8.0)
    r0, r1, r2, r3 = v0 / e0, v1 / e1, v2 / e2, v3 / e3
    print(f"rate var / no 1/f: plain {v1 / v0:.4f}, wiener {v2 / v0:.4f}, previous "
          f"{v3 / v0:.4f}; var/err^2: no 1/f {r0:.4f}, plain {r1:.4f}, wiener {r2:.4f}, "
          f"previous {r3:.4f}")
    assert v2 < v1 < v3
    assert abs(r1 / r0 - 1) < 0.02
    assert abs(r2 / r0 - 1) < 0.02
    assert abs(r3 / r0 - 1) < 0.03


def test_wiener_is_the_same_in_either_readout_direction():
    """NRS2 reads the columns towards -x: the filter of the reversed offsets is the
    reversed filter (the DCT power and weights do not depend on the direction), so one
    filter serves both detectors without a DETECTOR setting."""
    rng = np.random.default_rng(21)
    low = _low_offsets(rng)
    est = low[1:] - low[:1] + rng.normal(0, 3.6, (NG - 1, NX))
    f, gain, amp = readout_wiener(est, 12.9)
    fr, gainr, ampr = readout_wiener(est[:, ::-1], 12.9)
    np.testing.assert_allclose(fr[:, ::-1], f, rtol=0, atol=1e-9)
    assert gainr == pytest.approx(gain, rel=1e-12) and ampr == pytest.approx(amp, rel=1e-12)
